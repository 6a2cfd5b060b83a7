//! `slotctl`: the operator's command line. For now it plans topologies and
//! tests a host's service-IP handling (`slotctl net`); the cluster commands
//! (status, failover, drain, …) come with the agent.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotd_netops::cli::NetCommand;
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::topology;

#[derive(Parser)]
#[command(name = "slotctl", version, about = "Operate a slotd cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Bind, release, list, announce or probe a service IP on this host, with
    /// the code the agent uses (needs CAP_NET_ADMIN / CAP_NET_RAW).
    Net {
        #[command(subcommand)]
        command: NetCommand,
    },
    /// Check a topology.toml without touching any cluster.
    CheckTopology {
        /// The file to check.
        file: std::path::PathBuf,
    },
}

/// Exit codes: 0 done, 1 the operation failed (or `net probe` found another
/// owner), 2 refused (bad arguments or input).
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("slotctl: {}", slotd_netops::cli::one_line(&e));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Cmd::Net { command } = &cli.command {
        return slotd_netops::cli::main_on_kernel("slotctl", command);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("slotctl: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Cmd) -> Result<(), String> {
    match command {
        Cmd::Plan { nodes, slots, voters } => {
            let voters = voters.unwrap_or_else(|| topology::default_voters(nodes));
            if voters == 0 || voters > nodes {
                return Err(format!("--voters must be from 1 to --nodes ({nodes}), got {voters}"));
            }
            let layout = plan(nodes, slots).map_err(|e| e.to_string())?;
            let naming = Naming {
                voters,
                ..Naming::default()
            };
            print!("{}", topology::render(&layout.to_topology(&naming)));
            Ok(())
        }
        Cmd::Net { .. } => unreachable!("handled in main"),
        Cmd::CheckTopology { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let t = topology::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "{}: {} nodes, {} stores: ok",
                file.display(),
                t.nodes.len(),
                t.stores.len()
            );
            Ok(())
        }
    }
}
