//! Leases, node side (the rules: `slotd_core::node::lease`): the keeper.

pub mod keeper;

pub use keeper::spawn_keeper;
