//! Real clusters of `slotd` processes driven by `slotctl`, as an operator
//! would: bootstrap, status everywhere, leader loss, restarts, writes through
//! followers, refusals that change nothing, clean stops.

mod common;

use std::time::{Duration, Instant};

use common::{comparable, wait_for, TestCluster, WAIT};

#[test]
fn three_nodes_init_and_agree() {
    let c = TestCluster::start(3);
    let status = c.init(2, 4);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(status["stores"].as_array().unwrap().len(), 6);
    assert!(status["leader"].as_u64().is_some());
    // Alive = renewing its lease with the leader, which starts right away.
    let status = wait_for("every node alive", WAIT, || {
        let s = c.status(1, false)?;
        s["nodes"].as_array()?.iter().all(|n| n["alive"] == true).then_some(s)
    });
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["raft"], "voter");
        assert_eq!(n["mode"], "active");
        assert_eq!(n["masters"].as_array().unwrap().len(), 2);
    }
    for s in status["stores"].as_array().unwrap() {
        assert_eq!((s["phase"].as_str(), s["epoch"].as_u64()), (Some("stable"), Some(1)));
        assert_eq!(s["replicas"].as_array().unwrap().len(), 1);
    }
    // A second init is refused and changes nothing.
    let before = comparable(&c.status(1, false).unwrap());
    let out = c.slotctl(3, &["init", c.topology(4).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already initialised"));
    assert_eq!(comparable(&c.status(1, false).unwrap()), before);
    // Human output names the leader and every store.
    let out = c.slotctl(1, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leader: imap") && text.contains("st0006"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("STORE") && l.trim_end().ends_with("L2")),
        "{text}"
    );
}

#[test]
fn five_voters_and_a_learner_init_and_agree() {
    let c = TestCluster::start(6);
    let status = c.init(4, 2);
    let roles: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["raft"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["voter", "voter", "voter", "voter", "voter", "learner"]);
    assert_eq!(status["stores"].as_array().unwrap().len(), 6);
}

#[test]
fn kill_9_leader_then_restart_catches_up() {
    let mut c = TestCluster::start(3);
    c.init(1, 2);
    let old = c.leader();
    c.kill9(old);
    let survivor = (1..=3).find(|i| *i != old).unwrap();
    let new = wait_for("a new leader", WAIT, || {
        let l = c.status(survivor, true)?["leader"].as_u64()?;
        (l != old).then_some(l)
    });
    assert_ne!(new, old);
    // A write during the outage, through whichever survivor is not leader.
    let via = (1..=3).find(|i| *i != old && *i != new).unwrap();
    wait_for("the follower to know the new leader", WAIT, || {
        (c.status(via, true)?["leader"].as_u64()? == new).then_some(())
    });
    let out = c.slotctl(via, &["store", "remove", "st0001"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.restart(old);
    let status = c.converged();
    let stores: Vec<&str> = status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!stores.contains(&"st0001"), "{stores:?}");
    let on_old = c.status(old, true).unwrap();
    assert_eq!(comparable(&on_old)["stores"], comparable(&status)["stores"]);
}

#[test]
fn follower_writes_succeed_bad_writes_change_nothing() {
    // Five agents run; the cluster starts with three, the others are added.
    let mut c = TestCluster::start(5);
    c.members = vec![1, 2, 3];
    c.init(1, 2);
    let leader = c.leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // A node that does not run cannot join: refused, nothing changes.
    let before = comparable(&c.status(1, false).unwrap());
    let unused = c.unused_addr().to_string();
    let out = c.slotctl(
        follower,
        &[
            "node", "add", "--id", "6", "--name", "imap6", "--addr", &unused, "--slots", "s01",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("imap6 cannot be reached to join it"));
    // An address that reaches another agent than the one named: refused.
    let out = c.slotctl(
        follower,
        &[
            "node",
            "add",
            "--id",
            "6",
            "--name",
            "imap6",
            "--addr",
            &c.agent(4).endpoint(),
            "--slots",
            "s01",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this agent is node 4 (imap4), not node 6 (imap6)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(comparable(&c.status(1, false).unwrap()), before);
    for id in [4, 5] {
        let (name, addr) = (format!("imap{id}"), c.agent(id).endpoint());
        let id_text = id.to_string();
        let out = c.slotctl(
            follower,
            &[
                "node", "add", "--id", &id_text, "--name", &name, "--addr", &addr, "--slots", "s01,s02",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        c.members.push(id);
    }
    let out = c.slotctl(
        follower,
        &[
            "store",
            "add",
            "--name",
            "st9",
            "--master-ip",
            "10.9.0.1/32",
            "--replica-ip",
            "10.9.0.2/32",
            "--slots",
            "imap4:s01,imap5:s01",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = c.converged();
    assert!(before["stores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "st9" && s["master"] == "imap4"));
    assert_eq!(before["nodes"].as_array().unwrap()[3]["raft"], "learner");

    let refusals: &[(&[&str], &str)] = &[
        (&["store", "remove", "nosuch"], "unknown store \"nosuch\""),
        (
            &[
                "store",
                "add",
                "--name",
                "st10",
                "--master-ip",
                "10.9.0.3/33",
                "--replica-ip",
                "10.9.0.4",
                "--slots",
                "imap4:s02,imap2:s02",
            ],
            "master_ip: prefix /33",
        ),
        (
            &[
                "store",
                "add",
                "--name",
                "st10",
                "--master-ip",
                "banana",
                "--replica-ip",
                "10.9.0.4",
                "--slots",
                "imap4:s02,imap2:s02",
            ],
            "master_ip",
        ),
        (
            &[
                "store",
                "add",
                "--name",
                "st10",
                "--master-ip",
                "10.9.0.1",
                "--replica-ip",
                "10.9.0.4",
                "--slots",
                "imap4:s02,imap2:s02",
            ],
            "10.9.0.1/32 is already used by store \"st9\"",
        ),
        (
            &[
                "store",
                "add",
                "--name",
                "st10",
                "--master-ip",
                "10.9.0.3",
                "--replica-ip",
                "10.9.0.4",
                "--slots",
                "imap9:s02,imap2:s02",
            ],
            "unknown node \"imap9\"",
        ),
        (
            &[
                "store",
                "add",
                "--name",
                "st10",
                "--master-ip",
                "10.9.0.3",
                "--replica-ip",
                "10.9.0.4",
                "--slots",
                "imap4:s02,imap4:s01",
            ],
            "two slots on node imap4",
        ),
        (&["store", "remove", "st9", "--epoch", "7"], "epoch is 1, not 7"),
        (&["node", "remove", "imap4"], "still holds slots of stores st9"),
        (&["node", "remove", "imap9"], "unknown node"),
        (
            &[
                "node",
                "add",
                "--id",
                "4",
                "--name",
                "imap6",
                "--addr",
                "127.0.0.1:11",
                "--slots",
                "s01",
            ],
            "id 4",
        ),
    ];
    for (args, want) in refusals {
        let out = c.slotctl(follower, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let after = c.status(leader, false).unwrap();
    assert_eq!(
        comparable(&after),
        comparable(&before),
        "a refused command changed the cluster"
    );

    // Clean up through the follower: store, then node (a learner).
    assert!(c.slotctl(follower, &["store", "remove", "st9"]).status.success());
    for name in ["imap4", "imap5"] {
        let out = c.slotctl(follower, &["node", "remove", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    c.members.retain(|m| *m <= 3);
    let after = c.converged();
    assert_eq!(after["nodes"].as_array().unwrap().len(), 3);
}

#[test]
fn removing_a_voter_promotes_a_learner() {
    let c = TestCluster::start(4);
    // Three voters, one learner; one store only so that node 3 can go.
    c.init_one_store(["imap1", "imap2"]);
    let before = c.converged();
    assert_eq!(before["nodes"][3]["raft"], "learner");
    // The replacement must be alive (renewing its lease) to be promoted.
    wait_for("the learner alive", WAIT, || {
        (c.status(1, false)?["nodes"][3]["alive"] == true).then_some(())
    });
    let out = c.slotctl(2, &["node", "remove", "imap3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = wait_for("imap3 gone and imap4 voting", WAIT, || {
        let s = c.status(1, false)?;
        let nodes = s["nodes"].as_array()?;
        (nodes.len() == 3 && nodes[2]["name"] == "imap4" && nodes[2]["raft"] == "voter").then_some(s)
    });
    let voters = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["raft"] == "voter")
        .count();
    assert_eq!(voters, 3);
    assert!(status["nodes"].as_array().unwrap().iter().all(|n| n["raft"] != "none"));
    // A voter with no learner left to replace it is refused; nothing changes.
    let out = c.slotctl(1, &["node", "remove", "imap4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no live, caught-up learner"), "{err}");
    assert_eq!(comparable(&c.status(1, false).unwrap()), comparable(&status));
}

#[test]
fn sigterm_stops_cleanly_and_state_survives() {
    let mut c = TestCluster::start(3);
    c.init(1, 2);
    let (status, took) = c.sigterm(2);
    assert!(status.success(), "exit status {status:?}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert!(c.agent(2).log().contains("stopped"));
    c.restart(2);
    let s = c.converged();
    assert_eq!(s["stores"].as_array().unwrap().len(), 3);
}

#[test]
fn init_sent_to_a_learner_needs_every_node_then_finishes() {
    let mut c = TestCluster::start(4);
    // Only the first voter and the learner run: the others cannot join.
    for id in [2, 3] {
        c.kill9(id);
    }
    let topology = c.topology(2);
    let out = c.slotctl(4, &["init", topology.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("imap2 cannot be reached to join it"), "{err}");
    // Refused before Raft started: nothing initialised anywhere.
    for id in [1, 4] {
        let s = c.status(id, true).unwrap();
        assert_eq!((s["initialised"].as_bool(), s["leader"].as_u64()), (Some(false), None));
    }
    // The voters come back; init again (through the learner) finishes it.
    c.restart(2);
    c.restart(3);
    let out = c.slotctl(4, &["init", topology.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = c.converged();
    let roles: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["raft"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["voter", "voter", "voter", "learner"]);
    let out = c.slotctl(4, &["init", topology.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// An agent that never joined this cluster (here: a fresh one at a dead
/// member's address, as another test's agent on a recycled port would be)
/// never votes: the lone survivor cannot win an election with its help.
#[test]
fn an_agent_that_never_joined_never_votes() {
    let mut c = TestCluster::start(3);
    c.init(1, 2);
    let leader = c.leader();
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let (lonely, gone) = (others[0], others[1]);
    c.kill9(gone);
    c.replace_with_stranger(leader);
    // The survivor hears no leader and asks the others whether they do
    // before it may campaign (the elector's pre-vote); the stranger refuses
    // to answer, the dead one cannot: no majority, no campaign. Wait for a
    // few of those refusals.
    let refused = "slotd_peer_refused_total{method=\"reach\",reason=\"not_joined\"}";
    wait_for("the stranger to refuse three pre-votes", WAIT, || {
        (c.agent(leader).metric(refused)? >= 3.0).then_some(())
    });
    let votes = "slotd_peer_refused_total{method=\"vote\",reason=\"not_joined\"}";
    assert_eq!(
        c.agent(leader).metric(votes),
        None,
        "the survivor campaigned without a majority"
    );
    // A leader in openraft 0.9 stays leader once elected: looking now is
    // enough to know it never was.
    let s = c.status(lonely, true).unwrap();
    assert_ne!(
        s["leader"].as_u64(),
        Some(lonely),
        "won an election with a stranger's vote"
    );
    let stranger = c.status(leader, true).unwrap();
    assert_eq!(stranger["initialised"], false);
    assert_eq!(stranger["cluster_id"], "");
    // The real members come back: one cluster again, with its own id.
    c.restore(leader);
    c.restart(gone);
    let s = c.converged();
    assert_eq!(s["cluster_id"].as_str().map(str::len), Some(16));
}

/// Peer calls from another cluster (or with no cluster id) are refused;
/// with this cluster's id they are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_from_another_cluster_are_refused() {
    use slotd_agent::cluster::wire::{HealthReport, Renewal};
    use slotd_proto::v1::peer_client::PeerClient;
    use slotd_proto::v1::RaftPayload;

    let c = tokio::task::spawn_blocking(|| {
        let c = TestCluster::start(3);
        c.init(1, 2);
        c
    })
    .await
    .unwrap();
    let leader = c.leader();
    let id = c.status(leader, true).unwrap()["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Node 2's own certificate: only the cluster id is wrong below.
    let channel = c.channel_as(leader, "node-imap2").await;
    let renewal = Renewal {
        node: 2,
        report: HealthReport::default(),
    };
    let payload = slotd_raft_store::codec::encode(&renewal).unwrap();
    let call = |cluster: Option<&str>| {
        let mut req = tonic::Request::new(RaftPayload {
            payload: payload.clone(),
        });
        if let Some(cl) = cluster {
            req.metadata_mut().insert("slotd-cluster-id", cl.parse().unwrap());
        }
        let mut client = PeerClient::new(channel.clone());
        async move { client.heartbeat(req).await }
    };
    for other in [None, Some("0123456789abcdef"), Some("garbage")] {
        let err = call(other).await.expect_err("a stranger's renewal was answered");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{other:?}: {err}");
    }
    assert!(call(Some(&id)).await.is_ok(), "this cluster's renewal was refused");

    // A payload of a newer format, or a damaged one: refused with a clear
    // status, and the agent goes on answering.
    let mut newer = payload.clone();
    newer[0] = slotd_raft_store::codec::FORMAT_VERSION + 1;
    for (what, bytes, says) in [
        (
            "newer",
            newer,
            format!("format version {}", slotd_raft_store::codec::FORMAT_VERSION + 1),
        ),
        ("cut", payload[..payload.len() / 2].to_vec(), "payload".to_owned()),
        ("empty", Vec::new(), "empty payload".to_owned()),
    ] {
        let mut req = tonic::Request::new(RaftPayload { payload: bytes });
        req.metadata_mut().insert("slotd-cluster-id", id.parse().unwrap());
        let err = PeerClient::new(channel.clone())
            .heartbeat(req)
            .await
            .expect_err("a bad payload was answered");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err}");
        assert!(err.message().contains(says.as_str()), "{what}: {}", err.message());
    }
    assert!(call(Some(&id)).await.is_ok(), "the agent still answers");
}

#[test]
fn a_removed_stores_addresses_are_given_out_again_only_after_lease_and_margin() {
    // A long lease, so that the refusal below cannot be outrun.
    let c = TestCluster::start_with(3, |config| {
        config.timing.lease_ms = 6000;
        config.timing.clock_skew_margin_ms = 500;
    });
    c.init(1, 2);
    let leader = c.leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let before = c.status(leader, false).unwrap();
    let old = before["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "st0001")
        .unwrap()
        .clone();
    let master_ip = old["master_ip"].as_str().unwrap().to_owned();
    // The same slots again (status names nodes, the topology slots).
    let topology = std::fs::read_to_string(c.topology(2)).unwrap();
    let topology = slotd_raft_store::topology::parse(&topology).unwrap();
    let spec = topology.stores.iter().find(|s| s.name == "st0001").unwrap();
    let name = |id: u64| topology.nodes.iter().find(|n| n.id == id).unwrap().name.clone();
    let slots: Vec<String> = spec
        .slots
        .iter()
        .map(|s| format!("{}:{}", name(s.node), s.slot))
        .collect();
    let slots = slots.join(",");
    let again: &[&str] = &[
        "store",
        "add",
        "--name",
        "st0009",
        "--master-ip",
        &master_ip,
        "--replica-ip",
        "10.9.9.9",
        "--slots",
        &slots,
    ];
    let removing = Instant::now();
    let out = c.slotctl(follower, &["store", "remove", "st0001"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let removed = c.status(leader, false).unwrap();

    // A cut-off old master may hold the address until its lease runs out:
    // refused, naming when it is free, nothing changed.
    let out = c.slotctl(follower, again);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        // Freed "by removing store st0001", or, if the leader took office
        // after the removal, "perhaps, by a removal this leader did not see".
        err.contains(&format!("{master_ip} was freed")) && err.contains("free again in"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        comparable(&c.status(leader, false).unwrap()),
        comparable(&removed),
        "a refused store add changed the cluster"
    );

    // Accepted once lease + margin have passed since the leader saw the
    // removal (which was after it was asked for).
    wait_for("the freed address to be given out again", WAIT, || {
        c.slotctl(follower, again).status.success().then_some(())
    });
    let waited = removing.elapsed();
    assert!(
        waited >= Duration::from_millis(6500),
        "given out again after {waited:?}"
    );
    let after = c.converged();
    assert!(after["stores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "st0009" && s["master_ip"] == master_ip.as_str()));
}
