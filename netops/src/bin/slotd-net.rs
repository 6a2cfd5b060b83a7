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
            // clap's message is the paragraph before the usage text;
            // some kinds put the argument names on indented lines.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            eprintln!("slotd-net: {}", message.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        // --help, --version
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
