//! The fencer's rule: a small process beside the agent (`slotd fencer`,
//! its own systemd unit) that does not share the agent's fate. An agent
//! stuck in the kernel (a Raft fsync on a stalled disk puts a thread in D
//! state) survives systemd's SIGKILL, and `ExecStopPost` (`slotd fence`)
//! runs only once it has exited: its addresses and its Cyrus would outlive
//! the lease. So the agent tells the fencer, before it may act on it, until
//! when its lease runs (CLOCK_BOOTTIME, which both processes read alike)
//! and which of its slots run as master; the lease the agent acts on is
//! never longer than what the fencer has acknowledged. When that time
//! passes with nothing newer said, the fencer gives up every address and
//! kills those instances itself, whatever state the agent is in.
//!
//! Both sides speak one line each way over a Unix stream socket:
//! `lease DEADLINE_NS|- SLOT=ADDR/LEN,…|-` from the agent, `ok DEADLINE_NS|-`
//! back once the fencer holds it.

use std::net::IpAddr;
use std::time::Duration;

use crate::node::lease::paused;

/// What the agent tells the fencer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Told {
    /// CLOCK_BOOTTIME at which the lease runs out (`None`: no lease, so
    /// nothing may be held).
    pub deadline: Option<Duration>,
    /// This node's slots that run as master, with their master IPs.
    pub masters: Vec<Master>,
}

/// A slot that runs as master here, and the address it serves on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    pub slot: String,
    pub addr: IpAddr,
    pub len: u8,
}

impl Master {
    fn parse(s: &str) -> Option<Master> {
        let (slot, ip) = s.split_once('=')?;
        let (addr, len) = ip.split_once('/')?;
        let (addr, len): (IpAddr, u8) = (addr.parse().ok()?, len.parse().ok()?);
        let most = if addr.is_ipv4() { 32 } else { 128 };
        (!slot.is_empty() && len <= most).then(|| Master {
            slot: slot.to_owned(),
            addr,
            len,
        })
    }
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}/{}", self.slot, self.addr, self.len)
    }
}

/// A line the agent sent that is not one [`Told::parse`] reads.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLine(pub String);

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a lease line: {:?}", self.0)
    }
}

impl std::error::Error for BadLine {}

fn deadline_text(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| d.as_nanos().to_string())
}

fn parse_deadline(s: &str) -> Option<Option<Duration>> {
    if s == "-" {
        return Some(None);
    }
    s.parse::<u64>().ok().map(|ns| Some(Duration::from_nanos(ns)))
}

impl Told {
    /// The line the agent sends (no newline).
    pub fn line(&self) -> String {
        let masters = if self.masters.is_empty() {
            "-".to_owned()
        } else {
            let m: Vec<String> = self.masters.iter().map(Master::to_string).collect();
            m.join(",")
        };
        format!("lease {} {masters}", deadline_text(self.deadline))
    }

    pub fn parse(line: &str) -> Result<Told, BadLine> {
        let bad = || BadLine(line.chars().take(200).collect());
        let mut words = line.split_whitespace();
        if words.next() != Some("lease") {
            return Err(bad());
        }
        let deadline = words.next().and_then(parse_deadline).ok_or_else(bad)?;
        let masters = match words.next().ok_or_else(bad)? {
            "-" => Vec::new(),
            list => list
                .split(',')
                .map(Master::parse)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?,
        };
        if words.next().is_some() {
            return Err(bad());
        }
        Ok(Told { deadline, masters })
    }
}

/// The fencer's answer: the deadline it now holds (no newline).
pub fn ack_line(deadline: Option<Duration>) -> String {
    format!("ok {}", deadline_text(deadline))
}

/// The deadline in an answer of the fencer, if it is one.
pub fn parse_ack(line: &str) -> Option<Option<Duration>> {
    line.strip_prefix("ok ").and_then(|d| parse_deadline(d.trim()))
}

/// How often the fencer looks at the clocks: its slack after a lease ends
/// (with its pass, within the margin; `--check-config` counts it). It wakes
/// on a short tick, not once at the deadline: its timers run on
/// CLOCK_MONOTONIC, which stops while the machine sleeps.
pub const FENCER_TICK: Duration = Duration::from_millis(20);

/// Budget for the fencer's pass once it wakes: releasing the masters'
/// addresses (~1 ms each, measured: 20 in well under this) and signalling
/// their instances.
pub const FENCER_TIME: Duration = Duration::from_millis(60);

/// The longest a master's addresses outlive its lease with a fencer beside
/// the agent, whatever the agent's state.
pub fn worst_case() -> Duration {
    FENCER_TICK + FENCER_TIME
}

/// Whether a fencer is in time for `margin` (the leader moves the stores
/// `lease + margin` after its last grant): `Err` says why not.
pub fn check(margin: Duration) -> Result<(), String> {
    let worst = worst_case();
    if worst < margin {
        Ok(())
    } else {
        Err(format!(
            "must be more than {}ms with a fencer (its tick {}ms + its pass {}ms): the fencer gives a master's \
             addresses up that long after the lease",
            worst.as_millis(),
            FENCER_TICK.as_millis(),
            FENCER_TIME.as_millis()
        ))
    }
}

/// What the fencer knows, and when it must act.
#[derive(Clone, Debug)]
pub struct Watch {
    told: Told,
    /// Whether it has fenced for what it was last told.
    fenced: bool,
    /// (boot time, wall clock) when it last looked: a pause no clock of the
    /// machine saw shows as the wall clock running ahead.
    looked: (Duration, Duration),
}

impl Watch {
    /// A fencer that starts knows no deadline; one acknowledged by an
    /// earlier fencer (this one restarted) ends at most a lease after now.
    pub fn new(boot: Duration, wall: Duration, lease: Duration) -> Watch {
        Watch {
            told: Told {
                deadline: Some(boot + lease),
                masters: Vec::new(),
            },
            fenced: false,
            looked: (boot, wall),
        }
    }

    /// The agent said `told`. A deadline further on makes it watch again.
    pub fn told(&mut self, told: Told) {
        if told.deadline > self.told.deadline || told.masters != self.told.masters {
            self.fenced = false;
        }
        self.told = told;
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.told.deadline
    }

    /// The slots to stop, and their addresses to give up, when it fences.
    pub fn masters(&self) -> &[Master] {
        &self.told.masters
    }

    /// Whether to fence now (`boot`, `wall`: the clocks now): the deadline
    /// has passed, or the machine was paused past `margin` without its
    /// clocks seeing it (the lease is void then), and it has not fenced
    /// for this yet.
    pub fn due(&mut self, boot: Duration, wall: Duration, margin: Duration) -> bool {
        let (then, then_wall) = std::mem::replace(&mut self.looked, (boot, wall));
        if paused(boot.saturating_sub(then), wall.saturating_sub(then_wall), margin).is_some() {
            self.told.deadline = None;
        }
        !self.fenced && self.told.deadline.is_none_or(|d| boot >= d)
    }

    /// It fenced (everything released, the masters stopped).
    pub fn fenced(&mut self) {
        self.fenced = true;
        self.told.masters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn m(slot: &str, ip: &str) -> Master {
        let (addr, len) = ip.split_once('/').unwrap();
        Master {
            slot: slot.into(),
            addr: addr.parse().unwrap(),
            len: len.parse().unwrap(),
        }
    }

    #[test]
    fn lines_read_back_and_bad_ones_are_refused() {
        let told = Told {
            deadline: Some(Duration::from_nanos(12_345_678_901)),
            masters: vec![m("s01", "10.0.0.1/24"), m("s02", "fd00::2/64")],
        };
        assert_eq!(told.line(), "lease 12345678901 s01=10.0.0.1/24,s02=fd00::2/64");
        assert_eq!(Told::parse(&told.line()), Ok(told));
        assert_eq!(Told::parse("lease - -"), Ok(Told::default()));
        for bad in [
            "",
            "lease",
            "lease 12",
            "lease x -",
            "lease 1 a=10.0.0.1/24,,b",
            "lease 1 a",
            "lease 1 =10.0.0.1/24",
            "lease 1 a=10.0.0.1/33",
            "lease 1 a=10.0.0.300/24",
            "lease 1 - more",
            "ok 1",
        ] {
            assert!(Told::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ack(&ack_line(Some(MS(7)))), Some(Some(MS(7))));
        assert_eq!(parse_ack(&ack_line(None)), Some(None));
        assert_eq!(parse_ack("no"), None);
    }

    #[test]
    fn fences_once_when_the_deadline_passes_and_again_after_a_newer_one() {
        let margin = MS(500);
        let mut w = Watch::new(MS(1000), MS(50_000), MS(2000));
        w.told(Told {
            deadline: Some(MS(2500)),
            masters: vec![m("s01", "10.0.0.1/24")],
        });
        assert!(!w.due(MS(2499), MS(51_499), margin));
        assert!(w.due(MS(2500), MS(51_500), margin));
        assert_eq!(w.masters(), [m("s01", "10.0.0.1/24")]);
        w.fenced();
        assert!(!w.due(MS(2600), MS(51_600), margin), "once per deadline");
        // The same deadline again (a resend) changes nothing; a later one
        // watches again.
        w.told(Told {
            deadline: Some(MS(2500)),
            masters: Vec::new(),
        });
        assert!(!w.due(MS(2700), MS(51_700), margin));
        w.told(Told {
            deadline: Some(MS(4000)),
            masters: vec![m("s01", "10.0.0.1/24")],
        });
        assert!(!w.due(MS(3999), MS(52_999), margin));
        assert!(w.due(MS(4000), MS(53_000), margin));
    }

    #[test]
    fn no_lease_means_nothing_held_and_a_new_fencer_waits_at_most_a_lease() {
        let margin = MS(500);
        let mut w = Watch::new(MS(1000), MS(9000), MS(2000));
        assert!(
            !w.due(MS(2999), MS(10_999), margin),
            "an earlier fencer's ack may run until then"
        );
        assert!(w.due(MS(3000), MS(11_000), margin));
        w.fenced();
        w.told(Told::default());
        assert!(!w.due(MS(3100), MS(11_100), margin), "fenced already");
        let mut fresh = Watch::new(MS(1000), MS(9000), MS(2000));
        fresh.told(Told::default());
        assert!(fresh.due(MS(1001), MS(9001), margin));
    }

    #[test]
    fn the_fencer_must_act_within_the_margin() {
        assert_eq!(check(MS(500)), Ok(()));
        let err = check(MS(80)).unwrap_err();
        assert!(err.contains("more than 80ms"), "{err}");
    }

    #[test]
    fn a_pause_no_clock_saw_voids_the_deadline() {
        let margin = MS(500);
        let mut w = Watch::new(MS(1000), MS(9000), MS(2000));
        w.told(Told {
            deadline: Some(MS(2500)),
            masters: vec![m("s01", "10.0.0.1/24")],
        });
        assert!(!w.due(MS(1020), MS(9020), margin));
        // Frozen 10 s with its clocks: boot time moved 20 ms, the wall 10 s.
        assert!(w.due(MS(1040), MS(19_040), margin));
        assert_eq!(w.deadline(), None);
    }
}
