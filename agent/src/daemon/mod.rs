//! The daemon `slotd` around the loops: start-up and shutdown in order
//! (`run`), stopping is draining (`stop`), `slotd fence` (`fence`), the
//! fencer beside the agent (`fencer`, `slotd fencer`), the
//! agent lock both take (`lock`), systemd's notify protocol (`notify`) and
//! watchdog pinger (`watchdog`; its rule is `slotd_core::node::watchdog`),
//! and the Prometheus endpoint (`metrics`).

pub mod fence;
pub mod fencer;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod stop;
pub mod watchdog;

pub use run::{node_credentials, run, DaemonError};
