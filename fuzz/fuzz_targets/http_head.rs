//! Fuzz target `http_head`: see `mvbc_fuzz::http_head`.
#![cfg_attr(fuzzing, no_main)]
mvbc_fuzz::target!(mvbc_fuzz::http_head);
