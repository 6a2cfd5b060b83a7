//! `slotd-net`: test a host's address handling by hand. Exit status: 0 ok,
//! 1 the operation failed (or a probe found another owner), 2 bad arguments.

use std::process::ExitCode;

use clap::Parser;
use slotd_netops::cli::{self, NetCli};

fn main() -> ExitCode {
    match NetCli::try_parse() {
        Ok(args) => cli::main_on_kernel("slotd-net", &args.command),
        // Bad arguments: one line naming the argument, status 2.
        Err(e) if e.use_stderr() => {
            eprintln!("slotd-net: {}", cli::one_line(&e));
            ExitCode::from(2)
        }
        // --help, --version
        Err(e) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
    }
}
