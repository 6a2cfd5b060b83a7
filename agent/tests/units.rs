//! The systemd units in `systemd/` as systemd reads them: `systemd-analyze
//! verify` (offline; no running systemd needed) accepts each, with the
//! binaries they name present. CI installs systemd and Cyrus (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
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
