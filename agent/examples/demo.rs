//! The README's main demo, on one machine, as root: three storage machines
//! and a client, each a network namespace on one bridge; real `slotd`
//! agents (mutual TLS) running real Cyrus slots when Cyrus is installed
//! (the `exec` driver, every slot a prepared instance), otherwise the
//! driver `none`; a topology initialised. Then
//! one machine dies — kill -9 of its agent and `slotd fence`, as systemd's
//! ExecStopPost runs it (or, with `--port-down`, its switch port goes down
//! and the agent runs on, cut off) — its masters fail over, timed from the
//! death until the client reaches every moved master IP on a survivor (and,
//! with Cyrus, until it gets the IMAP greeting there from the new master's
//! Cyrus); the machine comes back, `slotctl rebalance` gives it masters again, and
//! everything is removed: also on Ctrl-C (SIGINT), SIGTERM, SIGHUP or a
//! failure.
//!
//! `./dev.sh demo [--ci] [--leader] [--port-down] [--no-cyrus]`, which
//! builds the agent's binaries and this example in one run (`cargo build
//! --release -p slotd-agent --bins --example demo`) and runs
//! `target/release/examples/demo` as root; the binaries it starts are the
//! ones beside it (`netns::bin`).
//!
//! - `--ci` (implied when stdout is not a terminal): plain lines, one per
//!   change, instead of a table redrawn in place;
//! - `--leader`: the Raft leader's machine dies (an election first);
//!   otherwise a follower's;
//! - `--port-down`: a silent death (lease + margin before stores move);
//! - `--no-cyrus`: the driver `none` even when Cyrus is installed.
//!
//! Exit status: 0 when all went as told; 128 + the signal (130 for Ctrl-C)
//! when interrupted, after the cleanup; 101 on a failure (a panic, with the
//! agents' logs). Every wait is bounded.

#[path = "../tests/common/netns.rs"]
mod netns;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use netns::{addr_of, cert_env, cyrus, ok, Site, SiteOptions, HOSTS, WAIT};
use slotd_agent::config::Timing;
use slotd_agent::ctl::table;
use slotd_proto::v1::StatusReply;

/// Slots per machine: 3 × 4 slots make 6 stores, 2 mastered by each.
const SLOTS: usize = 4;
/// The client's connect timeout while it looks at the master IPs.
const POLL: Duration = Duration::from_millis(50);
/// How often the client starts a look at every master IP.
const EVERY: Duration = Duration::from_millis(20);
/// How often the client starts a look at the IMAP greeting on every master
/// IP (with Cyrus: each look is an IMAP connection per IP).
const GREET_EVERY: Duration = Duration::from_millis(50);
/// How often the status is asked for, and plain lines are written.
const LOOK: Duration = Duration::from_millis(100);
/// How often the table is redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(250);
/// A status not answered within this is given up (a follower asked while
/// the leader is unreachable waits for it).
const STATUS_TIMEOUT: &str = "2";

// ---- signals -------------------------------------------------------------

/// The signal that asked us to stop (0: none yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only set `SIGNAL`: every wait looks at it and
/// the demo returns to main, which removes the site.
fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; its handler only stores to
        // an atomic; sigemptyset and sigaction get valid pointers.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        assert_eq!(rc, 0, "sigaction({signal}): {}", std::io::Error::last_os_error());
    }
}

fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// A signal asked us to stop: back (by `?`) to main, which cleans up.
#[derive(Debug)]
struct Interrupted;

type Step<T = ()> = Result<T, Interrupted>;

fn check() -> Step {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `d`, in short naps, unless a signal comes.
fn pause(d: Duration) -> Step {
    let end = Instant::now() + d;
    loop {
        check()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Polls `f` every `LOOK` until it gives a value; fails the demo after
/// `within`, stops early on a signal.
fn until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> Step<T> {
    let deadline = Instant::now() + within;
    loop {
        check()?;
        if let Some(v) = f() {
            return Ok(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        pause(LOOK)?;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- arguments -------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Death {
    /// kill -9 of the agent, then `slotd fence` (ExecStopPost).
    KillAndFence,
    /// The machine's switch port goes down; the agent runs on, alone.
    PortDown,
}

struct Opts {
    /// Redraw a table in place (a terminal, no `--ci`).
    live: bool,
    /// The leader's machine dies, not a follower's.
    leader: bool,
    death: Death,
    /// Real Cyrus when installed (not `--no-cyrus`).
    cyrus: bool,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut opts = Opts {
            live: std::io::stdout().is_terminal(),
            leader: false,
            death: Death::KillAndFence,
            cyrus: true,
        };
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--ci" => opts.live = false,
                "--leader" => opts.leader = true,
                "--port-down" => opts.death = Death::PortDown,
                "--no-cyrus" => opts.cyrus = false,
                // cargo bench passes it to every bench.
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(opts)
    }
}

/// What Cyrus needs here, as `cyrus::require_cyrus` (the Cyrus tests and
/// the switchover bench's `cyrus` section) checks it: `None` when all is
/// there, else the first missing.
fn cyrus_missing() -> Option<&'static str> {
    [
        "/usr/sbin/cyrmaster",
        "/usr/lib/cyrus/bin/sync_client",
        "/usr/sbin/saslpasswd2",
    ]
    .into_iter()
    .find(|bin| !std::path::Path::new(bin).exists())
}

// ---- output ----------------------------------------------------------------

/// What is printed: step lines, indented text, a table redrawn in place.
struct Ui {
    live: bool,
    /// Lines of the table drawn last (0: something was printed since).
    drawn: usize,
}

impl Ui {
    fn step(&mut self, what: &str) {
        self.drawn = 0;
        println!("==> {what}");
    }

    /// Indented lines (command output, results).
    fn text(&mut self, text: &str) {
        self.drawn = 0;
        for line in text.trim_end().lines() {
            println!("    {line}");
        }
    }

    /// A timed line: `+1.23 s  what`.
    fn event(&mut self, at: Duration, what: &str) {
        self.text(&format!("{:>8}  {what}", format!("+{:.2} s", at.as_secs_f64())));
    }

    /// Replaces the table drawn last (on a terminal).
    fn redraw(&mut self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Up to the table's first line, then clear to the end.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

fn node_name(i: usize) -> String {
    format!("imap{}", i + 1)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// With Cyrus, the greeting's time, to follow a step's timing line.
fn greeted(f: &Followed) -> String {
    f.greeted
        .map(|g| format!("; IMAP greeting from the new masters after {}", secs(g)))
        .unwrap_or_default()
}

// ---- the cluster as the client and the leader see it -----------------------

/// `slotctl status --json` through node `via`'s agent (`stale`: its own
/// view, without the leader), given up after `STATUS_TIMEOUT` s; else the
/// first line of what slotctl said.
fn status(site: &Site, via: usize, stale: bool) -> Result<StatusReply, String> {
    let tls = cert_env(&site.dir.path().join("tls"), "operator-ops");
    let files: Vec<String> = tls.iter().map(|(_, p)| p.to_string_lossy().into_owned()).collect();
    let endpoint = format!("{}:7420", addr_of(via));
    let slotctl = netns::bin("slotctl");
    let mut args = vec!["-s", "KILL", STATUS_TIMEOUT, &slotctl];
    args.extend([
        "--endpoint",
        &endpoint,
        "--ca",
        &files[0],
        "--cert",
        &files[1],
        "--key",
        &files[2],
    ]);
    args.extend(["status", "--json"]);
    if stale {
        args.push("--stale");
    }
    let out = site.lan.host(HOSTS[via]).exec("timeout", &args);
    if !out.status.success() {
        if out.status.code() == Some(128 + libc::SIGKILL) {
            return Err(format!("no answer within {STATUS_TIMEOUT} s"));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().next().unwrap_or("no answer").trim();
        return Err(line.strip_prefix("slotctl: ").unwrap_or(line).to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("slotctl status --json: unreadable JSON: {e}"))
}

/// The master IPs of a status, in its store order.
fn master_ips(s: &StatusReply) -> Vec<IpAddr> {
    s.stores
        .iter()
        .map(|st| {
            let ip = st.master_ip.split('/').next().unwrap_or_default();
            ip.parse()
                .unwrap_or_else(|e| panic!("store {}: master_ip {:?}: {e}", st.name, st.master_ip))
        })
        .collect()
}

/// Whose Cyrus greets the client (IMAP, port 143) on each of `ips`: the
/// node of the banner's `SLOT.NODE`, asked from the client namespace, all
/// at once (bounded by `cyrus::banner`'s connect and read timeouts).
fn greetings(site: &Site, ips: &[IpAddr]) -> Vec<Option<String>> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = ips.iter().map(|ip| scope.spawn(|| greeting(site, *ip))).collect();
        asks.into_iter().map(|h| h.join().ok().flatten()).collect()
    })
}

/// Whose Cyrus greets the client on `ip` (see `greetings`).
fn greeting(site: &Site, ip: IpAddr) -> Option<String> {
    site.lan
        .host("cl")
        .spawn_blocking(move || greeter(ip))
        .join()
        .ok()
        .flatten()
}

/// The node whose Cyrus greets on `ip`, asked from where we are.
fn greeter(ip: IpAddr) -> Option<String> {
    let banner = cyrus::banner(ip)?;
    banner.rsplit_once('.').map(|(_, node)| node.to_owned())
}

/// Whether every store is stable and the client reaches each master IP on
/// the store's master.
fn all_served(s: &StatusReply, answers: &[Option<String>]) -> bool {
    s.stores.len() == answers.len()
        && s.stores
            .iter()
            .zip(answers)
            .all(|(st, who)| st.phase == "stable" && who.as_deref() == Some(st.master.as_str()))
}

/// The newest answered status look (and when it was answered), the looks
/// under way.
#[derive(Default)]
struct Asked {
    status: Option<(Result<StatusReply, String>, Duration)>,
    look: u64,
    pending: usize,
}

/// What the client's looks found: the newest answers, since when each has
/// been the same, and when `reached` first held.
#[derive(Clone)]
struct Polled {
    answers: Vec<Option<String>>,
    since: Vec<Duration>,
    reached: Option<Duration>,
    look: u64,
    /// The newest look noted for each IP alone (`note_one`).
    looks: Vec<u64>,
}

impl Polled {
    /// Answers assumed at the start: every IP served by `before`.
    fn assuming(before: &[String]) -> Polled {
        Polled {
            answers: before.iter().cloned().map(Some).collect(),
            since: vec![Duration::ZERO; before.len()],
            reached: None,
            look: 0,
            looks: vec![0; before.len()],
        }
    }

    /// The answer on IP `i` of look `n`, got at `at`: each IP on its own,
    /// so that one slow to answer holds up no other.
    fn note_one(
        &mut self,
        i: usize,
        n: u64,
        at: Duration,
        answer: Option<String>,
        reached: &(dyn Fn(&[Option<String>]) -> bool + Sync),
    ) {
        if self.looks.get(i).is_none_or(|l| n <= *l) {
            return;
        }
        self.looks[i] = n;
        if self.answers[i] != answer {
            self.answers[i] = answer;
            self.since[i] = at;
        }
        if self.reached.is_none() && reached(&self.answers) {
            self.reached = Some(at);
        }
    }

    /// The answers of look `n`, got at `at` (an older look than the
    /// newest noted is dropped).
    fn note(
        &mut self,
        n: u64,
        at: Duration,
        answers: Vec<Option<String>>,
        reached: &(dyn Fn(&[Option<String>]) -> bool + Sync),
    ) {
        if n <= self.look {
            return;
        }
        self.look = n;
        if self.reached.is_none() && reached(&answers) {
            self.reached = Some(at);
        }
        for (i, answer) in answers.into_iter().enumerate() {
            if self.answers.get(i) != Some(&answer) {
                self.answers[i] = answer;
                self.since[i] = at;
            }
        }
    }
}

/// One view of the cluster: a status (or why there is none), when it was
/// answered, and who the client reaches on each master IP, since when.
struct Seen {
    at: Duration,
    status: Result<StatusReply, String>,
    answers: Vec<Option<String>>,
    since: Vec<Duration>,
    /// With Cyrus: whose Cyrus greets the client on each master IP, since
    /// when.
    greetings: Option<(Vec<Option<String>>, Vec<Duration>)>,
}

/// A sentence about the cluster, under a key: plain output prints the
/// sentences whose key's sentence changed, with when that was seen.
struct Fact {
    key: String,
    text: String,
    at: Duration,
}

/// What a view shows.
fn facts(seen: &Seen, stores: &[String], ips: &[IpAddr]) -> Vec<Fact> {
    let fact = |key: &str, text: String| Fact {
        key: key.to_owned(),
        text,
        at: seen.at,
    };
    let mut facts = Vec::new();
    match &seen.status {
        Ok(s) => {
            let leader = match s.leader {
                Some(_) => format!("leader: {} (term {})", s.leader_name, s.term),
                None => "leader: none".to_owned(),
            };
            facts.push(fact("leader", leader));
            for n in &s.nodes {
                let alive = if n.alive {
                    "alive (holds a lease)"
                } else {
                    "down (no lease, as the leader sees it)"
                };
                facts.push(fact(&n.name, format!("{}: {alive}", n.name)));
            }
            for st in &s.stores {
                let what = match (st.phase.as_str(), st.target.as_str()) {
                    ("stable", _) => format!("master {}", st.master),
                    (p, to) if to.is_empty() || to == st.master => format!("{p} {}", st.master),
                    (p, to) => format!("{p} {} → {to}", st.master),
                };
                facts.push(fact(&st.name, format!("{}: {what} (epoch {})", st.name, st.epoch)));
            }
            let rebalance = if s.rebalancing { "rebalance under way" } else { "" };
            facts.push(fact("rebalance", rebalance.to_owned()));
        }
        Err(why) => facts.push(fact("leader", format!("no status: {why}"))),
    }
    for (((name, ip), who), since) in stores.iter().zip(ips).zip(&seen.answers).zip(&seen.since) {
        let who = who.as_deref().unwrap_or("nobody");
        facts.push(Fact {
            key: format!("{name} ip"),
            text: format!("{name}: the client reaches {who} on {ip}"),
            at: *since,
        });
    }
    if let Some((greetings, since)) = &seen.greetings {
        for (((name, ip), who), since) in stores.iter().zip(ips).zip(greetings).zip(since) {
            let text = match who {
                Some(who) => format!("{name}: IMAP greeting from {who}'s Cyrus on {ip}"),
                None => format!("{name}: no IMAP greeting on {ip}"),
            };
            facts.push(Fact {
                key: format!("{name} imap"),
                text,
                at: *since,
            });
        }
    }
    facts
}

/// The table drawn on a terminal at `now`: leader, leases, and every store
/// with who the client reaches on its master IP (`last`: the status to
/// show when the view has none).
fn table(now: Duration, seen: &Seen, last: &StatusReply, ips: &[IpAddr], before: &[String]) -> Vec<String> {
    let s = seen.status.as_ref().unwrap_or(last);
    let mut leader = match &seen.status {
        Ok(s) if s.leader.is_some() => format!("leader {} (term {})", s.leader_name, s.term),
        Ok(_) => "no leader".to_owned(),
        Err(why) => format!("no status ({why})"),
    };
    if now.saturating_sub(seen.at) > Duration::from_millis(600) {
        let _ = write!(leader, ", as of +{}", secs(seen.at));
    }
    let names = |alive: bool| {
        let names: Vec<&str> = s
            .nodes
            .iter()
            .filter(|n| n.alive == alive)
            .map(|n| n.name.as_str())
            .collect();
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(" ")
        }
    };
    let mut lines = vec![
        format!(
            "+{}   {leader}   holding a lease: {}   no lease: {}",
            secs(now),
            names(true),
            names(false)
        ),
        String::new(),
    ];
    let mut header = ["STORE", "MASTER", "EPOCH", "PHASE", "MASTER IP", "CLIENT REACHES"]
        .map(str::to_owned)
        .to_vec();
    if seen.greetings.is_some() {
        header.push("IMAP GREETING FROM".to_owned());
    }
    header.push(String::new());
    let mut rows = Vec::new();
    for (i, st) in s.stores.iter().enumerate() {
        let phase = table::phase(st);
        let moved = if before.get(i) != Some(&st.master) {
            "(moved)"
        } else {
            ""
        };
        let mut row = vec![
            st.name.clone(),
            st.master.clone(),
            st.epoch.to_string(),
            phase,
            ips.get(i).map(IpAddr::to_string).unwrap_or_default(),
            seen.answers.get(i).cloned().flatten().unwrap_or_else(|| "—".to_owned()),
        ];
        if let Some((greetings, _)) = &seen.greetings {
            row.push(greetings.get(i).cloned().flatten().unwrap_or_else(|| "—".to_owned()));
        }
        row.push(moved.to_owned());
        rows.push(row);
    }
    let head: Vec<&str> = header.iter().map(String::as_str).collect();
    lines.extend(table::columns(&head, &rows).lines().map(str::to_owned));
    lines
}

/// Follows the cluster from `t0` on: a table redrawn in place, or a line
/// per change. The client looks at every master IP every `EVERY`, each
/// look on a thread of its own (a connection caught by a release, answered
/// only by its 1 s read timeout, holds up that look alone; the newest look
/// wins), and notes when `reached` first holds for its answers: the time
/// measured. Statuses are asked for on threads too (one may wait for an
/// unreachable leader). With Cyrus, the client also looks at the IMAP
/// greeting on every master IP every `GREET_EVERY` (each IP's look on a
/// thread of its own, the newest look of each IP wins) and notes
/// when `reached` first holds for whose Cyrus greets it. The follow ends
/// once `reached` has held (for the greetings too) and `settled` holds for
/// a status and the client's answers (with Cyrus, every store's master
/// also greets on its IP).
#[derive(Clone, Copy)]
struct Follow<'a> {
    site: &'a Site,
    /// The node whose agent is asked for the status.
    via: usize,
    t0: Instant,
    /// Every store's name and master IP, in status order.
    stores: &'a [String],
    ips: &'a [IpAddr],
    /// Every store's master when the step began (what the client reached
    /// then; the table marks moves from it).
    before: &'a [String],
    /// Real Cyrus: the IMAP greetings are looked at too.
    cyrus: bool,
}

/// When a follow's conditions held, from its `t0`.
struct Followed {
    /// `reached`, for the client's answers.
    reached: Duration,
    /// `reached`, for the IMAP greetings (with Cyrus).
    greeted: Option<Duration>,
    /// `settled` (and all before).
    settled: Duration,
}

/// Sets its flag when dropped: the lookers stop however a follow ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Follow<'_> {
    fn run(
        &self,
        ui: &mut Ui,
        what: &str,
        reached: &(dyn Fn(&[Option<String>]) -> bool + Sync),
        settled: &dyn Fn(&StatusReply, &[Option<String>]) -> bool,
        told: &mut Vec<Fact>,
        last: &mut StatusReply,
    ) -> Step<Followed> {
        let stop = AtomicBool::new(false);
        let polled = Mutex::new(Polled::assuming(self.before));
        let greeted = Mutex::new(Polled::assuming(self.before));
        let asked = Mutex::new(Asked::default());
        std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            let (stop, polled, greeted, asked) = (&stop, &polled, &greeted, &asked);
            scope.spawn(move || {
                let mut started = 0u64;
                while !stop.load(Ordering::SeqCst) && !interrupted() {
                    started += 1;
                    let n = started;
                    scope.spawn(move || {
                        let answers = self.site.who_serves_all_within(self.ips, POLL);
                        let at = self.t0.elapsed();
                        lock(polled).note(n, at, answers, reached);
                    });
                    std::thread::sleep(EVERY);
                }
            });
            if self.cyrus {
                scope.spawn(move || {
                    // Each IP's look on a thread of its own, not waited
                    // for: a connection to an instance being stopped,
                    // answered only by the read timeout (5 s), holds up
                    // neither another IP nor the end of the follow.
                    let (tx, rx) = std::sync::mpsc::channel();
                    let client = self.site.lan.host("cl");
                    let mut started = 0u64;
                    while !stop.load(Ordering::SeqCst) && !interrupted() {
                        started += 1;
                        let n = started;
                        for (i, ip) in self.ips.iter().copied().enumerate() {
                            let (tx, t0) = (tx.clone(), self.t0);
                            drop(client.spawn_blocking(move || {
                                let answer = greeter(ip);
                                let _ = tx.send((i, n, t0.elapsed(), answer));
                            }));
                        }
                        let mut g = lock(greeted);
                        for (i, n, at, answer) in rx.try_iter() {
                            g.note_one(i, n, at, answer, reached);
                        }
                        drop(g);
                        std::thread::sleep(GREET_EVERY);
                    }
                });
            }
            scope.spawn(move || {
                let mut started = 0u64;
                let mut last_start: Option<Instant> = None;
                while !stop.load(Ordering::SeqCst) && !interrupted() {
                    let pending = lock(asked).pending;
                    let since = last_start.map_or(Duration::MAX, |t| t.elapsed());
                    // One at a time, unless one hangs.
                    if since >= LOOK && (pending == 0 || (pending < 3 && since >= Duration::from_secs(1))) {
                        started += 1;
                        let n = started;
                        last_start = Some(Instant::now());
                        lock(asked).pending += 1;
                        scope.spawn(move || {
                            let got = status(self.site, self.via, false);
                            let at = self.t0.elapsed();
                            let mut a = lock(asked);
                            a.pending -= 1;
                            if n > a.look {
                                a.look = n;
                                a.status = Some((got, at));
                            }
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            let deadline = self.t0 + WAIT;
            let mut redrawn: Option<Instant> = None;
            loop {
                check()?;
                let now = self.t0.elapsed();
                let p = lock(polled).clone();
                let g = self.cyrus.then(|| lock(greeted).clone());
                let latest = lock(asked).status.clone();
                if let Some((status, at)) = latest {
                    let seen = Seen {
                        at,
                        status,
                        answers: p.answers,
                        since: p.since,
                        greetings: g.as_ref().map(|g| (g.answers.clone(), g.since.clone())),
                    };
                    // With Cyrus, also greeted, and by every store's master.
                    let greeted = match &g {
                        Some(g) => g.reached.map(Some),
                        None => Some(None),
                    };
                    let done = p.reached.zip(greeted).filter(|_| match &seen.status {
                        Ok(s) => settled(s, &seen.answers) && g.as_ref().is_none_or(|g| all_served(s, &g.answers)),
                        Err(_) => false,
                    });
                    if ui.live {
                        // The last view is always drawn.
                        if done.is_some() || redrawn.is_none_or(|t: Instant| t.elapsed() >= REDRAW) {
                            ui.redraw(&table(now, &seen, last, self.ips, self.before));
                            redrawn = Some(Instant::now());
                        }
                    } else {
                        let mut news = Vec::new();
                        for fact in facts(&seen, self.stores, self.ips) {
                            match told.iter_mut().find(|f| f.key == fact.key) {
                                Some(old) if old.text == fact.text => {}
                                Some(old) => {
                                    if !fact.text.is_empty() {
                                        news.push((fact.at, fact.text.clone()));
                                    }
                                    *old = fact;
                                }
                                None => told.push(fact),
                            }
                        }
                        news.sort_by_key(|(at, _)| *at);
                        for (at, text) in news {
                            ui.event(at, &text);
                        }
                    }
                    if let Ok(s) = seen.status {
                        *last = s;
                    }
                    if let Some((reached, greeted)) = done {
                        return Ok(Followed {
                            reached,
                            greeted,
                            settled: at.max(reached).max(greeted.unwrap_or_default()),
                        });
                    }
                }
                assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
                pause(LOOK)?;
            }
        })
    }
}

// ---- the demo --------------------------------------------------------------

fn main() {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}\nusage: ./dev.sh demo [--ci] [--leader] [--port-down] [--no-cyrus]");
            std::process::exit(2);
        }
    };
    catch_signals();
    // Once interrupted, a panic (a slotctl the terminal's Ctrl-C killed…)
    // is no failure to report: main cleans up and says so.
    let report = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !interrupted() {
            report(info);
        }
    }));
    let started = Instant::now();
    let mut ui = Ui {
        live: opts.live,
        drawn: 0,
    };
    let cyrus = match (opts.cyrus, cyrus_missing()) {
        (false, _) => {
            ui.step("--no-cyrus: Cyrus driver none (IPs and phases only, no Cyrus instance)");
            false
        }
        (true, Some(missing)) => {
            ui.step(&format!(
                "Cyrus not installed ({missing} missing): Cyrus driver none (IPs and phases only)"
            ));
            false
        }
        (true, None) => {
            ui.step(
                "Cyrus found (/usr/sbin/cyrmaster): every slot is a real Cyrus instance, exec driver \
                 (--no-cyrus for the driver none)",
            );
            true
        }
    };
    let driver = if cyrus {
        "Cyrus driver exec, every slot a Cyrus instance prepared"
    } else {
        "Cyrus driver none"
    };
    ui.step(&format!(
        "starting 3 machines (imap1–imap3) and a client, each a network namespace on one bridge; \
         a slotd agent on each machine ({driver}, {SLOTS} slots, mutual TLS)"
    ));
    let site = match panic::catch_unwind(|| {
        Site::start_with(
            "demo",
            SiteOptions {
                slots: SLOTS,
                cyrus,
                ..SiteOptions::default()
            },
        )
    }) {
        Ok(site) => site,
        // What was started is gone already (dropped while unwinding).
        Err(_) if interrupted() => {
            let left = leftovers(&format!("sn{}-demo", std::process::id()), None);
            assert!(left.is_empty(), "left behind: {}", left.join(", "));
            leave(&mut ui)
        }
        Err(p) => panic::resume_unwind(p),
    };
    let prefix = site
        .lan
        .host(HOSTS[0])
        .name()
        .strip_suffix(&format!("-{}", HOSTS[0]))
        .expect("namespace names end in the host's name")
        .to_owned();
    let dir = site.dir.path().to_string_lossy().into_owned();
    match panic::catch_unwind(AssertUnwindSafe(|| demo(&site, &mut ui, &opts, cyrus, &prefix))) {
        Ok(_) => {}
        Err(_) if interrupted() => {}
        // The site is dropped while unwinding: it prints the agents' logs.
        Err(p) => panic::resume_unwind(p),
    }
    if interrupted() {
        ui.drawn = 0;
        println!();
    }
    if cyrus {
        ui.step("cleaning up: agents and Cyrus instances killed (SIGKILL), namespaces and files removed");
    } else {
        ui.step("cleaning up: agents killed (SIGKILL), namespaces and files removed");
    }
    drop(site);
    let left = gone(&format!("{prefix}-"), &dir);
    assert!(left.is_empty(), "left behind: {}", left.join(", "));
    ui.text(&format!("no namespace {prefix}-* left, no process using {dir}"));
    if interrupted() {
        leave(&mut ui);
    }
    ui.step(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
}

/// After the cleanup of an interrupted demo: 128 + the signal, as a shell
/// reports a process a signal ended.
fn leave(ui: &mut Ui) -> ! {
    let signal = SIGNAL.load(Ordering::SeqCst);
    ui.step(&format!("interrupted (signal {signal}): everything removed"));
    std::process::exit(128 + signal)
}

/// What `leftovers` finds once killed processes had a moment to go (a
/// process SIGKILLed stays listed until reaped): polled for up to 5 s.
fn gone(prefix: &str, dir: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(prefix, Some(dir));
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Namespaces whose name begins with `prefix`, and processes whose command
/// line names `dir` (our agents' configs, our Cyrus instances), still
/// there.
fn leftovers(prefix: &str, dir: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                left.push(format!("namespace {name}"));
            }
        }
    }
    let Some(dir) = dir else {
        return left;
    };
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(dir) {
                left.push(format!("process {pid} ({})", cmdline.trim()));
            }
        }
    }
    left
}

fn demo(site: &Site, ui: &mut Ui, opts: &Opts, cyrus: bool, prefix: &str) -> Step {
    check()?;
    let timing = Timing::default();
    ui.text(&format!(
        "namespaces {prefix}-a/-b/-c (10.99.0.1–3), client {prefix}-cl (10.99.0.9), bridge in {prefix}-sw"
    ));
    ui.text(&format!(
        "default timings: lease {:?}, margin {:?}, elections {}–{} ms, RFC 5227 probe {:?}",
        timing.lease(),
        timing.clock_skew_margin(),
        timing.election_timeout_min_ms,
        timing.election_timeout_max_ms,
        timing.probe_timeout()
    ));

    // ---- init
    let topology = site.topology();
    let per_node = topology.stores.len() / HOSTS.len();
    ui.step(&format!(
        "slotctl init topology.toml: 3 nodes × {SLOTS} slots = {} stores (master + replica), \
         each node the preferred master of {per_node}",
        topology.stores.len(),
    ));
    let path = site.dir.path().join("topology.toml");
    std::fs::write(&path, slotd_raft_store::topology::render(&topology))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let t0 = Instant::now();
    ui.text(&ok(site.slotctl(0, &["init", &path.to_string_lossy()])));
    let mut ips = Vec::new();
    let first = until("every master IP served by its master after init", WAIT, || {
        let s = status(site, 0, false).ok()?;
        ips = master_ips(&s);
        all_served(&s, &site.who_serves_all_within(&ips, POLL)).then_some(s)
    })?;
    ui.text(&format!(
        "every master IP bound and served by its master {} after init",
        secs(t0.elapsed())
    ));
    if cyrus {
        let masters: Vec<Option<String>> = first.stores.iter().map(|st| Some(st.master.clone())).collect();
        until(
            "every master's Cyrus greeting on its master IP after init",
            WAIT,
            || (greetings(site, &ips) == masters).then_some(()),
        )?;
        ui.text(&format!(
            "every master's Cyrus greets the client (IMAP) on its master IP {} after init",
            secs(t0.elapsed())
        ));
    }
    // A steady cluster: every node holds a lease, under one leader.
    let mut since = (Instant::now(), None);
    let steady = until("every node alive under one leader", WAIT, || {
        let s = status(site, 0, false).ok()?;
        let now = (s.leader?, s.term, s.nodes.iter().all(|n| n.alive));
        if since.1 != Some(now) {
            since = (Instant::now(), Some(now));
        }
        (now.2 && since.0.elapsed() > Duration::from_secs(1)).then_some(s)
    })?;
    let stores: Vec<String> = first.stores.iter().map(|s| s.name.clone()).collect();
    let preferred: Vec<String> = first.stores.iter().map(|s| s.master.clone()).collect();
    let lead = steady.leader.expect("a steady cluster has a leader") as usize - 1;
    ui.step(&format!("slotctl status (through {})", node_name(lead)));
    ui.text(&ok(site.slotctl(lead, &["status"])));

    // ---- death
    let v = if opts.leader {
        lead
    } else if lead != 1 {
        1
    } else {
        2
    };
    let victim = node_name(v);
    let moved: Vec<usize> = (0..stores.len()).filter(|i| preferred[*i] == victim).collect();
    let moved_names: Vec<&str> = moved.iter().map(|i| stores[*i].as_str()).collect();
    let via = if v == lead {
        (0..HOSTS.len()).find(|i| *i != v).expect("a survivor")
    } else {
        lead
    };
    let role = if v == lead { "the leader" } else { "a follower" };
    let how = match opts.death {
        Death::KillAndFence => "kill -9 of its agent, then `slotd fence` as systemd's ExecStopPost runs it",
        Death::PortDown => "its switch port goes down (the agent runs on, cut off)",
    };
    ui.step(&format!(
        "{victim} ({role}, master of {}) dies: {how}",
        moved_names.join(", ")
    ));
    check()?;
    let port = format!("p-{}", HOSTS[v]);
    let t0 = Instant::now();
    match opts.death {
        Death::KillAndFence => {
            site.kill9(v);
            ui.event(t0.elapsed(), &format!("{victim}: agent killed (SIGKILL)"));
            let out = site.fence(v);
            assert!(
                out.status.success(),
                "slotd fence: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            ui.event(t0.elapsed(), &format!("{victim}: slotd fence: {}", said.trim()));
        }
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "down"]);
            ui.event(t0.elapsed(), &format!("{victim}: switch port {port} down"));
        }
    }
    let mut told = facts(
        &Seen {
            at: Duration::ZERO,
            status: Ok(steady.clone()),
            answers: preferred.iter().cloned().map(Some).collect(),
            since: vec![Duration::ZERO; preferred.len()],
            greetings: cyrus.then(|| {
                (
                    preferred.iter().cloned().map(Some).collect(),
                    vec![Duration::ZERO; preferred.len()],
                )
            }),
        },
        &stores,
        &ips,
    );
    let mut last = steady.clone();
    let follow = Follow {
        site,
        via,
        t0,
        stores: &stores,
        ips: &ips,
        before: &preferred,
        cyrus,
    };
    let reached = |answers: &[Option<String>]| {
        moved
            .iter()
            .all(|i| answers.get(*i).cloned().flatten().is_some_and(|w| w != victim))
    };
    // Until the leader sees the victim down too (its lease ran out): then
    // its coming back shows.
    let settled = |s: &StatusReply, answers: &[Option<String>]| {
        moved
            .iter()
            .all(|i| s.stores.get(*i).is_some_and(|st| st.master != victim))
            && s.nodes.iter().any(|n| n.name == victim && !n.alive)
            && all_served(s, answers)
    };
    let failover = follow.run(
        ui,
        "the moved master IPs served by survivors, and the leader seeing the victim down",
        &reached,
        &settled,
        &mut told,
        &mut last,
    )?;
    let mut to: Vec<&str> = moved
        .iter()
        .filter_map(|i| last.stores.get(*i))
        .map(|st| st.master.as_str())
        .collect();
    to.sort_unstable();
    to.dedup();
    let lm = timing.lease() + timing.clock_skew_margin();
    let bound = match (opts.death, v == lead) {
        (Death::KillAndFence, false) => "the fence's notice, a commit and the new master's probe".to_owned(),
        (Death::KillAndFence, true) => format!("an election (≤ {:?}) and the probe", timing.leader_change()),
        (Death::PortDown, false) => format!("lease + margin ({lm:?}), then the probe"),
        (Death::PortDown, true) => format!("an election, lease + margin (≤ {:?})", timing.leader_change() + lm),
    };
    ui.step(&format!(
        "failover: {victim}'s {} masters ({}) served again by {} after {}{}",
        moved.len(),
        moved_names.join(", "),
        to.join("/"),
        secs(failover.reached),
        greeted(&failover),
    ));
    ui.text(&format!(
        "(from the death until the client reached every moved master IP on its new master: {bound}{})",
        if cyrus {
            "; then until the new master's Cyrus, started there, greeted the client on each"
        } else {
            ""
        }
    ));

    // ---- back
    let back = match opts.death {
        Death::KillAndFence => "its agent starts again (systemd's Restart=)",
        Death::PortDown => "its switch port comes up",
    };
    ui.step(&format!("{victim} comes back: {back}"));
    check()?;
    let t0 = Instant::now();
    match opts.death {
        Death::KillAndFence => site.spawn(v),
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "up"]);
        }
    }
    let up = match opts.death {
        Death::KillAndFence => format!("{victim}: agent serving again"),
        Death::PortDown => format!("{victim}: switch port {port} up"),
    };
    ui.event(t0.elapsed(), &up);
    let now: Vec<String> = last.stores.iter().map(|s| s.master.clone()).collect();
    let follow = Follow {
        t0,
        before: &now,
        ..follow
    };
    // Alive; following the same leader, in the same term, as the others
    // (an old leader cut off may believe itself leader a while); every
    // master's backlog reported (a rebalance moves a master only to a
    // replica known to have nothing left to receive).
    let rejoined = |s: &StatusReply, answers: &[Option<String>]| {
        let own = status(site, v, true).ok();
        s.nodes.iter().all(|n| n.alive)
            && own.is_some_and(|o| o.leader == s.leader && o.term == s.term)
            && s.stores.iter().all(|st| st.backlog.is_some())
            && all_served(s, answers)
    };
    let took = follow.run(
        ui,
        "the victim alive and following the leader",
        &|_| true,
        &rejoined,
        &mut told,
        &mut last,
    )?;
    ui.step(&format!(
        "{victim} back after {}: alive, following leader {} (term {}), master of nothing until a rebalance",
        secs(took.settled),
        last.leader_name,
        last.term
    ));

    // ---- rebalance
    ui.step("slotctl rebalance (toward the preferred masters, even counts)");
    check()?;
    let t0 = Instant::now();
    let out = until("a rebalance with moves", WAIT, || {
        let out = ok(site.slotctl(via, &["rebalance"]));
        (!out.contains("nothing to move")).then_some(out)
    })?;
    ui.text(&out);
    let now: Vec<String> = last.stores.iter().map(|s| s.master.clone()).collect();
    let follow = Follow {
        t0,
        before: &now,
        ..follow
    };
    // Even counts: every node masters as many stores as at init.
    let even = |masters: &mut dyn Iterator<Item = &str>| {
        let mut counts = vec![0; HOSTS.len()];
        for m in masters {
            if let Some(i) = (0..HOSTS.len()).find(|i| node_name(*i) == m) {
                counts[i] += 1;
            }
        }
        counts.iter().all(|c| *c == per_node)
    };
    let reached = |answers: &[Option<String>]| {
        answers.iter().all(Option::is_some) && even(&mut answers.iter().filter_map(|a| a.as_deref()))
    };
    let balanced = |s: &StatusReply, answers: &[Option<String>]| {
        !s.rebalancing && even(&mut s.stores.iter().map(|st| st.master.as_str())) && all_served(s, answers)
    };
    let rebalance = follow.run(ui, "the rebalance", &reached, &balanced, &mut told, &mut last)?;
    let again: Vec<&str> = last
        .stores
        .iter()
        .filter(|st| st.master == victim)
        .map(|st| st.name.as_str())
        .collect();
    ui.step(&format!(
        "rebalance: {victim} masters {} again, {per_node} masters on each node, after {}{}",
        again.join(", "),
        secs(rebalance.reached),
        greeted(&rebalance),
    ));
    ui.text(&format!(
        "(from the command until the client reached every master IP on its master{})",
        if cyrus {
            ", and until every master's Cyrus greeted it there"
        } else {
            ""
        }
    ));

    ui.step(&format!("slotctl status (through {})", node_name(via)));
    ui.text(&ok(site.slotctl(via, &["status"])));
    Ok(())
}
