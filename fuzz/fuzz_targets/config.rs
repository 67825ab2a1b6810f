//! Fuzz target `config`: see `mvbc_fuzz::config`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::config);
