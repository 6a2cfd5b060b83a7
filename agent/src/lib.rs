//! `slotd-agent`: the daemon `slotd` and the operator CLI `slotctl`.
//!
//! The agent acts on what the Raft log decided; it never decides again by
//! itself. Every decision is `slotd-core`'s (pure, shared with the
//! simulation); what is here are the shells that feed those decisions and
//! carry them out. The rooms, by direction:
//!
//! | room | owns | may use |
//! | --- | --- | --- |
//! | `api/` | what callers reach: the Admin and Peer gRPC services, who may call what (`access`), limits, gRPC statuses | `leader`, `cluster`, `tls` |
//! | `leader/` | the leader's loops (granter, failover engine) and the calls only a leader carries out (`calls`, `operate`, `membership`, `bootstrap`) | `cluster` |
//! | `node/` | this machine's loops: lease keeper, reconciler, announcer, health checks, layer-2 probes | `leader` (its own renewals as leader), `cluster`, `host` |
//! | `cluster/` | this agent's view of the cluster (`Cluster`: Raft, the state, the leader core), the channel to peers, wire messages, the cluster id, the status view | `host`, `tls` |
//! | `host/` | what touches the machine: addresses, the Cyrus driver, the ledger, durable files | — |
//! | `daemon/` | start-up and shutdown, stopping is draining, `slotd fence`, the lock, systemd notify and watchdog, metrics | every room |
//! | `ctl/` | what `slotctl` uses: the Admin client, following, verify, the tables | `tls` |
//! | `tls/` | mutual TLS: credentials, who a certificate names, making certificates | — |
//!
//! On the ground floor, for every room: `config` (the node's `slotd.toml`),
//! `convert` (protobuf ↔ domain), `error` (`AgentError`), `clock` (this
//! process's clock as `Mono` values), `stats` (counters the loops keep and
//! `/metrics` shows), `random`.
//!
//! Where a new thing goes: a rule (when to move a store, when to fence) in
//! `slotd-core`, its trigger in the loop that has the facts (`leader/engine`
//! for the leader, `node/` for this machine); an Admin call in
//! `api/admin` (arguments) and `leader/calls` (carried out on the leader),
//! its wire form in `cluster/wire` and `convert`; a kernel or Cyrus
//! operation in `host/`, called by the reconciler.
//!
//! The tasks of a running agent (`daemon::run` starts them) and what flows
//! between them:
//!
//! ```text
//!  operators ──Admin──▶ api::admin ──calls::call_by──▶ leader (here, or Peer.Leader there)
//!  agents ────Peer───▶ api::peer ──┬─ Raft RPCs ──▶ openraft ──apply──▶ state machine
//!                                  ├─ Heartbeat ──▶ leader::Granter (quorum round) ─┐
//!                                  └─ Fenced ─────▶ leader::calls::fence_request    │
//!                                                                                   ▼
//!  leader::FailoverEngine ◀── engine_wake (acks, notices, orders) ── LeaderCore (lease ledger)
//!     └─ writes Failover / switchover steps ──▶ Raft log
//!
//!  state machine ──applied (watch)──▶ node::reconciler ──▶ host (netlink, ARP, Cyrus)
//!                                        │  ├─ announcer task (follow-up rounds, refresh)
//!                                        │  ├─ health task, l2 task ──▶ health report
//!                                        │  └─ demote and replay tasks
//!  node::lease_keeper ──renewal + report──▶ leader ──grant──▶ LeaseBook ──lease (watch)──▶ reconciler
//!  daemon::watchdog ◀── progress marks (keeper, reconciler, Raft) ──▶ WATCHDOG=1 to systemd
//! ```
//!
//! Shutdown stops them in the order `daemon::run` writes down.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod ctl;
pub mod daemon;
pub mod error;
pub mod host;
pub mod leader;
pub mod node;
pub mod random;
pub mod stats;
pub mod tls;
