//! Benchmark of the state machine at scale: apply throughput of `ClusterState`
//! and the size and build time of a snapshot, for 200 nodes × 40 slots (4,000
//! stores). Run with `cargo run --release -p slotd-tests --bin bench-state`.
//!
//! Figures are printed, never asserted: speed belongs here, not in tests.

use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::{codec, storage, ClusterState, Command, Move, Reason, Request};

const NODES: usize = 200;
const SLOTS: usize = 40;
const ROUNDS: usize = 5;

fn req(command: Command) -> Request {
    Request {
        at_ms: 1_700_000_000_000,
        command,
    }
}

/// Switchover commands (begin, advance, complete) for every store, then a
/// failover entry per node's masters: the mix the leader really writes.
fn workload(state: &ClusterState) -> Vec<Request> {
    let mut out = Vec::new();
    let mut sim = state.clone();
    for st in state.stores.values() {
        let to = st.replicas().next().unwrap_or(st.master);
        for command in [
            Command::BeginSwitchover {
                store: st.name.clone(),
                epoch: st.epoch,
                to,
                force: false,
                reason: Reason::Rebalance,
            },
            Command::AdvanceSwitchover {
                store: st.name.clone(),
                epoch: st.epoch + 1,
            },
            Command::CompleteSwitchover {
                store: st.name.clone(),
                epoch: st.epoch + 2,
            },
        ] {
            let r = req(command);
            sim.apply(&r);
            out.push(r);
        }
    }
    for node in sim.nodes.keys().copied().collect::<Vec<_>>() {
        let moves: Vec<Move> = sim
            .masters_of(node)
            .map(|st| Move {
                store: st.name.clone(),
                epoch: st.epoch,
                to: st.replicas().next().unwrap_or(st.master),
            })
            .collect();
        if moves.is_empty() {
            continue;
        }
        let r = req(Command::Failover {
            reason: Reason::Failure,
            moves,
        });
        sim.apply(&r);
        out.push(r);
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topology = plan(NODES, SLOTS)?.to_topology(&Naming::default());
    let mut initial = ClusterState::default();
    let t = Instant::now();
    initial.apply(&req(Command::Init(topology)));
    let init_time = t.elapsed();
    println!(
        "cluster: {NODES} nodes x {SLOTS} slots = {} stores; Init applied in {init_time:?}",
        initial.stores.len()
    );

    let work = workload(&initial);
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let mut state = initial.clone();
        let t = Instant::now();
        let mut rejected = 0;
        for r in &work {
            if !state.apply(r).is_applied() {
                rejected += 1;
            }
        }
        let took = t.elapsed();
        assert_eq!(rejected, 0, "benchmark workload must be valid");
        rates.push(work.len() as f64 / took.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "apply: {} commands/round, {ROUNDS} rounds: median {:.0} commands/s (min {:.0}, max {:.0})",
        work.len(),
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );

    // Failover entries alone: how many stores one entry moves per second.
    let mut state = initial.clone();
    let mut failover_time = Duration::ZERO;
    let mut moved = 0usize;
    for r in &work {
        if let Command::Failover { moves, .. } = &r.command {
            let t = Instant::now();
            let applied = state.apply(r).is_applied();
            failover_time += t.elapsed();
            assert!(applied, "benchmark failover must be valid");
            moved += moves.len();
        } else {
            state.apply(r);
        }
    }
    println!(
        "failover entries: {moved} stores moved in {failover_time:?}: {:.0} stores/s applied",
        moved as f64 / failover_time.as_secs_f64()
    );

    // Snapshot: encoding alone, then the real builder (encode + redb write + fsync).
    let mut enc = Vec::new();
    let mut size = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let bytes = codec::encode(&storage::SmData {
            state: initial.clone(),
            ..Default::default()
        })?;
        enc.push(t.elapsed());
        size = bytes.len();
    }
    println!(
        "snapshot: {size} bytes ({:.1} KiB); encode median {:?}",
        size as f64 / 1024.0,
        median(enc)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let (log, mut sm) = storage::open(dir.path())?;
        let entry = openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(req(Command::Init(plan(NODES, SLOTS)?.to_topology(&Naming::default())))),
        };
        sm.apply(vec![entry]).await?;
        let mut builds = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
            builds.push(t.elapsed());
            size = snap.snapshot.get_ref().len();
        }
        println!(
            "snapshot build (copy + encode + durable write): median {:?}, {size} bytes",
            median(builds)
        );
        let t = Instant::now();
        drop((log, sm));
        let (_log, sm) = storage::open(dir.path())?;
        let stores = sm.reader().with(|d| d.state.stores.len());
        println!("reopen + decode snapshot: {:?} ({stores} stores)", t.elapsed());
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
