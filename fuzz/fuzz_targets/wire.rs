//! Fuzz target `wire`: see `mvbc_fuzz::wire`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::wire);
