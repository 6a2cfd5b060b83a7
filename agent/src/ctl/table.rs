//! The tables `slotctl` prints (and the demo draws with): the cluster's
//! status, the history, and the columns they are set in.

use std::fmt::Write as _;

use slotd_proto::v1 as pb;

/// Human tables, as `slotctl status` prints by default.
pub fn status(view: &pb::StatusReply) -> String {
    let mut out = String::new();
    let leader = match view.leader {
        Some(id) => format!("{} ({id})", view.leader_name),
        None => "none".to_owned(),
    };
    let _ = writeln!(
        out,
        "leader: {leader}   term: {}   applied: {}   answered by: node {}",
        view.term, view.applied, view.answered_by
    );
    if !view.cluster_id.is_empty() {
        let _ = writeln!(out, "cluster: {}", view.cluster_id);
    }
    if !view.initialised {
        let _ = writeln!(out, "cluster not initialised (slotctl init TOPOLOGY)");
        return out;
    }
    if view.rebalancing {
        let _ = writeln!(out, "rebalance under way");
    }
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.addr.clone(),
                match (n.mode.as_str(), n.leaving) {
                    ("draining", 0) => format!("draining ({} left)", n.left),
                    ("draining", k) => format!("draining ({} left, {k} moving)", n.left),
                    (m, _) => m.to_owned(),
                },
                if n.alive { "yes" } else { "no" }.to_owned(),
                n.raft.clone(),
                n.masters.len().to_string(),
                n.slots.len().to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &["ID", "NODE", "ADDR", "MODE", "ALIVE", "RAFT", "MASTERS", "SLOTS"],
        &rows,
    ));
    let rows: Vec<Vec<String>> = view
        .stores
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.master.clone(),
                s.epoch.to_string(),
                phase(s),
                s.replicas.join(","),
                if s.dirty.is_empty() {
                    "-".to_owned()
                } else {
                    s.dirty.join(",")
                },
                s.master_ip.clone(),
                s.replica_ip.clone(),
                s.l2.clone(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &[
            "STORE",
            "MASTER",
            "EPOCH",
            "PHASE",
            "REPLICAS",
            "DIRTY",
            "MASTER IP",
            "REPLICA IP",
            "L2",
        ],
        &rows,
    ));
    // What needs an operator's eyes, one line each (leader only).
    let problems: Vec<String> = view
        .stores
        .iter()
        .flat_map(|s| {
            let failing = s
                .failing
                .iter()
                .map(move |f| format!("{}: failing to start on {f}", s.name));
            let health = s.health.iter().map(move |h| format!("{}: {h}", s.name));
            failing.chain(health)
        })
        .collect();
    if !problems.is_empty() {
        out.push_str("\nproblems:\n");
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

/// Left-aligned columns, two spaces apart, under `head`.
pub fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut head.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A store's phase, with the switchover's target while one runs
/// (`demoting → imap2`).
pub fn phase(s: &pb::StoreStatus) -> String {
    if s.target.is_empty() {
        s.phase.clone()
    } else {
        format!("{} → {}", s.phase, s.target)
    }
}

/// The history as `slotctl history` prints it.
pub fn history(entries: &[pb::HistoryEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<23}  {:<10}  {:<10}  {:<10}  {:>6}  {:<9}  {:>9}  WHAT",
        "TIME (UTC)", "STORE", "FROM", "TO", "EPOCH", "REASON", "DURATION"
    );
    for e in entries {
        let duration = e.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            out,
            "{:<23}  {:<10}  {:<10}  {:<10}  {:>6}  {:<9}  {:>9}  {}",
            utc(e.at_ms),
            e.store,
            e.from,
            e.to,
            e.epoch,
            e.reason,
            duration,
            e.what
        );
    }
    out
}

/// `slotctl config show`: one line per key, with the value before a change
/// still settling.
pub fn timings(reply: &pb::ConfigReply) -> String {
    let mut out = String::new();
    if reply.settings.is_empty() {
        let _ = writeln!(
            out,
            "no cluster timings in the log yet (the leader writes its own within a heartbeat)"
        );
        return out;
    }
    let settling = !reply.before.is_empty();
    let _ = writeln!(
        out,
        "change {}{}",
        reply.seq,
        if settling {
            ": settling (until every live node applied it and the old lease ran out, grants follow the shorter \
             lease and the leader waits the longer)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<24}  {:>8}  {:>8}",
        "KEY",
        "MS",
        if settling { "BEFORE" } else { "" }
    );
    for s in &reply.settings {
        let before = reply
            .before
            .iter()
            .find(|b| b.key == s.key)
            .map_or_else(String::new, |b| b.value.to_string());
        let _ = writeln!(out, "{:<24}  {:>8}  {:>8}", s.key, s.value, before);
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.mmm` of a unix time in ms.
pub fn utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        at_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_problems_only_when_there_are_some() {
        let store = pb::StoreStatus {
            name: "st01".into(),
            master: "imap1".into(),
            epoch: 3,
            phase: "stable".into(),
            replicas: vec!["imap2".into()],
            ..Default::default()
        };
        let mut view = pb::StatusReply {
            leader: Some(1),
            leader_name: "imap1".into(),
            initialised: true,
            stores: vec![store],
            ..Default::default()
        };
        assert!(!status(&view).contains("problems:"), "{}", status(&view));
        view.stores[0].health = vec!["imap1: imap 10.0.1.1:143: no greeting within 2s".into()];
        view.stores[0].failing = vec!["imap2: cyrmaster did not serve".into()];
        let text = status(&view);
        assert!(text.contains("\nproblems:\n"), "{text}");
        assert!(
            text.contains("  st01: failing to start on imap2: cyrmaster did not serve\n"),
            "{text}"
        );
        assert!(
            text.contains("  st01: imap1: imap 10.0.1.1:143: no greeting within 2s\n"),
            "{text}"
        );
    }

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_796_047_200_123), "2026-11-30 14:00:00.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
