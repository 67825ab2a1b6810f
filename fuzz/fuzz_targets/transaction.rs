//! Fuzz target `transaction`: see `mvbc_fuzz::transaction`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::transaction);
