//! `slotd-net`: test a host's address handling by hand. Exit status: 0 ok,
//! 1 the operation failed (or a probe found another owner), 2 bad arguments.

use std::process::ExitCode;

use clap::Parser;
use slotd_netops::cli::{self, Found, NetCli};
use slotd_netops::KernelOps;

fn main() -> ExitCode {
    let args = match NetCli::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            // Bad arguments: one line naming the argument, status 2.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("slotd-net: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        // --help, --version
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotd-net: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let ops = KernelOps::new()?;
        cli::run(&ops, &args.command, &mut std::io::stdout()).await
    });
    match result {
        Ok(Found::Nothing) => ExitCode::SUCCESS,
        Ok(Found::Owner) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("slotd-net: {e}");
            ExitCode::FAILURE
        }
    }
}
