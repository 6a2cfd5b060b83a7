//! Prometheus metrics: the text exposition format (version 0.0.4) and a tiny
//! HTTP/1.1 endpoint that serves it at `GET /metrics`; what this agent
//! exports is [`exposition`].
//!
//! Hand-written rather than a metrics crate plus an HTTP framework: slotd
//! exports a few dozen gauges and counters that are computed from state on
//! every scrape, so all that is needed is a text builder and a server that
//! answers one request per connection.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use slotd_core::node::lease::LeaseState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock;
use crate::cluster::wire::HealthReport;
use crate::cluster::Cluster;
use crate::stats::Stats;

/// The largest request (line plus headers) the endpoint reads; scrapers send a
/// few hundred bytes, so anything larger is not a scraper.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long a client may take to send its request (and to receive the
/// answer), so a stalled connection cannot hold a task forever.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after an accept error caused by resource exhaustion (out of file
/// descriptors, memory), so the loop does not spin while it lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `Content-Type` of the text format, as Prometheus expects it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a family is a gauge or a counter (the `# TYPE` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric family: the samples that share a name, HELP and TYPE. The
/// format requires a family's samples to be contiguous, so samples are grouped
/// here even when callers interleave families.
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    /// Already rendered sample lines, in insertion order.
    samples: Vec<String>,
}

/// Builds one scrape's worth of Prometheus text.
///
/// `# HELP` and `# TYPE` are written once per family (the first call's help
/// text wins), families appear in the order they were first used, and label
/// values are escaped.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Families in first-use order; a scrape has few enough families that a
    /// linear search beats a map.
    families: Vec<Family>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge sample (a value that can go up and down).
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(Kind::Gauge, name, help, labels, value);
    }

    /// Adds a counter sample (a value that only goes up; by convention the
    /// name ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(Kind::Counter, name, help, labels, value);
    }

    /// The finished text, ending in a newline (empty if nothing was added).
    pub fn finish(self) -> String {
        let mut out = String::new();
        for family in self.families {
            out.push_str("# HELP ");
            out.push_str(&family.name);
            out.push(' ');
            out.push_str(&escape_help(&family.help));
            out.push_str("\n# TYPE ");
            out.push_str(&family.name);
            out.push(' ');
            out.push_str(family.kind.as_str());
            out.push('\n');
            for sample in family.samples {
                out.push_str(&sample);
                out.push('\n');
            }
        }
        out
    }

    fn sample(&mut self, kind: Kind, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        // Names come from our own code, never from input: a bad one is a bug.
        debug_assert!(is_valid_name(name, true), "invalid metric name {name:?}");
        debug_assert!(
            labels.iter().all(|(l, _)| is_valid_name(l, false)),
            "invalid label name in {labels:?}"
        );

        let mut line = String::with_capacity(name.len() + 32);
        line.push_str(name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (label, val)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(label);
                line.push_str("=\"");
                line.push_str(&escape_label_value(val));
                line.push('"');
            }
            line.push('}');
        }
        line.push(' ');
        line.push_str(&format_value(value));

        match self.families.iter_mut().find(|f| f.name == name) {
            Some(family) if family.kind == kind => family.samples.push(line),
            Some(family) => {
                // Mixing types in one family would make the scrape invalid
                // and drop every metric; drop only this sample instead.
                tracing::warn!(
                    metric = name,
                    declared = family.kind.as_str(),
                    used_as = kind.as_str(),
                    "metric used with two types; sample dropped"
                );
            }
            None => self.families.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                kind,
                samples: vec![line],
            }),
        }
    }
}

/// Metric names are `[a-zA-Z_:][a-zA-Z0-9_:]*`; label names the same without
/// `:`.
fn is_valid_name(name: &str, colon_ok: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon_ok && c == ':');
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if ok(c)) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and newline (quotes are literal there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Values as Go's `ParseFloat` reads them: `NaN`, `+Inf`, `-Inf`, otherwise
/// Rust's shortest round-trip decimal (integers without a fraction).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, calling
/// `render` once per scrape. Every other request gets 404. One task per
/// connection, one request per connection (`Connection: close`); requests
/// are read with a size limit and a timeout. Connections still open at
/// shutdown are dropped.
///
/// Returns an error only if the listener itself fails; errors on single
/// connections are logged and do not stop the server.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with_timeout(listener, render, shutdown, IO_TIMEOUT).await
}

/// [`serve`] with a configurable I/O timeout, so tests need not wait 5 s.
async fn serve_with_timeout(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send,
    io_timeout: Duration,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    // Owns the per-connection tasks so that they end with the server.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let render = Arc::clone(&render);
                    connections.spawn(async move {
                        if let Err(e) = handle_connection(stream, render, io_timeout).await {
                            tracing::debug!(%peer, error = %e, "metrics connection failed");
                        }
                    });
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "metrics accept: connection failed before accept");
                }
                Err(e) if is_resource_error(&e) => {
                    tracing::warn!(error = %e, "metrics accept: out of resources; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => return Err(e),
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Errors that concern one connection only (the peer gave up early).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Errors that pass once resources are freed: EMFILE, ENFILE, ENOBUFS,
/// ENOMEM (Linux errno values; slotd runs on Linux).
fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}

/// Reads one request and writes one response.
async fn handle_connection(
    mut stream: TcpStream,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    io_timeout: Duration,
) -> std::io::Result<()> {
    let request = match tokio::time::timeout(io_timeout, read_request_head(&mut stream)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request not received in time",
            ))
        }
    };
    let response = match request {
        Head::Complete(head) => match parse_request_line(&head) {
            Some(("GET", "/metrics")) => response("200 OK", CONTENT_TYPE, &render()),
            Some(_) => response(
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found; try GET /metrics\n",
            ),
            None => response("400 Bad Request", "text/plain; charset=utf-8", "bad request\n"),
        },
        Head::TooLarge => response(
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request too large\n",
        ),
        Head::Closed => return Ok(()),
    };
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(io_timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "response not sent in time",
        )),
    }
}

/// What arrived before the blank line that ends an HTTP request head.
enum Head {
    /// The request line and headers (without the final blank line).
    Complete(String),
    /// More than [`MAX_REQUEST_BYTES`] without the end of the head.
    TooLarge,
    /// The client closed the connection before finishing the head.
    Closed,
}

async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        // Search only where the terminator can newly appear.
        let search_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf[search_from..], b"\r\n\r\n") {
            buf.truncate(search_from + end);
            return Ok(Head::Complete(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(method, path)` of the request line, with any query string removed;
/// `None` if the line is not `METHOD TARGET HTTP/x`.
fn parse_request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/") || method.is_empty() {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some((method, path))
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// This agent's Prometheus text for `/metrics`.
pub fn exposition(
    cluster: &Cluster,
    stats: &Stats,
    lease: &watch::Receiver<LeaseState>,
    report: &Mutex<HealthReport>,
) -> String {
    let m = cluster.raft.metrics().borrow().clone();
    let mut x = Exposition::new();
    let id = cluster.id.to_string();
    for (state, name) in [
        (ServerState::Leader, "leader"),
        (ServerState::Follower, "follower"),
        (ServerState::Candidate, "candidate"),
        (ServerState::Learner, "learner"),
    ] {
        x.gauge(
            "slotd_raft_state",
            "Raft role of this node (1 for the current one).",
            &[("node", &id), ("state", name)],
            if m.state == state { 1.0 } else { 0.0 },
        );
    }
    x.gauge("slotd_raft_term", "Current Raft term.", &[], m.current_term as f64);
    x.gauge(
        "slotd_raft_leader",
        "Node id of the known leader (-1 when none).",
        &[],
        m.current_leader.map_or(-1.0, |l| l as f64),
    );
    x.gauge(
        "slotd_raft_last_log_index",
        "Index of the last log entry.",
        &[],
        m.last_log_index.unwrap_or(0) as f64,
    );
    x.gauge(
        "slotd_raft_last_applied_index",
        "Index of the last applied log entry.",
        &[],
        m.last_applied.map_or(0, |l| l.index) as f64,
    );
    cluster.reader.with(|d| {
        for s in d.state.stores.values() {
            let master = d.state.node_name(s.master);
            x.gauge(
                "slotd_store_epoch",
                "Current epoch of the store.",
                &[("store", &s.name)],
                s.epoch as f64,
            );
            x.gauge(
                "slotd_store_master",
                "1 for the node that masters the store.",
                &[("store", &s.name), ("node", &master)],
                1.0,
            );
        }
    });
    {
        // What this node saw of its own instances (health report).
        // Only the three small maps, not the whole report (leftover sync
        // logs ride in it): a scrape copies what it shows.
        let (failing, backlog, backlog_age) = {
            let r = report.lock().unwrap_or_else(PoisonError::into_inner);
            let failing: std::collections::BTreeMap<String, usize> =
                r.health.iter().map(|(s, p)| (s.clone(), p.len())).collect();
            (failing, r.backlog.clone(), r.backlog_age_ms.clone())
        };
        cluster.reader.with(|d| {
            for s in d.state.stores.values().filter(|s| s.slot_on(cluster.id).is_some()) {
                x.gauge(
                    "slotd_health_checks_failing",
                    "Failing health checks of this node's instance of the store (banners, sync_client).",
                    &[("store", &s.name)],
                    failing.get(&s.name).copied().unwrap_or(0) as f64,
                );
            }
        });
        for (store, bytes) in &backlog {
            x.gauge(
                "slotd_replication_backlog_bytes",
                "Bytes of the sync log this master has not sent to its replica yet.",
                &[("store", store)],
                *bytes as f64,
            );
        }
        for (store, ms) in &backlog_age {
            x.gauge(
                "slotd_replication_backlog_age_seconds",
                "How long the oldest change this master has not sent yet has waited.",
                &[("store", store)],
                *ms as f64 / 1000.0,
            );
        }
    }
    let l = *lease.borrow();
    x.gauge(
        "slotd_lease_remaining_seconds",
        "Time left on this node's master lease.",
        &[],
        l.remaining(clock::now()).as_secs_f64(),
    );
    x.gauge(
        "slotd_fenced",
        "1 while this node is named master of a store but holds no lease (it has fenced itself).",
        &[],
        if stats.fenced.load(Ordering::Relaxed) { 1.0 } else { 0.0 },
    );
    x.counter(
        "slotd_failovers_total",
        "Failover entries this node wrote as leader, by reason.",
        &[("reason", "failure")],
        Stats::get(&stats.failovers_failure) as f64,
    );
    x.counter(
        "slotd_stores_failed_over_total",
        "Stores moved by those failover entries.",
        &[],
        Stats::get(&stats.stores_failed_over) as f64,
    );
    x.gauge(
        "slotd_last_failover_timestamp_seconds",
        "Unix time of the last failover entry this node wrote (0: never).",
        &[],
        Stats::get(&stats.last_failover_ms) as f64 / 1000.0,
    );
    x.gauge(
        "slotd_stranded_stores",
        "Stores whose master is dead and that have no live replica to move to.",
        &[],
        Stats::get(&stats.stranded) as f64,
    );
    x.counter(
        "slotd_split_brain_alarms_total",
        "Probes that found another machine answering for a master IP about to be bound.",
        &[],
        Stats::get(&stats.split_brain_alarms) as f64,
    );
    let refused = stats
        .peer_refused
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for ((method, reason), n) in refused {
        x.counter(
            "slotd_peer_refused_total",
            "Peer calls refused: this agent has joined no cluster yet (not_joined), or the call is from another cluster (other_cluster).",
            &[("method", method), ("reason", reason)],
            n as f64,
        );
    }

    x.counter(
        "slotd_admin_refused_total",
        "Admin calls refused for the caller's certificate (a non-member, or a node's certificate asking for a change).",
        &[],
        Stats::get(&stats.admin_refused) as f64,
    );

    let gave_up = cluster.network.standing().times_given_up();
    x.counter(
        "slotd_raft_gave_up_leading_total",
        "Times this node gave up leading because no majority of the voters answered its appends in time (a slow link or machine at the leader).",
        &[],
        gave_up as f64,
    );

    if m.state == ServerState::Leader {
        let reports = cluster.core().reports();
        let alarms = cluster.reader.with(|d| {
            d.state
                .stores
                .values()
                .filter(|s| slotd_core::l2::verdict(s, &reports).is_alarm())
                .count()
        });
        x.gauge(
            "slotd_l2_alarms",
            "Stores whose master IP a replica saw answered by the wrong MAC, or by none (leader only).",
            &[],
            alarms as f64,
        );
    }
    x.counter(
        "slotd_reconcile_errors_total",
        "Reconciler actions that failed.",
        &[],
        Stats::get(&stats.action_errors) as f64,
    );
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_type_once_per_family_in_first_use_order() {
        let mut e = Exposition::new();
        e.gauge("slotd_up", "Whether the agent runs.", &[], 1.0);
        e.counter("slotd_failovers_total", "Failovers.", &[("store", "st01")], 3.0);
        e.gauge("slotd_up", "ignored second help", &[("x", "y")], 0.5);
        e.counter("slotd_failovers_total", "Failovers.", &[("store", "st02")], 0.0);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP slotd_up Whether the agent runs.\n\
             # TYPE slotd_up gauge\n\
             slotd_up 1\n\
             slotd_up{x=\"y\"} 0.5\n\
             # HELP slotd_failovers_total Failovers.\n\
             # TYPE slotd_failovers_total counter\n\
             slotd_failovers_total{store=\"st01\"} 3\n\
             slotd_failovers_total{store=\"st02\"} 0\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("m", "a \\ b\nc \"q\"", &[("a", "x\\y"), ("b", "say \"hi\"\nbye")], 2.0);
        assert_eq!(
            e.finish(),
            "# HELP m a \\\\ b\\nc \"q\"\n# TYPE m gauge\nm{a=\"x\\\\y\",b=\"say \\\"hi\\\"\\nbye\"} 2\n"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(-1.25), "-1.25");
        assert_eq!(format_value(1e6), "1000000");
    }

    #[test]
    fn a_family_keeps_its_first_type() {
        let mut e = Exposition::new();
        e.gauge("m", "h", &[], 1.0);
        e.counter("m", "h", &[("a", "b")], 2.0);
        assert_eq!(e.finish(), "# HELP m h\n# TYPE m gauge\nm 1\n");
    }

    #[test]
    fn empty_exposition_is_empty() {
        assert_eq!(Exposition::new().finish(), "");
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line("GET /metrics HTTP/1.1\r\nHost: x"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line("GET /metrics?x=1 HTTP/1.0"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line("GET /metrics"), None);
        assert_eq!(parse_request_line("garbage"), None);
    }

    /// Sends `request`, reads until the server closes, returns the response.
    async fn roundtrip(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn http_round_trip_and_shutdown() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| {
            let mut e = Exposition::new();
            e.gauge("slotd_up", "Up.", &[], 1.0);
            e.finish()
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, render, async {
            let _ = stop_rx.await;
        }));

        let ok = roundtrip(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await?;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
        assert!(
            ok.ends_with("\r\n\r\n# HELP slotd_up Up.\n# TYPE slotd_up gauge\nslotd_up 1\n"),
            "{ok}"
        );

        let missing = roundtrip(addr, b"GET /x HTTP/1.1\r\n\r\n").await?;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = roundtrip(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await?;
        assert!(post.starts_with("HTTP/1.1 404 "), "{post}");
        let bad = roundtrip(addr, b"hello\r\n\r\n").await?;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");

        // A request split across writes still works.
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET /metr").await?;
        tokio::task::yield_now().await;
        stream.write_all(b"ics HTTP/1.1\r\n\r\n").await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        assert!(out.starts_with(b"HTTP/1.1 200 OK"));

        // An oversized request head is refused, not buffered forever.
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
        let mut stream = TcpStream::connect(addr).await?;
        // The server may close before reading everything; only the answer matters.
        let _ = stream.write_all(&big).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&out)
        );

        // An idle connection does not keep the server from shutting down.
        let _idle = TcpStream::connect(addr).await?;
        let _ = stop_tx.send(());
        let result = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .map_err(|_| std::io::Error::other("serve did not return after shutdown"))?;
        result.map_err(std::io::Error::other)??;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open after shutdown"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_timeout() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(String::new);
        let timeout = Duration::from_millis(100);
        let server = tokio::spawn(serve_with_timeout(listener, render, std::future::pending(), timeout));
        let mut stream = TcpStream::connect(addr).await?;
        // The client never sends; the server must hang up after `timeout`
        // (tokio's test-util clock pausing is not enabled in this crate).
        let mut out = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        assert!(matches!(n, Ok(Ok(0))), "expected the server to close: {n:?}");
        server.abort();
        Ok(())
    }
}
