//! `slotd-agent`: the daemon `slotd` and the operator CLI `slotctl`.
//!
//! Layout:
//! - `config`: the node's `slotd.toml`, loaded and validated.
//! - `node`: start-up and shutdown of one agent (Raft, servers, tasks).
//! - `network`: openraft's network over gRPC (`slotd.v1.Peer`).
//! - `peer`, `admin`: the gRPC services.
//! - `client`: what `slotctl` uses to talk to a cluster.
//! - `metrics`: Prometheus text exposition and its HTTP endpoint.
//! - `notify`: systemd `sd_notify` (READY, STOPPING, WATCHDOG).
//!
//! The agent acts on what the Raft log decided; it never decides again by
//! itself.

pub mod addresses;
pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod driver;
pub mod failover;
pub mod fence;
pub mod l2;
pub mod lease;
pub mod metrics;
pub mod network;
pub mod node;
pub mod notify;
pub mod peer;
pub mod reconcile;
pub mod stats;
pub mod status;
