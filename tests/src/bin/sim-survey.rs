//! How many simulation seeds break, per protocol variant: the protocol as
//! implemented, and the broken variants the teeth tests use (the reconciler,
//! the election timing and the watchdog of before, leases without the read
//! index). `cargo run --release -p slotd-tests --bin sim-survey [SEEDS]`.

use std::time::Instant;

use slotd_tests::sim::{run_seed, Failure, SeedReport, Variant};

fn main() {
    if let Some(seed) = std::env::var("SLOTD_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        match run_seed(seed, Variant::from_env()) {
            Ok(r) => println!("seed {seed}: ok {r:?}"),
            Err(f) => println!("{f}"),
        }
        return;
    }
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let real = Variant::REAL;
    for (name, v) in [
        ("real", real),
        (
            "old-reconciler",
            Variant {
                old_reconciler: true,
                ..real
            },
        ),
        (
            "old-elections",
            Variant {
                old_elections: true,
                ..real
            },
        ),
        (
            "old-watchdog",
            Variant {
                old_watchdog: true,
                ..real
            },
        ),
        ("no-probes", Variant { probes: false, ..real }),
        (
            "no-read-index",
            Variant {
                lease_waits_for_log: false,
                probes: false,
                ..real
            },
        ),
    ] {
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
