//! The `systemd` runner: a slot's cyrmaster is `cyrus-slot@SLOT.service`
//! (`systemd/cyrus-slot@.service`), started and stopped through
//! `systemctl`. systemd stops the unit's whole cgroup (`KillMode=
//! control-group`), and the driver checks the instance's process group
//! empty as it does with `exec`.
//!
//! systemd runs every service in a session of its own, so cyrmaster's pid
//! is its process group: the same `/proc` checks as `exec` see it alive or
//! gone, without asking systemd on every pass.

use std::time::Duration;

use tokio::process::Command;

/// `systemctl` from `PATH`.
const SYSTEMCTL: &str = "systemctl";

/// The longest a `systemctl start` or `stop` may take: the unit's
/// `TimeoutStopSec` (5 s) and SIGKILL, and room for a busy manager.
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest `slotd fence` waits for systemd (it runs when the agent is
/// gone and must be quick).
pub const FENCE_SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(2);

/// The template every slot's unit is an instance of.
pub const TEMPLATE: &str = "cyrus-slot@.service";

/// The unit of `slot`. Slot names hold only letters, digits, '.', '_' and
/// '-' (`slotd_raft_store::apply::name_problem`): valid instance names as
/// they are, and `%i` in the unit gives them back unchanged.
pub fn unit(slot: &str) -> String {
    format!("cyrus-slot@{slot}.service")
}

/// The value `systemctl show -p NAME --value` printed: one line.
pub fn value(out: &str) -> &str {
    out.lines().next().unwrap_or("").trim()
}

/// `MainPID` as `systemctl show` prints it; 0 (no main process) is `None`.
pub fn main_pid(out: &str) -> Option<i32> {
    value(out).parse::<i32>().ok().filter(|p| *p > 1)
}

/// Whether an `ActiveState` means no process of the unit runs.
pub fn is_down(active_state: &str) -> bool {
    matches!(active_state, "inactive" | "failed")
}

/// Runs `systemctl ARGS`, bounded; its standard output, or why not.
pub async fn systemctl(args: &[&str]) -> Result<String, String> {
    let child = Command::new(SYSTEMCTL)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{SYSTEMCTL} {}: {e}", args.join(" ")))?;
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
            Err(format!(
                "{SYSTEMCTL} {} exited with {}: {}",
                args.join(" "),
                out.status,
                said.join(" | ")
            ))
        }
        Ok(Err(e)) => Err(format!("{SYSTEMCTL} {}: {e}", args.join(" "))),
        Err(_) => Err(format!(
            "{SYSTEMCTL} {} gave no answer within {SYSTEMCTL_TIMEOUT:?}",
            args.join(" ")
        )),
    }
}

/// One property of a unit.
pub async fn show(unit: &str, property: &str) -> Result<String, String> {
    systemctl(&["show", "-p", property, "--value", unit])
        .await
        .map(|out| value(&out).to_owned())
}

/// Checks at the agent's start that systemd answers and knows the
/// template: a clear refusal now, not a failing start at the first move.
pub async fn check_installed() -> Result<(), String> {
    let probe = unit("slotd-check");
    match show(&probe, "LoadState").await {
        Ok(state) if state == "loaded" => Ok(()),
        Ok(state) => {
            let error = show(&probe, "LoadError").await.unwrap_or_default();
            Err(load_problem(&state, &error))
        }
        Err(e) => Err(format!(
            "{e} (cyrus.driver = \"systemd\" needs systemd as the service manager; \
             \"exec\" runs Cyrus without it)"
        )),
    }
}

/// Why systemd cannot load the template, for the operator.
fn load_problem(state: &str, error: &str) -> String {
    let hint = format!("install systemd/{TEMPLATE} into /etc/systemd/system and run systemctl daemon-reload");
    match state {
        "not-found" => format!("systemd does not know {TEMPLATE} (LoadState=not-found): {hint}"),
        _ if error.is_empty() => format!("systemd cannot load {TEMPLATE} (LoadState={state}): {hint}"),
        _ => format!(
            "systemd cannot load {TEMPLATE} (LoadState={state}: {error}); fix the unit and run systemctl daemon-reload"
        ),
    }
}

/// Stops every slot unit systemd has loaded (for `slotd fence`): their
/// whole cgroups. The units it stopped, or why it could not.
pub async fn stop_all() -> Result<Vec<String>, String> {
    let pattern = unit("*");
    let listed = systemctl(&[
        "list-units",
        "--plain",
        "--no-legend",
        "--state=active,activating,deactivating,reloading",
        &pattern,
    ])
    .await?;
    let running: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    if running.is_empty() {
        return Ok(running);
    }
    let mut args = vec!["stop"];
    args.extend(running.iter().map(String::as_str));
    systemctl(&args).await?;
    Ok(running)
}

/// SIGKILL to every slot unit's processes (for `slotd fence`, after the
/// kernel-side kill): also those of a unit whose cyrmaster has not written
/// its pidfile yet. Waits for no job.
pub async fn kill_all() -> Result<(), String> {
    systemctl(&["kill", "--signal=SIGKILL", &unit("*")]).await.map(drop)
}

/// SIGKILL to the units of `slots` (for `slotd fencer`). Waits for no job.
pub async fn kill_units(slots: &[&str]) -> Result<(), String> {
    if slots.is_empty() {
        return Ok(());
    }
    let units: Vec<String> = slots.iter().map(|s| unit(s)).collect();
    let mut args = vec!["kill", "--signal=SIGKILL"];
    args.extend(units.iter().map(String::as_str));
    systemctl(&args).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_problems_say_what_to_do() {
        assert!(load_problem("not-found", "").contains("does not know cyrus-slot@.service"));
        let bad = load_problem(
            "bad-setting",
            "org.freedesktop.systemd1.BadSetting \"Unit has a bad setting\"",
        );
        assert!(
            bad.contains("cannot load cyrus-slot@.service (LoadState=bad-setting: org.freedesktop"),
            "{bad}"
        );
        assert!(load_problem("masked", "").contains("LoadState=masked"));
    }

    #[test]
    fn units_are_named_after_their_slot() {
        assert_eq!(unit("s01"), "cyrus-slot@s01.service");
        assert_eq!(unit("imap-2.a_b"), "cyrus-slot@imap-2.a_b.service");
    }

    #[test]
    fn show_output_is_read_as_systemctl_prints_it() {
        assert_eq!(main_pid("4242\n"), Some(4242));
        assert_eq!(main_pid("0\n"), None, "no main process");
        assert_eq!(main_pid(""), None);
        assert_eq!(main_pid("garbage\n"), None);
        assert_eq!(value("active\n"), "active");
        assert!(is_down("inactive") && is_down("failed"));
        assert!(!is_down("active") && !is_down("deactivating") && !is_down("activating"));
    }
}
