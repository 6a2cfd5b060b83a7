//! `slotctl … --wait`: following a switchover, drain or rebalance to its
//! end through `Status` and `History`, and saying how it ended; and the
//! history table.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use slotd_proto::v1 as pb;
use slotd_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::ctl::client::Failure;

/// How often `--wait` asks.
const POLL: Duration = Duration::from_millis(100);

async fn status(c: &mut AdminClient<Channel>) -> Result<pb::StatusReply, Failure> {
    Ok(c.status(pb::StatusRequest { stale: false }).await?.into_inner())
}

/// Waits until the switchover of `reply` has ended; `Ok` with the history
/// entry of its outcome when it moved the master, `Err` when it rolled back
/// or was ended by a failover.
pub async fn switchover(
    c: &mut AdminClient<Channel>,
    reply: &pb::FailoverReply,
    limit: Duration,
) -> Result<pb::HistoryEntry, Failure> {
    let deadline = Instant::now() + limit;
    loop {
        let view = status(c).await?;
        let Some(store) = view.stores.iter().find(|s| s.name == reply.store) else {
            return Err(Failure::failed(format!("store {} was removed meanwhile", reply.store)));
        };
        if store.phase == "stable" && store.epoch > reply.epoch {
            break;
        }
        if Instant::now() > deadline {
            return Err(Failure::failed(format!(
                "store {}: still {} after {limit:?} (see slotctl status and history)",
                reply.store, store.phase
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let history = c
        .history(pb::HistoryRequest {
            store: Some(reply.store.clone()),
            limit: 0,
        })
        .await?
        .into_inner();
    let Some(first) = history.entries.into_iter().find(|e| e.epoch > reply.epoch) else {
        return Err(Failure::failed(format!(
            "store {}: its history no longer shows this switchover",
            reply.store
        )));
    };
    if first.what.starts_with("switchover") && first.to == reply.to {
        Ok(first)
    } else {
        Err(Failure::failed(format!("store {}: {}", reply.store, first.what)))
    }
}

/// Waits until `node` is drained, showing progress: one line rewritten in
/// place on a terminal, a plain line per change otherwise.
pub async fn drain(c: &mut AdminClient<Channel>, node: &str, masters: u32, limit: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + limit;
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    let started = Instant::now();
    loop {
        let view = status(c).await?;
        let Some(n) = view.nodes.iter().find(|n| n.name == node) else {
            return Err(Failure::failed(format!("node {node} was removed meanwhile")));
        };
        let left = n.left as usize;
        let moved = (masters as usize).saturating_sub(left);
        let line = format!(
            "drain {node}: {moved}/{masters} moved, {} moving, {left} left",
            n.leaving
        );
        if line != last {
            if tty {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last = line;
        }
        match n.mode.as_str() {
            "drained" => {
                if tty {
                    println!();
                }
                println!("node {node} drained in {:.1} s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            "active" => {
                if tty {
                    println!();
                }
                return Err(Failure::failed(format!(
                    "node {node} was undrained before the drain ended"
                )));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            if tty {
                println!();
            }
            return Err(Failure::failed(format!(
                "node {node}: still draining after {limit:?} ({left} masters left; see slotctl status and history)"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the rebalance has nothing left to move.
pub async fn rebalance(c: &mut AdminClient<Channel>, limit: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    loop {
        if !status(c).await?.rebalancing {
            println!("rebalance done in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::failed(format!("rebalance still under way after {limit:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}
