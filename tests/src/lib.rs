//! `slotd-tests` holds what spans several crates: in-process simulated
//! clusters with a fault-injecting network, real-process clusters in network
//! namespaces, and the benchmark harness (`src/bin/`).
//!
//! `sim`: the seeded discrete-event simulation of failover safety driven by
//! `tests/simulation.rs`.

pub mod sim;
