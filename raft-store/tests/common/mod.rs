//! Builders shared by this crate's tests: the crate's own `testkit`.
#![allow(unused_imports)]

pub use slotd_raft_store::testkit::*;
