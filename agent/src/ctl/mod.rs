//! What `slotctl` uses (the binary is `bin/slotctl.rs`): the Admin client
//! and its TLS arguments (`client`), following a switchover, a drain or a
//! rebalance to its end (`follow`), comparing a store's master and replica
//! over IMAP (`verify`), and the tables it prints (`table`).

pub mod client;
pub mod follow;
pub mod table;
pub mod verify;
