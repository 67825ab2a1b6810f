//! Fuzz target `key_file`: see `mvbc_fuzz::key_file`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::key_file);
