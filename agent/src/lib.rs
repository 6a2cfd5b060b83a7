//! `slotd-agent` will own the daemon `slotd` and the operator CLI `slotctl`:
//! config, the Raft node over tonic, the admin API, the failure detector and
//! failover engine on the leader, the reconciler on every node, the Cyrus
//! driver, lease keeping, metrics and systemd notification.
//!
//! It acts on what the Raft log decided; it never decides again by itself.
