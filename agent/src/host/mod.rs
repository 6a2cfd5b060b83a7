//! What touches this machine: addresses (netlink and ARP through
//! `slotd-netops`, picked in `any`), the slots' Cyrus instances (`driver`:
//! the trait the reconciler acts through, and the `none` driver; `cyrus`:
//! the real one), the ledger of addresses this node may hold (`ledger`),
//! the socket the agent and its fencer meet on (`fencer_socket`), and
//! whole-file replacement on disk (`durable`). Nothing here knows of
//! Raft or decides anything: the reconciler says what to do.

pub mod any;
pub mod cyrus;
pub mod driver;
pub mod durable;
pub mod fencer_socket;
pub mod ledger;
