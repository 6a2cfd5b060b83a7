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

/// `slotctl net` runs the same code as the agent, inside a namespace made for
/// this test (needs root; fails, never skips, without it).
#[test]
fn net_bind_list_release_in_a_namespace() {
    use slotd_netops::testkit::{require_root, Lan, IFACE};
    require_root();
    let lan = Lan::new("ctl", &["a"]);
    let a = lan.host("a");
    let bin = env!("CARGO_BIN_EXE_slotctl");
    let run = |args: &[&str]| {
        let mut full = vec!["net"];
        full.extend_from_slice(args);
        a.exec(bin, &full)
    };
    let out = run(&["bind", "--interface", IFACE, "10.91.0.7/32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["list", "--interface", IFACE]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.91.0.7/32"));
    assert!(a.ip(&["-4", "addr", "show", "dev", IFACE]).contains("10.91.0.7/32"));
    let out = run(&["release", "--interface", IFACE, "10.91.0.7/32"]);
    assert!(out.status.success());
    assert!(!a.ip(&["-4", "addr", "show", "dev", IFACE]).contains("10.91.0.7"));

    let out = run(&["bind", "--interface", "nosuch0", "10.91.0.7/32"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch0"));
    let out = run(&["bind", "--interface", IFACE, "10.91.0.7/33"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10.91.0.7/33") && err.trim_end().lines().count() == 1,
        "{err}"
    );
}
