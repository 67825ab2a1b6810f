//! Fuzz target `store`: see `mvbc_fuzz::store`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::store);
