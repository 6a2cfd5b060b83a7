//! Operator commands that move masters, carried out on the leader: failover
//! (a controlled switchover), drain, undrain, rebalance, and the history
//! that shows what happened. Each is checked against the state and what
//! only the leader knows (who is down, backlogs) by the conductor's own
//! rules (`leader::switchover`), and refused with a reason before anything
//! reaches the log.

use slotd_proto::v1 as pb;
use slotd_raft_store::state::HISTORY_LEN;
use slotd_raft_store::{ClusterState, Command, NodeId, NodeMode, Rejection};
use tracing::info;

use crate::clock::{self, unix_ms};
use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::wire::LeaderReply;
use slotd_core::leader::switchover::{failover_command, rebalance_plan, stranded, Facts};

/// Switchovers at a time of a rebalance without `--concurrency`.
pub const REBALANCE_CONCURRENCY: u32 = 4;

/// History entries `slotctl history` shows without `--limit`.
pub const HISTORY_DEFAULT: u32 = 50;

impl Cluster {
    /// What the leader knows beside the log, for the conductor's rules.
    pub fn facts(&self, state: &ClusterState) -> Facts {
        Facts::of(&self.core(), state, clock::now(), &self.switchover, unix_ms())
    }

    fn node_named(state: &ClusterState, name: &str) -> Result<NodeId, AgentError> {
        state
            .node_by_name(name)
            .map(|n| n.id)
            .ok_or_else(|| AgentError::Refused(Rejection::UnknownNode(format!("{name:?}"))))
    }

    /// `slotctl failover`: begins a switchover (or, forced, with the master
    /// down, fails the store over at once).
    pub async fn failover(&self, store: String, to: Option<String>, force: bool) -> Result<LeaderReply, AgentError> {
        self.confirm_leader().await?;
        let (command, from) = self.reader.with(|d| {
            let state = &d.state;
            let to = to.as_deref().map(|n| Self::node_named(state, n)).transpose()?;
            let facts = self.facts(state);
            let command = failover_command(state, &facts, &store, to, force).map_err(AgentError::Refused)?;
            let from = state.stores.get(&store).map(|s| s.master).unwrap_or_default();
            // A failover without the two phases, of a master that is down:
            // as the failover engine does, no grant to it may slip in
            // between this decision and the entry (its lease would count
            // on a log from before the failover).
            if matches!(command, Command::Failover { .. }) && !self.core().condemn_if_down(from, clock::now()) {
                return Err(AgentError::Precondition(format!(
                    "store {store:?}: its master {} answered meanwhile; try again",
                    state.node_name(from)
                )));
            }
            Ok::<_, AgentError>((command, from))
        })?;
        let (target, immediate, epoch) = match &command {
            Command::BeginSwitchover { to, epoch, .. } => (*to, false, epoch + 1),
            Command::Failover { moves, .. } => moves.first().map_or((0, true, 0), |m| (m.to, true, m.epoch + 1)),
            _ => (0, false, 0),
        };
        let condemned = std::collections::BTreeSet::from([from]);
        let index = match self.write(command).await {
            Ok(index) => {
                if immediate {
                    self.core().failed_over(&condemned, index);
                }
                index
            }
            Err(e) => {
                if immediate {
                    self.core().pardon(&condemned);
                }
                return Err(e);
            }
        };
        let names = self
            .reader
            .with(|d| (d.state.node_name(from), d.state.node_name(target)));
        info!(store = %store, from = %names.0, to = %names.1, force, immediate, index, "failover ordered");
        Ok(LeaderReply::Failover(pb::FailoverReply {
            index,
            store,
            from: names.0,
            to: names.1,
            epoch,
            forced: force,
            immediate,
        }))
    }

    /// `slotctl drain`, or a stopping agent's own drain (`on_stop`): the
    /// node's mode becomes `draining` and the conductor switches its
    /// masters over. An operator's drain is refused if a master has nowhere
    /// to go; a stop's is not (those stores are fenced when it exits), and
    /// the reply says which.
    pub async fn drain(
        &self,
        node: String,
        concurrency: Option<u32>,
        on_stop: bool,
    ) -> Result<LeaderReply, AgentError> {
        self.confirm_leader().await?;
        let concurrency = concurrency.unwrap_or(self.switchover.drain_concurrency);
        let (id, masters, stranded) = self.reader.with(|d| {
            let state = &d.state;
            let id = Self::node_named(state, &node)?;
            let facts = self.facts(state);
            let stranded: Vec<(String, String)> = stranded(state, &facts, id)
                .into_iter()
                .map(|(s, why)| (s, why.to_string()))
                .collect();
            Ok::<_, AgentError>((id, state.masters_of(id).count() as u32, stranded))
        })?;
        if !on_stop && !stranded.is_empty() {
            let stores = stranded
                .iter()
                .map(|(s, why)| format!("{s} ({why})"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(AgentError::Refused(Rejection::Stranded { node, stores }));
        }
        let index = self
            .write(Command::Drain {
                node: id,
                concurrency,
                on_stop,
            })
            .await?;
        self.engine_wake.notify_one();
        info!(node = %node, masters, concurrency, on_stop, index, "drain ordered");
        Ok(LeaderReply::Drain {
            reply: pb::DrainReply {
                index,
                masters,
                concurrency,
            },
            stranded,
        })
    }

    /// `slotctl undrain`: mode `active`; a drain under way stops beginning
    /// switchovers (those under way finish). `after_stop`: only a stop's
    /// drain ends (a restarted agent must not undo an operator's drain).
    pub async fn undrain(&self, node: String, after_stop: bool) -> Result<LeaderReply, AgentError> {
        self.confirm_leader().await?;
        let id = self.reader.with(|d| Self::node_named(&d.state, &node))?;
        let command = if after_stop {
            Command::EndStopDrain { node: id }
        } else {
            Command::SetNodeMode {
                node: id,
                mode: NodeMode::Active,
            }
        };
        let index = self.write(command).await?;
        info!(node = %node, index, "undrained");
        Ok(LeaderReply::Written { index })
    }

    /// `slotctl rebalance [--dry-run]`: the moves the rebalance makes from
    /// the state now; unless a dry run (or nothing to move), it begins.
    pub async fn rebalance(&self, dry_run: bool, concurrency: Option<u32>) -> Result<LeaderReply, AgentError> {
        self.confirm_leader().await?;
        let concurrency = concurrency.unwrap_or(REBALANCE_CONCURRENCY);
        let moves = self.reader.with(|d| {
            let state = &d.state;
            let facts = self.facts(state);
            rebalance_plan(state, &facts)
                .into_iter()
                .map(|m| pb::PlannedMove {
                    from: state
                        .stores
                        .get(&m.store)
                        .map_or_else(String::new, |s| state.node_name(s.master)),
                    to: state.node_name(m.to),
                    store: m.store,
                })
                .collect::<Vec<_>>()
        });
        let index = if dry_run || moves.is_empty() {
            // Checked all the same: a bad --concurrency is an error here too.
            self.reader
                .with(|d| d.state.check(&Command::Rebalance { concurrency }))
                .map_err(AgentError::Refused)?;
            None
        } else {
            let index = self.write(Command::Rebalance { concurrency }).await?;
            self.engine_wake.notify_one();
            info!(moves = moves.len(), concurrency, index, "rebalance ordered");
            Some(index)
        };
        Ok(LeaderReply::Rebalance(pb::RebalanceReply { index, moves }))
    }

    /// `slotctl history [STORE]`: the last `limit` transitions, oldest first.
    pub async fn history(&self, store: Option<String>, limit: u32) -> Result<LeaderReply, AgentError> {
        self.confirm_leader().await?;
        let limit = match limit {
            0 => HISTORY_DEFAULT as usize,
            n => (n as usize).min(HISTORY_LEN),
        };
        self.reader.with(|d| {
            let state = &d.state;
            if let Some(name) = &store {
                let known = state.stores.contains_key(name) || state.history.iter().any(|t| &t.store == name);
                if !known {
                    return Err(AgentError::Refused(Rejection::UnknownStore(name.clone())));
                }
            }
            let chosen: Vec<_> = state
                .history
                .iter()
                .filter(|t| store.as_ref().is_none_or(|s| &t.store == s))
                .collect();
            let skip = chosen.len().saturating_sub(limit);
            let entries = chosen
                .into_iter()
                .skip(skip)
                .map(|t| pb::HistoryEntry {
                    seq: t.seq,
                    store: t.store.clone(),
                    from: state.node_name(t.from),
                    to: state.node_name(t.to),
                    epoch: t.epoch,
                    reason: t.reason.to_string(),
                    what: t.what.clone(),
                    at_ms: t.at_ms,
                    duration_ms: t.duration_ms,
                })
                .collect();
            Ok(LeaderReply::History(pb::HistoryReply { entries }))
        })
    }
}
