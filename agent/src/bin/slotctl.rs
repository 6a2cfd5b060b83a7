//! `slotctl`: the operator's command line. For now it plans topologies and
//! tests a host's service-IP handling (`slotctl net`); the cluster commands
//! (status, failover, drain, …) come with the agent.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotd_netops::cli::{Found, NetCommand};
use slotd_netops::KernelOps;
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
            // One line naming the argument: clap's first paragraph.
            let text = e.to_string();
            let first: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            eprintln!("slotctl: {}", first.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Cmd::Net { command } = &cli.command {
        return net(command);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("slotctl: {message}");
            ExitCode::from(2)
        }
    }
}

fn net(command: &NetCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotctl: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let ops = KernelOps::new()?;
        slotd_netops::cli::run(&ops, command, &mut std::io::stdout()).await
    });
    match result {
        Ok(Found::Nothing) => ExitCode::SUCCESS,
        Ok(Found::Owner) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("slotctl: {e}");
            ExitCode::FAILURE
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
