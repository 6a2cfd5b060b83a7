//! The fault schedule: drawn at the start of a seed, injected at its times
//! (crashes, power losses, hangs, stalls, partitions, loss bursts, broken
//! switchover attempts), partitions healed.

use super::*;

impl World {
    pub(super) fn run_events(&mut self) {
        while let Some((&(at, _), _)) = self.events.first_key_value() {
            if at > self.now {
                break;
            }
            let Some((_, ev)) = self.events.pop_first() else { break };
            match ev {
                Event::Heal { gen } => {
                    if gen == self.partition_gen {
                        self.net.heal();
                        self.log("partition healed".into());
                    }
                }
                Event::Fault(f) => self.inject(f),
                Event::Op(op) => self.operate(op),
            }
        }
    }

    pub(super) fn partition(&mut self, component: Vec<u32>, dur: u64, what: String) {
        self.net.component = component;
        self.partition_gen += 1;
        self.events.insert(
            (self.now + dur, u64::MAX - self.partition_gen),
            Event::Heal {
                gen: self.partition_gen,
            },
        );
        self.log(format!("partition for {dur} ms: {what}"));
    }

    pub(super) fn inject(&mut self, f: Fault) {
        let n = self.nodes.len();
        match &f {
            Fault::Crash { node, power, down } => {
                if !self.nodes[*node].up {
                    return;
                }
                self.crash(*node, *power, (*down).max(100));
                let id = self.nodes[*node].id;
                self.log(format!("node {id}: {}, down {down} ms", f.kind()));
            }
            Fault::LeaderCrash { power, down } => {
                let Some(l) = self.leader() else { return };
                self.crash(l, *power, (*down).max(100));
                let id = self.nodes[l].id;
                self.log(format!("node {id} (the leader): {}, down {down} ms", f.kind()));
            }
            Fault::Freeze { node, dur } => {
                if !self.nodes[*node].running() {
                    return;
                }
                self.nodes[*node].frozen_until = Some(self.now + dur);
                let id = self.nodes[*node].id;
                self.log(format!("node {id}: agent hangs for {dur} ms"));
            }
            Fault::Stall { node, dur } => {
                let node_ref = &mut self.nodes[*node];
                if !node_ref.reconciling() {
                    return;
                }
                let local = node_ref.clock.local(self.now);
                node_ref.stalled = Some((self.now + dur, local));
                let id = node_ref.id;
                self.log(format!("node {id}: reconciler stuck for {dur} ms"));
            }
            Fault::LeaderAlone { dur } => {
                let l = self.leader().unwrap_or(0);
                let comp = (0..n).map(|i| u32::from(i == l)).collect();
                self.partition(comp, *dur, format!("leader node {} alone", l + 1));
            }
            Fault::Minority { dur } => {
                let size = 1 + self.rng.index((n - 1) / 2);
                let mut comp = vec![0; n];
                for _ in 0..size {
                    let i = self.rng.index(n);
                    comp[i] = 1;
                }
                let what = format!(
                    "cut off {:?}",
                    (0..n).filter(|&i| comp[i] == 1).map(|i| i + 1).collect::<Vec<_>>()
                );
                self.partition(comp, *dur, what);
            }
            Fault::Split { dur } => {
                let comp: Vec<u32> = (0..n).map(|_| self.rng.index(3) as u32).collect();
                let what = format!("components {comp:?}");
                self.partition(comp, *dur, what);
            }
            Fault::LossBurst { dur, p } => {
                self.net.burst_until = self.now + dur;
                self.net.burst_loss = *p;
                self.log(format!("loss {p:.2} for {dur} ms"));
            }
            Fault::WedgedFlush => {
                self.armed_flush = true;
                self.log("the next switchover attempt's flush will wedge".into());
            }
            Fault::FailedStart => {
                self.armed_start = true;
                self.log("the next promotion's Cyrus start will fail".into());
            }
        }
        *self.report.faults.entry(f.kind()).or_default() += 1;
    }

    /// The agent process is gone: a power loss clears the machine at once;
    /// an agent exit has `slotd fence` clear it shortly after (systemd's
    /// ExecStopPost) and tell the leader; the agent starts again after
    /// `down`, and never before the fence has exited.
    pub(super) fn crash(&mut self, i: usize, power: bool, down: u64) {
        let fence_after = self.rng.range(5, 50);
        let node = &mut self.nodes[i];
        node.up = false;
        node.frozen_until = None;
        node.stalled = None;
        node.pass = None;
        node.jobs.clear();
        node.wedge_ends = f64::NEG_INFINITY;
        node.raft.role = Role::Follower;
        node.restart_at = Some(self.now + down);
        if power {
            node.machine.clear();
            node.fence = None;
        } else {
            // The fence starts once the process is gone: modelled as a run
            // that clears the machine when it begins.
            self.fence_runs += 1;
            let local = node.clock.local(self.now + fence_after);
            node.fence = Some(FenceRun {
                run: self.fence_runs,
                begins: local,
                deadline: local + self.t.fence_telling,
                next_round: local,
                in_doubt_until: None,
                presenting: None,
                accepted: false,
            });
        }
    }

    pub(super) fn schedule_faults(&mut self) {
        let n = self.nodes.len();
        let count = self.rng.range(3, 8);
        for k in 0..count {
            let at = self.rng.range(FAULTS_FROM, FAULTS_UNTIL);
            let room = HEALED_BY - at;
            let dur = self.rng.range(300, 6000).min(room);
            let kinds = if self.variant.stalls { 10 } else { 8 };
            let fault = match self.rng.index(kinds) {
                0 | 1 => Fault::Crash {
                    node: self.rng.index(n),
                    power: self.rng.chance(0.3),
                    down: dur,
                },
                2 => Fault::LeaderCrash {
                    power: self.rng.chance(0.4),
                    down: dur,
                },
                3 => Fault::LeaderAlone { dur },
                4 => Fault::Minority { dur },
                5 => Fault::Split { dur },
                6 => Fault::LossBurst {
                    dur,
                    p: 0.3 + 0.5 * self.rng.unit(),
                },
                7 => Fault::LeaderAlone { dur: dur.min(3000) },
                8 => Fault::Freeze {
                    node: self.rng.index(n),
                    dur: self.rng.range(100, 3000),
                },
                _ => Fault::Stall {
                    node: self.rng.index(n),
                    dur: self.rng.range(100, 10_000).min(room),
                },
            };
            self.events.insert((at, k), Event::Fault(fault));
        }
    }
}
