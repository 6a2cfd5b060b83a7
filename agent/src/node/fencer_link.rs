//! The agent's side of the fencer (`daemon::fencer`; the rule:
//! `slotd_core::node::fencer`): tells it the lease the keeper publishes and
//! this node's masters whenever either changes, and publishes for the rest
//! of the agent the lease as far as the fencer has acknowledged it. So the
//! agent never acts as master past the point where the fencer would fence
//! for it: whatever happens to the agent then (stuck in the kernel, frozen,
//! killed and unable to exit), its addresses and its masters go on time.
//!
//! A shorter lease (expired, voided) counts at once, before the fencer has
//! heard of it. With `fencer = "automatic"` and no fencer to reach, the
//! keeper's lease counts as it is (the agent warns); with `"required"`,
//! none does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use slotd_core::node::fencer::{parse_ack, Master, Told};
use slotd_core::node::lease::LeaseState;
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::NodeId;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::{self, Mono};
use crate::config::FencerMode;
use crate::host::fencer_socket::connect;

/// How long the fencer may take to acknowledge (a local socket: far less).
const ACK_TIMEOUT: Duration = Duration::from_millis(100);
/// How often to try again to reach a fencer that is not there.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// This node's masters in the log, with their master IPs.
pub fn masters(reader: &StateReader, me: NodeId) -> Vec<Master> {
    reader.with(|d| {
        d.state
            .masters_of(me)
            .filter_map(|st| {
                let slot = st.slots.iter().find(|s| s.node == me)?;
                Some(Master {
                    slot: slot.slot.clone(),
                    addr: st.master_ip.addr,
                    len: st.master_ip.len,
                })
            })
            .collect()
    })
}

/// The lease as far as `acked` (a CLOCK_BOOTTIME point) allows.
fn bounded(lease: LeaseState, acked: Option<Duration>) -> LeaseState {
    let acked = acked.map(|boot| {
        let (now, boot_now) = (clock::now(), clock::boot_time());
        if boot >= boot_now {
            now + (boot - boot_now)
        } else {
            Mono::from_origin(now.as_duration().saturating_sub(boot_now - boot))
        }
    });
    LeaseState {
        valid_until: match (lease.valid_until, acked) {
            (Some(l), Some(a)) => Some(l.min(a)),
            _ => None,
        },
    }
}

/// What to tell the fencer of `lease` now.
fn told(lease: LeaseState, masters: Vec<Master>) -> Told {
    let now = clock::now();
    Told {
        deadline: lease.valid_at(now).then(|| clock::boot_time() + lease.remaining(now)),
        masters,
    }
}

/// The lease the agent acts on: `keeper`'s, bounded by the fencer (per
/// `mode`). With `off`, `keeper` itself.
pub fn spawn(
    mode: FencerMode,
    socket: PathBuf,
    keeper: watch::Receiver<LeaseState>,
    reader: StateReader,
    me: NodeId,
    stop: watch::Receiver<bool>,
) -> watch::Receiver<LeaseState> {
    if mode == FencerMode::Off {
        return keeper;
    }
    let (tx, rx) = watch::channel(LeaseState::default());
    tokio::spawn(run(mode, socket, keeper, reader, me, Arc::new(tx), stop));
    rx
}

async fn run(
    mode: FencerMode,
    socket: PathBuf,
    mut keeper: watch::Receiver<LeaseState>,
    reader: StateReader,
    me: NodeId,
    tx: Arc<watch::Sender<LeaseState>>,
    mut stop: watch::Receiver<bool>,
) {
    let publish = |state: LeaseState| {
        tx.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    };
    let mut applied = reader.subscribe();
    let mut warned = false;
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = connect(&socket) => c,
        };
        let stream = match stream {
            Ok(s) => {
                info!(socket = %socket.display(), "the fencer hears this node's lease");
                warned = false;
                s
            }
            Err(e) => {
                if !warned {
                    match mode {
                        FencerMode::Required => warn!(
                            socket = %socket.display(), error = %e,
                            "no fencer (fencer = \"required\"): no master role until one answers"
                        ),
                        _ => warn!(
                            socket = %socket.display(), error = %e,
                            "no fencer: an agent stuck in the kernel would keep its addresses past its lease \
                             (start slotd-fencer.service)"
                        ),
                    }
                    warned = true;
                }
                // Meanwhile: the keeper's lease as it is, or none.
                let until = tokio::time::Instant::now() + RECONNECT_EVERY;
                loop {
                    let lease = *keeper.borrow_and_update();
                    publish(if mode == FencerMode::Required {
                        LeaseState::default()
                    } else {
                        lease
                    });
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep_until(until) => break,
                        changed = keeper.changed() => if changed.is_err() { return },
                    }
                }
                continue;
            }
        };
        // Connected: until the first acknowledgement nothing counts past
        // what is true anyway (a new fencer may know no deadline).
        if !speak(stream, &mut keeper, &mut applied, &reader, me, &publish, &mut stop).await {
            return;
        }
        warn!("lost the fencer: trying again");
    }
}

/// Tells the fencer every change, publishing what it acknowledged, until
/// the connection fails (false: stop).
async fn speak(
    stream: UnixStream,
    keeper: &mut watch::Receiver<LeaseState>,
    applied: &mut watch::Receiver<Option<openraft::LogId<NodeId>>>,
    reader: &StateReader,
    me: NodeId,
    publish: &impl Fn(LeaseState),
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let (read, mut write) = stream.into_split();
    let mut acks = BufReader::new(read).lines();
    let mut acked: Option<Duration> = None;
    let mut last: Option<Told> = None;
    loop {
        let lease = *keeper.borrow_and_update();
        // Shorter at once; longer once the fencer holds it.
        publish(bounded(lease, acked));
        let now = told(lease, masters(reader, me));
        if last
            .as_ref()
            .is_none_or(|l| l.deadline != now.deadline || l.masters != now.masters)
        {
            let line = format!("{}\n", now.line());
            let sent = tokio::time::timeout(ACK_TIMEOUT, write.write_all(line.as_bytes())).await;
            let answer = match sent {
                Ok(Ok(())) => tokio::time::timeout(ACK_TIMEOUT, acks.next_line()).await,
                _ => return true,
            };
            match answer {
                Ok(Ok(Some(a))) => match parse_ack(&a) {
                    Some(d) => acked = d,
                    None => return true,
                },
                _ => return true,
            }
            last = Some(now);
            publish(bounded(*keeper.borrow(), acked));
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            changed = keeper.changed() => if changed.is_err() { return false },
            changed = applied.changed() => if changed.is_err() { return false },
        }
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::storage::{in_memory, SmData};

    use super::*;
    use crate::config::Config;

    /// A keeper's lease 2 s from now.
    fn granted() -> LeaseState {
        LeaseState {
            valid_until: Some(clock::now() + Duration::from_secs(2)),
        }
    }

    fn config(dir: &std::path::Path) -> Config {
        let mut c = Config::builder(1, "imap1", "127.0.0.1:1".parse().unwrap(), dir.join("data"));
        c.runtime_dir = dir.join("run");
        c
    }

    async fn until(rx: &mut watch::Receiver<LeaseState>, what: &str, f: impl Fn(&LeaseState) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| f(s)))
            .await
            .map(|r| r.map(drop));
        assert!(
            matches!(waited, Ok(Ok(()))),
            "timed out waiting for {what}: {:?}",
            *rx.borrow()
        );
    }

    #[tokio::test]
    async fn the_lease_counts_as_far_as_the_fencer_acknowledged_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (reader, _state) = in_memory(SmData::default());
        let (stop_tx, stop) = watch::channel(false);
        let (keeper_tx, keeper) = watch::channel(LeaseState::default());
        let socket = crate::host::fencer_socket::socket_path(&config);
        // Required, and no fencer yet: no lease counts, granted or not.
        let mut lease = spawn(FencerMode::Required, socket.clone(), keeper, reader, 1, stop);
        keeper_tx.send_replace(granted());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            *lease.borrow(),
            LeaseState::default(),
            "a lease counted without a fencer"
        );
        // The fencer comes: the lease counts, as the keeper has it (the
        // acknowledged point is the same instant, read back through boot time).
        let (fencer_stop_tx, fencer_stop) = tokio::sync::oneshot::channel::<()>();
        let fencer = tokio::spawn(crate::daemon::fencer::run(config.clone(), async move {
            let _ = fencer_stop.await;
        }));
        until(&mut lease, "the acknowledged lease", |s| s.valid_until.is_some()).await;
        let keeper_until = keeper_tx.borrow().valid_until.unwrap();
        let acted = lease.borrow().valid_until.unwrap();
        assert!(acted <= keeper_until, "{acted:?} past the keeper's {keeper_until:?}");
        assert!(keeper_until.since(acted) < Duration::from_millis(5));
        // A shorter lease counts at once.
        keeper_tx.send_replace(LeaseState::default());
        until(&mut lease, "the lease gone", |s| s.valid_until.is_none()).await;
        // The fencer goes: what it acknowledged is all that counts, however
        // long the keeper's lease.
        keeper_tx.send_replace(granted());
        until(&mut lease, "the lease again", |s| s.valid_until.is_some()).await;
        let last = lease.borrow().valid_until;
        let _ = fencer_stop_tx.send(());
        assert!(matches!(fencer.await, Ok(Ok(()))));
        keeper_tx.send_replace(LeaseState {
            valid_until: Some(clock::now() + Duration::from_secs(60)),
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = lease.borrow().valid_until;
        assert!(
            now.is_none() || now <= last,
            "a lease past what the fencer heard: {now:?} > {last:?}"
        );
        stop_tx.send_replace(true);
    }

    #[tokio::test]
    async fn automatic_without_a_fencer_is_the_keepers_lease_and_off_asks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let socket = crate::host::fencer_socket::socket_path(&config(dir.path()));
        let (reader, _state) = in_memory(SmData::default());
        let (_stop_tx, stop) = watch::channel(false);
        let (keeper_tx, keeper) = watch::channel(LeaseState::default());
        let mut lease = spawn(
            FencerMode::Automatic,
            socket.clone(),
            keeper,
            reader.clone(),
            1,
            stop.clone(),
        );
        let g = granted();
        keeper_tx.send_replace(g);
        until(&mut lease, "the keeper's lease", |s| *s == g).await;
        let (_tx, keeper) = watch::channel(g);
        let off = spawn(FencerMode::Off, socket, keeper, reader, 1, stop);
        assert_eq!(*off.borrow(), g);
    }
}
