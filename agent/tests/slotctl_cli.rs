//! `slotctl` run as a binary: plans are valid topologies, bad arguments fail
//! with a one-line reason and a non-zero exit code.

use std::process::Command;

fn slotctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slotctl"))
        .args(args)
        .output()
        .expect("run slotctl")
}

#[test]
fn plan_prints_a_topology_that_parses() {
    let out = slotctl(&["plan", "--nodes", "6", "--slots", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let t = slotd_raft_store::topology::parse(&text).unwrap();
    assert_eq!((t.nodes.len(), t.stores.len()), (6, 12));
    assert_eq!(t.nodes.iter().filter(|n| n.voter).count(), 5);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, &text).unwrap();
    let out = slotctl(&["check-topology", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 nodes, 12 stores: ok"));
}

#[test]
fn bad_arguments_fail_with_one_line() {
    for (args, want) in [
        (vec!["plan", "--nodes", "3", "--slots", "3"], "odd number of slots"),
        (vec!["plan", "--nodes", "1", "--slots", "4"], "--nodes must be from 2"),
        (
            vec!["plan", "--nodes", "4", "--slots", "4", "--voters", "9"],
            "--voters must be from 1 to --nodes (4)",
        ),
        (
            vec!["check-topology", "/nonexistent/topology.toml"],
            "/nonexistent/topology.toml",
        ),
    ] {
        let out = slotctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let out = slotctl(&["plan", "--nodes", "x", "--slots", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes"));
}
