//! The `slotd-net` command (`slotd-net bind|release|list|announce|probe
//! --interface IF ADDR`): a way for operators to test a host by hand with
//! exactly the code the agent uses. Argument parsing lives here so `slotctl
//! net ...` can embed the same subcommand; `run` works on any
//! [`AddressOps`].

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{AddressOps, AnnounceOptions, IpPrefix, NetError, Outcome};

/// Bind, release, list, announce and probe service IPs on this host.
#[derive(Debug, Parser)]
#[command(name = "slotd-net", version)]
pub struct NetCli {
    /// What to do.
    #[command(subcommand)]
    pub command: NetCommand,
}

/// One `slotd-net` action.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Add ADDR (default length /32 or /128) to the interface.
    Bind(PrefixArgs),
    /// Remove ADDR from the interface.
    Release(PrefixArgs),
    /// Print the addresses on the interface, one per line.
    List(InterfaceArgs),
    /// Send gratuitous ARP / unsolicited NA for ADDR.
    Announce(AnnounceArgs),
    /// Ask whether another machine answers for ADDR; prints its MAC.
    Probe(ProbeArgs),
}

/// `--interface IF`.
#[derive(Debug, Args)]
pub struct InterfaceArgs {
    /// Network interface, e.g. eth0.
    #[arg(long, short = 'i')]
    pub interface: String,
}

/// `--interface IF ADDR[/LEN]`.
#[derive(Debug, Args)]
pub struct PrefixArgs {
    /// Network interface, e.g. eth0.
    #[arg(long, short = 'i')]
    pub interface: String,
    /// Address with optional prefix length, e.g. 10.0.1.1/32 or fd00::1.
    #[arg(value_name = "ADDR")]
    pub prefix: IpPrefix,
}

/// `--interface IF ADDR [--count N] [--interval-ms MS]`.
#[derive(Debug, Args)]
pub struct AnnounceArgs {
    /// Network interface, e.g. eth0.
    #[arg(long, short = 'i')]
    pub interface: String,
    /// The address to announce.
    #[arg(value_name = "ADDR")]
    pub addr: IpAddr,
    /// Number of rounds.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
}

/// `--interface IF ADDR [--timeout-ms MS]`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Network interface, e.g. eth0.
    #[arg(long, short = 'i')]
    pub interface: String,
    /// The address to probe for.
    #[arg(value_name = "ADDR")]
    pub addr: IpAddr,
    /// How long to wait for an answer.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

/// What a probe found, for the exit code: a found owner is exit status 1
/// so scripts can test for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not a probe, or a probe nobody answered.
    Nothing,
    /// A probe that another MAC answered.
    Owner,
}

/// Execute `command` on `ops`, writing human-readable results to `out`.
pub async fn run(
    ops: &impl AddressOps,
    command: &NetCommand,
    out: &mut impl std::io::Write,
) -> Result<Found, NetError> {
    let write_err = |e: std::io::Error| NetError::Io {
        op: "write output",
        interface: String::new(),
        source: e,
    };
    match command {
        NetCommand::Bind(a) => {
            let o = ops.bind(&a.interface, a.prefix).await?;
            let what = if o == Outcome::Changed {
                "bound"
            } else {
                "already bound"
            };
            writeln!(out, "{what} {} on {}", a.prefix, a.interface).map_err(write_err)?;
        }
        NetCommand::Release(a) => {
            let o = ops.release(&a.interface, a.prefix).await?;
            let what = if o == Outcome::Changed { "released" } else { "not bound" };
            writeln!(out, "{what} {} on {}", a.prefix, a.interface).map_err(write_err)?;
        }
        NetCommand::List(a) => {
            for b in ops.list(&a.interface).await? {
                let mut line = b.prefix.to_string();
                if b.tentative {
                    line.push_str(" tentative");
                }
                if b.dad_failed {
                    line.push_str(" dadfailed");
                }
                writeln!(out, "{line}").map_err(write_err)?;
            }
        }
        NetCommand::Announce(a) => {
            let options = AnnounceOptions {
                count: a.count,
                interval: Duration::from_millis(a.interval_ms),
            };
            ops.announce(&a.interface, a.addr, options).await?;
            writeln!(out, "announced {} on {} ({} rounds)", a.addr, a.interface, a.count).map_err(write_err)?;
        }
        NetCommand::Probe(a) => {
            let timeout = Duration::from_millis(a.timeout_ms);
            match ops.probe(&a.interface, a.addr, timeout).await? {
                Some(mac) => {
                    writeln!(out, "{} is answered by {mac}", a.addr).map_err(write_err)?;
                    return Ok(Found::Owner);
                }
                None => {
                    writeln!(out, "nobody answers for {}", a.addr).map_err(write_err)?;
                }
            }
        }
    }
    Ok(Found::Nothing)
}

/// Runs `command` against this host's kernel and maps the result to the exit
/// status both `slotd-net` and `slotctl net` use: 0 done, 1 failed or a probe
/// found another owner (the one-line reason goes to stderr, after `prog: `).
pub fn main_on_kernel(prog: &str, command: &NetCommand) -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match runtime_or_exit(prog) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let ops = crate::KernelOps::new()?;
        run(&ops, command, &mut std::io::stdout()).await
    });
    match result {
        Ok(Found::Nothing) => ExitCode::SUCCESS,
        Ok(Found::Owner) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{prog}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line the way every slotd binary does: `--help` and
/// `--version` print and exit 0; bad arguments print one line naming the
/// argument (clap's first paragraph, usage left out) after `prog: ` and
/// exit 2.
pub fn parse_or_exit<T: clap::Parser>(prog: &str) -> Result<T, std::process::ExitCode> {
    match T::try_parse() {
        Ok(args) => Ok(args),
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{prog}: {}", first.join(" ").trim_start_matches("error: "));
            Err(std::process::ExitCode::from(2))
        }
        Err(e) => {
            let _ = e.print();
            Err(std::process::ExitCode::SUCCESS)
        }
    }
}

/// A current-thread runtime for a command-line tool; on failure, says so
/// after `prog: ` and gives the exit code to return.
pub fn runtime_or_exit(prog: &str) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{prog}: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}
