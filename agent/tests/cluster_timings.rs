//! The timings safety depends on are the cluster's (issue 21, path 6):
//! written by the first leader from its own file, changed only through the
//! log by `slotctl config set` (checked by `--check-config`'s rules; a
//! refusal changes nothing), and acted on by every node from its grants.
//! Real agents, real gRPC, the real `slotctl`.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster, WAIT};
use serde_json::Value;

fn show(c: &TestCluster, id: u64) -> Value {
    let out = c.slotctl(id, &["--json", "config", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(v: &Value, key: &str) -> Option<u64> {
    v["settings"].as_array()?.iter().find(|s| s["key"] == key)?["value"].as_u64()
}

fn settled(v: &Value) -> bool {
    v["before"].as_array().is_none_or(|b| b.is_empty())
}

/// Samples every node's lease (as its metrics show) for `samples` × 50 ms:
/// the most any had left.
fn most_left(c: &TestCluster, samples: usize) -> f64 {
    let mut most: f64 = 0.0;
    for _ in 0..samples {
        for id in 1..=3 {
            most = most.max(c.agent(id).metric("slotd_lease_remaining_seconds").unwrap_or(0.0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    most
}

#[test]
fn the_cluster_timings_are_the_first_leaders_and_change_only_through_the_log() {
    // Nodes 2 and 3 have a longer lease in their files: it is not the
    // cluster's (node 1 bootstraps and leads).
    let c = TestCluster::start_with(3, |config| {
        if config.node_id != 1 {
            config.timing.lease_ms = 3000;
        }
    });
    c.init(1, 2);
    assert_eq!(c.leader(), 1);
    let first = wait_for("the first timings in the log", WAIT, || {
        let v = show(&c, 2);
        (v["seq"] == 1).then_some(v)
    });
    assert_eq!(value(&first, "lease_ms"), Some(2000), "{first}");
    assert_eq!(value(&first, "clock_skew_margin_ms"), Some(500), "{first}");
    assert!(settled(&first), "{first}");
    let text = c.slotctl(3, &["config", "show"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("change 1") && text.contains("lease_ms"), "{text}");
    let most = most_left(&c, 10);
    assert!(
        most > 0.0 && most <= 2.0,
        "a lease of {most} s under a 2 s cluster lease"
    );

    // Bad input: a clear error naming what is wrong, exit code 2, nothing
    // changed.
    let refused: [(&[&str], &str); 6] = [
        (&["config", "set", "lease_ms=100"], "lease_ms"),
        (&["config", "set", "lease_msx=3000"], "no cluster timing \"lease_msx\""),
        (
            &["config", "set", "probe_timeout_ms=300"],
            "no cluster timing \"probe_timeout_ms\"",
        ),
        (&["config", "set", "lease_ms=3s"], "lease_ms: \"3s\" is not a number"),
        (&["config", "set", "lease_ms"], "is not KEY=VALUE"),
        (
            &["config", "set", "clock_skew_margin_ms=2500", "lease_ms=2400"],
            "clock_skew_margin_ms: must be less than lease_ms (2400)",
        ),
    ];
    for (args, want) in refused {
        let out = c.slotctl(1, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
    }
    assert_eq!(show(&c, 1), first, "a refused change changed the timings");

    // A longer lease: logged, settled once every node applied it, and then
    // granted.
    let out = c.slotctl(1, &["config", "set", "lease_ms=3000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("timings change 2"));
    let longer = wait_for("the longer lease settled", WAIT, || {
        let v = show(&c, 3);
        (v["seq"] == 2 && settled(&v)).then_some(v)
    });
    assert_eq!(value(&longer, "lease_ms"), Some(3000), "{longer}");
    let most = wait_for("a lease longer than the old one", WAIT, || {
        let most = most_left(&c, 2);
        (most > 2.0).then_some(most)
    });
    assert!(most <= 3.0, "{most} s of lease under a 3 s cluster lease");
    // A second change while none settles is fine; the same values are no
    // change at all.
    let out = c.slotctl(1, &["config", "set", "lease_ms=3000"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to change"));
    assert_eq!(show(&c, 2)["seq"], 2);

    // Shorter again: every grant is the shorter one at once.
    let out = c.slotctl(2, &["config", "set", "lease_ms=2000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the shorter lease settled", WAIT, || {
        let v = show(&c, 1);
        (v["seq"] == 3 && settled(&v)).then_some(())
    });
    let most = most_left(&c, 10);
    assert!(most > 0.0 && most <= 2.0, "a lease of {most} s after going back to 2 s");
}
