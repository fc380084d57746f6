//! SQL-facing functions in schema `torii`.

pub mod maintenance;
pub mod verify;
