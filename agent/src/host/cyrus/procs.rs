//! Process groups, as `/proc` shows them. An instance is stopped when its
//! group has no live process left (a zombie serves nothing; lab pitfall 3:
//! killed children may stay zombies of PID 1 for seconds).

use std::path::Path;
use std::time::Duration;

/// Whether any process (a zombie included) is in group `pgid`: one
/// system call, no `/proc` scan.
pub fn group_exists(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks; no memory is involved.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The process groups that have a live (non-zombie) process: one scan of
/// `/proc` for all of them. Blocking: call it off the async threads.
pub fn live_groups() -> std::collections::BTreeSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .filter(|(state, _)| *state != 'Z' && *state != 'X')
        .map(|(_, group)| group)
        .collect()
}

/// Whether group `pgid` has no live process left (zombies do not count),
/// without blocking the async threads.
pub async fn is_empty(pgid: i32) -> bool {
    if !group_exists(pgid) {
        return true;
    }
    tokio::task::spawn_blocking(move || members(pgid).is_empty())
        .await
        .unwrap_or(false)
}

/// Live (non-zombie) processes of process group `pgid`. Blocking.
pub fn members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, group)| group == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// Whether a process's command line (NUL-separated, `/proc/PID/cmdline`)
/// runs the configuration rendered in `dir` (`-C DIR/etc/imapd.conf`).
pub fn runs_config(cmdline: &[u8], dir: &Path) -> bool {
    let want = dir.join("etc/imapd.conf");
    let want = want.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// The process group of `pid`, if it lives.
pub fn group_of(pid: i32) -> Option<i32> {
    let (state, group) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    (state != 'Z' && state != 'X').then_some(group)
}

/// Whether a live process of group `pgid` runs the program `comm` (as
/// `/proc/PID/comm` names it). Blocking.
pub fn group_runs(pgid: i32, comm: &str) -> bool {
    members(pgid)
        .into_iter()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm))
}

/// (state, process group) of a `/proc/PID/stat` line; the command name
/// may hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Sends `signal` to every process of group `pgid` (`kill(-pgid, sig)`).
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no
        // memory is involved. A group already gone answers ESRCH: fine.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Signals the group with SIGTERM, then SIGKILL after `grace`, and waits
/// (bounded) until no live process of it is left. False if some remain.
pub async fn stop_group(pgid: i32, grace: Duration) -> bool {
    signal_group(pgid, libc::SIGTERM);
    if wait_empty(pgid, grace).await {
        return true;
    }
    // Worth knowing: a Cyrus that ignores SIGTERM this long holds up a
    // switchover by the whole grace.
    tracing::warn!(pgid, ?grace, "instance still running after SIGTERM: SIGKILL");
    signal_group(pgid, libc::SIGKILL);
    wait_empty(pgid, Duration::from_secs(2)).await
}

async fn wait_empty(pgid: i32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if is_empty(pgid).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(super::parse_stat("42 (cyrmaster) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(super::parse_stat("7 (a) b (c)) Z 1 9 9 0"), Some(('Z', 9)));
        assert_eq!(super::parse_stat("garbage"), None);
        assert_eq!(super::parse_stat("1 (x) R"), None);
    }

    #[test]
    fn this_process_is_in_its_own_group() {
        // SAFETY: getpgrp(2) has no preconditions.
        let pgid = unsafe { libc::getpgrp() };
        assert!(super::members(pgid).contains(&(std::process::id() as i32)));
    }

    #[test]
    fn the_config_a_process_runs_is_found_in_its_command_line() {
        let dir = std::path::Path::new("/var/lib/slotd/cyrus/s01");
        let cmd = b"/usr/sbin/cyrmaster\0-C\0/var/lib/slotd/cyrus/s01/etc/imapd.conf\0-M\0x\0";
        assert!(super::runs_config(cmd, dir));
        let other = b"/usr/sbin/cyrmaster\0-C\0/srv/cyrus/s01/etc/imapd.conf\0";
        assert!(!super::runs_config(other, dir), "another root");
        let prefix = b"/usr/sbin/cyrmaster\0-C\0/var/lib/slotd/cyrus/s01/etc/imapd.conf.old\0";
        assert!(!super::runs_config(prefix, dir), "whole arguments only");
    }
}
