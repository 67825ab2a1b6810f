//! Fuzz target `stratum`: see `mvbc_fuzz::stratum`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::stratum);
