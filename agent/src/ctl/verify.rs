//! `slotctl verify STORE`: compares a store's master and replica mailbox by
//! mailbox, on the master IP and on the replica IP (the replica serves
//! read-only IMAP there): `STATUS (MESSAGES UIDNEXT UIDVALIDITY
//! HIGHESTMODSEQ)` of every mailbox the admin's `LIST` shows. An admin may
//! not read users' mailboxes, but may act as their owner (SASL PLAIN with
//! the user as authorization identity): each user's mailboxes are read in
//! a session as that user.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// IMAP port of both roles.
const IMAP: u16 = 143;
/// The longest one exchange may take.
const STEP: Duration = Duration::from_secs(10);
/// Most mailboxes compared (a bound on what a reply may make us do).
const MAX_MAILBOXES: usize = 100_000;

/// A mailbox's counters, as STATUS gives them.
pub type Counters = BTreeMap<String, u64>;

/// One difference between master and replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    OnlyOnMaster(String),
    OnlyOnReplica(String),
    Differs {
        mailbox: String,
        field: String,
        master: Option<u64>,
        replica: Option<u64>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: &Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        match self {
            Difference::OnlyOnMaster(m) => write!(f, "{m}: only on the master"),
            Difference::OnlyOnReplica(m) => write!(f, "{m}: only on the replica"),
            Difference::Differs {
                mailbox,
                field,
                master,
                replica,
            } => write!(f, "{mailbox}: {field} master {} replica {}", n(master), n(replica)),
        }
    }
}

/// Mailbox by mailbox, field by field.
pub fn compare(master: &BTreeMap<String, Counters>, replica: &BTreeMap<String, Counters>) -> Vec<Difference> {
    let mut out = Vec::new();
    for (name, m) in master {
        let Some(r) = replica.get(name) else {
            out.push(Difference::OnlyOnMaster(name.clone()));
            continue;
        };
        let fields: std::collections::BTreeSet<&String> = m.keys().chain(r.keys()).collect();
        for field in fields {
            let (a, b) = (m.get(field).copied(), r.get(field).copied());
            if a != b {
                out.push(Difference::Differs {
                    mailbox: name.clone(),
                    field: field.clone(),
                    master: a,
                    replica: b,
                });
            }
        }
    }
    for name in replica.keys().filter(|n| !master.contains_key(*n)) {
        out.push(Difference::OnlyOnReplica(name.clone()));
    }
    out
}

/// Why a side could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{addr}: {what}")]
    Imap { addr: SocketAddr, what: String },
}

struct Session {
    addr: SocketAddr,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    tag: u32,
}

impl Session {
    fn err(&self, what: impl Into<String>) -> VerifyError {
        VerifyError::Imap {
            addr: self.addr,
            what: what.into(),
        }
    }

    async fn line(&mut self) -> Result<String, VerifyError> {
        let mut l = String::new();
        match tokio::time::timeout(STEP, self.reader.read_line(&mut l)).await {
            Ok(Ok(0)) => Err(self.err("connection closed")),
            Ok(Ok(_)) => Ok(l),
            Ok(Err(e)) => Err(self.err(e.to_string())),
            Err(_) => Err(self.err(format!("no answer within {STEP:?}"))),
        }
    }

    /// Sends one tagged command; its untagged lines, or the server's NO/BAD.
    async fn command(&mut self, cmd: &str) -> Result<Vec<String>, VerifyError> {
        self.tag += 1;
        let tag = format!("v{}", self.tag);
        let sent = self.writer.write_all(format!("{tag} {cmd}\r\n").as_bytes()).await;
        sent.map_err(|e| self.err(e.to_string()))?;
        let mut untagged = Vec::new();
        loop {
            let l = self.line().await?;
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                if rest.starts_with("OK") {
                    return Ok(untagged);
                }
                // The password never appears: LOGIN's answer is all we print.
                let shown = match cmd.split_whitespace().next() {
                    Some(c @ ("LOGIN" | "AUTHENTICATE")) => c,
                    _ => cmd,
                };
                return Err(self.err(format!("{shown}: {}", rest.trim_end())));
            }
            if untagged.len() >= MAX_MAILBOXES * 2 {
                return Err(self.err("too many lines in one answer"));
            }
            untagged.push(l);
        }
    }
}

/// Quotes an IMAP string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The mailbox name at the end of a `* LIST (...) "." NAME` line.
fn list_name(line: &str) -> Option<String> {
    let line = line.trim_end();
    let rest = line.strip_prefix("* LIST ")?;
    let after_flags = &rest[rest.find(')')? + 1..];
    let after_delim = after_flags.trim_start();
    // The delimiter: "." or NIL.
    let name = if let Some(r) = after_delim.strip_prefix('"') {
        let end = r.find('"')?;
        r[end + 1..].trim_start()
    } else {
        after_delim.split_once(' ')?.1.trim_start()
    };
    Some(name.trim_matches('"').to_owned())
}

/// `(MESSAGES 3 UIDNEXT 4 …)` at the end of a STATUS line.
fn status_counters(line: &str) -> Counters {
    let Some(open) = line.rfind('(') else {
        return Counters::new();
    };
    let inner = line[open + 1..].trim_end().trim_end_matches(')');
    let words: Vec<&str> = inner.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => v.parse().ok().map(|v| ((*k).to_owned(), v)),
            _ => None,
        })
        .collect()
}

/// Opens a session at `ip`, authenticated as `admin` and acting as `as_user`.
async fn open(ip: IpAddr, admin: &str, password: &str, as_user: &str) -> Result<Session, VerifyError> {
    let addr = SocketAddr::new(ip, IMAP);
    let stream = match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(VerifyError::Imap {
                addr,
                what: e.to_string(),
            })
        }
        Err(_) => {
            return Err(VerifyError::Imap {
                addr,
                what: "no connection".into(),
            })
        }
    };
    let (r, w) = stream.into_split();
    let mut s = Session {
        addr,
        reader: BufReader::new(r),
        writer: w,
        tag: 0,
    };
    let greeting = s.line().await?;
    if !greeting.starts_with("* OK") {
        return Err(s.err(format!("greeting {:?}", greeting.trim_end())));
    }
    let token = base64(format!("{as_user}\0{admin}\0{password}").as_bytes());
    s.command(&format!("AUTHENTICATE PLAIN {token}")).await?;
    Ok(s)
}

/// `user.alice` → (`alice`, `INBOX`); `user.alice.x` → (`alice`, `INBOX.x`)
/// (internal names, `.` separator: the driver's templates set
/// `unixhierarchysep: no`, `altnamespace: no`).
fn owner_view(mailbox: &str) -> Option<(String, String)> {
    let rest = mailbox.strip_prefix("user.")?;
    Some(match rest.split_once('.') {
        Some((user, sub)) => (user.to_owned(), format!("INBOX.{sub}")),
        None => (rest.to_owned(), "INBOX".to_owned()),
    })
}

async fn status(s: &mut Session, name: &str) -> Result<Counters, VerifyError> {
    let lines = s
        .command(&format!(
            "STATUS {} (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)",
            quoted(name)
        ))
        .await?;
    Ok(lines
        .iter()
        .find(|l| l.starts_with("* STATUS"))
        .map(|l| status_counters(l))
        .unwrap_or_default())
}

/// Every mailbox's counters at `ip`, read by `admin` (as each mailbox's
/// owner for users' mailboxes).
pub async fn mailboxes(ip: IpAddr, admin: &str, password: &str) -> Result<BTreeMap<String, Counters>, VerifyError> {
    let mut s = open(ip, admin, password, admin).await?;
    let names: Vec<String> = s
        .command("LIST \"\" \"*\"")
        .await?
        .iter()
        .filter_map(|l| list_name(l))
        .take(MAX_MAILBOXES)
        .collect();
    let mut by_user: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for name in names {
        match owner_view(&name) {
            Some((user, own)) => by_user.entry(user).or_default().push((name, own)),
            None => {
                let counters = status(&mut s, &name).await?;
                out.insert(name, counters);
            }
        }
    }
    let _ = s.command("LOGOUT").await;
    for (user, boxes) in by_user {
        let mut s = open(ip, admin, password, &user).await?;
        for (name, own) in boxes {
            let counters = status(&mut s, &own).await?;
            out.insert(name, counters);
        }
        let _ = s.command("LOGOUT").await;
    }
    Ok(out)
}

/// Standard base64 with padding (for SASL PLAIN).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_status_lines_parse() {
        assert_eq!(
            list_name("* LIST (\\HasNoChildren) \".\" user.alice\r\n").as_deref(),
            Some("user.alice")
        );
        assert_eq!(list_name("* LIST () \".\" \"user.a b\"").as_deref(), Some("user.a b"));
        assert_eq!(list_name("* LIST () NIL INBOX").as_deref(), Some("INBOX"));
        assert_eq!(list_name("* OK nothing"), None);
        let c = status_counters("* STATUS user.alice (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 17 HIGHESTMODSEQ 9)\r\n");
        assert_eq!(c.get("MESSAGES"), Some(&3));
        assert_eq!(c.get("HIGHESTMODSEQ"), Some(&9));
        assert!(status_counters("garbage").is_empty());
    }

    #[test]
    fn sasl_plain_and_owner_names() {
        assert_eq!(base64(b"alice\0cyrus\0pw"), "YWxpY2UAY3lydXMAcHc=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        assert_eq!(owner_view("user.alice"), Some(("alice".into(), "INBOX".into())));
        assert_eq!(
            owner_view("user.alice.Sent"),
            Some(("alice".into(), "INBOX.Sent".into()))
        );
        assert_eq!(owner_view("shared.x"), None);
    }

    #[test]
    fn differences_name_the_mailbox_and_field() {
        let side = |m: &[(&str, u64)]| -> BTreeMap<String, Counters> {
            m.iter()
                .map(|(name, n)| ((*name).to_owned(), [("MESSAGES".to_owned(), *n)].into()))
                .collect()
        };
        let d = compare(
            &side(&[("user.a", 3), ("user.b", 1)]),
            &side(&[("user.a", 2), ("user.c", 1)]),
        );
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "user.a: MESSAGES master 3 replica 2",
                "user.b: only on the master",
                "user.c: only on the replica"
            ]
        );
        assert!(compare(&side(&[("x", 1)]), &side(&[("x", 1)])).is_empty());
    }
}
