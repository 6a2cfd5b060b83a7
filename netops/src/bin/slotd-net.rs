//! `slotd-net`: test a host's address handling by hand. Exit status: 0 ok,
//! 1 the operation failed (or a probe found another owner), 2 bad arguments.

use std::process::ExitCode;

use slotd_netops::cli::{self, NetCli};

fn main() -> ExitCode {
    match cli::parse_or_exit::<NetCli>("slotd-net") {
        Ok(args) => cli::main_on_kernel("slotd-net", &args.command),
        Err(code) => code,
    }
}
