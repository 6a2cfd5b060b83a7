//! What the namespace benchmarks share: their arguments and their figures.

use std::time::Duration;

/// `[RUNS] [SECTION…]`: how many runs, and which sections (all when none
/// is named).
pub struct Args {
    pub runs: usize,
    named: Vec<String>,
}

impl Args {
    pub fn parse(default_runs: usize) -> Args {
        let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        Args {
            runs: args.iter().find_map(|a| a.parse().ok()).unwrap_or(default_runs),
            named: args.into_iter().filter(|a| a.parse::<usize>().is_err()).collect(),
        }
    }

    /// Whether `section` is to run.
    pub fn run(&self, section: &str) -> bool {
        self.named.is_empty() || self.named.iter().any(|n| n == section)
    }
}

/// Median and max, in ms, of `v`, and how many there are.
pub fn figures(mut v: Vec<Duration>) -> (f64, f64, usize) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if v.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    (ms(v[v.len() / 2]), ms(v[v.len() - 1]), v.len())
}
