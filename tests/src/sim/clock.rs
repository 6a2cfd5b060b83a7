//! Local clocks. True (global) time is what the checker uses; every node
//! only ever reads its own clock, which runs at `rate` (1 ± ε) and starts
//! at an arbitrary offset — like a monotonic clock, only differences on the
//! same clock mean anything. The agent's pure cores get these readings as
//! `Mono` values.

use std::time::Duration;

use slotd_core::time::Mono;

/// A node's monotonic clock: `local = offset + rate × true`, in ms.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub offset: f64,
    pub rate: f64,
}

impl Clock {
    /// The clock's reading at true time `t` (ms).
    pub fn local(&self, t: u64) -> f64 {
        self.offset + self.rate * t as f64
    }

    /// The true time at which this clock reads `local`.
    pub fn true_at(&self, local: f64) -> f64 {
        (local - self.offset) / self.rate
    }

    /// The clock's reading at true time `t`, as the agent's code takes it.
    pub fn mono(&self, t: u64) -> Mono {
        to_mono(self.local(t))
    }

    /// The true time at which this clock reads `m`.
    pub fn true_of(&self, m: Mono) -> f64 {
        self.true_at(m.as_duration().as_secs_f64() * 1000.0)
    }
}

/// A local reading in ms as a `Mono`.
pub fn to_mono(local_ms: f64) -> Mono {
    Mono::from_origin(Duration::from_secs_f64(local_ms.max(0.0) / 1000.0))
}
