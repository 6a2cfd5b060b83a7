//! How many simulation seeds break, per protocol variant: the protocol as
//! implemented, and the broken variants the teeth tests use (the reconciler,
//! the election timing and the watchdog of before, leases without the read
//! index). `cargo run --release -p slotd-tests --bin sim-survey [SEEDS]`
//! (`SLOTD_SIM_ONLY=NAME`: one variant of `Variant::NAMED`). One seed is
//! replayed by the `replay` test of `tests/tests/simulation.rs`.

use std::time::Instant;

use slotd_tests::sim::{run_seed, Failure, SeedReport, Variant};

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    for &(name, v) in Variant::NAMED {
        if std::env::var("SLOTD_SIM_ONLY").is_ok_and(|only| only != name) {
            continue;
        }
        let started = Instant::now();
        let mut fails: Vec<Failure> = Vec::new();
        let mut reports: Vec<SeedReport> = Vec::new();
        for s in 0..seeds {
            match run_seed(s, v) {
                Ok(r) => reports.push(r),
                Err(f) => fails.push(f),
            }
        }
        let leaderless = reports.iter().map(|r| r.max_leaderless_ms).max().unwrap_or(0);
        let fences: u64 = reports.iter().map(|r| r.master_fences).sum();
        let notices: u64 = reports.iter().map(|r| r.notices_accepted).sum();
        let kills: u64 = reports.iter().map(|r| r.watchdog_kills).sum();
        println!(
            "{name}: {} of {seeds} seeds fail ({:.1?}); passing seeds: longest without a leader {leaderless} ms, \
             {fences} master fences, {notices} fence notices accepted, {kills} watchdog kills",
            fails.len(),
            started.elapsed()
        );
        for f in fails.iter().take(6) {
            println!("  seed {} t={}: {}", f.seed, f.at, f.what);
        }
    }
}
