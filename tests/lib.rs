//! The workspace's tests across crates and programs, one file a subject (see `docs/TESTING.md`);
//! what they share is `mvbc-testkit`. This library is empty: the package exists for its tests.
