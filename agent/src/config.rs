//! The node's own configuration, `slotd.toml` (one per machine).
//!
//! Loading is three steps, each with its own kind of error: read the file,
//! parse it into [`Config`] (TOML syntax, unknown keys, wrong types, missing
//! keys), then [`Config::validate`] the values against each other. Every error
//! is a single line that starts with the file name and names the offending
//! field by its full dotted path (`timing.lease_ms`), because operators read
//! these in `journalctl` and `slotd --check-config` output, where the first
//! line is often all they see.
//!
//! Unknown keys are an error (a misspelt `lease_ms` silently falling back to
//! its default would change failover timing without anyone noticing).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

pub use slotd_core::timing::{SwitchoverConfig, Timing, LEADER_CHANGE_SLACK, MAX_TIMING_MS};

/// Where the Prometheus endpoint listens when `metrics_listen` is absent:
/// loopback only, so metrics are not exposed to the network by accident.
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9420);

/// Origin used in messages from [`Config::validate`] when it is called on a
/// config that did not come from a file (e.g. one made with [`Config::builder`]).
const NO_ORIGIN: &str = "config";

/// One node's configuration, as read from `slotd.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Raft node id; unique in the cluster and never reused, because the Raft
    /// log refers to nodes by id.
    pub node_id: u64,
    /// Human name of the node (`imap1`); what operators type in `slotctl` and
    /// what topology slot references (`imap1:s01`) resolve against.
    pub name: String,
    /// Address of the Peer + Admin gRPC server. Port 0 lets the OS pick (tests).
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; loopback by default.
    #[serde(default = "default_metrics_listen", deserialize_with = "socket_addr")]
    pub metrics_listen: SocketAddr,
    /// Raft log, snapshots and node identity live here; must survive reboots.
    pub data_dir: PathBuf,
    /// The ledger of addresses this node may hold lives here; a tmpfs
    /// (`/run`) is right: a reboot empties it as it empties the interface.
    /// Kept apart from `data_dir`, so that `slotd fence` works without it.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Network interface on which service IPs are bound and announced (ARP).
    pub interface: String,
    /// The fencer beside the agent (`slotd fencer`, `slotd-fencer.service`),
    /// which gives up this node's addresses and stops its masters when the
    /// lease it was told runs out, even if the agent cannot die: `off`,
    /// `automatic` (used when it runs; the agent warns when it does not) or
    /// `required` (no master role without it).
    #[serde(default)]
    pub fencer: FencerMode,
    /// Bind, release and announce service IPs on `interface` for real. Off
    /// only for demos and tests on a shared host: the agent then keeps the
    /// addresses in memory and touches no interface.
    #[serde(default = "default_true")]
    pub manage_addresses: bool,
    /// How the local Cyrus instances are started, stopped and switched.
    #[serde(default)]
    pub cyrus: CyrusConfig,
    /// Failure-detection and Raft timings; see DESIGN.md "Timings".
    #[serde(default)]
    pub timing: Timing,
    /// Controlled switchovers, drains and stopping (DESIGN rule 7).
    #[serde(default)]
    pub switchover: SwitchoverConfig,
    /// Mutual TLS on `listen`: required unless `insecure = true`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// The `[tls]` table: the cluster CA, this node's certificate (naming
/// `slotd://node/NAME`) and its key. Every caller of `listen` must present
/// a certificate of that CA. `insecure = true` instead serves plain text
/// to anyone who reaches the port: only for a trusted network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure: bool,
}

/// The `[cyrus]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CyrusConfig {
    /// Which driver runs Cyrus on this node.
    pub driver: Driver,
    /// The slots' instance directories, `<root>/<slot>/` (with `systemd`,
    /// the unit's `CYRUS_ROOT` must be the same).
    pub root: PathBuf,
    /// `exec`: the cyrmaster binary (with `systemd`, the unit names it).
    pub cyrmaster: PathBuf,
    /// Where Cyrus keeps its tools (`sync_client` for flush and replay).
    pub bin_dir: PathBuf,
    /// A file holding the password of `sync_authname` (`cyrus`) in the
    /// replicas' sasldb (read when the agent starts; unused with `none`).
    pub sync_password_file: PathBuf,
    /// The site's own `imapd.conf` options, appended to what slotd renders
    /// for every slot when the file exists (`ROOT/SLOT/imapd.local.conf`
    /// adds a slot's own); options slotd sets are refused.
    pub imapd_local: PathBuf,
    /// After an unclean failover, have the new master replay this node's
    /// leftover sync log when it returns (else it is kept aside).
    pub replay_leftover: bool,
}

impl Default for CyrusConfig {
    fn default() -> Self {
        CyrusConfig {
            driver: Driver::Systemd,
            root: PathBuf::from("/var/lib/slotd/cyrus"),
            cyrmaster: PathBuf::from("/usr/sbin/cyrmaster"),
            bin_dir: PathBuf::from("/usr/lib/cyrus/bin"),
            sync_password_file: PathBuf::from("/etc/slotd/sync-password"),
            imapd_local: PathBuf::from("/etc/slotd/imapd.local.conf"),
            replay_leftover: false,
        }
    }
}

/// How slotd controls the local Cyrus instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Through systemd units (production).
    Systemd,
    /// By running the Cyrus binaries directly (containers, end-to-end tests).
    Exec,
    /// Not at all: the agent only moves IPs and records decisions (tests).
    None,
}

impl Driver {
    /// The name used in `slotd.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Systemd => "systemd",
            Driver::Exec => "exec",
            Driver::None => "none",
        }
    }
}

/// Whether the agent works with a fencer beside it (see [`Config::fencer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FencerMode {
    /// No fencer: an agent that cannot die keeps its addresses until it
    /// has exited and `slotd fence` has run.
    Off,
    /// The fencer's word bounds the lease while it runs; without one, the
    /// agent warns and works as with `off`.
    #[default]
    Automatic,
    /// No master role on a lease the fencer has not acknowledged.
    Required,
}

impl FencerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FencerMode::Off => "off",
            FencerMode::Automatic => "automatic",
            FencerMode::Required => "required",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a config could not be used. `Display` is always one line that starts
/// with the origin (the file name) and, where there is one, names the field by
/// its full dotted path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{origin}: cannot read: {source}")]
    Read {
        /// The file.
        origin: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML (also: duplicate keys).
    #[error("{origin}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A key that slotd does not know (often a typo).
    #[error("{origin}: unknown field `{field}`{}; expected one of {expected}", at_line(*.line))]
    UnknownField {
        /// The file.
        origin: String,
        /// Full dotted path of the unknown key, e.g. `timing.colour`.
        field: String,
        /// 1-based line of the key, when the parser knows it.
        line: Option<usize>,
        /// The keys allowed at that place, comma-separated.
        expected: String,
    },
    /// A required key is absent.
    #[error("{origin}: field `{field}`: missing")]
    Missing {
        /// The file.
        origin: String,
        /// Full dotted path of the missing key.
        field: String,
    },
    /// A key has a value of the wrong type or an unacceptable value.
    #[error("{origin}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// Full dotted path of the key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A deserialisation error that could not be tied to a field (should not
    /// happen with TOML input; kept so no error is ever lost).
    #[error("{origin}: {message}")]
    Other {
        /// The file.
        origin: String,
        /// The deserialiser's message.
        message: String,
    },
}

impl ConfigError {
    /// Full dotted path of the field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownField { field, .. }
            | ConfigError::Missing { field, .. }
            | ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } | ConfigError::Other { .. } => None,
        }
    }

    /// The origin (file name) the error is about.
    pub fn origin(&self) -> &str {
        match self {
            ConfigError::Read { origin, .. }
            | ConfigError::Syntax { origin, .. }
            | ConfigError::UnknownField { origin, .. }
            | ConfigError::Missing { origin, .. }
            | ConfigError::Invalid { origin, .. }
            | ConfigError::Other { origin, .. } => origin,
        }
    }

    /// Replaces the origin; `parse` uses it to put the file name on errors
    /// from `validate`, which does not know where the config came from.
    fn with_origin(mut self, new: &str) -> Self {
        match &mut self {
            ConfigError::Read { origin, .. }
            | ConfigError::Syntax { origin, .. }
            | ConfigError::UnknownField { origin, .. }
            | ConfigError::Missing { origin, .. }
            | ConfigError::Invalid { origin, .. }
            | ConfigError::Other { origin, .. } => *origin = one_line(new),
        }
        self
    }
}

fn at_line(line: Option<usize>) -> String {
    match line {
        Some(line) => format!(" (at line {line})"),
        None => String::new(),
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`. Messages name `path`
    /// as given, so the operator sees the file they passed.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: one_line(&origin),
            source,
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates `text`; `origin` (usually the file name) starts
    /// every error message.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(origin, text, &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| field_error(origin, text, &e))?;
        config.validate().map_err(|e| e.with_origin(origin))?;
        Ok(config)
    }

    /// Checks the values against the rules that types cannot express. Errors
    /// carry the origin `config`; [`Config::parse`] replaces it with the file
    /// name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            origin: NO_ORIGIN.to_owned(),
            field: field.to_owned(),
            reason: one_line(&reason),
        };

        if !is_valid_node_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not a valid node name (1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit)",
                    self.name
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".to_owned()));
        }
        if self.runtime_dir.as_os_str().is_empty() {
            return Err(invalid("runtime_dir", "must not be empty".to_owned()));
        }
        if let Err(why) = check_interface_name(&self.interface) {
            return Err(invalid(
                "interface",
                format!("{:?} is not a valid interface name: {why}", self.interface),
            ));
        }
        if self.metrics_listen.port() != 0
            && self.metrics_listen.port() == self.listen.port()
            && (self.metrics_listen.ip() == self.listen.ip()
                || self.metrics_listen.ip().is_unspecified()
                || self.listen.ip().is_unspecified())
        {
            return Err(invalid(
                "metrics_listen",
                format!(
                    "{} overlaps listen ({}); use another port",
                    self.metrics_listen, self.listen
                ),
            ));
        }

        let tls = &self.tls;
        let files = [
            ("tls.ca_file", &tls.ca_file),
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ];
        if tls.insecure {
            if let Some((field, _)) = files.iter().find(|(_, f)| f.is_some()) {
                return Err(invalid(
                    "tls.insecure",
                    format!(
                        "true together with {field}: choose TLS (remove insecure) or plain text (remove the files)"
                    ),
                ));
            }
        } else {
            for (field, file) in files {
                match file {
                    None => {
                        return Err(invalid(
                            field,
                            "missing: the gRPC port needs mutual TLS (set tls.ca_file, tls.cert_file and \
                             tls.key_file; `slotctl certs` makes them), or tls.insecure = true for plain text \
                             on a trusted network"
                                .to_owned(),
                        ))
                    }
                    Some(f) if f.as_os_str().is_empty() => return Err(invalid(field, "must not be empty".to_owned())),
                    Some(_) => {}
                }
            }
        }

        let t = &self.timing;
        // The cluster's keys (the values `init` starts with): the rules
        // `slotctl config set` applies too.
        slotd_core::timing::check(
            t,
            (self.fencer != FencerMode::Off).then_some(slotd_core::node::fencer::check),
            "timing.",
        )
        .map_err(|slotd_core::timing::Invalid { key, reason }| invalid(&key, reason))?;
        let all = [
            ("timing.announce_refresh_ms", t.announce_refresh_ms),
            ("timing.probe_timeout_ms", t.probe_timeout_ms),
        ];
        for (field, value) in all {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0".to_owned()));
            }
            if value > MAX_TIMING_MS {
                return Err(invalid(
                    field,
                    format!("must be at most {MAX_TIMING_MS} (one hour), got {value}"),
                ));
            }
        }
        let sw = &self.switchover;
        for (field, value) in [
            ("switchover.demote_timeout_ms", sw.demote_timeout_ms),
            ("switchover.promote_timeout_ms", sw.promote_timeout_ms),
        ] {
            if value == 0 || value > MAX_TIMING_MS {
                return Err(invalid(
                    field,
                    format!("must be from 1 to {MAX_TIMING_MS} (one hour), got {value}"),
                ));
            }
        }
        if sw.stop_drain_timeout_ms > MAX_TIMING_MS {
            return Err(invalid(
                "switchover.stop_drain_timeout_ms",
                format!(
                    "must be at most {MAX_TIMING_MS} (one hour), got {}",
                    sw.stop_drain_timeout_ms
                ),
            ));
        }
        // A phase needs at least a pass (with its probe, for a new master)
        // and a renewal to carry the ack: a shorter timeout rolls every
        // switchover back.
        let least_demote = 4 * t.heartbeat_ms;
        if sw.demote_timeout_ms < least_demote {
            return Err(invalid(
                "switchover.demote_timeout_ms",
                format!(
                    "must be at least {least_demote} (4 × timing.heartbeat_ms), got {}",
                    sw.demote_timeout_ms
                ),
            ));
        }
        let least_promote = t.probe_timeout_ms + 4 * t.heartbeat_ms;
        if sw.promote_timeout_ms < least_promote {
            return Err(invalid(
                "switchover.promote_timeout_ms",
                format!(
                    "must be at least {least_promote} (timing.probe_timeout_ms + 4 × timing.heartbeat_ms), got {}",
                    sw.promote_timeout_ms
                ),
            ));
        }
        let max = slotd_raft_store::apply::MAX_CONCURRENCY;
        if !(1..=max).contains(&sw.drain_concurrency) {
            return Err(invalid(
                "switchover.drain_concurrency",
                format!("must be from 1 to {max}, got {}", sw.drain_concurrency),
            ));
        }
        Ok(())
    }

    /// A valid config for tests: the given identity, everything else at test
    /// defaults (plain text (`tls.insecure`), metrics on `127.0.0.1:0`, the runtime directory beside the
    /// data directory (`DATA.run`), interface `lo`, Cyrus driver `none`,
    /// default timings). Change fields directly afterwards.
    pub fn builder(node_id: u64, name: &str, listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            node_id,
            name: name.to_owned(),
            listen,
            metrics_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            runtime_dir: data_dir.with_extension("run"),
            data_dir,
            interface: "lo".to_owned(),
            manage_addresses: false,
            fencer: FencerMode::Automatic,
            cyrus: CyrusConfig {
                driver: Driver::None,
                ..CyrusConfig::default()
            },
            timing: Timing::default(),
            switchover: SwitchoverConfig::default(),
            tls: TlsConfig {
                insecure: true,
                ..TlsConfig::default()
            },
        }
    }

    /// Renders the config as a `slotd.toml` that [`Config::parse`] reads back
    /// to an equal `Config` (every key written out, defaults included). A
    /// `data_dir` that is not valid UTF-8 cannot be written in TOML and is
    /// rendered lossily.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(out, "node_id = {}", self.node_id);
        let _ = writeln!(out, "name = {}", quote(&self.name));
        let _ = writeln!(out, "listen = {}", quote(&self.listen.to_string()));
        let _ = writeln!(out, "metrics_listen = {}", quote(&self.metrics_listen.to_string()));
        let _ = writeln!(out, "data_dir = {}", quote(&self.data_dir.to_string_lossy()));
        let _ = writeln!(out, "runtime_dir = {}", quote(&self.runtime_dir.to_string_lossy()));
        let _ = writeln!(out, "interface = {}", quote(&self.interface));
        let _ = writeln!(out, "manage_addresses = {}", self.manage_addresses);
        let _ = writeln!(out, "fencer = {}", quote(self.fencer.as_str()));
        let cy = &self.cyrus;
        let _ = writeln!(out, "\n[cyrus]\ndriver = {}", quote(cy.driver.as_str()));
        let _ = writeln!(out, "root = {}", quote(&cy.root.to_string_lossy()));
        let _ = writeln!(out, "cyrmaster = {}", quote(&cy.cyrmaster.to_string_lossy()));
        let _ = writeln!(out, "bin_dir = {}", quote(&cy.bin_dir.to_string_lossy()));
        let f = &cy.sync_password_file;
        let _ = writeln!(out, "sync_password_file = {}", quote(&f.to_string_lossy()));
        let _ = writeln!(out, "imapd_local = {}", quote(&cy.imapd_local.to_string_lossy()));
        let _ = writeln!(out, "replay_leftover = {}", cy.replay_leftover);
        let t = &self.timing;
        let _ = writeln!(out, "\n[timing]");
        let _ = writeln!(out, "heartbeat_ms = {}", t.heartbeat_ms);
        let _ = writeln!(out, "lease_ms = {}", t.lease_ms);
        let _ = writeln!(out, "clock_skew_margin_ms = {}", t.clock_skew_margin_ms);
        let _ = writeln!(out, "election_timeout_min_ms = {}", t.election_timeout_min_ms);
        let _ = writeln!(out, "election_timeout_max_ms = {}", t.election_timeout_max_ms);
        let _ = writeln!(out, "raft_heartbeat_ms = {}", t.raft_heartbeat_ms);
        let _ = writeln!(out, "announce_refresh_ms = {}", t.announce_refresh_ms);
        let _ = writeln!(out, "probe_timeout_ms = {}", t.probe_timeout_ms);
        let sw = &self.switchover;
        let _ = writeln!(out, "\n[switchover]");
        let _ = writeln!(out, "demote_timeout_ms = {}", sw.demote_timeout_ms);
        let _ = writeln!(out, "promote_timeout_ms = {}", sw.promote_timeout_ms);
        let _ = writeln!(out, "max_backlog_bytes = {}", sw.max_backlog_bytes);
        let _ = writeln!(out, "drain_concurrency = {}", sw.drain_concurrency);
        let _ = writeln!(out, "stop_drain_timeout_ms = {}", sw.stop_drain_timeout_ms);
        let tls = &self.tls;
        let _ = writeln!(out, "\n[tls]");
        for (key, file) in [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ] {
            if let Some(f) = file {
                let _ = writeln!(out, "{key} = {}", quote(&f.to_string_lossy()));
            }
        }
        let _ = writeln!(out, "insecure = {}", tls.insecure);
        out
    }
}

impl Config {
    /// The settings (dotted paths, in file order) whose values differ
    /// between `self` and `other` (a key present in only one counts).
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        fn keyed(text: &str) -> Vec<(String, String)> {
            let mut table = String::new();
            let mut out = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    table = format!("{t}.");
                } else if let Some((key, value)) = line.split_once(" = ") {
                    out.push((format!("{table}{key}"), value.to_owned()));
                }
            }
            out
        }
        let (mine, theirs) = (keyed(&self.to_toml()), keyed(&other.to_toml()));
        let mut changed: Vec<String> = mine
            .iter()
            .filter(|(k, v)| !theirs.iter().any(|(k2, v2)| k2 == k && v2 == v))
            .map(|(k, _)| k.clone())
            .collect();
        for (k, _) in &theirs {
            if !mine.iter().any(|(k2, _)| k2 == k) {
                changed.push(k.clone());
            }
        }
        changed
    }
}

/// A TOML basic string for `s`, escaped by the toml crate itself.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn default_true() -> bool {
    true
}

/// Where the ledger lives when `runtime_dir` is absent.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/slotd";

fn default_runtime_dir() -> PathBuf {
    PathBuf::from(DEFAULT_RUNTIME_DIR)
}

fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
}

/// Reads an `IP:port` string. Hand-written (instead of `SocketAddr`'s own
/// impl) so the message quotes the value and says what form is expected.
fn socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(de)?;
    text.parse()
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not IP:port")))
}

/// The node-name rule shared by `slotd.toml` and the topology (it lives with
/// the state machine, which enforces it on every command).
pub fn is_valid_node_name(name: &str) -> bool {
    slotd_raft_store::apply::name_problem(name).is_none()
}

/// Linux's rules for interface names (`dev_valid_name` in the kernel): 1 to
/// 15 bytes, not `.` or `..`, no `/`, `:` or whitespace. Checked here so a
/// typo fails at start-up rather than at the first failover.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err("contains `/`, `:`, NUL or whitespace");
    }
    Ok(())
}

/// Squashes line breaks so every message stays on one line.
fn one_line(s: &str) -> String {
    if !s.contains(['\n', '\r']) {
        return s.to_owned();
    }
    s.split(['\n', '\r'])
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1-based (line, column) of byte offset `at` in `text`; column counts chars.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map_or((1, 1), |span| line_col(text, span.start));
    ConfigError::Syntax {
        origin: one_line(origin),
        line,
        column,
        message: one_line(e.message()),
    }
}

/// Turns a serde error plus the path where it happened into a one-line
/// [`ConfigError`] that names the field. serde reports unknown and missing
/// fields relative to the enclosing table, so those are rewritten into full
/// dotted paths.
fn field_error(origin: &str, text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let origin = one_line(origin);
    let path: Vec<String> = e
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let message = one_line(e.inner().message());

    if let Some((name, expected)) = parse_unknown_field(&message) {
        // The path already ends with the unknown key (serde_path_to_error
        // captures it); be robust if it does not.
        let mut full = path.clone();
        if full.last().map(String::as_str) != Some(name.as_str()) {
            full.push(name);
        }
        let line = e.inner().span().map(|span| line_col(text, span.start).0);
        return ConfigError::UnknownField {
            origin,
            field: full.join("."),
            line,
            expected,
        };
    }
    if let Some(name) = parse_missing_field(&message) {
        let mut full = path;
        full.push(name);
        return ConfigError::Missing {
            origin,
            field: full.join("."),
        };
    }
    if path.is_empty() {
        return ConfigError::Other { origin, message };
    }
    ConfigError::Invalid {
        origin,
        field: path.join("."),
        reason: message,
    }
}

/// Recognises serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`") and returns the field and the bare list `a, b`.
fn parse_unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))
        .unwrap_or("no fields here");
    Some((name.to_owned(), expected.replace('`', "")))
}

/// Recognises serde's "missing field `x`".
fn parse_missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FULL: &str = r#"
node_id = 7
name = "imap1"
listen = "10.0.0.1:7420"
metrics_listen = "[::1]:9999"
data_dir = "/var/lib/slotd"
interface = "eth0"
fencer = "required"
[cyrus]
driver = "exec"
root = "/srv/cyrus"
sync_password_file = "/etc/slotd/sync-password"
imapd_local = "/srv/cyrus/imapd.local.conf"
[timing]
heartbeat_ms = 100
lease_ms = 1300
clock_skew_margin_ms = 250
election_timeout_min_ms = 100
election_timeout_max_ms = 180
raft_heartbeat_ms = 50
[switchover]
demote_timeout_ms = 15000
promote_timeout_ms = 5000
max_backlog_bytes = 4096
drain_concurrency = 8
stop_drain_timeout_ms = 25000
[tls]
insecure = true
"#;

    const MINIMAL: &str = r#"
node_id = 1
name = "imap1"
listen = "10.0.0.1:7420"
data_dir = "/var/lib/slotd"
interface = "eth0"
tls = { ca_file = "/etc/slotd/tls/ca.pem", cert_file = "/etc/slotd/tls/node.pem", key_file = "/etc/slotd/tls/node.key" }
"#;

    #[test]
    fn changed_keys_name_what_differs_by_its_dotted_path() {
        let a = Config::builder(1, "imap1", "127.0.0.1:7420".parse().unwrap(), "/var/lib/slotd".into());
        assert!(a.changed_keys(&a.clone()).is_empty());
        let mut b = a.clone();
        b.timing.lease_ms += 1;
        b.name = "imap9".into();
        b.tls.ca_file = Some("/etc/slotd/tls/ca.pem".into());
        assert_eq!(a.changed_keys(&b), ["name", "timing.lease_ms", "tls.ca_file"]);
    }

    #[test]
    fn full_file_reads_every_field() -> Result<(), ConfigError> {
        let c = Config::parse(FULL, "full.toml")?;
        let expected = Config {
            node_id: 7,
            name: "imap1".into(),
            listen: "10.0.0.1:7420".parse().map_err(|_| bad("listen"))?,
            metrics_listen: "[::1]:9999".parse().map_err(|_| bad("metrics"))?,
            data_dir: PathBuf::from("/var/lib/slotd"),
            runtime_dir: PathBuf::from("/run/slotd"),
            interface: "eth0".into(),
            manage_addresses: true,
            fencer: FencerMode::Required,
            cyrus: CyrusConfig {
                driver: Driver::Exec,
                root: PathBuf::from("/srv/cyrus"),
                sync_password_file: PathBuf::from("/etc/slotd/sync-password"),
                imapd_local: PathBuf::from("/srv/cyrus/imapd.local.conf"),
                ..CyrusConfig::default()
            },
            timing: Timing {
                heartbeat_ms: 100,
                lease_ms: 1300,
                clock_skew_margin_ms: 250,
                election_timeout_min_ms: 100,
                election_timeout_max_ms: 180,
                raft_heartbeat_ms: 50,
                ..Timing::default()
            },
            switchover: SwitchoverConfig {
                demote_timeout_ms: 15_000,
                promote_timeout_ms: 5_000,
                max_backlog_bytes: 4096,
                drain_concurrency: 8,
                stop_drain_timeout_ms: 25_000,
            },
            tls: TlsConfig {
                insecure: true,
                ..TlsConfig::default()
            },
        };
        assert_eq!(c, expected);
        assert_eq!(c.timing.heartbeat(), Duration::from_millis(100));
        assert_eq!(c.timing.lease(), Duration::from_millis(1300));
        assert_eq!(c.timing.clock_skew_margin(), Duration::from_millis(250));
        Ok(())
    }

    #[test]
    fn minimal_file_gets_defaults() -> Result<(), ConfigError> {
        let c = Config::parse(MINIMAL, "min.toml")?;
        assert_eq!(c.metrics_listen, DEFAULT_METRICS_LISTEN);
        assert_eq!(c.cyrus.driver, Driver::Systemd);
        assert_eq!(c.timing, Timing::default());
        assert_eq!(c.timing.heartbeat(), Duration::from_millis(200));
        assert_eq!(c.timing.lease(), Duration::from_secs(2));
        assert_eq!(c.timing.clock_skew_margin(), Duration::from_millis(500));
        Ok(())
    }

    #[test]
    fn tls_is_required_unless_insecure_is_explicit() {
        let base = MINIMAL
            .lines()
            .filter(|l| !l.starts_with("tls ="))
            .collect::<Vec<_>>()
            .join("\n");
        let err = |text: &str| Config::parse(text, "t.toml").map(|_| ()).unwrap_err().to_string();
        let e = err(&base);
        assert!(e.contains("tls.ca_file") && e.contains("insecure"), "{e}");
        let e = err(&format!("{base}\n[tls]\nca_file = \"/a\"\ncert_file = \"/b\"\n"));
        assert!(e.contains("tls.key_file"), "{e}");
        let e = err(&format!("{base}\n[tls]\ninsecure = true\nca_file = \"/a\"\n"));
        assert!(e.contains("tls.insecure") && e.contains("tls.ca_file"), "{e}");
        let e = err(&format!("{base}\n[tls]\ninsecure = true\ncolour = 1\n"));
        assert!(e.contains("colour"), "{e}");
        let c = Config::parse(&format!("{base}\n[tls]\ninsecure = true\n"), "t.toml").unwrap();
        assert!(c.tls.insecure);
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.tls.key_file.as_deref(), Some(Path::new("/etc/slotd/tls/node.key")));
        // Round trip through to_toml, both ways.
        assert_eq!(Config::parse(&c.to_toml(), "t.toml").unwrap(), c);
    }

    #[test]
    fn partial_tables_get_defaults_for_the_rest() -> Result<(), ConfigError> {
        let text = format!("{MINIMAL}[cyrus]\n[timing]\nlease_ms = 3000\n");
        let c = Config::parse(&text, "partial.toml")?;
        assert_eq!(c.cyrus.driver, Driver::Systemd);
        assert_eq!(
            c.timing,
            Timing {
                lease_ms: 3000,
                ..Timing::default()
            }
        );
        Ok(())
    }

    #[test]
    fn to_toml_round_trips() -> Result<(), ConfigError> {
        let full = Config::parse(FULL, "full.toml")?;
        assert_eq!(Config::parse(&full.to_toml(), "rendered.toml")?, full);

        let listen = "127.0.0.1:0".parse().map_err(|_| bad("listen"))?;
        let mut built = Config::builder(3, "node-3.test_x", listen, PathBuf::from("/tmp/a \"quoted\" dir\\x"));
        built.interface = "veth-ä".into();
        built.validate()?;
        assert_eq!(Config::parse(&built.to_toml(), "rendered.toml")?, built);
        Ok(())
    }

    #[test]
    fn builder_gives_test_defaults() -> Result<(), ConfigError> {
        let listen = "127.0.0.1:0".parse().map_err(|_| bad("listen"))?;
        let c = Config::builder(1, "n1", listen, PathBuf::from("/tmp/x"));
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.interface, "lo");
        assert_eq!(c.cyrus.driver, Driver::None);
        c.validate()
    }

    #[test]
    fn validate_names_the_field_with_a_generic_origin() -> Result<(), ConfigError> {
        let listen = "127.0.0.1:0".parse().map_err(|_| bad("listen"))?;
        let mut c = Config::builder(1, "n1", listen, PathBuf::from("/tmp/x"));
        c.timing.lease_ms = 100;
        let err = c.validate().err().ok_or_else(|| bad("expected an error"))?;
        assert_eq!(err.field(), Some("timing.lease_ms"));
        assert_eq!(
            err.to_string(),
            "config: field `timing.lease_ms`: must be greater than timing.heartbeat_ms (200)"
        );
        Ok(())
    }

    #[test]
    fn node_names() {
        for ok in ["a", "imap1", "A.b_c-d", "9", &"x".repeat(64)] {
            assert!(is_valid_node_name(ok), "{ok:?}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(!is_valid_node_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["lo", "eth0", "enp3s0f1", "veth.1", &"x".repeat(15)] {
            assert!(check_interface_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a:1", "a\tb", &"x".repeat(16)] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("ä\nä", 100), (2, 2));
    }

    fn bad(what: &str) -> ConfigError {
        ConfigError::Other {
            origin: "test".into(),
            message: what.into(),
        }
    }
}
