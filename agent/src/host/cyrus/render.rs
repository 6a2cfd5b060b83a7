//! A slot's configuration for a role: the built-in templates (the lab's,
//! `agent/cyrus/*.conf`) with `@NAME@` placeholders filled in. A role change
//! renders the other pair into the same instance directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The role a slot's configuration is rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

const IMAPD_MASTER: &str = include_str!("../../../cyrus/imapd-master.conf");
const IMAPD_REPLICA: &str = include_str!("../../../cyrus/imapd-replica.conf");
const CYRUS_MASTER: &str = include_str!("../../../cyrus/cyrus-master.conf");
const CYRUS_REPLICA: &str = include_str!("../../../cyrus/cyrus-replica.conf");

/// What the templates are filled with.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    /// The instance directory: every file of the slot lives below it.
    pub dir: &'a Path,
    /// IMAP banner and SASL realm of the instance's sasldb users.
    pub servername: &'a str,
    /// Short name for syslog lines.
    pub name: &'a str,
    pub master_ip: IpAddr,
    pub replica_ip: IpAddr,
    /// The replica's password for `sync_authname` (`cyrus`).
    pub sync_password: &'a str,
}

/// Why a configuration could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("{what}: {value:?} cannot go into a Cyrus config ({why})")]
    Unsafe {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("template {template}: placeholder @{name}@ has no value")]
    Unfilled { template: &'static str, name: String },
    #[error("{file}:{line}: {why}")]
    Local { file: String, line: usize, why: String },
}

/// An operator's own `imapd.conf` lines (`[cyrus] imapd_local`, and the
/// slot's `ROOT/SLOT/imapd.local.conf`): where they come from, and the text.
#[derive(Clone, Debug)]
pub struct Local<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

/// The options of an `imapd.conf` text (`option: value` lines), with their
/// line numbers; a line that is neither that, a comment nor blank is an
/// error naming it.
fn options(file: &Path, text: &str) -> Result<Vec<(usize, String)>, RenderError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let key = line
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        match key {
            Some(key) => out.push((i + 1, key.to_ascii_lowercase())),
            None => {
                return Err(RenderError::Local {
                    file: file.display().to_string(),
                    line: i + 1,
                    why: "not an `option: value` line".to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// The options slotd sets itself, in either role: an operator's file may
/// not set them (paths, identity, authentication of the sync user, where
/// services listen, replication).
fn owned() -> std::collections::BTreeSet<String> {
    [IMAPD_MASTER, IMAPD_REPLICA]
        .into_iter()
        .flat_map(|t| options(Path::new("built-in"), t).unwrap_or_default())
        .map(|(_, k)| k)
        .collect()
}

/// `generated` followed by the operator's lines: the site's first, then the
/// slot's (a slot's option replaces the site's). An option slotd sets, or
/// one set twice in one file, is refused with its file and line (Cyrus
/// would take one of them silently).
pub fn with_local(generated: &str, site: Option<Local<'_>>, slot: Option<Local<'_>>) -> Result<String, RenderError> {
    let owned = owned();
    let mut checked = Vec::new();
    for local in [site, slot].into_iter().flatten() {
        let opts = options(local.file, local.text)?;
        let mut seen = std::collections::BTreeSet::new();
        for (line, key) in &opts {
            let why = if owned.contains(key) {
                Some(format!("{key} is set by slotd (per role); it cannot be changed here"))
            } else if !seen.insert(key.clone()) {
                Some(format!("{key} is set twice in this file"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(RenderError::Local {
                    file: local.file.display().to_string(),
                    line: *line,
                    why,
                });
            }
        }
        checked.push((local, opts));
    }
    let slot_keys: std::collections::BTreeSet<String> = match checked.get(1) {
        Some((_, opts)) => opts.iter().map(|(_, k)| k.clone()).collect(),
        None => Default::default(),
    };
    let mut out = generated.to_owned();
    for (n, (local, opts)) in checked.iter().enumerate() {
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\n## From {}\n", local.file.display()));
        let replaced: std::collections::BTreeSet<usize> = if n == 0 && checked.len() == 2 {
            opts.iter()
                .filter(|(_, k)| slot_keys.contains(k))
                .map(|(l, _)| *l)
                .collect()
        } else {
            Default::default()
        };
        for (i, line) in local.text.lines().enumerate() {
            if replaced.contains(&(i + 1)) {
                out.push_str("# (replaced by the slot's file) ");
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// `(imapd.conf, cyrus.conf)` for `role`.
pub fn render(role: Role, v: &Values<'_>) -> Result<(String, String), RenderError> {
    let dir = v.dir.to_str().ok_or(RenderError::Unsafe {
        what: "instance directory",
        value: v.dir.display().to_string(),
        why: "not UTF-8",
    })?;
    // cyrus.conf cuts a line at the first '#', imapd.conf values end at the
    // line: a value with either would silently change the config.
    for (what, value) in [
        ("instance directory", dir),
        ("servername", v.servername),
        ("name", v.name),
        ("sync password", v.sync_password),
    ] {
        let why = if value.contains(['\n', '\r']) {
            Some("a line break")
        } else if value.contains('#') {
            Some("a '#'")
        } else if value.contains('"') || value.contains(' ') && what == "instance directory" {
            Some("a quote or a space")
        } else if value.is_empty() {
            Some("empty")
        } else {
            None
        };
        if let Some(why) = why {
            let value = if what == "sync password" {
                "…".to_owned()
            } else {
                value.to_owned()
            };
            return Err(RenderError::Unsafe { what, value, why });
        }
    }
    // Cyrus 3.6 cuts sync_host at its first ':' (backend_connect): an IPv6
    // replica address would never be reached, every flush would fail.
    if v.replica_ip.is_ipv6() {
        return Err(RenderError::Unsafe {
            what: "replica IP",
            value: v.replica_ip.to_string(),
            why: "IPv6: Cyrus 3.6 cannot take it as sync_host",
        });
    }
    let values: BTreeMap<&str, String> = [
        ("DIR", dir.to_owned()),
        ("SERVERNAME", v.servername.to_owned()),
        ("NAME", v.name.to_owned()),
        ("MASTER_IP", v.master_ip.to_string()),
        ("REPLICA_IP", v.replica_ip.to_string()),
        ("SYNC_PASSWORD", v.sync_password.to_owned()),
    ]
    .into();
    let (imapd, cyrus) = match role {
        Role::Master => (("imapd-master.conf", IMAPD_MASTER), ("cyrus-master.conf", CYRUS_MASTER)),
        Role::Replica => (
            ("imapd-replica.conf", IMAPD_REPLICA),
            ("cyrus-replica.conf", CYRUS_REPLICA),
        ),
    };
    Ok((fill(imapd, &values)?, fill(cyrus, &values)?))
}

/// Replaces every `@NAME@` outside comment lines; a placeholder without a
/// value is an error, not left in.
fn fill((template, text): (&'static str, &str), values: &BTreeMap<&str, String>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('@') {
            let Some(len) = rest[start + 1..].find('@') else { break };
            let name = &rest[start + 1..start + 1 + len];
            out.push_str(&rest[..start]);
            match values.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    return Err(RenderError::Unfilled {
                        template,
                        name: name.to_owned(),
                    })
                }
            }
            rest = &rest[start + len + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(dir: &Path) -> Values<'_> {
        Values {
            dir,
            servername: "s01.imap1",
            name: "imap1-s01",
            master_ip: "10.64.0.1".parse().unwrap(),
            replica_ip: "10.128.0.1".parse().unwrap(),
            sync_password: "secret",
        }
    }

    #[test]
    fn each_role_listens_on_its_ip_and_replicates_the_right_way() {
        let dir = Path::new("/var/lib/slotd/cyrus/s01");
        let (imapd, cyrus) = render(Role::Master, &values(dir)).unwrap();
        assert!(imapd.contains("configdirectory: /var/lib/slotd/cyrus/s01/conf\n"));
        assert!(imapd.contains("sync_log: 1\n") && imapd.contains("sync_host: 10.128.0.1\n"));
        assert!(imapd.contains("sync_password: secret\n"));
        assert!(cyrus.contains(r#"listen="10.64.0.1:143""#) && cyrus.contains(r#"listen="10.64.0.1:24""#));
        assert!(cyrus.contains("sync_client -C /var/lib/slotd/cyrus/s01/etc/imapd.conf -r"));
        assert!(!imapd.contains('@') || imapd.lines().filter(|l| !l.starts_with('#')).all(|l| !l.contains('@')));

        let (imapd, cyrus) = render(Role::Replica, &values(dir)).unwrap();
        assert!(imapd.contains("sync_log: 0\n") && !imapd.contains("sync_host"));
        assert!(cyrus.contains(r#"listen="10.128.0.1:2005""#) && !cyrus.contains("10.64.0.1"));
        assert!(!cyrus.contains("sync_client"));
    }

    #[test]
    fn values_that_would_change_the_config_are_refused() {
        let dir = Path::new("/srv/cyrus/s01");
        let mut v = values(dir);
        v.sync_password = "a#b";
        let e = render(Role::Master, &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sync password: \"…\" cannot go into a Cyrus config (a '#')"
        );
        let odd = Path::new("/srv/cy rus/s01");
        let e = render(Role::Master, &values(odd)).unwrap_err();
        assert!(e.to_string().contains("a quote or a space"), "{e}");
        let mut v6 = values(dir);
        v6.replica_ip = "2001:db8::2".parse().unwrap();
        assert!(render(Role::Master, &v6).unwrap_err().to_string().contains("IPv6"));
        assert!(matches!(
            fill(("t", "x: @NOPE@"), &BTreeMap::new()),
            Err(RenderError::Unfilled { .. })
        ));
    }

    #[test]
    fn operators_add_their_own_options_but_never_slotds() {
        let (generated, _) = render(Role::Master, &values(Path::new("/srv/cyrus/s01"))).unwrap();
        let site = Path::new("/etc/slotd/imapd.local.conf");
        let slot = Path::new("/srv/cyrus/s01/imapd.local.conf");
        let local = |file, text| Some(Local { file, text });

        let text = "# TLS for clients\ntls_server_cert: /etc/ssl/imap.pem\nquotawarn: 90\n";
        let out = with_local(&generated, local(site, text), local(slot, "quotawarn: 80\n")).unwrap();
        assert!(out.starts_with(&generated), "slotd's part comes first, unchanged");
        assert!(out
            .contains("## From /etc/slotd/imapd.local.conf\n# TLS for clients\ntls_server_cert: /etc/ssl/imap.pem\n"));
        assert!(out.contains("# (replaced by the slot's file) quotawarn: 90\n"), "{out}");
        assert!(
            out.ends_with("## From /srv/cyrus/s01/imapd.local.conf\nquotawarn: 80\n"),
            "{out}"
        );
        assert_eq!(with_local(&generated, None, None).unwrap(), generated);

        for (text, line, why) in [
            ("quotawarn: 90\nsync_host: 10.0.0.9\n", 2, "sync_host is set by slotd"),
            ("SERVERNAME: x\n", 1, "servername is set by slotd"),
            ("configdirectory: /tmp\n", 1, "configdirectory is set by slotd"),
            ("sync_log: 1\n", 1, "sync_log is set by slotd"),
            ("a: 1\n\na: 2\n", 3, "a is set twice"),
            ("just words\n", 1, "not an `option: value` line"),
        ] {
            let e = with_local(&generated, local(site, text), None).unwrap_err().to_string();
            assert!(e.starts_with(&format!("/etc/slotd/imapd.local.conf:{line}: ")), "{e}");
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let e = with_local(&generated, None, local(slot, "sync_password: x\n")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/srv/cyrus/s01/imapd.local.conf:1: sync_password"),
            "{e}"
        );
    }
}
