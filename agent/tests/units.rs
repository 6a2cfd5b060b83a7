//! The systemd units in `systemd/` as systemd reads them: `systemd-analyze
//! verify` (offline; no running systemd needed) accepts each, with the
//! binaries they name present. CI installs systemd and Cyrus (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The value of `key` in a unit's text (its first `key=` line).
fn setting(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// Runs `systemd-analyze verify UNIT` in `dir`; its complaints, if any.
fn verify(dir: &Path, unit: &str) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join(unit))
        .current_dir(dir)
        .output()
        .map_err(|e| format!("systemd-analyze: {e} (CI installs systemd)"))?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{unit}: {}: {said}", out.status))
    }
}

#[test]
fn the_cyrus_slot_template_verifies() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(units().join("cyrus-slot@.service")).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("cyrus-slot@.service"), &text).map_err(|e| e.to_string())?;
    // An instance of the template, as the agent starts it.
    verify(dir.path(), "cyrus-slot@s01.service")?;
    // The checks have teeth: a broken copy is refused.
    let broken = text.replace("KillMode=control-group", "KillMode=whole-group");
    std::fs::write(dir.path().join("cyrus-slot@.service"), broken).map_err(|e| e.to_string())?;
    match verify(dir.path(), "cyrus-slot@s01.service") {
        Err(e) if e.contains("kill mode") => Ok(()),
        other => Err(format!("a broken unit passed or failed otherwise: {other:?}")),
    }
}

#[test]
fn the_slot_unit_never_restarts_or_starts_at_boot_and_stops_its_cgroup() -> Result<(), String> {
    let text = std::fs::read_to_string(units().join("cyrus-slot@.service")).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in ["KillMode=control-group", "Restart=no", "SendSIGKILL=yes", "Type=exec"] {
        if !lines.contains(&want) {
            return Err(format!("cyrus-slot@.service lacks {want}"));
        }
    }
    if lines.contains(&"[Install]") {
        return Err("cyrus-slot@.service must not be installable (a slot starts only with a lease)".into());
    }
    Ok(())
}

#[test]
fn the_agent_unit_verifies() -> Result<(), String> {
    // As installed, /usr/bin/slotd; here the binary this build made.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(units().join("slotd.service")).map_err(|e| e.to_string())?;
    let text = text.replace("/usr/bin/slotd", env!("CARGO_BIN_EXE_slotd"));
    std::fs::write(dir.path().join("slotd.service"), text).map_err(|e| e.to_string())?;
    verify(dir.path(), "slotd.service")
}

#[test]
fn the_fencer_unit_verifies_and_does_not_share_the_agents_fate() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for unit in ["slotd.service", "slotd-fencer.service"] {
        let text = std::fs::read_to_string(units().join(unit)).map_err(|e| e.to_string())?;
        let text = text.replace("/usr/bin/slotd", env!("CARGO_BIN_EXE_slotd"));
        std::fs::write(dir.path().join(unit), text).map_err(|e| e.to_string())?;
    }
    verify(dir.path(), "slotd-fencer.service")?;
    let fencer = std::fs::read_to_string(units().join("slotd-fencer.service")).map_err(|e| e.to_string())?;
    let agent = std::fs::read_to_string(units().join("slotd.service")).map_err(|e| e.to_string())?;
    // Started first, never stopped with the agent (a Requires/BindsTo/PartOf
    // would stop it when the agent stops, or fails).
    let has = |text: &str, key: &str, word: &str| setting(text, key).is_some_and(|v| v.split(' ').any(|w| w == word));
    if !has(&agent, "After", "slotd-fencer.service") || !has(&agent, "Wants", "slotd-fencer.service") {
        return Err("slotd.service must want the fencer and start after it".into());
    }
    for key in ["Requires", "BindsTo", "PartOf", "Requisite"] {
        if setting(&fencer, key).is_some() || setting(&agent, key).is_some_and(|v| v.contains("fencer")) {
            return Err(format!("{key}= ties the fencer's life to the agent's"));
        }
    }
    for (key, want) in [
        ("Restart", "always"),
        ("StartLimitIntervalSec", "0"),
        ("RuntimeDirectory", "slotd"),
        ("RuntimeDirectoryPreserve", "yes"),
        ("RuntimeDirectoryMode", "0750"),
    ] {
        if setting(&fencer, key).as_deref() != Some(want) {
            return Err(format!(
                "slotd-fencer.service: {key} is {:?}, want {want}",
                setting(&fencer, key)
            ));
        }
    }
    // The socket the agent looks for is where the unit makes its directory.
    let socket = slotd_agent::host::fencer_socket::SOCKET;
    let config = slotd_agent::config::Config::builder(
        1,
        "a",
        "127.0.0.1:1".parse().map_err(|_| "addr")?,
        "/var/lib/slotd".into(),
    );
    let mut config = config;
    config.runtime_dir = "/run/slotd".into();
    if slotd_agent::host::fencer_socket::socket_path(&config) != Path::new("/run/slotd").join(socket) {
        return Err("the fencer's socket is not in the runtime directory".into());
    }
    Ok(())
}

/// The agent's unit is hardened, and what it leaves writable and reachable
/// is what the agent needs with its default paths: the data and runtime
/// directories (and the Cyrus root below the first), netlink, packet
/// sockets, IP and Unix sockets; it restarts without a start limit, and
/// its runtime directory has tmpfiles' mode.
#[test]
fn the_agent_unit_is_hardened_around_what_the_agent_needs() -> Result<(), String> {
    let text = std::fs::read_to_string(units().join("slotd.service")).map_err(|e| e.to_string())?;
    let value = |key: &str| setting(&text, key);
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("Type", "notify"),
        // As tmpfiles makes it (RuntimeDirectory's default is 0755).
        ("RuntimeDirectoryMode", "0750"),
        // A crash loop never ends in a start limit: the agent always
        // comes back (and fences every time it ends).
        ("Restart", "always"),
        ("StartLimitIntervalSec", "0"),
    ] {
        if value(key).as_deref() != Some(want) {
            return Err(format!("slotd.service: {key} is {:?}, want {want}", value(key)));
        }
    }
    let families = value("RestrictAddressFamilies").ok_or("no RestrictAddressFamilies")?;
    for family in ["AF_UNIX", "AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6"] {
        if !families.split_whitespace().any(|f| f == family) {
            return Err(format!("RestrictAddressFamilies lacks {family}, which the agent uses"));
        }
    }
    let writable: Vec<String> = value("ReadWritePaths")
        .ok_or("no ReadWritePaths")?
        .split_whitespace()
        .map(|p| p.trim_start_matches('-').to_owned())
        .collect();
    let defaults = slotd_agent::config::CyrusConfig::default();
    for (what, path) in [
        ("data_dir (the README's)", std::path::PathBuf::from("/var/lib/slotd")),
        (
            "runtime_dir",
            std::path::PathBuf::from(slotd_agent::config::DEFAULT_RUNTIME_DIR),
        ),
        ("cyrus.root", defaults.root.clone()),
    ] {
        if !writable.iter().any(|w| path.starts_with(w)) {
            return Err(format!(
                "{what} {} is not writable under ProtectSystem=strict",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The watchdog arithmetic the agent checks holds for the path the unit
/// really takes: its WatchdogSec, and a fence run without the sandbox's
/// setup time (`ExecStopPost=+`), which would not fit the default margin.
#[test]
fn the_agent_units_watchdog_and_fence_fit_the_default_margin() -> Result<(), String> {
    use slotd_core::node::watchdog::{check, worst_case};
    use slotd_core::timing::{FENCE_SANDBOX_TIME, UNIT_WATCHDOG};
    let text = std::fs::read_to_string(units().join("slotd.service")).map_err(|e| e.to_string())?;
    let value = |key: &str| setting(&text, key);
    let watchdog = value("WatchdogSec").ok_or("no WatchdogSec")?;
    let ms: u64 = watchdog
        .strip_suffix("ms")
        .and_then(|v| v.parse().ok())
        .ok_or(format!("WatchdogSec={watchdog}: want a value in ms"))?;
    if std::time::Duration::from_millis(ms) != UNIT_WATCHDOG {
        return Err(format!(
            "WatchdogSec={watchdog}, the arithmetic assumes {UNIT_WATCHDOG:?}"
        ));
    }
    let margin = slotd_agent::config::Timing::default().clock_skew_margin();
    check(UNIT_WATCHDOG, margin)?;
    let fence = value("ExecStopPost").ok_or("no ExecStopPost")?;
    if !fence.starts_with("+/usr/bin/slotd fence") {
        return Err(format!(
            "ExecStopPost={fence}: the fence must run outside the sandbox (\"+\"): with its {FENCE_SANDBOX_TIME:?} \
             of setup the worst case is {:?}, over the {margin:?} margin",
            worst_case(UNIT_WATCHDOG) + FENCE_SANDBOX_TIME
        ));
    }
    Ok(())
}

/// The sysusers and tmpfiles snippets, applied to an empty root by the
/// real tools: the group, and the directories with their modes and group.
#[test]
fn sysusers_and_tmpfiles_snippets_apply() -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).map_err(|e| e.to_string())?;
    for f in ["etc/passwd", "etc/group"] {
        std::fs::write(r.join(f), "").map_err(|e| e.to_string())?;
    }
    for (tool, snippet) in [
        ("systemd-sysusers", "slotd.sysusers"),
        ("systemd-tmpfiles", "slotd.tmpfiles"),
    ] {
        let mut cmd = Command::new(tool);
        cmd.arg(format!("--root={}", r.display()));
        if tool == "systemd-tmpfiles" {
            cmd.arg("--create");
        }
        let out = cmd
            .arg(units().join(snippet))
            .output()
            .map_err(|e| format!("{tool}: {e} (CI installs systemd)"))?;
        if !out.status.success() {
            return Err(format!("{tool} {snippet}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let group = std::fs::read_to_string(r.join("etc/group")).map_err(|e| e.to_string())?;
    if !group.lines().any(|l| l.starts_with("slotd:")) {
        return Err(format!("no group slotd: {group:?}"));
    }
    for (dir, mode) in [("etc/slotd", 0o750), ("etc/slotd/tls", 0o750), ("var/lib/slotd", 0o750)] {
        let m = std::fs::metadata(r.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
        if m.permissions().mode() & 0o7777 != mode {
            return Err(format!(
                "{dir}: mode {:o}, want {mode:o}",
                m.permissions().mode() & 0o7777
            ));
        }
        if dir.starts_with("etc") && m.gid() == 0 {
            return Err(format!("{dir}: group root, want slotd"));
        }
    }
    Ok(())
}
