//! Fuzz target `block`: see `mvbc_fuzz::block`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::block);
