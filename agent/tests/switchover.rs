//! Controlled switchovers over gRPC with real agents (on loopback, the
//! `none` driver, addresses in memory): `slotctl failover`, the refusals,
//! drain/undrain, rebalance and history. The same with real addresses in
//! network namespaces: `netns_switchover.rs`.

mod common;

use std::process::Output;

use common::netns::ok;
use common::{comparable, wait_for, TestCluster, WAIT};
use serde_json::Value;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: Output) -> Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Initialises, then waits until the leader has every master's backlog (a
/// replica whose lag is unknown gets no master).
fn init(c: &TestCluster, slots: usize) -> Value {
    c.init(1, slots);
    wait_for("every backlog reported", WAIT, || {
        let s = c.status(1, false)?;
        s["stores"]
            .as_array()?
            .iter()
            .all(|st| st["backlog"].as_u64().is_some())
            .then_some(s)
    })
}

fn store<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["stores"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no store {name} in {status}"))
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name} in {status}"))
}

/// The status as it must not change across a refused command (not who
/// answered, nor the leader's own liveness view).
fn frozen(c: &TestCluster) -> Value {
    comparable(&c.status(1, false).expect("status"))
}

#[test]
fn operator_failover_is_a_switchover_in_two_phases_and_the_history_says_so() {
    let c = TestCluster::start(3);
    let before = init(&c, 4);
    let st = store(&before, "st0001");
    let (from, epoch) = (st["master"].as_str().unwrap().to_owned(), st["epoch"].as_u64().unwrap());
    let to = st["replicas"][0].as_str().unwrap().to_owned();

    let out = ok(c.slotctl(2, &["failover", "st0001", "--wait"]));
    assert!(
        out.contains(&format!("st0001: switchover {from} → {to} begun")),
        "{out}"
    );
    assert!(out.contains(&format!("st0001: {from} → {to} switchover in")), "{out}");

    let after = c.converged();
    let st = store(&after, "st0001");
    assert_eq!(st["master"], to.as_str());
    assert_eq!(st["phase"], "stable");
    assert_eq!(st["epoch"].as_u64(), Some(epoch + 2), "one epoch per phase");
    assert!(
        st["dirty"].as_array().unwrap().is_empty(),
        "a switchover flushes: nothing dirty"
    );

    let h = json(c.slotctl(3, &["history", "st0001", "--json"]));
    let last = h["entries"].as_array().unwrap().last().cloned().expect("an entry");
    assert_eq!(last["what"], "switchover");
    assert_eq!(last["reason"], "operator");
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some(from.as_str()), Some(to.as_str()))
    );
    assert!(last["duration_ms"].as_u64().is_some(), "{last}");
    let table = ok(c.slotctl(1, &["history"]));
    assert!(
        table.starts_with("TIME (UTC)") && table.contains("switchover"),
        "{table}"
    );

    // Back, forced: said to be without a flush, and recorded so.
    let out = c.slotctl(1, &["failover", "st0001", "--to", &from, "--force", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may be lost"),
        "{}",
        text(&out)
    );
    let h = json(c.slotctl(1, &["history", "st0001", "--limit", "1", "--json"]));
    assert_eq!(h["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["entries"][0]["what"], "switchover (forced: no flush)");
}

#[test]
fn refused_commands_exit_non_zero_with_a_reason_and_change_nothing() {
    let mut c = TestCluster::start(3);
    let s = init(&c, 4);
    let st01 = store(&s, "st0001");
    let master = st01["master"].as_str().unwrap().to_owned();
    let replica = st01["replicas"][0].as_str().unwrap().to_owned();
    let other = ["imap1", "imap2", "imap3"]
        .into_iter()
        .find(|n| *n != master && *n != replica)
        .unwrap()
        .to_owned();

    let refused = |c: &TestCluster, args: &[&str], reason: &str| {
        let before = frozen(c);
        let out = c.slotctl(2, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?} should be refused: {}", text(&out));
        assert!(err.contains(reason), "{args:?}: {err:?} lacks {reason:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert_eq!(frozen(c), before, "{args:?} changed the cluster");
    };
    refused(&c, &["failover", "nope"], "unknown store \"nope\"");
    refused(
        &c,
        &["failover", "st0001", "--to", &other],
        "holds no slot of this store",
    );
    refused(&c, &["failover", "st0001", "--to", &master], "is already its master");
    refused(&c, &["failover", "st0001", "--to", "imap9"], "unknown node \"imap9\"");
    refused(&c, &["failover", "st 01"], "store:");
    refused(&c, &["drain", "imap9"], "unknown node \"imap9\"");
    refused(
        &c,
        &["drain", "imap1", "--concurrency", "0"],
        "concurrency: 0 is not from 1 to 64",
    );
    refused(
        &c,
        &["rebalance", "--concurrency", "65"],
        "concurrency: 65 is not from 1 to 64",
    );
    refused(&c, &["undrain", "imap9"], "unknown node \"imap9\"");
    refused(&c, &["history", "nope"], "unknown store \"nope\"");

    // A drained target.
    ok(c.slotctl(1, &["drain", &replica, "--wait"]));
    refused(&c, &["failover", "st0001"], "is drained and cannot become master");
    ok(c.slotctl(1, &["undrain", &replica]));

    // A target that is down, and a drain that would strand stores.
    let down: u64 = replica.trim_start_matches("imap").parse().unwrap();
    let via = if down == 2 { 3 } else { 2 };
    c.kill9(down);
    wait_for("the node down and its masters failed over", WAIT, || {
        let s = c.status(via, false)?;
        let moved = s["stores"]
            .as_array()?
            .iter()
            .all(|st| st["master"] != replica.as_str());
        (node(&s, &replica)["alive"] == false && moved).then_some(())
    });
    let before = frozen(&c);
    let out = c.slotctl(via, &["failover", "st0001", "--to", &replica]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("node {replica} is down")),
        "{}",
        text(&out)
    );
    let out = c.slotctl(via, &["drain", &master]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("have no live active replica to move to"),
        "{}",
        text(&out)
    );
    assert_eq!(frozen(&c), before, "refusals changed the cluster");
}

#[test]
fn drain_undrain_and_rebalance_move_every_master_and_back() {
    let c = TestCluster::start(3);
    let s = init(&c, 8);
    let masters = node(&s, "imap2")["masters"].as_array().unwrap().len();
    assert_eq!(masters, 4);

    let out = ok(c.slotctl(1, &["drain", "imap2", "--concurrency", "2", "--wait"]));
    assert!(out.contains("drain of imap2 begun: 4 masters, 2 at a time"), "{out}");
    assert!(out.contains("node imap2 drained"), "{out}");
    let s = c.converged();
    let n = node(&s, "imap2");
    assert_eq!(n["mode"], "drained");
    assert!(n["masters"].as_array().unwrap().is_empty());
    assert!(s["stores"].as_array().unwrap().iter().all(|st| st["phase"] == "stable"));
    let h = json(c.slotctl(1, &["history", "--json"]));
    let moved: Vec<&Value> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["from"] == "imap2")
        .collect();
    assert_eq!(moved.len(), 4);
    assert!(moved
        .iter()
        .all(|e| e["what"] == "switchover" && e["reason"] == "operator"));

    // Nothing goes to a drained node, not even by rebalance.
    let dry = ok(c.slotctl(1, &["rebalance", "--dry-run"]));
    assert!(!dry.contains("→ imap2"), "{dry}");

    ok(c.slotctl(1, &["undrain", "imap2"]));
    let before = frozen(&c);
    let dry = ok(c.slotctl(1, &["rebalance", "--dry-run"]));
    assert!(dry.contains("rebalance would move 4 masters:"), "{dry}");
    assert_eq!(frozen(&c), before, "a dry run changes nothing");
    let out = ok(c.slotctl(1, &["rebalance", "--wait"]));
    assert!(out.contains("rebalance done"), "{out}");
    let s = c.converged();
    assert_eq!(node(&s, "imap2")["masters"].as_array().unwrap().len(), 4);
    assert_eq!(s["rebalancing"], false);
    let again = ok(c.slotctl(1, &["rebalance", "--dry-run"]));
    assert!(again.contains("balanced: nothing to move"), "{again}");
}

#[test]
fn sigterm_hands_the_masters_over_and_the_restart_makes_the_node_active_again() {
    let mut c = TestCluster::start(3);
    let s = init(&c, 8);
    let mine: Vec<String> = node(&s, "imap3")["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine.len(), 4);
    let (status, took) = c.sigterm(3);
    assert!(status.success(), "exit 0 after the drain: {status:?}");
    let s = c.status(1, false).expect("status");
    for name in &mine {
        let st = store(&s, name);
        assert_ne!(st["master"], "imap3", "{name} still on the stopped node");
        assert!(
            st["dirty"].as_array().unwrap().is_empty(),
            "{name}: handed over with a flush"
        );
    }
    let h = json(c.slotctl(1, &["history", "--json"]));
    let entries = h["entries"].as_array().unwrap();
    for name in &mine {
        let e = entries
            .iter()
            .rev()
            .find(|e| e["store"] == name.as_str())
            .expect("history entry");
        assert_eq!(
            (e["what"].as_str(), e["reason"].as_str()),
            (Some("switchover"), Some("stop")),
            "{e}"
        );
    }
    assert!(c.agent(3).log().contains("masters handed over"), "took {took:?}");

    c.restart(3);
    wait_for("imap3 active again", WAIT, || {
        let s = c.status(1, false)?;
        (node(&s, "imap3")["mode"] == "active").then_some(())
    });
}
