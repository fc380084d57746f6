//! SQL-facing functions in schema `torii`.

pub mod verify;
