//! `slotd-agent`: the daemon `slotd` and the operator CLI `slotctl`.
//!
//! Layout, bottom to top:
//! - ground floor: `wire` (every message agents exchange), `error`
//!   (`AgentError`), `peer_call` (the one typed way to call another agent),
//!   `clock` (time as a value, for the pure cores), `identity` (the cluster
//!   id every Peer call carries), `lock` (the agent lock), `random`, `durable` (whole-file
//!   replacement);
//! - `config`: the node's `slotd.toml`, loaded and validated;
//! - pure decisions: `leader::core` (lease ledger, who is dead),
//!   `leader::switchover` (the switchover phase machine, drains, rebalance), `lease`
//!   (`LeaseBook`: grants in, lease out), `reconcile` (what to do on this
//!   machine), `l2` (layer-2 verdicts);
//! - their shells: `leader::{granter, engine}`, `lease::keeper`,
//!   `reconcile::run`, with `driver` (and `cyrus`: the exec driver) and `addresses` as what they act on;
//! - `cluster` (routing calls to the leader), `membership`, `operate`
//!   (failover, drain, undrain, rebalance, history), `status`, `stop` (stopping is draining);
//! - `network` (openraft over gRPC), `peer`, `admin` (the gRPC services),
//!   with `tls` (mutual TLS: credentials, who a certificate names) and
//!   `access` (who may call what; pure); `certs` makes certificates;
//! - `node`: start-up and shutdown of one agent; `fence`: `slotd fence`;
//! - `client`, `follow`, `verify`: what `slotctl` uses; `metrics`, `notify`, `stats`.
//!
//! The agent acts on what the Raft log decided; it never decides again by
//! itself.

pub mod access;
pub mod addresses;
pub mod admin;
pub mod certs;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cyrus;
pub mod driver;
pub mod durable;
pub mod error;
pub mod fence;
pub mod follow;
pub mod identity;
pub mod leader;
pub mod lease;
pub mod ledger;
pub mod lock;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod node;
pub mod notify;
pub mod operate;
pub mod peer;
pub mod peer_call;
pub mod random;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod stop;
pub mod tls;
pub mod verify;
pub mod watchdog;
pub mod wire;
