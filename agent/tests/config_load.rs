//! `Config::load` on bad files: every error is one line that starts with the
//! file name and names the offending field by its full dotted path.

use std::path::Path;

use slotd_agent::config::{Config, ConfigError};

/// A valid file; cases replace or append lines.
const GOOD: &str = r#"node_id = 1
name = "imap1"
listen = "10.0.0.1:7420"
metrics_listen = "127.0.0.1:9420"
data_dir = "/var/lib/slotd"
interface = "eth0"
tls = { ca_file = "/etc/slotd/tls/ca.pem", cert_file = "/etc/slotd/tls/node-imap1.pem", key_file = "/etc/slotd/tls/node-imap1.key" }
[cyrus]
driver = "systemd"
[timing]
heartbeat_ms = 200
lease_ms = 2000
clock_skew_margin_ms = 500
election_timeout_min_ms = 100
election_timeout_max_ms = 250
raft_heartbeat_ms = 75
"#;

/// `GOOD` with the line starting with `key =` replaced by `line`
/// (or removed if `line` is empty).
fn with(key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut out = String::new();
    let mut found = false;
    for l in GOOD.lines() {
        if l.starts_with(&prefix) {
            found = true;
            if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(found, "no line for {key}");
    out
}

struct Case {
    /// What the case is about.
    what: &'static str,
    /// The file's text.
    text: String,
    /// The field the message must name (inside backticks), if any.
    field: Option<&'static str>,
    /// Further text the message must contain.
    contains: &'static str,
}

fn case(what: &'static str, text: String, field: Option<&'static str>, contains: &'static str) -> Case {
    Case {
        what,
        text,
        field,
        contains,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "unknown top-level key",
            GOOD.replacen("name = ", "colour = \"blue\"\nname = ", 1),
            Some("colour"),
            "unknown field `colour` (at line 2); expected one of node_id, name,",
        ),
        case(
            "unknown key in [timing]",
            format!("{GOOD}colour = 3\n"),
            Some("timing.colour"),
            "(at line 17); expected one of heartbeat_ms,",
        ),
        case(
            "unknown key in [cyrus]",
            GOOD.replacen("driver = \"systemd\"", "driver = \"systemd\"\nbinary = \"/x\"", 1),
            Some("cyrus.binary"),
            "expected one of driver",
        ),
        case("missing node_id", with("node_id", ""), Some("node_id"), "missing"),
        case("missing interface", with("interface", ""), Some("interface"), "missing"),
        case(
            "listen without port",
            with("listen", "listen = \"10.0.0.1\""),
            Some("listen"),
            "\"10.0.0.1\" is not IP:port",
        ),
        case(
            "listen as hostname",
            with("listen", "listen = \"imap1:7420\""),
            Some("listen"),
            "is not IP:port",
        ),
        case(
            "metrics_listen not an address",
            with("metrics_listen", "metrics_listen = \"localhost\""),
            Some("metrics_listen"),
            "\"localhost\" is not IP:port",
        ),
        case(
            "metrics_listen on the gRPC port",
            with("metrics_listen", "metrics_listen = \"0.0.0.0:7420\""),
            Some("metrics_listen"),
            "overlaps listen",
        ),
        case(
            "lease_ms as a string",
            with("lease_ms", "lease_ms = \"2s\""),
            Some("timing.lease_ms"),
            "invalid type: string \"2s\", expected u64",
        ),
        case(
            "negative node_id",
            with("node_id", "node_id = -1"),
            Some("node_id"),
            "invalid value",
        ),
        case(
            "unknown cyrus driver",
            with("driver", "driver = \"docker\""),
            Some("cyrus.driver"),
            "unknown variant `docker`",
        ),
        case(
            "lease not above heartbeat",
            with("lease_ms", "lease_ms = 200"),
            Some("timing.lease_ms"),
            "must be greater than timing.heartbeat_ms (200)",
        ),
        case(
            "zero heartbeat",
            with("heartbeat_ms", "heartbeat_ms = 0"),
            Some("timing.heartbeat_ms"),
            "must be greater than 0",
        ),
        case(
            "absurdly long lease",
            with("lease_ms", "lease_ms = 18446744073709551615"),
            Some("timing.lease_ms"),
            "must be at most",
        ),
        case(
            "clock skew margin not below lease",
            with("clock_skew_margin_ms", "clock_skew_margin_ms = 2000"),
            Some("timing.clock_skew_margin_ms"),
            "must be less than timing.lease_ms (2000)",
        ),
        case(
            "election timeout range reversed",
            with("election_timeout_min_ms", "election_timeout_min_ms = 1500"),
            Some("timing.election_timeout_min_ms"),
            "must be less than timing.election_timeout_max_ms (250)",
        ),
        case(
            "raft heartbeat not below election timeout",
            with("raft_heartbeat_ms", "raft_heartbeat_ms = 100"),
            Some("timing.raft_heartbeat_ms"),
            "must be less than timing.election_timeout_min_ms (100)",
        ),
        case(
            "lease shorter than a change of leader (openraft's leader lease + election timeout)",
            with("election_timeout_max_ms", "election_timeout_max_ms = 1200"),
            Some("timing.lease_ms"),
            "must be at least 6525 to outlast a change of Raft leader",
        ),
        case(
            "lease shorter than a change of leader (default election timeouts)",
            with("lease_ms", "lease_ms = 1600"),
            Some("timing.lease_ms"),
            "every master fences itself when the leader dies",
        ),
        case(
            "node name with a space",
            with("name", "name = \"imap 1\""),
            Some("name"),
            "\"imap 1\" is not a valid node name",
        ),
        case(
            "node name starting with a dash",
            with("name", "name = \"-imap1\""),
            Some("name"),
            "is not a valid node name",
        ),
        case(
            "empty data_dir",
            with("data_dir", "data_dir = \"\""),
            Some("data_dir"),
            "must not be empty",
        ),
        case(
            "interface name too long",
            with("interface", "interface = \"averyveryverylongif\""),
            Some("interface"),
            "longer than 15 bytes",
        ),
        case(
            "interface name with a slash",
            with("interface", "interface = \"eth0/1\""),
            Some("interface"),
            "is not a valid interface name",
        ),
        case(
            "timing as a value, not a table",
            format!("timing = 5\n{}", &GOOD[..GOOD.find("[cyrus]").unwrap_or(GOOD.len())]),
            Some("timing"),
            "invalid type: integer `5`",
        ),
        case(
            "TOML syntax error",
            with("lease_ms", "lease_ms = = 3"),
            None,
            "TOML syntax error at line 12, column",
        ),
        case(
            "duplicate key",
            format!("{GOOD}lease_ms = 3000\n"),
            None,
            "TOML syntax error at line 17",
        ),
    ]
}

fn load_text(dir: &Path, text: &str) -> Result<(String, Result<Config, ConfigError>), std::io::Error> {
    let path = dir.join("slotd.toml");
    std::fs::write(&path, text)?;
    Ok((path.display().to_string(), Config::load(&path)))
}

#[test]
fn the_good_file_loads() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (_, result) = load_text(dir.path(), GOOD)?;
    let config = result?;
    assert_eq!(config.name, "imap1");
    // And what it renders loads back the same.
    let (_, again) = load_text(dir.path(), &config.to_toml())?;
    assert_eq!(again?, config);
    Ok(())
}

#[test]
fn bad_files_name_the_file_and_the_field_in_one_line() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut failures = Vec::new();
    for case in cases() {
        let (origin, result) = load_text(dir.path(), &case.text)?;
        let err = match result {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", case.what));
                continue;
            }
            Err(err) => err,
        };
        let msg = err.to_string();
        // Shown with --nocapture, to read the messages as an operator would.
        println!("{:<45} {msg}", case.what);
        let mut problems = Vec::new();
        if msg.contains('\n') || msg.contains('\r') {
            problems.push("is not one line");
        }
        if !msg.starts_with(&format!("{origin}: ")) {
            problems.push("does not start with the file name");
        }
        if let Some(field) = case.field {
            if !msg.contains(&format!("`{field}`")) {
                problems.push("does not name the field");
            }
            if err.field() != Some(field) {
                problems.push("ConfigError::field() differs");
            }
        }
        if !msg.contains(case.contains) {
            problems.push("lacks the expected text");
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}: {msg:?} (want field {:?}, text {:?})",
                case.what,
                problems.join(", "),
                case.field,
                case.contains
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    Ok(())
}

#[test]
fn a_missing_file_says_cannot_read() {
    let path = Path::new("/nonexistent/slotd-test/slotd.toml");
    match Config::load(path) {
        Ok(_) => panic!("loaded a file that does not exist"),
        Err(err) => {
            let msg = err.to_string();
            assert!(
                msg.starts_with("/nonexistent/slotd-test/slotd.toml: cannot read: "),
                "{msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
            assert!(matches!(err, ConfigError::Read { .. }));
        }
    }
}

#[test]
fn exact_messages_for_the_documented_examples() -> Result<(), Box<dyn std::error::Error>> {
    let cases = [
        (
            with("listen", "listen = \"10.0.0.1\""),
            "slotd.toml: field `listen`: \"10.0.0.1\" is not IP:port",
        ),
        (
            with("lease_ms", "lease_ms = \"2s\""),
            "slotd.toml: field `timing.lease_ms`: invalid type: string \"2s\", expected u64",
        ),
        (with("node_id", ""), "slotd.toml: field `node_id`: missing"),
        (
            with("lease_ms", "lease_ms = 100"),
            "slotd.toml: field `timing.lease_ms`: must be greater than timing.heartbeat_ms (200)",
        ),
        (
            with("driver", "driver = \"docker\""),
            "slotd.toml: field `cyrus.driver`: unknown variant `docker`, expected one of `systemd`, `exec`, `none`",
        ),
    ];
    for (text, want) in cases {
        let got = Config::parse(&text, "slotd.toml").err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), Some(want));
    }
    Ok(())
}

/// The example files the package ships (`examples/`) are valid as they are.
#[test]
fn the_shipped_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let c = Config::load(&root.join("slotd.toml")).expect("examples/slotd.toml");
    assert_eq!(c.name, "imap1");
    assert!(!c.tls.insecure && c.tls.key_file.is_some());
    let text = std::fs::read_to_string(root.join("topology.toml")).expect("examples/topology.toml");
    let t = slotd_raft_store::topology::parse(&text).expect("examples/topology.toml");
    assert_eq!((t.nodes.len(), t.stores.len()), (3, 6));
    assert!(t.nodes.iter().any(|n| n.id == c.node_id && n.name == c.name));
}
