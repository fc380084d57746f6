//! SQL-facing functions in schema `torii`.

pub mod maintenance;
pub mod progress;
pub mod verify;

// Everyone may use what schema torii offers: the maintenance functions check privileges on
// the relation they are given, and planning reads stored hints as whatever role plans the
// query (hints are not secret, as in pg_hint_plan; changing them needs the table's owner).
pgrx::extension_sql!(
    r#"
GRANT USAGE ON SCHEMA torii TO PUBLIC;
GRANT SELECT ON torii.hint_store TO PUBLIC;
GRANT SELECT ON torii.hints TO PUBLIC;
"#,
    name = "public_grants",
    finalize,
);
