//! Everything written survives closing and reopening the data directory:
//! log, vote, committed id, snapshot and the state rebuilt from them — both
//! through the storage API and through a real one-node openraft `Raft`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Config, EntryPayload, RaftLogReader, RaftSnapshotBuilder, ServerState};
use slotd_raft_store::storage;
use slotd_raft_store::typ::{Entry, LogId, Raft, Vote};
use slotd_raft_store::{Command, NodeMode, Response, TypeConfig};

use common::{planned, req};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(req(command)),
    }
}

/// Appends and waits for openraft's "flushed" callback.
async fn append(log: &mut storage::LogStore, entries: Vec<Entry>) {
    use openraft::storage::RaftLogStorageExt;
    log.blocking_append(entries).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_reopens_identical() {
    let dir = tempfile::tempdir().unwrap();
    let topology = planned(4, 4);
    let first_store = topology.stores[0].name.clone();
    let mut entries = vec![entry(1, 1, Command::Init(topology))];
    for (i, node) in [1u64, 2, 3, 4, 1].iter().enumerate() {
        let mode = if i % 2 == 0 {
            NodeMode::Draining
        } else {
            NodeMode::Active
        };
        entries.push(entry(1, 2 + i as u64, Command::SetNodeMode { node: *node, mode }));
    }
    // An invalid entry in the middle: rejected, but still a log entry.
    entries.push(entry(
        2,
        7,
        Command::RemoveStore {
            store: first_store,
            epoch: 99,
        },
    ));
    entries.push(entry(
        2,
        8,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Draining,
        },
    ));

    let (before_state, before_log, before_snapshot) = {
        let (mut log, mut sm) = storage::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        append(&mut log, entries.clone()).await;
        log.save_committed(Some(log_id(2, 8))).await.unwrap();

        // Apply the first five, snapshot, then apply the rest.
        let responses = sm.apply(entries[..5].to_vec()).await.unwrap();
        assert!(responses.iter().all(Response::is_applied));
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 5)));
        let responses = sm.apply(entries[5..].to_vec()).await.unwrap();
        assert!(matches!(responses[1], Response::Rejected(_)), "{responses:?}");
        log.purge(log_id(1, 3)).await.unwrap();

        let state = sm.reader().snapshot();
        let all = log.try_get_log_entries(0..100).await.unwrap();
        (state, all, snap.meta)
    };
    assert_eq!(before_log.len(), 5, "entries 4..=8 remain after purging 1..=3");

    // Reopen: same log, same vote, same committed, same snapshot.
    let (mut log, mut sm) = storage::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), before_log);
    let snap = sm.get_current_snapshot().await.unwrap().expect("snapshot kept");
    assert_eq!(snap.meta, before_snapshot);

    // The state machine restarts from the snapshot; re-applying the log after
    // it (what openraft does up to `committed`) gives the state we had.
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 5)));
    let rest = log.try_get_log_entries(6..=8).await.unwrap();
    sm.apply(rest).await.unwrap();
    assert_eq!(sm.reader().snapshot(), before_state);
}

/// openraft builds snapshots in a task of their own: a build from an older
/// copy that finishes after a newer snapshot was installed must not replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_snapshot_build_does_not_replace_a_newer_install() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = storage::open(dir.path()).unwrap();
    sm.apply(vec![entry(1, 1, Command::Init(planned(3, 2)))]).await.unwrap();
    let mut old_builder = sm.get_snapshot_builder().await;

    // A leader sends a snapshot at index 50 (with one node drained).
    let mut newer = sm.reader().snapshot();
    newer.state.nodes.get_mut(&3).unwrap().mode = NodeMode::Draining;
    newer.last_applied = Some(log_id(2, 50));
    let meta = openraft::SnapshotMeta {
        last_log_id: newer.last_applied,
        last_membership: newer.last_membership.clone(),
        snapshot_id: "from-leader".into(),
    };
    let bytes = slotd_raft_store::codec::encode(&newer).unwrap();
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();

    old_builder.build_snapshot().await.unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, "from-leader");
    assert_eq!(current.meta.last_log_id, Some(log_id(2, 50)));
    drop((_log, sm, old_builder));
    let (_log, sm) = storage::open(dir.path()).unwrap();
    assert_eq!(sm.reader().snapshot(), newer, "restart loads the newer snapshot");
}

/// A network for a one-node cluster: there is nobody to talk to.
struct NoPeers;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;
    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("single-node test")))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable())
    }
    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

async fn start(dir: &std::path::Path) -> (Raft, storage::StateReader) {
    let config = Config {
        cluster_name: "restart-test".into(),
        election_timeout_min: 150,
        election_timeout_max: 300,
        heartbeat_interval: 50,
        ..Default::default()
    };
    let config = Arc::new(config.validate().unwrap());
    let (log, sm) = storage::open(dir).unwrap();
    let reader = sm.reader();
    let raft = Raft::new(1, config, NoPeers, log, sm).await.unwrap();
    (raft, reader)
}

/// Each life of the node runs on its own runtime, dropped at the end like a
/// process exit: that ends every task openraft spawned and closes the database.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_node_raft_restarts_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = runtime().block_on(first_life(dir.path()));
    runtime().block_on(second_life(dir.path(), before));
}

async fn first_life(dir: &std::path::Path) -> storage::SmData {
    let wait = Some(Duration::from_secs(20));
    let topology = planned(3, 4);
    let stores: Vec<String> = topology.stores.iter().map(|s| s.name.clone()).collect();

    {
        let (raft, reader) = start(dir).await;
        raft.initialize(BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(wait).state(ServerState::Leader, "leader").await.unwrap();
        let r = raft.client_write(req(Command::Init(topology))).await.unwrap();
        assert_eq!(r.data, Response::Applied);
        // Switch a few stores over, fully, then snapshot, then one more write.
        let mut last_index = r.log_id.index;
        for name in &stores[..3] {
            let epoch = reader.with(|d| d.state.stores[name].epoch);
            let to = reader.with(|d| d.state.stores[name].replicas().next().unwrap());
            for command in [
                Command::BeginSwitchover {
                    store: name.clone(),
                    epoch,
                    to,
                    force: false,
                    reason: slotd_raft_store::Reason::Operator,
                },
                Command::AdvanceSwitchover {
                    store: name.clone(),
                    epoch: epoch + 1,
                },
                Command::CompleteSwitchover {
                    store: name.clone(),
                    epoch: epoch + 2,
                },
            ] {
                let r = raft.client_write(req(command)).await.unwrap();
                assert_eq!(r.data, Response::Applied);
                last_index = r.log_id.index;
            }
        }
        raft.trigger().snapshot().await.unwrap();
        raft.wait(wait)
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last_index), "snapshot taken")
            .await
            .unwrap();
        let r = raft
            .client_write(req(Command::SetNodeMode {
                node: 3,
                mode: NodeMode::Draining,
            }))
            .await
            .unwrap();
        assert_eq!(r.data, Response::Applied);
        let state = reader.snapshot();
        raft.shutdown().await.unwrap();
        assert_eq!(state.state.stores[&stores[0]].epoch, 3);
        state
    }
}

async fn second_life(dir: &std::path::Path, before: storage::SmData) {
    let wait = Some(Duration::from_secs(20));
    let (raft, reader) = start(dir).await;
    let last = before.last_applied.map(|l| l.index);
    raft.wait(wait)
        .applied_index(last, "re-applied after restart")
        .await
        .unwrap();
    assert_eq!(reader.snapshot().state, before.state);
    raft.shutdown().await.unwrap();
}
