//! `slotd-proto` will own the `.proto` files of `slotd.v1.Admin` (operators) and
//! `slotd.v1.Peer` (agent to agent: Raft RPCs as versioned binary payloads,
//! heartbeats and lease renewals), and the tonic/prost code generated from them.
//!
//! It holds no logic. Empty until the agent issue fills it.
