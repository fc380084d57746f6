use pgrx::prelude::*;
::pgrx::pg_module_magic!();

mod hints;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    hints::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
