//! The network: partitions (each node in a numbered component; two nodes
//! talk iff they are up and in the same component) and messages that are
//! delayed and sometimes lost. Reachability is checked both when a message
//! is sent and when it arrives, so a partition also cuts messages in flight.

use std::collections::BTreeMap;

use slotd_core::report::HealthReport;

use super::raft::Vote;
use super::rng::Rng;

/// What travels between agents (and a few local timers).
#[derive(Clone, Debug)]
pub enum Msg {
    /// Leader → node: openraft's AppendEntries / heartbeat: "I lead
    /// `term`; the log is committed up to `commit`".
    Append { term: u64, commit: usize },
    /// Node → a leader whose append it refused: "my vote is `vote`" (a
    /// greater vote makes the leader step down).
    Stale { vote: Vote },
    /// Candidate → voter: `RequestVote` for `term`, with its log length.
    Vote { term: u64, log: usize },
    /// Voter → candidate, with the voter's vote after the request and its
    /// log length.
    VoteReply { vote: Vote, granted: bool, log: usize },
    /// Node → the leader it believes in: a lease renewal, sent when the
    /// node's local clock read `sent_local`, with its health report.
    Renew {
        sent_local: f64,
        incarnation: u64,
        report: HealthReport,
    },
    /// Leader-internal timer: the quorum round started when the renewal
    /// arrived is over now (never lost; it checks the quorum itself).
    RoundDone {
        term: u64,
        node: usize,
        sent_local: f64,
        incarnation: u64,
        report: HealthReport,
    },
    /// Leader → node: the renewal sent at `sent_local` is granted with this
    /// read index.
    Grant {
        sent_local: f64,
        incarnation: u64,
        read_index: usize,
    },
    /// `slotd fence` → any node: give me a ticket (answered by a leader).
    TicketAsk { run: u64 },
    /// Leader → `slotd fence`.
    Ticket { run: u64, id: u64 },
    /// `slotd fence` → the leader that gave the ticket.
    Notice { run: u64, id: u64 },
    /// Leader → `slotd fence`.
    NoticeReply { run: u64, accepted: bool },
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: usize,
    pub to: usize,
    pub msg: Msg,
}

/// Partitions, loss and delay, and the messages in flight.
pub struct Network {
    /// Component of each node; equal components can talk.
    pub component: Vec<u32>,
    /// Base loss probability of this run.
    pub loss: f64,
    /// During a loss burst, until this true time, `burst_loss` applies.
    pub burst_until: u64,
    pub burst_loss: f64,
    /// Largest one-way delay of the run (ms); most messages are much faster.
    pub max_delay: u64,
    queue: BTreeMap<(u64, u64), Envelope>,
    seq: u64,
    pub sent: u64,
    pub lost: u64,
}

impl Network {
    pub fn new(nodes: usize, loss: f64, max_delay: u64) -> Network {
        Network {
            component: vec![0; nodes],
            loss,
            burst_until: 0,
            burst_loss: 0.0,
            max_delay,
            queue: BTreeMap::new(),
            seq: 0,
            sent: 0,
            lost: 0,
        }
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.component[a] == self.component[b]
    }

    pub fn heal(&mut self) {
        self.component.iter_mut().for_each(|c| *c = 0);
    }

    /// The loss probability at `now`.
    pub fn loss_at(&self, now: u64) -> f64 {
        if now < self.burst_until {
            self.burst_loss
        } else {
            self.loss
        }
    }

    /// A one-way delay: mostly 1–20 ms, one in twenty up to `max_delay`.
    pub fn delay(&self, rng: &mut Rng) -> u64 {
        if rng.chance(0.05) {
            rng.range(20, self.max_delay)
        } else {
            rng.range(1, 20)
        }
    }

    /// Sends `msg` at true time `now` (the caller checks the sender is up).
    /// A message to oneself is instant and sure.
    pub fn send(&mut self, now: u64, from: usize, to: usize, msg: Msg, rng: &mut Rng) {
        self.sent += 1;
        if from == to {
            self.push(now, from, to, msg);
            return;
        }
        if !self.connected(from, to) || rng.chance(self.loss_at(now)) {
            self.lost += 1;
            return;
        }
        let at = now + self.delay(rng);
        self.push(at, from, to, msg);
    }

    /// Schedules a message that cannot be lost (a local timer).
    pub fn push(&mut self, at: u64, from: usize, to: usize, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), Envelope { from, to, msg });
    }

    /// The next message due at or before `now`, if any.
    pub fn due(&mut self, now: u64) -> Option<Envelope> {
        let (&(at, _), _) = self.queue.first_key_value()?;
        if at > now {
            return None;
        }
        self.queue.pop_first().map(|(_, e)| e)
    }
}
