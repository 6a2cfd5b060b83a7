//! When an address a removed store used may be given out again.
//!
//! `store remove` frees a store's master and replica IP in the log, but a
//! master cut off from the cluster does not hear it: it keeps the address,
//! and its Cyrus, until its lease runs out. Given out again at once, the
//! address would be bound by the new store's master beside it. So the
//! leader gives a freed address out again only `lease + margin` after the
//! removal was applied here (DESIGN rule 3, as for a failover): any lease a
//! node holds without having applied the removal was asked for before it
//! was committed (a grant counts only once the log is applied up to its
//! read index), so it has run out by then.
//!
//! The log says which stores were removed, not when, so this is leader
//! memory: addresses that vanished between two looks at the state, with
//! the time of the later look (never earlier than the removal). When it
//! cannot know (its first look, in a cluster that has removed stores
//! before; a store added and removed between two looks) every address
//! waits `lease + margin` from that look.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use slotd_raft_store::{ClusterState, Rejection, StoreSpec};

use crate::time::Mono;

/// What the leader has seen of the addresses stores use.
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    /// The addresses in use at the last look, by store; `None` before the
    /// first look of a leadership.
    known: Option<BTreeMap<IpAddr, String>>,
    /// Addresses that vanished, with the store that used them and the look
    /// that found them gone.
    freed: BTreeMap<IpAddr, (String, Mono)>,
    /// The stores removed as of the last look (`retired_epochs`).
    retired: BTreeMap<String, u64>,
    /// A look that found a store removed whose addresses it never saw (the
    /// first look of this leadership, in a cluster that removed stores
    /// before; a store added and removed between two looks): which
    /// addresses were freed is unknown, so every address waits.
    blind_since: Option<Mono>,
}

fn in_use(state: &ClusterState) -> BTreeMap<IpAddr, String> {
    let mut ips = BTreeMap::new();
    for s in state.stores.values() {
        ips.insert(s.master_ip.addr, s.name.clone());
        ips.insert(s.replica_ip.addr, s.name.clone());
    }
    ips
}

impl Addresses {
    /// Forgets everything: a new leadership looks afresh.
    pub fn forget(&mut self) {
        *self = Addresses::default();
    }

    /// Looks at `state` at `now`; `cooling` is how long a freed address
    /// stays out of use (`lease + margin`).
    pub fn see(&mut self, state: &ClusterState, now: Mono, cooling: Duration) {
        let current = in_use(state);
        let seen: BTreeSet<&String> = self.known.iter().flat_map(|k| k.values()).collect();
        let unseen_removal = state
            .retired_epochs
            .iter()
            .any(|(store, epoch)| self.retired.get(store) != Some(epoch) && !seen.contains(store));
        if unseen_removal {
            self.blind_since = Some(now);
        }
        if let Some(known) = &self.known {
            for (ip, store) in known {
                if current.get(ip) != Some(store) {
                    self.freed.insert(*ip, (store.clone(), now));
                }
            }
        }
        self.retired = state.retired_epochs.clone();
        self.freed.retain(|_, (_, at)| now.since(*at) < cooling);
        if self.blind_since.is_some_and(|at| now.since(at) >= cooling) {
            self.blind_since = None;
        }
        self.known = Some(current);
    }

    /// Whether `spec`'s addresses may be given out at `now` (look at the
    /// state first). An address in use is refused here too, not only when
    /// the entry is applied: otherwise a removal written before the entry
    /// would free it with no wait.
    pub fn may_use(
        &self,
        state: &ClusterState,
        spec: &StoreSpec,
        now: Mono,
        cooling: Duration,
    ) -> Result<(), Rejection> {
        for ip in [spec.master_ip, spec.replica_ip] {
            if let Some(other) = state
                .stores
                .values()
                .find(|s| s.master_ip.addr == ip.addr || s.replica_ip.addr == ip.addr)
            {
                return Err(Rejection::DuplicateIp {
                    store: spec.name.clone(),
                    ip: ip.to_string(),
                    other: other.name.clone(),
                });
            }
            let cooling_since = match (self.freed.get(&ip.addr), self.blind_since) {
                (Some((store, at)), _) => Some((format!("by removing store {store:?}"), *at)),
                (None, Some(at)) => Some(("perhaps, by a removal this leader did not see".to_owned(), at)),
                (None, None) if self.known.is_none() => Some(("before this leader looked".to_owned(), now)),
                (None, None) => None,
            };
            if let Some((by, at)) = cooling_since {
                let left = cooling.saturating_sub(now.since(at));
                if !left.is_zero() {
                    return Err(Rejection::AddressCooling {
                        store: spec.name.clone(),
                        ip: ip.to_string(),
                        by,
                        // Rounded up: "0.0 s" would invite a retry too soon.
                        free_in: format!("{:.1} s", left.as_millis().div_ceil(100) as f64 / 10.0),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotd_raft_store::testkit::{initialised, planned, req, store};
    use slotd_raft_store::Command;

    const COOLING: Duration = Duration::from_millis(2500);

    fn at(ms: u64) -> Mono {
        Mono::from_origin(Duration::from_millis(ms))
    }

    fn remove(state: &mut ClusterState, name: &str) {
        let epoch = state.stores[name].epoch;
        let r = state.apply(&req(Command::RemoveStore {
            store: name.into(),
            epoch,
        }));
        assert!(r.is_applied(), "{r:?}");
    }

    /// A store on `of`'s slots and addresses.
    fn reusing(state: &ClusterState, of: &str, name: &str) -> StoreSpec {
        let old = &state.stores[of];
        StoreSpec {
            name: name.into(),
            master_ip: old.master_ip,
            replica_ip: old.replica_ip,
            slots: old.slots.clone(),
        }
    }

    #[test]
    fn a_removed_stores_address_waits_lease_and_margin_from_the_look_that_saw_it_go() {
        let mut state = initialised(planned(3, 2));
        let mut a = Addresses::default();
        a.see(&state, at(0), COOLING);
        let spec = reusing(&state, "st0001", "new");
        let err = a.may_use(&state, &spec, at(10), COOLING).unwrap_err();
        assert!(matches!(err, Rejection::DuplicateIp { .. }), "{err}");

        remove(&mut state, "st0001");
        // Not looked yet: the look in `may_use`'s caller comes first; here,
        // the look at 1000 finds it gone.
        a.see(&state, at(1000), COOLING);
        let err = a.may_use(&state, &spec, at(1000), COOLING).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("by removing store \"st0001\""), "{text}");
        assert!(text.contains("free again in 2.5 s"), "{text}");
        let err = a.may_use(&state, &spec, at(3499), COOLING).unwrap_err();
        assert!(err.to_string().contains("in 0.1 s"), "{err}");
        a.see(&state, at(3500), COOLING);
        assert_eq!(a.may_use(&state, &spec, at(3500), COOLING), Ok(()));
    }

    #[test]
    fn a_new_leader_of_a_cluster_that_removed_stores_waits_for_every_address() {
        let mut state = initialised(planned(3, 2));
        remove(&mut state, "st0001");
        let fresh = store("fresh", 200, &[(1, "s01"), (2, "s01")]);
        let mut a = Addresses::default();
        // Before any look: nothing is known.
        assert!(matches!(
            a.may_use(&state, &fresh, at(0), COOLING),
            Err(Rejection::AddressCooling { .. })
        ));
        a.see(&state, at(100), COOLING);
        let err = a.may_use(&state, &fresh, at(200), COOLING).unwrap_err();
        assert!(
            err.to_string().contains("by a removal this leader did not see"),
            "{err}"
        );
        a.see(&state, at(2600), COOLING);
        assert_eq!(a.may_use(&state, &fresh, at(2600), COOLING), Ok(()));

        // A cluster that never removed a store has nothing to wait for.
        let state = initialised(planned(3, 2));
        let mut b = Addresses::default();
        b.see(&state, at(0), COOLING);
        assert_eq!(b.may_use(&state, &fresh, at(0), COOLING), Ok(()));
    }

    #[test]
    fn a_store_removed_and_added_again_between_two_looks_still_freed_its_address() {
        let mut state = initialised(planned(3, 2));
        let mut a = Addresses::default();
        a.see(&state, at(0), COOLING);
        let again = reusing(&state, "st0001", "again");
        remove(&mut state, "st0001");
        // Added by a leader before this one, say: the address belongs to
        // another store now; when it goes too, it cools again.
        let r = state.apply(&req(Command::AddStore(again.clone())));
        assert!(r.is_applied(), "{r:?}");
        a.see(&state, at(100), COOLING);
        remove(&mut state, "again");
        a.see(&state, at(200), COOLING);
        let err = a
            .may_use(&state, &reusing_spec(&again, "third"), at(300), COOLING)
            .unwrap_err();
        assert!(err.to_string().contains("by removing store \"again\""), "{err}");
    }

    #[test]
    fn a_store_added_and_removed_between_two_looks_makes_every_address_wait() {
        let mut state = initialised(planned(3, 2));
        let mut a = Addresses::default();
        a.see(&state, at(0), COOLING);
        let moved = reusing(&state, "st0001", "moved");
        remove(&mut state, "st0001");
        let r = state.apply(&req(Command::AddStore(moved.clone())));
        assert!(r.is_applied(), "{r:?}");
        remove(&mut state, "moved");
        a.see(&state, at(100), COOLING);
        // st0001's addresses were seen going; `moved` was never seen, so
        // an address it may have had waits too.
        let fresh = store("fresh", 200, &[(1, "s01"), (2, "s01")]);
        let err = a.may_use(&state, &fresh, at(200), COOLING).unwrap_err();
        assert!(
            err.to_string().contains("by a removal this leader did not see"),
            "{err}"
        );
        a.see(&state, at(2600), COOLING);
        assert_eq!(a.may_use(&state, &fresh, at(2600), COOLING), Ok(()));
    }

    fn reusing_spec(old: &StoreSpec, name: &str) -> StoreSpec {
        let mut spec = old.clone();
        spec.name = name.into();
        spec
    }
}
