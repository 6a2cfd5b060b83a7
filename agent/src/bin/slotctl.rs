//! `slotctl`: the operator's command line.
//!
//! Exit codes: 0 done; 1 no answer (agent unreachable, no leader, or `net`
//! failed); 2 refused (bad argument or input, or the cluster said no — in
//! which case nothing changed). Failures print one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use slotd_agent::ctl::client::{self, Failure, DEFAULT_ENDPOINT};
use slotd_agent::ctl::{follow, table, verify};
use slotd_netops::cli::NetCommand;
use slotd_proto::v1 as pb;
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::topology;

#[derive(Parser)]
#[command(name = "slotctl", version, about = "Operate a slotd cluster")]
struct Cli {
    /// Agent to talk to (any node; calls reach the leader by themselves).
    #[arg(long, global = true, value_name = "HOST:PORT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The cluster CA's certificate (PEM).
    #[arg(long, global = true, value_name = "FILE", env = "SLOTCTL_CA")]
    ca: Option<PathBuf>,
    /// Our certificate (PEM): an operator's, or a member node's.
    #[arg(long, global = true, value_name = "FILE", env = "SLOTCTL_CERT")]
    cert: Option<PathBuf>,
    /// Its private key (PEM; not readable by others).
    #[arg(long, global = true, value_name = "FILE", env = "SLOTCTL_KEY")]
    key: Option<PathBuf>,
    /// Plain text, for an agent with `tls.insecure = true`.
    #[arg(long, global = true, env = "SLOTCTL_INSECURE")]
    insecure: bool,
    #[command(subcommand)]
    command: Cmd,
}

struct Agent {
    endpoint: String,
    tls: client::Tls,
}

impl Agent {
    async fn connect(&self) -> Result<slotd_proto::v1::admin_client::AdminClient<tonic::transport::Channel>, Failure> {
        client::connect(&self.endpoint, &self.tls).await
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Show nodes and stores (linearizable, through the leader, unless --stale).
    Status {
        /// Answer from the contacted node's own state, without the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Bootstrap the cluster from a topology.toml (refused if initialised).
    Init {
        /// The topology file.
        file: PathBuf,
    },
    /// The cluster-wide timings (lease, heartbeat, margin, Raft's): show
    /// them, or change some (checked as `slotd --check-config` checks a
    /// file; a longer lease counts on a node once it has applied it).
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Add or remove a node.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Add or remove a store.
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// Print a topology.toml where each node's partners are spread evenly
    /// over all other nodes (one death adds at most ⌈masters/(N−1)⌉ masters
    /// to any survivor).
    Plan {
        /// Number of storage machines.
        #[arg(long)]
        nodes: usize,
        /// Slots (Cyrus instances) per machine.
        #[arg(long)]
        slots: usize,
        /// How many of the first nodes are Raft voters (default: 5 from 5
        /// nodes on, else up to 3).
        #[arg(long)]
        voters: Option<usize>,
    },
    /// Check a topology.toml without touching any cluster.
    CheckTopology {
        /// The file to check.
        file: PathBuf,
    },
    /// Move a store's master to a replica by a controlled switchover: the
    /// old master stops taking clients and flushes its sync log, then the
    /// new one takes the master IP and starts as master.
    Failover {
        store: String,
        /// The replica node to promote (default: the best live, caught-up one).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        /// Skip the flush and the lag check. Unreplicated changes on the old
        /// master may be lost.
        #[arg(long)]
        force: bool,
        /// Wait until the switchover has ended, and say how.
        #[arg(long)]
        wait: bool,
    },
    /// Switch every master of a node over to its replicas, then mark it
    /// drained (no master goes there until undrain).
    Drain {
        /// Node name.
        node: String,
        /// Switchovers at a time (default: the leader's
        /// switchover.drain_concurrency, 4).
        #[arg(long, value_name = "K")]
        concurrency: Option<u32>,
        /// Wait until drained, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Make a drained node active again (masters return only by rebalance).
    Undrain {
        /// Node name.
        node: String,
    },
    /// Move masters back toward their preferred node and an even count per
    /// node, never onto a lagging replica.
    Rebalance {
        /// Print the moves and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Switchovers at a time (default 4).
        #[arg(long, value_name = "K")]
        concurrency: Option<u32>,
        /// Wait until done.
        #[arg(long)]
        wait: bool,
    },
    /// Compare a store's master and replica mailbox by mailbox (IMAP STATUS
    /// as an admin on the master IP and the replica IP); exit 1 if they differ.
    Verify {
        store: String,
        /// The IMAP admin.
        #[arg(long, default_value = "cyrus")]
        user: String,
        /// A file holding the admin's password (or SLOTCTL_IMAP_PASSWORD).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// The last changes of masters: switchovers, failovers, rollbacks.
    History {
        /// Only this store's.
        store: Option<String>,
        /// How many (default 50).
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        limit: u32,
    },
    /// Make a cluster CA and certificates for nodes and operators in a
    /// directory, for labs and small sites. A CA already there is reused
    /// (to add nodes later); an existing certificate is never overwritten.
    Certs {
        /// Where (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A certificate for every node of this topology.toml (naming also
        /// the host of its addr).
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
        /// A certificate for this node (repeatable).
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// A certificate for this operator (repeatable).
        #[arg(long = "operator", value_name = "NAME")]
        operators: Vec<String>,
        /// How long node and operator certificates last, in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Bind, release, list, announce or probe a service IP on this host, with
    /// the code the agent uses (needs CAP_NET_ADMIN / CAP_NET_RAW).
    Net {
        #[command(subcommand)]
        command: NetCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the timings in force (and, while a change settles, the ones
    /// before it).
    Show,
    /// Change timings: `slotctl config set lease_ms=3000
    /// clock_skew_margin_ms=600`.
    Set {
        /// KEY=VALUE, values in milliseconds.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Add a node (it joins as a Raft learner).
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        name: String,
        /// HOST:PORT of its agent.
        #[arg(long)]
        addr: String,
        /// Its slot names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        slots: Vec<String>,
    },
    /// Remove a node that holds no slot of any store (a voter is replaced by
    /// promoting a learner first).
    Remove {
        /// Node name.
        name: String,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Add a store; its first slot becomes master.
    Add {
        #[arg(long)]
        name: String,
        /// ADDR/LEN the master binds.
        #[arg(long)]
        master_ip: String,
        /// ADDR/LEN the replica binds.
        #[arg(long)]
        replica_ip: String,
        /// NODE:SLOT,NODE:SLOT… first = preferred master.
        #[arg(long, value_delimiter = ',')]
        slots: Vec<String>,
    },
    /// Remove a store from the cluster state.
    Remove {
        name: String,
        /// Refuse unless the store is still at this epoch.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = match slotd_netops::cli::parse_or_exit::<Cli>("slotctl") {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Cmd::Net { command } = &cli.command {
        return slotd_netops::cli::main_on_kernel("slotctl", command);
    }
    let runtime = match slotd_netops::cli::runtime_or_exit("slotctl") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("slotctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// One `KEY=VALUE` of `slotctl config set`.
fn setting(arg: &str) -> Result<pb::Setting, Failure> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(Failure::refused(format!("config set: {arg:?} is not KEY=VALUE")));
    };
    let value = value
        .trim()
        .parse::<u64>()
        .map_err(|_| Failure::refused(format!("config set: {key}: {value:?} is not a number of milliseconds")))?;
    Ok(pb::Setting {
        key: key.trim().to_owned(),
        value,
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::failed(format!("json: {e}")))?;
    println!("{text}");
    Ok(())
}

fn written(json: bool, what: &str, reply: pb::WriteReply) -> Result<(), Failure> {
    if json {
        print_json(&serde_json::json!({ "index": reply.index }))
    } else {
        println!("{what} (log index {})", reply.index);
        Ok(())
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let Cli {
        endpoint,
        json,
        ca,
        cert,
        key,
        insecure,
        command,
    } = cli;
    // The agent to talk to, and how; credentials are read only by the
    // commands that talk to one.
    let agent = || -> Result<Agent, Failure> {
        Ok(Agent {
            endpoint: endpoint.clone(),
            tls: client::Tls::from_args(ca.as_deref(), cert.as_deref(), key.as_deref(), insecure)?,
        })
    };
    match command {
        Cmd::Plan { nodes, slots, voters } => {
            let voters = voters.unwrap_or_else(|| topology::default_voters(nodes));
            if voters == 0 || voters > nodes {
                return Err(Failure::refused(format!(
                    "--voters must be from 1 to --nodes ({nodes}), got {voters}"
                )));
            }
            let layout = plan(nodes, slots).map_err(|e| Failure::refused(e.to_string()))?;
            let naming = Naming {
                voters,
                ..Naming::default()
            };
            print!("{}", topology::render(&layout.to_topology(&naming)));
            Ok(())
        }
        Cmd::CheckTopology { file } => {
            let t = read_topology(&file)?;
            println!(
                "{}: {} nodes, {} stores: ok",
                file.display(),
                t.nodes.len(),
                t.stores.len()
            );
            Ok(())
        }
        Cmd::Net { .. } => Err(Failure::failed("internal: net is handled before")),
        Cmd::Certs {
            dir,
            topology,
            nodes,
            operators,
            days,
        } => certs(&dir, topology.as_deref(), nodes, operators, days),
        command @ (Cmd::Failover { .. }
        | Cmd::Drain { .. }
        | Cmd::Undrain { .. }
        | Cmd::Rebalance { .. }
        | Cmd::Verify { .. }
        | Cmd::History { .. }) => moves(&agent()?, json, command).await,
        Cmd::Status { stale } => {
            let mut c = agent()?.connect().await?;
            let reply = c.status(pb::StatusRequest { stale }).await?.into_inner();
            if json {
                print_json(&reply)
            } else {
                print!("{}", table::status(&reply));
                Ok(())
            }
        }
        Cmd::Config { command } => {
            let set = match &command {
                ConfigCmd::Show => Vec::new(),
                ConfigCmd::Set { settings } => settings.iter().map(|s| setting(s)).collect::<Result<_, _>>()?,
            };
            let mut c = agent()?.connect().await?;
            let reply = c.config(pb::ConfigRequest { set }).await?.into_inner();
            if json {
                print_json(&reply)
            } else {
                if matches!(command, ConfigCmd::Set { .. }) {
                    if reply.index == 0 {
                        println!("nothing to change");
                    } else {
                        println!("timings change {} written at index {}", reply.seq, reply.index);
                    }
                }
                print!("{}", table::timings(&reply));
                Ok(())
            }
        }
        Cmd::Init { file } => {
            let t = read_topology(&file)?;
            let request = slotd_agent::convert::init_request(&t);
            let mut c = agent()?.connect().await?;
            let reply = c.init(request).await?.into_inner();
            written(
                json,
                &format!("initialised: {} nodes, {} stores", t.nodes.len(), t.stores.len()),
                reply,
            )
        }
        Cmd::Node { command } => {
            let mut c = agent()?.connect().await?;
            match command {
                NodeCmd::Add { id, name, addr, slots } => {
                    let node = pb::NodeSpec {
                        id,
                        name: name.clone(),
                        addr,
                        voter: false,
                        slots,
                    };
                    let reply = c.add_node(pb::AddNodeRequest { node: Some(node) }).await?.into_inner();
                    written(json, &format!("node {name} added as a learner"), reply)
                }
                NodeCmd::Remove { name } => {
                    let reply = c
                        .remove_node(pb::RemoveNodeRequest { node: name.clone() })
                        .await?
                        .into_inner();
                    written(json, &format!("node {name} removed"), reply)
                }
            }
        }
        Cmd::Store { command } => {
            let mut c = agent()?.connect().await?;
            match command {
                StoreCmd::Add {
                    name,
                    master_ip,
                    replica_ip,
                    slots,
                } => {
                    let store = pb::StoreSpec {
                        name: name.clone(),
                        master_ip,
                        replica_ip,
                        slots,
                    };
                    let reply = c
                        .add_store(pb::AddStoreRequest { store: Some(store) })
                        .await?
                        .into_inner();
                    written(json, &format!("store {name} added"), reply)
                }
                StoreCmd::Remove { name, epoch } => {
                    let reply = c
                        .remove_store(pb::RemoveStoreRequest {
                            store: name.clone(),
                            epoch,
                        })
                        .await?
                        .into_inner();
                    written(json, &format!("store {name} removed"), reply)
                }
            }
        }
    }
}

/// The longest `--wait` follows a switchover, a drain or a rebalance (each
/// ends by itself: every phase has a timeout, at most an hour).
const WAIT_SWITCHOVER: Duration = Duration::from_secs(2 * 3600 + 60);
const WAIT_LONG: Duration = Duration::from_secs(6 * 3600);

async fn moves(agent: &Agent, json: bool, command: Cmd) -> Result<(), Failure> {
    let mut c = agent.connect().await?;
    match command {
        Cmd::Failover { store, to, force, wait } => {
            let reply = c
                .failover(pb::FailoverRequest {
                    store: store.clone(),
                    to,
                    force,
                })
                .await?
                .into_inner();
            if force {
                eprintln!(
                    "slotctl: warning: --force: no flush; changes {} had not replicated may be lost",
                    reply.from
                );
            }
            if json && !wait {
                return print_json(&reply);
            }
            if !json {
                if reply.immediate {
                    println!(
                        "{store}: master {} is down; failed over to {} at once (log index {})",
                        reply.from, reply.to, reply.index
                    );
                } else {
                    println!(
                        "{store}: switchover {} → {} begun (epoch {}, log index {})",
                        reply.from, reply.to, reply.epoch, reply.index
                    );
                }
            }
            if !wait || reply.immediate {
                return Ok(());
            }
            let done = follow::switchover(&mut c, &reply, WAIT_SWITCHOVER).await?;
            if json {
                print_json(&done)
            } else {
                println!(
                    "{store}: {} → {} {} in {} ms (epoch {})",
                    done.from,
                    done.to,
                    done.what,
                    done.duration_ms.unwrap_or(0),
                    done.epoch
                );
                Ok(())
            }
        }
        Cmd::Drain {
            node,
            concurrency,
            wait,
        } => {
            let reply = c
                .drain(pb::DrainRequest {
                    node: node.clone(),
                    concurrency,
                })
                .await?
                .into_inner();
            if json && !wait {
                return print_json(&reply);
            }
            if !json {
                println!(
                    "drain of {node} begun: {} masters, {} at a time (log index {})",
                    reply.masters, reply.concurrency, reply.index
                );
            }
            if wait {
                follow::drain(&mut c, &node, reply.masters, WAIT_LONG).await?;
            }
            Ok(())
        }
        Cmd::Undrain { node } => {
            let reply = c.undrain(pb::UndrainRequest { node: node.clone() }).await?.into_inner();
            written(json, &format!("node {node} active"), reply)
        }
        Cmd::Rebalance {
            dry_run,
            concurrency,
            wait,
        } => {
            let reply = c
                .rebalance(pb::RebalanceRequest { dry_run, concurrency })
                .await?
                .into_inner();
            if json {
                print_json(&reply)?;
            } else if reply.moves.is_empty() {
                println!("balanced: nothing to move");
            } else {
                if dry_run {
                    println!("rebalance would move {} masters:", reply.moves.len());
                } else {
                    // The leader plans again before every move (a replica
                    // that catches up, a node that comes back): what moves
                    // in the end may differ from this first plan.
                    println!(
                        "rebalance begun; as planned now, {} masters (planned again before each move):",
                        reply.moves.len()
                    );
                }
                for m in &reply.moves {
                    println!("  {}: {} → {}", m.store, m.from, m.to);
                }
            }
            if wait && reply.index.is_some() {
                follow::rebalance(&mut c, WAIT_LONG).await?;
            }
            Ok(())
        }
        Cmd::Verify {
            store,
            user,
            password_file,
        } => {
            let password = match (password_file, std::env::var("SLOTCTL_IMAP_PASSWORD")) {
                (Some(f), _) => std::fs::read_to_string(&f)
                    .map_err(|e| Failure::refused(format!("--password-file {}: {e}", f.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                (None, Ok(p)) => p,
                (None, Err(_)) => {
                    return Err(Failure::refused(
                        "verify: give the IMAP admin's password (--password-file FILE or SLOTCTL_IMAP_PASSWORD)",
                    ))
                }
            };
            let view = c.status(pb::StatusRequest { stale: false }).await?.into_inner();
            let Some(st) = view.stores.iter().find(|s| s.name == store) else {
                return Err(Failure::refused(format!("unknown store {store:?}")));
            };
            let ip = |field: &str, v: &str| {
                v.split('/')
                    .next()
                    .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                    .ok_or_else(|| Failure::failed(format!("store {store:?}: bad {field} {v:?}")))
            };
            let (mip, rip) = (ip("master_ip", &st.master_ip)?, ip("replica_ip", &st.replica_ip)?);
            let (master, replica) = tokio::join!(
                verify::mailboxes(mip, &user, &password),
                verify::mailboxes(rip, &user, &password)
            );
            let master = master.map_err(|e| Failure::failed(format!("master {}: {e}", st.master)))?;
            let replica = replica.map_err(|e| Failure::failed(format!("replica: {e}")))?;
            let diff = verify::compare(&master, &replica);
            if json {
                print_json(&serde_json::json!({
                    "store": store,
                    "mailboxes": master.len(),
                    "differences": diff.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }))?;
            } else {
                for d in &diff {
                    println!("{store}: {d}");
                }
            }
            if diff.is_empty() {
                if !json {
                    println!("{store}: master and replica agree on {} mailboxes", master.len());
                }
                Ok(())
            } else {
                Err(Failure::failed(format!("{store}: {} differences", diff.len())))
            }
        }
        Cmd::History { store, limit } => {
            let reply = c.history(pb::HistoryRequest { store, limit }).await?.into_inner();
            if json {
                print_json(&reply)
            } else {
                print!("{}", table::history(&reply.entries));
                Ok(())
            }
        }
        _ => Err(Failure::failed("internal: not a command that moves masters")),
    }
}

fn read_topology(file: &std::path::Path) -> Result<slotd_raft_store::Topology, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| Failure::refused(format!("{}: {e}", file.display())))?;
    topology::parse(&text).map_err(|e| Failure::refused(format!("{}: {}", file.display(), one_line(&e.to_string()))))
}

/// TOML syntax errors come with a source excerpt: keep the first line.
fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_owned()
}

/// `slotctl certs`.
fn certs(
    dir: &std::path::Path,
    topology: Option<&std::path::Path>,
    nodes: Vec<String>,
    operators: Vec<String>,
    days: i64,
) -> Result<(), Failure> {
    let mut request = slotd_agent::tls::certs::Request {
        nodes: nodes.into_iter().map(|n| (n, Vec::new())).collect(),
        operators,
        days,
    };
    if let Some(file) = topology {
        for n in read_topology(file)?.nodes {
            let host = n
                .addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned());
            request.nodes.push((n.name, host.into_iter().collect()));
        }
    }
    let written = slotd_agent::tls::certs::make(dir, &request).map_err(|e| Failure::refused(e.to_string()))?;
    for f in &written {
        println!("{}", f.display());
    }
    if written.is_empty() {
        println!("nothing to make: the CA exists; name nodes or operators");
    }
    Ok(())
}
