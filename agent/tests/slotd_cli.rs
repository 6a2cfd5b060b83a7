//! `slotd` run as a binary: `--check-config` accepts a good file, refuses bad
//! ones with exit code 2 and one line naming the field; bad arguments too.

use std::process::Command;

fn slotd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(args)
        .output()
        .expect("run slotd")
}

const GOOD: &str = r#"node_id = 1
name = "imap1"
listen = "10.0.0.1:7420"
metrics_listen = "127.0.0.1:9420"
data_dir = "/var/lib/slotd"
interface = "eth0"
tls = { insecure = true }
[cyrus]
driver = "none"
[timing]
heartbeat_ms = 200
lease_ms = 2000
clock_skew_margin_ms = 500
"#;

#[test]
fn check_config_accepts_good_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let out = slotd(&["--check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cases = [
        (
            GOOD.replace("node_id = 1\n", "node_id = 1\ncolour = \"red\"\n"),
            "unknown field `colour`",
        ),
        (GOOD.replace("10.0.0.1:7420", "10.0.0.1"), "field `listen`"),
        (
            GOOD.replace("lease_ms = 2000", "lease_ms = \"2s\""),
            "field `timing.lease_ms`",
        ),
        (
            GOOD.replace("lease_ms = 2000", "lease_ms = 100"),
            "field `timing.lease_ms`",
        ),
        (
            GOOD.replace("driver = \"none\"", "driver = \"docker\""),
            "field `cyrus.driver`",
        ),
        (GOOD.replace("name = \"imap1\"\n", ""), "field `name`: missing"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for flag in ["--check-config", "--config"] {
            let out = slotd(&[flag, path.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {want}: {err}");
            assert!(err.contains(want), "{flag}: expected {want:?} in {err}");
            assert!(err.contains(&format!("bad{i}.toml")), "names the file: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        }
    }
    let out = slotd(&["--check-config", "/nonexistent/slotd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/slotd.toml: cannot read"));
    let out = slotd(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn a_cyrus_driver_needs_its_sync_password_and_systemd_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("sync-password");
    let data = dir.path().join("data");
    // The config default: the systemd driver.
    let text = GOOD
        .replace("[cyrus]\ndriver = \"none\"\n", "")
        .replace("10.0.0.1:7420", "127.0.0.1:0")
        .replace("127.0.0.1:9420", "127.0.0.1:0")
        .replace("/var/lib/slotd", data.to_str().unwrap())
        .replace("interface = \"eth0\"", "interface = \"lo\"\nmanage_addresses = false")
        + &format!("[cyrus]\nsync_password_file = {:?}\n", password.to_str().unwrap());
    let config = dir.path().join("slotd.toml");
    std::fs::write(&config, &text).unwrap();

    // Without the password file: refused before anything starts, naming it.
    let out = slotd(&["--check-config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cyrus.sync_password_file") && err.contains("sync-password"),
        "{err}"
    );
    std::fs::write(&password, "").unwrap();
    let out = slotd(&["--check-config", config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty"),
        "an empty password is refused"
    );
    assert_eq!(out.status.code(), Some(2));

    std::fs::write(&password, "secret\n").unwrap();
    let out = slotd(&["--check-config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Here systemd is not the service manager (tests run without it), or it
    // runs without the slot unit installed: the agent refuses to start and
    // says what it needs, instead of failing at the first move.
    let out = slotd(&["--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without systemd: {err}");
    assert!(
        err.contains("needs systemd as the service manager") || err.contains("does not know cyrus-slot@.service"),
        "{err}"
    );
}

/// A config in `dir` that runs here, on loopback without touching the
/// machine: (its path, its data dir, its text).
fn runnable(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let data = dir.join("data");
    let text = GOOD
        .replace("10.0.0.1:7420", "127.0.0.1:0")
        .replace("127.0.0.1:9420", "127.0.0.1:0")
        .replace("/var/lib/slotd", data.to_str().unwrap())
        .replace("interface = \"eth0\"", "interface = \"lo\"\nmanage_addresses = false")
        .replace(
            "[cyrus]",
            &format!("runtime_dir = {:?}\n[cyrus]", dir.join("run").to_str().unwrap()),
        );
    let config = dir.join("slotd.toml");
    std::fs::write(&config, &text).unwrap();
    (config, data, text)
}

/// Runs `slotd --config` until it serves (its endpoints file), then stops
/// it with SIGTERM.
fn run_once(config: &std::path::Path, data: &std::path::Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !data.join("endpoints").exists() {
        assert!(std::time::Instant::now() < deadline, "slotd did not serve");
        assert!(child.try_wait().unwrap().is_none(), "slotd exited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_corrupt_raft_database_is_refused_by_name_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, _) = runnable(dir.path());
    run_once(&config, &data);
    let db = data.join("raft.redb");
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 8192, "a database was written");

    let truncated = good[..good.len() / 2].to_vec();
    let mut flipped = good.clone();
    for i in (4096..flipped.len()).step_by(997) {
        flipped[i] ^= 0xff;
    }
    for (what, bytes) in [("truncated", truncated), ("flipped", flipped)] {
        std::fs::write(&db, &bytes).unwrap();
        let out = slotd(&["--config", config.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: started on a corrupt database");
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(
            last.starts_with("slotd: ") && last.contains(db.to_str().unwrap()),
            "{what}: the refusal names the file: {err}"
        );
        assert!(
            last.contains("corrupt") || last.contains("DB corrupted"),
            "{what}: says it is corrupt: {last}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "{what}: the file is left as it is");
    }
    // The good file back: the agent starts again.
    std::fs::write(&db, &good).unwrap();
    let _ = std::fs::remove_file(data.join("endpoints"));
    run_once(&config, &data);
}

/// `--check-config` (and the start) read the `[tls]` files: a key others
/// can read, another node's certificate, an operator's, another CA's, or
/// a missing file are each refused with exit code 2 and a line naming the
/// field and the file; the right files pass.
#[test]
fn tls_files_are_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let make = |sub: &str| {
        let request = slotd_agent::tls::certs::Request {
            nodes: vec![("imap1".into(), vec![]), ("imap2".into(), vec![])],
            operators: vec!["ops".into()],
            days: 1,
        };
        slotd_agent::tls::certs::make(&dir.path().join(sub), &request).unwrap();
        dir.path().join(sub)
    };
    let (ours, theirs) = (make("ours"), make("theirs"));
    let config = |ca: &std::path::Path, stem: &str, key: &std::path::Path| {
        let tls = format!(
            "tls = {{ ca_file = {:?}, cert_file = {:?}, key_file = {:?} }}",
            ca.join("ca.pem"),
            ca.join(format!("{stem}.pem")),
            key
        );
        let path = dir.path().join(format!("{stem}-{}.toml", rand_suffix()));
        std::fs::write(&path, GOOD.replace("tls = { insecure = true }", &tls)).unwrap();
        path
    };
    let key = |d: &std::path::Path, stem: &str| d.join(format!("{stem}.key"));

    let good = config(&ours, "node-imap1", &key(&ours, "node-imap1"));
    let out = slotd(&["--check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A world-readable copy of the right key.
    let open_key = dir.path().join("open.key");
    std::fs::copy(key(&ours, "node-imap1"), &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Our CA, their certificate (and key) for the same node.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(ours.join("ca.pem"), foreign.join("ca.pem")).unwrap();
    std::fs::copy(theirs.join("node-imap1.pem"), foreign.join("node-imap1.pem")).unwrap();
    let cases = [
        (
            config(&ours, "node-imap1", &open_key),
            "tls.key_file",
            "readable by others",
        ),
        (
            config(&ours, "node-imap2", &key(&ours, "node-imap2")),
            "tls.cert_file",
            "names node imap2; this node is imap1",
        ),
        (
            config(&ours, "operator-ops", &key(&ours, "operator-ops")),
            "tls.cert_file",
            "names operator ops",
        ),
        (
            config(&foreign, "node-imap1", &key(&theirs, "node-imap1")),
            "tls.cert_file",
            "not a valid certificate of the CA",
        ),
        (
            config(&ours, "node-imap1", &key(&ours, "node-imap2")),
            "tls.key_file",
            "does not belong to",
        ),
        (
            config(&ours, "node-imap1", &dir.path().join("nosuch.key")),
            "tls.key_file",
            "nosuch.key",
        ),
    ];
    for (path, field, want) in cases {
        for flag in ["--check-config", "--config"] {
            let out = slotd(&[flag, path.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {want}: {err}");
            let first = err.lines().find(|l| l.starts_with("slotd:")).unwrap_or_default();
            assert!(
                first.contains(field) && first.contains(want),
                "{flag}: want {field} / {want}: {err}"
            );
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Waits until the log file `log` has a line containing `what`; the
/// child must keep running meanwhile.
fn wait_logged(child: &mut std::process::Child, log: &std::path::Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(what)) {
            return line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "never logged {what:?}: {text}");
        assert!(child.try_wait().unwrap().is_none(), "slotd exited: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Under systemd (`JOURNAL_STREAM` naming its stderr) every line carries the
/// priority journald reads and no timestamp of its own; SIGHUP (`systemctl
/// reload`) re-reads the file, names each setting that needs a restart (and
/// apart, the cluster's timings, which `slotctl config set` changes), and
/// the agent runs on (SIGHUP's default action ended it, undrained).
#[test]
fn under_journald_lines_carry_priorities_and_sighup_names_what_needs_a_restart() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let (config, _, text) = runnable(dir.path());
    let log = dir.path().join("journal");
    let stream = std::fs::File::create(&log).unwrap();
    let meta = stream.metadata().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(stream)
        .spawn()
        .unwrap();
    let serving = wait_logged(&mut child, &log, "slotd serving");
    assert!(serving.starts_with("<6> INFO"), "{serving}");
    let first = std::fs::read_to_string(&log).unwrap();
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('<') && !first.contains("Z "),
        "a priority prefix and no timestamp: {first}"
    );
    let pid = child.id() as i32;
    let hup = || {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };

    hup();
    let same = wait_logged(&mut child, &log, "SIGHUP: the configuration is unchanged");
    assert!(same.starts_with("<6>"), "{same}");

    // A node's own setting and one of the cluster's timings: each said
    // for what it is.
    let both = text.replace("heartbeat_ms = 200", "heartbeat_ms = 300\nprobe_timeout_ms = 250");
    assert_ne!(both, text);
    std::fs::write(&config, &both).unwrap();
    hup();
    let cluster = wait_logged(&mut child, &log, "SIGHUP: these timings are the cluster's");
    assert!(cluster.starts_with("<4> WARN"), "a warning: {cluster}");
    assert!(cluster.contains("timing.heartbeat_ms"), "{cluster}");
    assert!(cluster.contains("slotctl config set"), "{cluster}");
    let changed = wait_logged(&mut child, &log, "SIGHUP: these settings differ");
    assert!(changed.starts_with("<4> WARN"), "a warning: {changed}");
    assert!(changed.contains("timing.probe_timeout_ms"), "{changed}");
    assert!(!changed.contains("timing.heartbeat_ms"), "{changed}");

    std::fs::write(&config, "node_id = \"one\"\n").unwrap();
    hup();
    let bad = wait_logged(&mut child, &log, "running on with the configuration it started with");
    assert!(bad.contains("node_id"), "the bad field is named: {bad}");

    // Still the same agent, which stops cleanly.
    assert!(child.try_wait().unwrap().is_none());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}
