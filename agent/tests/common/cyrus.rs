//! Real Cyrus for the network-namespace tests: slot instances prepared as
//! `cyrus makedirs` and the lab (`../shared/lab/lab.sh`, `inst_init`) do,
//! and the smallest IMAP and LMTP clients that tell what was delivered.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Password of every user (`cyrus`, the admin and sync user, and `alice`).
pub const PASSWORD: &str = "slotd-test-secret";
pub const USERS: [&str; 2] = ["cyrus", "alice"];

/// Whether Cyrus is installed (CI installs it; these tests do not skip).
pub fn require_cyrus() {
    for bin in [
        "/usr/sbin/cyrmaster",
        "/usr/lib/cyrus/bin/sync_client",
        "/usr/sbin/saslpasswd2",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: install cyrus-imapd cyrus-replication sasl2-bin (./dev.sh test does)"
        );
    }
}

/// Instance directories of `slots` below `root` for node `node`: the
/// directories Cyrus does not create itself, a sasldb with the users in the
/// realm `SLOT.NODE` (the exec driver's servername), owned by `cyrus`.
pub fn prepare(root: &Path, node: &str, slots: &[String]) {
    require_cyrus();
    for slot in slots {
        let d = root.join(slot);
        for sub in [
            "etc",
            "spool/stage.",
            "sieve",
            "tmp",
            "log",
            "run/proc",
            "run/lock",
            "run/socket",
            "conf/db",
            "conf/proc",
            "conf/socket",
            "conf/log",
            "conf/msg",
            "conf/sync",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("instance dir");
        }
        for top in ["user", "quota", "lock"] {
            for c in 'a'..='z' {
                std::fs::create_dir_all(d.join("conf").join(top).join(c.to_string())).expect("hash dir");
            }
        }
        let realm = format!("{slot}.{node}");
        for user in USERS {
            let mut child = Command::new("saslpasswd2")
                .args(["-p", "-c", "-f"])
                .arg(d.join("conf/sasldb2"))
                .args(["-u", &realm, user])
                .stdin(Stdio::piped())
                .spawn()
                .expect("saslpasswd2");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(PASSWORD.as_bytes())
                .expect("password");
            assert!(child.wait().expect("saslpasswd2").success(), "saslpasswd2 for {user}");
        }
        let ok = Command::new("chown")
            .args(["-R", "cyrus:mail"])
            .arg(&d)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown -R cyrus:mail {}", d.display());
        std::fs::set_permissions(
            d.join("conf/sasldb2"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .expect("chmod sasldb");
    }
}

/// SIGKILLs every cyrmaster group a pidfile below `root` names.
pub fn kill_all(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root) else { return };
    for e in dir.flatten() {
        let Ok(pid) = std::fs::read_to_string(e.path().join("run/master.pid")) else {
            continue;
        };
        if let Ok(pid) = pid.trim().parse::<i32>() {
            if pid > 1 {
                // SAFETY: kill(2) on a process group; no memory involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn connect(ip: IpAddr, port: u16) -> std::io::Result<(BufReader<TcpStream>, TcpStream)> {
    let s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok((BufReader::new(s.try_clone()?), s))
}

fn line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
    }
    Ok(l)
}

fn fail(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

/// Delivers message `n` to `alice` over LMTP at `ip`; Ok only when the
/// server said 250 to the data (the message is then the server's).
pub fn deliver(ip: IpAddr, n: u64) -> std::io::Result<()> {
    let (mut r, mut w) = connect(ip, 24)?;
    let greeting = line(&mut r)?;
    if !greeting.starts_with("220") {
        return Err(fail(format!("greeting {greeting:?}")));
    }
    write!(w, "LHLO client.test\r\n")?;
    loop {
        let l = line(&mut r)?;
        if l.starts_with("250 ") {
            break;
        }
        if !l.starts_with("250-") {
            return Err(fail(format!("LHLO: {l:?}")));
        }
    }
    for (cmd, want) in [
        ("MAIL FROM:<test@client.test>", "250"),
        ("RCPT TO:<alice>", "250"),
        ("DATA", "354"),
    ] {
        write!(w, "{cmd}\r\n")?;
        let l = line(&mut r)?;
        if !l.starts_with(want) {
            return Err(fail(format!("{cmd}: {l:?}")));
        }
    }
    write!(
        w,
        "From: test@client.test\r\nTo: alice\r\nSubject: msg {n}\r\nMessage-ID: <msg-{n}@client.test>\r\n\r\nbody {n}\r\n.\r\n"
    )?;
    let l = line(&mut r)?;
    if !l.starts_with("250") {
        return Err(fail(format!("data: {l:?}")));
    }
    let _ = write!(w, "QUIT\r\n");
    Ok(())
}

/// One IMAP session: logs in as `user`, runs `commands` (tagged), returns
/// every untagged line; errors on a NO/BAD.
pub fn imap(ip: IpAddr, user: &str, commands: &[&str]) -> std::io::Result<Vec<String>> {
    let (mut r, mut w) = connect(ip, 143)?;
    let greeting = line(&mut r)?;
    if !greeting.starts_with("* OK") {
        return Err(fail(format!("greeting {greeting:?}")));
    }
    let mut untagged = vec![greeting];
    let login = format!("LOGIN {user} {PASSWORD}");
    let all: Vec<&str> = std::iter::once(login.as_str())
        .chain(commands.iter().copied())
        .chain(std::iter::once("LOGOUT"))
        .collect();
    for (i, cmd) in all.iter().enumerate() {
        let tag = format!("a{i}");
        write!(w, "{tag} {cmd}\r\n")?;
        loop {
            let l = line(&mut r)?;
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    return Err(fail(format!("{cmd}: {}", l.trim_end())));
                }
                break;
            }
            untagged.push(l);
        }
    }
    Ok(untagged)
}

/// The message numbers (`Subject: msg N`) in alice's INBOX at `ip`, in
/// mailbox order, duplicates kept.
pub fn delivered(ip: IpAddr) -> std::io::Result<Vec<u64>> {
    let lines = imap(
        ip,
        "alice",
        &["SELECT INBOX", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"],
    )?;
    Ok(lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("Subject: msg "))
        .filter_map(|n| n.trim().parse().ok())
        .collect())
}

/// The IMAP banner's server name at `ip` (which instance answers).
/// The whole IMAP greeting line on `ip`.
pub fn greeting(ip: IpAddr) -> Option<String> {
    let (mut r, _w) = connect(ip, 143).ok()?;
    line(&mut r).ok()
}

pub fn banner(ip: IpAddr) -> Option<String> {
    let (mut r, _w) = connect(ip, 143).ok()?;
    let g = line(&mut r).ok()?;
    // "* OK [CAPABILITY …] s01.imap1 Cyrus IMAP … server ready"
    let after = g.rsplit_once(']').map_or(g.as_str(), |(_, a)| a);
    after.split_whitespace().next().map(str::to_owned)
}
