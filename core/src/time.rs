//! Time as the pure cores see it: a point on one node's clock, passed in as
//! a value. The agent reads its clock (`agent::clock::now`); the simulation
//! passes each node's virtual clock. Either way the decision code never
//! reads a clock itself.

use std::ops::Add;
use std::time::Duration;

/// A point on one node's monotonic clock: the time since an origin fixed by
/// whoever drives the code (the process's first reading, or the simulation's
/// start). Only points of one clock are ever compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(Duration);

impl Mono {
    /// The point `d` after the origin.
    pub const fn from_origin(d: Duration) -> Mono {
        Mono(d)
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The time since the origin.
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;

    fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Mono::from_origin(Duration::from_millis(5));
        let b = a + Duration::from_millis(10);
        assert_eq!(b.since(a), Duration::from_millis(10));
        assert_eq!(a.since(b), Duration::ZERO);
        assert!(b > a);
    }
}
