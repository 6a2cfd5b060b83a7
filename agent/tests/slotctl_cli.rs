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

/// `slotctl certs` makes a CA and certificates that the agent and slotctl
/// accept, reuses the CA for nodes added later, never overwrites, keeps
/// keys private; slotctl refuses bad TLS arguments before any call.
#[test]
fn certs_and_tls_arguments() {
    use slotd_agent::tls::{Credentials, Files, Who};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let topology = dir.path().join("topology.toml");
    let out = slotctl(&["plan", "--nodes", "3", "--slots", "2"]);
    std::fs::write(&topology, &out.stdout).unwrap();
    let t = tls.to_str().unwrap();
    let out = slotctl(&[
        "certs",
        "--dir",
        t,
        "--topology",
        topology.to_str().unwrap(),
        "--operator",
        "alice",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let load = |stem: &str| {
        Credentials::load(&Files {
            ca: ("ca", &tls.join("ca.pem")),
            cert: ("cert", &tls.join(format!("{stem}.pem"))),
            key: ("key", &tls.join(format!("{stem}.key"))),
        })
    };
    for n in ["imap1", "imap2", "imap3"] {
        assert_eq!(load(&format!("node-{n}")).unwrap().who, Who::Node(n.into()));
    }
    assert_eq!(load("operator-alice").unwrap().who, Who::Operator("alice".into()));
    for key in ["ca.key", "node-imap1.key", "operator-alice.key"] {
        let mode = std::fs::metadata(tls.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }

    // Asked again for an existing certificate: refused, nothing written.
    let ca_before = std::fs::read(tls.join("ca.pem")).unwrap();
    let cert_before = std::fs::read(tls.join("node-imap1.pem")).unwrap();
    let out = slotctl(&["certs", "--dir", t, "--node", "imap4", "--node", "imap1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node-imap1.pem exists already"));
    assert!(!tls.join("node-imap4.pem").exists(), "a refused call wrote a file");
    assert_eq!(std::fs::read(tls.join("node-imap1.pem")).unwrap(), cert_before);
    // A node added later: same CA.
    let out = slotctl(&["certs", "--dir", t, "--node", "imap4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(tls.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(load("node-imap4").unwrap().who, Who::Node("imap4".into()));
    // Bad names and days.
    for (args, want) in [
        (vec!["--node", "bad/name"], "may only hold"),
        (vec!["--operator", "x", "--days", "0"], "--days"),
    ] {
        let mut full = vec!["certs", "--dir", t];
        full.extend(args);
        let out = slotctl(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }

    // slotctl's own TLS arguments, refused before any connection (the
    // endpoint is never reached: nothing listens there).
    let open = dir.path().join("open.key");
    std::fs::copy(tls.join("operator-alice.key"), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o604)).unwrap();
    let ca = tls.join("ca.pem");
    let cert = tls.join("operator-alice.pem");
    let key = tls.join("operator-alice.key");
    let (ca, cert, key, open) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        open.to_str().unwrap(),
    );
    for (args, want) in [
        (vec!["status"], "no TLS credentials"),
        (vec!["--ca", ca, "--cert", cert, "status"], "--key is missing"),
        (
            vec!["--ca", ca, "--cert", cert, "--key", key, "--insecure", "status"],
            "--insecure together",
        ),
        (
            vec!["--ca", ca, "--cert", cert, "--key", open, "status"],
            "readable by others",
        ),
        (vec!["--ca", cert, "--cert", cert, "--key", key, "status"], "--cert"),
    ] {
        let mut full = vec!["--endpoint", "127.0.0.1:1"];
        full.extend(args.iter().copied());
        let out = Command::new(env!("CARGO_BIN_EXE_slotctl"))
            .args(&full)
            .env_remove("SLOTCTL_CA")
            .env_remove("SLOTCTL_CERT")
            .env_remove("SLOTCTL_KEY")
            .env_remove("SLOTCTL_INSECURE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}
