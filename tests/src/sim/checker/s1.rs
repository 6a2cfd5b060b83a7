//! S1: for every store, at most one machine holds its master IP and at most
//! one runs its instance as master — except within `clock_skew_margin` of
//! the other holder's lease expiry (DESIGN); every use of that allowance is
//! counted (the model says it should never be needed).

use crate::sim::node::Node;

/// Whether the holders of one store's master IP (or master instance) at
/// true time `t` share it within the allowance (`Ok(true)`: counted), hold
/// it alone (`Ok(false)`), or break S1.
pub(super) fn shared(
    store: &str,
    what: &str,
    holders: &[usize],
    nodes: &[Node],
    ends: &[f64],
    t: f64,
    margin: f64,
) -> Result<bool, String> {
    if holders.len() < 2 {
        return Ok(false);
    }
    // Allowed only while the earliest-expiring holder is within the
    // margin of its lease end.
    let earliest = holders.iter().map(|&h| ends[h]).fold(f64::INFINITY, f64::min);
    if t >= earliest && t <= earliest + margin {
        Ok(true)
    } else {
        let ids: Vec<u64> = holders.iter().map(|&h| nodes[h].id).collect();
        Err(format!("S1 broken: store {store}: nodes {ids:?} all {what}"))
    }
}
