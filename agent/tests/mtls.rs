//! Only cluster members and operators get in (mutual TLS), with real
//! `slotd` processes: forged lease renewals and fence notices, callers with
//! no certificate, another CA's, an operator's on Peer, a removed node's.
//! Each is refused, and the cluster state stays exactly as it was.

mod common;

use std::time::Instant;

use common::{comparable, wait_for, TestCluster, WAIT};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use serde_json::Value;
use slotd_agent::cluster::wire::{Asker, FenceRequest, HealthReport, LeaderCall, LeaderRequest, ReachRequest, Renewal};
use slotd_proto::v1::peer_client::PeerClient;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::TypeConfig;
use tonic::transport::{Channel, Endpoint};

/// A Peer call as made by hand: `method` on `channel` with `payload` and
/// the cluster id; the gRPC status code if refused.
async fn peer_call(channel: &Channel, method: &str, payload: Vec<u8>, cluster: &str) -> Result<(), tonic::Code> {
    let mut req = tonic::Request::new(RaftPayload { payload });
    req.metadata_mut()
        .insert("slotd-cluster-id", cluster.parse().expect("cluster id"));
    let mut c = PeerClient::new(channel.clone());
    let r = match method {
        "heartbeat" => c.heartbeat(req).await,
        "fenced" => c.fenced(req).await,
        "leader" => c.leader(req).await,
        "vote" => c.vote(req).await,
        "append_entries" => c.append_entries(req).await,
        "reach" => c.reach(req).await,
        other => panic!("no method {other}"),
    };
    r.map(drop).map_err(|s| s.code())
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    slotd_raft_store::codec::encode(v).expect("encode")
}

/// The forged calls for node `node`: renewal, fence ticket and notice,
/// and a failover passed on as if to the leader, as asked by each of
/// `askers` (a member may pass calls on: it is how a follower passes an
/// operator's call on; but only reads unless an operator asked).
fn forgeries(node: u64, store: &str, askers: &[Asker]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut calls = vec![
        (
            "heartbeat",
            "renewal",
            encode(&Renewal {
                node,
                report: HealthReport::default(),
            }),
        ),
        ("fenced", "fence ticket", encode(&FenceRequest::Ticket { node })),
        (
            "fenced",
            "fence notice",
            encode(&FenceRequest::Notice { node, ticket: 0x5eed }),
        ),
    ];
    for asker in askers {
        calls.push((
            "leader",
            "failover passed on",
            encode(&LeaderRequest {
                by: "a forger".into(),
                asker: asker.clone(),
                call: LeaderCall::Failover {
                    store: store.to_owned(),
                    to: None,
                    force: true,
                },
            }),
        ));
    }
    calls
}

fn json(out: std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Forged renewals and fence notices for a live master, from every kind of
/// caller that is not that node, are refused; no failover appears, and the
/// state is as it was. Then the master dies, and forged renewals cannot
/// keep it "alive": its stores move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_renewals_and_fence_notices_change_nothing() {
    let mut c = tokio::task::spawn_blocking(|| {
        let c = TestCluster::start(3);
        c.init(1, 2);
        c
    })
    .await
    .expect("start");
    let leader = c.leader();
    let before = c.status(leader, false).expect("status");
    let cluster = before["cluster_id"].as_str().expect("cluster id").to_owned();
    // A master other than the leader: the one a forger would like to move.
    let victim = (1..=3).find(|i| *i != leader).expect("a follower");
    let victim_name = format!("imap{victim}");
    let store = before["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .find(|s| s["master"] == victim_name.as_str())
        .and_then(|s| s["name"].as_str())
        .expect("the victim masters a store")
        .to_owned();
    let third = (1..=3).find(|i| *i != leader && *i != victim).expect("a third node");
    let history_before = json(c.slotctl(leader, &["history", "--json"]));
    let endpoint = c.agent(leader).endpoint();

    // Another CA's certificates, naming the very same node.
    let other = tempfile::tempdir().expect("tempdir");
    let other_tls = common::make_certs(other.path(), 3);
    // Our side trusts both CAs (so it accepts the real server) and shows
    // the other CA's certificate for the victim.
    let foreign = other.path().join("foreign");
    std::fs::create_dir_all(&foreign).expect("dir");
    let bundle = [
        std::fs::read_to_string(c.tls().join("ca.pem")).expect("ca"),
        std::fs::read_to_string(other_tls.join("ca.pem")).expect("ca"),
    ]
    .concat();
    std::fs::write(foreign.join("ca.pem"), bundle).expect("bundle");
    for ext in ["pem", "key"] {
        let f = format!("node-{victim_name}.{ext}");
        std::fs::copy(other_tls.join(&f), foreign.join(&f)).expect("copy");
    }

    let mut refused = 0;
    // Members of another kind (an operator) or another node.
    // A member passing a change on says who asked: not an operator (its
    // own certificate, its agent, a plain-text port), and it is refused.
    let third_name = format!("imap{third}");
    let askers = [
        ("operator-ops".to_owned(), vec![Asker::Operator("forger".into())]),
        (
            format!("node-{third_name}"),
            vec![Asker::Node(third_name.clone()), Asker::Agent, Asker::Unchecked],
        ),
    ];
    for (stem, askers) in askers {
        let ch = c.channel_as(leader, &stem).await;
        for (method, what, payload) in forgeries(victim, &store, &askers) {
            let r = peer_call(&ch, method, payload, &cluster).await;
            assert_eq!(r, Err(tonic::Code::PermissionDenied), "{stem}: {what}");
            refused += 1;
        }
    }
    // No certificate, another CA's certificate, plain text: no call gets
    // through at all.
    let anonymous = {
        let creds = slotd_agent::tls::Credentials::load(&slotd_agent::tls::Files {
            ca: ("ca", &c.tls().join("ca.pem")),
            cert: ("cert", &c.tls().join("operator-ops.pem")),
            key: ("key", &c.tls().join("operator-ops.key")),
        })
        .expect("credentials");
        let ep = Endpoint::from_shared(format!("https://{endpoint}")).expect("endpoint");
        creds.client_without_certificate(ep).expect("endpoint").connect().await
    };
    let strangers: Vec<(&str, Result<Channel, String>)> = vec![
        ("no certificate", anonymous.map_err(|e| e.to_string())),
        (
            "another CA",
            common::try_channel_as(&foreign, &format!("node-{victim_name}"), &endpoint).await,
        ),
        (
            "plain text",
            Endpoint::from_shared(format!("http://{endpoint}"))
                .expect("endpoint")
                .connect()
                .await
                .map_err(|e| e.to_string()),
        ),
    ];
    for (who, ch) in strangers {
        // Refused at the handshake: the connection fails, or (TLS 1.3: the
        // client's side of the handshake ends before the server has judged
        // its certificate) every call fails in transport, never with an
        // answer of the service (which would mean it got past TLS).
        match ch {
            Err(e) => assert!(!e.is_empty(), "{who}"),
            Ok(ch) => {
                for (method, what, payload) in forgeries(victim, &store, &[Asker::Operator("forger".into())]) {
                    let r = peer_call(&ch, method, payload, &cluster).await;
                    assert!(
                        matches!(
                            r,
                            Err(tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Internal
                                | tonic::Code::Cancelled)
                        ),
                        "{who}: {what}: {r:?} (got past TLS?)"
                    );
                }
            }
        }
    }

    // The leader counted what it refused, and nothing changed: no
    // transition, the same masters and epochs.
    let counted: f64 = ["heartbeat", "fenced", "leader"]
        .iter()
        .filter_map(|m| {
            c.agent(leader).metric(&format!(
                "slotd_peer_refused_total{{method=\"{m}\",reason=\"certificate\"}}"
            ))
        })
        .sum();
    assert!(counted >= refused as f64, "{counted} refusals counted, {refused} made");
    let after = c.status(leader, false).expect("status");
    assert_eq!(comparable(&after), comparable(&before));
    assert_eq!(json(c.slotctl(leader, &["history", "--json"])), history_before);
    // The lease keeper, healthy: no store went anywhere while forgeries
    // were refused. Wait a lease and margin, then look again.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let later = c.status(leader, false).expect("status");
    assert_eq!(comparable(&later), comparable(&before));

    // The victim dies. A forger keeps renewing its lease from another
    // node's certificate and from an operator's: refused every time, and
    // the victim's stores move after lease + margin as if nobody tried.
    c.kill9(victim);
    let t = Instant::now();
    let forgers = [
        c.channel_as(leader, "operator-ops").await,
        c.channel_as(leader, &format!("node-imap{third}")).await,
    ];
    let renewal = encode(&Renewal {
        node: victim,
        report: HealthReport::default(),
    });
    let moved = loop {
        for ch in &forgers {
            let r = peer_call(ch, "heartbeat", renewal.clone(), &cluster).await;
            assert_eq!(r, Err(tonic::Code::PermissionDenied), "a forged renewal was answered");
        }
        let s = c.status(leader, false).expect("status");
        let (_, master) = s["stores"]
            .as_array()
            .expect("stores")
            .iter()
            .find(|x| x["name"] == store.as_str())
            .map(|x| ((), x["master"].as_str().unwrap_or_default().to_owned()))
            .expect("store");
        if master != victim_name {
            break s;
        }
        assert!(t.elapsed() < WAIT, "the dead master's stores never moved");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        moved["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["name"] == victim_name.as_str() && n["alive"] == false),
        "{moved}"
    );
}

/// A node's certificate stops working once the node is removed: on every
/// Peer call (Raft ones too) and on Admin; a certificate of the CA for a
/// node that never was a member gets no Raft call in either. The cluster
/// state does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_certificate_is_refused() {
    let mut c = tokio::task::spawn_blocking(|| {
        let c = TestCluster::start(4);
        // Three voters and a learner (imap4) that holds no store.
        c.init_one_store(["imap1", "imap2"]);
        c
    })
    .await
    .expect("start");
    let out = c.slotctl(1, &["node", "remove", "imap4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.kill9(4);
    c.members.retain(|m| *m != 4);
    let before = wait_for("imap4 gone everywhere", WAIT, || {
        let s = c.converged();
        (s["nodes"].as_array()?.len() == 3).then_some(s)
    });
    let leader = c.leader();
    let cluster = before["cluster_id"].as_str().expect("cluster id").to_owned();
    let history_before = json(c.slotctl(leader, &["history", "--json"]));

    // A certificate of the cluster CA for a node that was never a member
    // (made ahead for a future node): no Raft call of it gets in either.
    let request = slotd_agent::tls::certs::Request {
        nodes: vec![("imap9".into(), vec![])],
        operators: vec![],
        days: 1,
    };
    slotd_agent::tls::certs::make(&c.tls(), &request).expect("imap9's certificate");
    for target in 1..=3 {
        let ch = c.channel_as(target, "node-imap9").await;
        let forged = encode(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1_000, 9),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        let r = peer_call(&ch, "append_entries", forged, &cluster).await;
        assert_eq!(r, Err(tonic::Code::PermissionDenied), "node {target}: imap9's append");
        let vote = encode(&VoteRequest::new(Vote::new(1_000, 9), None));
        let r = peer_call(&ch, "vote", vote, &cluster).await;
        assert_eq!(r, Err(tonic::Code::PermissionDenied), "node {target}: imap9's vote");
    }
    for target in 1..=3 {
        let ch = c.channel_as(target, "node-imap4").await;
        let term = 1_000;
        let calls = vec![
            (
                "heartbeat",
                encode(&Renewal {
                    node: 4,
                    report: HealthReport::default(),
                }),
            ),
            ("fenced", encode(&FenceRequest::Ticket { node: 4 })),
            (
                "leader",
                encode(&LeaderRequest {
                    by: "node imap4".into(),
                    asker: Asker::Node("imap4".into()),
                    call: LeaderCall::Status,
                }),
            ),
            ("vote", encode(&VoteRequest::new(Vote::new(term, 4), None))),
            (
                "append_entries",
                encode(&AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(term, 4),
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: None,
                }),
            ),
        ];
        for (method, payload) in calls {
            let r = peer_call(&ch, method, payload, &cluster).await;
            assert_eq!(r, Err(tonic::Code::PermissionDenied), "node {target}: {method}");
        }
    }
    // Admin, too: `slotctl` with the removed node's certificate.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotctl"))
        .envs(common::cert_env(&c.tls(), "node-imap4"))
        .args(["--endpoint", &c.agent(1).endpoint(), "status"])
        .output()
        .expect("slotctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("imap4 is not a member"), "{err}");
    // A member's certificate works on Admin (a node's own `slotctl`).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotctl"))
        .envs(common::cert_env(&c.tls(), "node-imap2"))
        .args(["--endpoint", &c.agent(1).endpoint(), "status"])
        .output()
        .expect("slotctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Nothing changed: the same state, no term taken over by the forged
    // vote (the leader is the same), no history.
    let after = c.converged();
    assert_eq!(comparable(&after), comparable(&before));
    assert_eq!(c.leader(), leader);
    assert_eq!(json(c.slotctl(leader, &["history", "--json"])), history_before);
}

/// `tls.insecure = true` serves plain text with a warning at start, and
/// `slotctl` talks to it only when told `--insecure`; without credentials it
/// says what is missing.
#[test]
fn insecure_is_explicit_and_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("n1");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut config =
        slotd_agent::config::Config::builder(1, "imap1", "127.0.0.1:0".parse().expect("addr"), data.clone());
    config.tls.insecure = true;
    let path = dir.path().join("n1.toml");
    std::fs::write(&path, config.to_toml()).expect("config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("--config")
        .arg(&path)
        .stderr(log)
        .spawn()
        .expect("slotd");
    let endpoint = wait_for("the agent to serve", WAIT, || {
        let text = std::fs::read_to_string(data.join("endpoints")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("listen=").map(str::to_owned))
    });
    let slotctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slotctl"))
            .args(["--endpoint", &endpoint])
            .args(args)
            .env_remove("SLOTCTL_CA")
            .env_remove("SLOTCTL_CERT")
            .env_remove("SLOTCTL_KEY")
            .output()
            .expect("slotctl")
    };
    let out = slotctl(&["status", "--stale"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let out_ok = slotctl(&["--insecure", "status", "--stale"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--ca, --cert and --key") && err.contains("--insecure"),
        "{err}"
    );
    assert!(out_ok.status.success(), "{}", String::from_utf8_lossy(&out_ok.stderr));
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(
        log.contains("WARN") && log.contains("tls.insecure = true"),
        "no warning at start:\n{log}"
    );
}

/// Removing the leader itself: the membership change commits (the state's
/// removal, which makes everyone refuse the node's certificate, comes
/// after it), a learner is promoted, and the cluster goes on.
#[test]
fn removing_the_leader_finishes() {
    let mut c = TestCluster::start(5);
    // Three voters, two learners holding the one store.
    c.init_one_store(["imap4", "imap5"]);
    let leader = c.leader();
    wait_for("every node alive", WAIT, || {
        let s = c.status(leader, false)?;
        s["nodes"].as_array()?.iter().all(|n| n["alive"] == true).then_some(())
    });
    let name = format!("imap{leader}");
    let out = c.slotctl(leader, &["node", "remove", &name]);
    assert!(
        out.status.success(),
        "removing the leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.kill9(leader);
    c.members.retain(|m| *m != leader);
    let s = wait_for("the old leader gone, three voters", WAIT, || {
        let s = c.converged();
        let nodes = s["nodes"].as_array()?;
        let voters = nodes.iter().filter(|n| n["raft"] == "voter").count();
        (nodes.len() == 4 && voters == 3 && nodes.iter().all(|n| n["name"] != name.as_str())).then_some(s)
    });
    assert_ne!(s["leader"].as_u64(), Some(leader));
    // And it still decides: a switchover of the store.
    let out = c.slotctl(c.leader(), &["failover", "st01", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A learner's certificate can neither campaign nor lead: its votes and
/// appends (as itself, in a far higher term) are refused by every voter; a
/// voter's certificate cannot speak for the leader; and a member's
/// certificate reads through Admin but changes nothing there. The term, the
/// leader, the state and the history stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_cannot_take_a_term_and_a_member_cannot_change_through_admin() {
    let c = tokio::task::spawn_blocking(|| {
        let c = TestCluster::start(4);
        // Three voters and a learner (imap4).
        c.init_one_store(["imap1", "imap2"]);
        c
    })
    .await
    .expect("start");
    let leader = c.leader();
    let before = c.status(leader, false).expect("status");
    assert_eq!(before["nodes"][3]["raft"], "learner", "{before}");
    let cluster = before["cluster_id"].as_str().expect("cluster id").to_owned();
    let history_before = json(c.slotctl(leader, &["history", "--json"]));
    let term = before["term"].as_u64().expect("term");

    let mut refused = 0.0;
    for target in 1..=3 {
        let ch = c.channel_as(target, "node-imap4").await;
        let vote = encode(&VoteRequest::new(Vote::new(term + 1_000, 4), None));
        let r = peer_call(&ch, "vote", vote, &cluster).await;
        assert_eq!(
            r,
            Err(tonic::Code::PermissionDenied),
            "node {target}: the learner's vote"
        );
        let append = encode(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term + 1_000, 4),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        let r = peer_call(&ch, "append_entries", append, &cluster).await;
        assert_eq!(
            r,
            Err(tonic::Code::PermissionDenied),
            "node {target}: the learner's append"
        );
        // Nor may it ask whether it could campaign.
        let reach = encode(&ReachRequest { node: 4 });
        let r = peer_call(&ch, "reach", reach, &cluster).await;
        assert_eq!(
            r,
            Err(tonic::Code::PermissionDenied),
            "node {target}: the learner's pre-vote"
        );
        refused += 3.0;
    }
    // A voter that is not the leader, speaking for it.
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let target = (1..=3).find(|i| *i != leader && *i != follower).expect("a third voter");
    let ch = c.channel_as(target, &format!("node-imap{follower}")).await;
    let append = encode(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 1_000, leader),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    });
    let r = peer_call(&ch, "append_entries", append, &cluster).await;
    assert_eq!(
        r,
        Err(tonic::Code::PermissionDenied),
        "a follower speaking for the leader"
    );

    // A member's own slotctl: status yes, a change no (exit 2, one line).
    let member = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slotctl"))
            .envs(common::cert_env(&c.tls(), &format!("node-imap{follower}")))
            .args(["--endpoint", &c.agent(follower).endpoint()])
            .args(args)
            .output()
            .expect("slotctl")
    };
    let out = tokio::task::block_in_place(|| member(&["status"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for args in [
        &["drain", "imap1"][..],
        &["failover", "st01", "--force"],
        &["store", "remove", "st01"],
    ] {
        let out = tokio::task::block_in_place(|| member(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("changes need an operator's certificate"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }

    let after = c.status(leader, false).expect("status");
    assert_eq!(comparable(&after), comparable(&before));
    assert_eq!(after["term"].as_u64(), Some(term), "a refused call moved the term");
    assert_eq!(c.leader(), leader);
    assert_eq!(json(c.slotctl(leader, &["history", "--json"])), history_before);
    let counted: f64 = (1..=3)
        .filter_map(|i| {
            ["vote", "append_entries", "reach"]
                .iter()
                .map(|m| {
                    c.agent(i).metric(&format!(
                        "slotd_peer_refused_total{{method=\"{m}\",reason=\"certificate\"}}"
                    ))
                })
                .sum::<Option<f64>>()
        })
        .sum();
    assert!(counted >= refused, "{counted} refusals counted, {refused} made");
    let admin = c.agent(follower).metric("slotd_admin_refused_total");
    assert_eq!(admin, Some(3.0), "the member's three changes counted");
}
