//! How many of the 500 simulation seeds break, per protocol variant: the
//! protocol as implemented, with agent hangs added (systemd's watchdog at
//! 1 s is longer than the 500 ms margin), and without the read-index wait.
//! `cargo run --release -p slotd-tests --bin sim-survey` (a few minutes).

use slotd_tests::sim::{run_seed, Failure, Variant};

const SEEDS: u64 = 500;

fn main() {
    let real = Variant::REAL;
    for (name, v) in [
        ("real", real),
        ("real+hangs", Variant { freezes: true, ..real }),
        (
            "no-read-index",
            Variant {
                lease_waits_for_log: false,
                ..real
            },
        ),
    ] {
        let fails: Vec<Failure> = (0..SEEDS).filter_map(|s| run_seed(s, v).err()).collect();
        println!("{name}: {} of {SEEDS} seeds fail", fails.len());
        for f in fails.iter().take(6) {
            println!("  seed {} t={}: {}", f.seed, f.at, f.what);
        }
    }
}
