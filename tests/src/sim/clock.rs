//! Local clocks. True (global) time is what the checker uses; every node
//! only ever reads its own clock, which runs at `rate` (1 ± ε) and starts
//! at an arbitrary offset — like a monotonic clock, only differences on the
//! same clock mean anything.

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
}
