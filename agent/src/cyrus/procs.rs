//! Process groups, as `/proc` shows them. An instance is stopped when its
//! group has no live process left (a zombie serves nothing; lab pitfall 3:
//! killed children may stay zombies of PID 1 for seconds).

use std::time::Duration;

/// Live (non-zombie) processes of process group `pgid`.
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
    signal_group(pgid, libc::SIGKILL);
    wait_empty(pgid, Duration::from_secs(2)).await
}

async fn wait_empty(pgid: i32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if members(pgid).is_empty() {
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
}
