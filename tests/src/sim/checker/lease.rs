//! The lease rule: a machine holds a master IP or a master instance only
//! while its lease is valid, up to `clock_skew_margin` later (e.g. while
//! ExecStopPost runs); the largest overshoot is recorded.

use crate::sim::node::Node;

/// What the holders of one store's master IP (or master instance) show of
/// the lease rule at true time `t` (`ends`: each node's lease end).
pub(super) struct Overshoot {
    /// The longest any holder has gone past its lease end, if any has.
    pub max: Option<f64>,
    /// Broken if one holds it more than `margin` past its lease.
    pub verdict: Result<(), String>,
}

pub(super) fn overshoot(
    store: &str,
    what: &str,
    holders: &[usize],
    nodes: &[Node],
    ends: &[f64],
    t: f64,
    margin: f64,
) -> Overshoot {
    let mut max: Option<f64> = None;
    let mut verdict = Ok(());
    for &h in holders {
        let over = (t - ends[h]).min(1e9);
        if over > 0.0 {
            max = Some(max.map_or(over, |m| m.max(over)));
            if over > margin && verdict.is_ok() {
                verdict = Err(format!(
                    "store {store}: node {} {what} {over:.0} ms after its lease ended",
                    nodes[h].id
                ));
            }
        }
    }
    Overshoot { max, verdict }
}
