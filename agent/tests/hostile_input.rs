//! Hostile input to every decoder of external input: the payload of each
//! Peer method and of each reply an agent reads, the state a snapshot or a
//! log entry carries, the topology and the config parsers. Random bytes
//! (with and without the right format byte), and valid encodings cut at
//! every length and with every byte changed: each gives a value or an
//! error, never a panic.

use proptest::prelude::*;
use slotd_agent::cluster::identity::ClusterId;
use slotd_agent::cluster::wire::{
    Asker, FenceReply, FenceRequest, Granted, HealthReport, JoinRequest, L2Seen, LeaderCall, LeaderReply,
    LeaderRequest, ReachRequest, Reached, Renewal, Replayed,
};
use slotd_agent::error::AgentError;
use slotd_raft_store::codec::{self, CodecError, FORMAT_VERSION};
use slotd_raft_store::{ClusterState, Request, TypeConfig};

type Decoder = (&'static str, fn(&[u8]) -> Result<(), CodecError>);

macro_rules! decoders {
    ($($t:ty),* $(,)?) => {
        vec![$((stringify!($t), (|b: &[u8]| codec::decode::<$t>(b).map(drop)) as fn(&[u8]) -> Result<(), CodecError>)),*]
    };
}

/// Every type an agent decodes from a peer or a file.
fn decoders() -> Vec<Decoder> {
    decoders![
        Renewal,
        Granted,
        FenceRequest,
        FenceReply,
        JoinRequest,
        ReachRequest,
        Reached,
        LeaderCall,
        LeaderRequest,
        Result<LeaderReply, AgentError>,
        HealthReport,
        openraft::raft::AppendEntriesRequest<TypeConfig>,
        openraft::raft::VoteRequest<u64>,
        openraft::raft::InstallSnapshotRequest<TypeConfig>,
        Result<openraft::raft::AppendEntriesResponse<u64>, openraft::error::RaftError<u64>>,
        Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>>,
        Request,
        ClusterState,
    ]
}

/// Valid payloads of several types, to be damaged.
fn samples() -> Vec<Vec<u8>> {
    let mut report = HealthReport {
        addresses: vec!["10.64.0.1".into()],
        fenced: false,
        mac: Some("02:00:00:00:00:01".into()),
        ..HealthReport::default()
    };
    report.instances.insert("s01".into(), "master".into());
    report.backlog.insert("st0001".into(), 4096);
    report
        .health
        .insert("st0001".into(), vec!["imap 10.64.0.1:143: refused".into()]);
    report.l2.insert(
        "st0002".into(),
        L2Seen {
            epoch: 3,
            answered_by: Some("02:00:00:00:00:02".into()),
        },
    );
    report.replayed.insert(
        "st0003".into(),
        Replayed {
            from: 2,
            digest: 7,
            ok: true,
            note: "2 lines".into(),
        },
    );
    let state = slotd_raft_store::plan::plan(3, 8)
        .ok()
        .and_then(|p| p.initial_state(&slotd_raft_store::plan::Naming::default()).ok())
        .unwrap_or_default();
    let out = |r: Result<Vec<u8>, CodecError>| r.unwrap_or_default();
    vec![
        out(codec::encode(&Renewal { node: 1, report })),
        out(codec::encode(&LeaderRequest {
            by: "operator alice".into(),
            asker: Asker::Operator("alice".into()),
            call: LeaderCall::Failover {
                store: "st0001".into(),
                to: Some("imap2".into()),
                force: true,
            },
        })),
        out(codec::encode(&FenceRequest::Notice { node: 2, ticket: 99 })),
        out(codec::encode(&JoinRequest {
            cluster: ClusterId(0x36f3_d57e),
            node: 3,
            name: "imap3".into(),
        })),
        out(codec::encode(&ReachRequest { node: 4 })),
        out(codec::encode(&Reached {
            term: 9,
            leader_heard: true,
        })),
        out(codec::encode(&Granted {
            leader: 1,
            term: 4,
            seq: 12,
            read_index: 40,
            lease_ms: 2000,
        })),
        out(codec::encode(&state)),
    ]
}

/// Runs every decoder on `bytes`; true if any accepted it.
fn feed(bytes: &[u8]) -> bool {
    let mut any = false;
    for (_, decode) in decoders() {
        any |= decode(bytes).is_ok();
    }
    any
}

#[test]
fn valid_payloads_decode_and_damaged_ones_never_panic() {
    let samples = samples();
    assert!(samples.iter().all(|s| s.len() > 1), "every sample encodes");
    let state = samples.last().map_or(0, Vec::len);
    assert!(state > 600, "the cluster state sample is a real one ({state} bytes)");
    for sample in &samples {
        assert!(feed(sample), "an undamaged payload decodes");
        // Cut at every length.
        for n in 0..sample.len() {
            feed(&sample[..n]);
        }
        // Every byte changed (a few values each), and a byte too many.
        for i in 0..sample.len() {
            for v in [0x00, 0xff, sample[i] ^ 0x80, sample[i].wrapping_add(1)] {
                let mut bad = sample.clone();
                bad[i] = v;
                feed(&bad);
            }
        }
        let mut longer = sample.clone();
        longer.push(0xff);
        feed(&longer);
    }
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let mut bytes = samples().remove(1);
    bytes[0] = FORMAT_VERSION + 1;
    for (name, decode) in decoders() {
        match decode(&bytes) {
            Err(e @ CodecError::Version { .. }) => {
                assert!(e.to_string().contains("this slotd reads version"), "{name}: {e}")
            }
            other => panic!("{name}: a newer format gave {other:?}"),
        }
    }
    assert!(matches!(codec::decode::<Renewal>(&[]), Err(CodecError::Empty)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_payloads_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), versioned in any::<bool>()) {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        if versioned {
            // Past the format byte: the decoders themselves are tried.
            bytes.push(FORMAT_VERSION);
        }
        bytes.extend_from_slice(&body);
        feed(&bytes);
    }

    /// A peer's certificate is read for who it names (`tls::who_of`):
    /// random and damaged DER gives an error, never a panic.
    #[test]
    fn random_certificates_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), at in 0usize..600, cut in 0usize..600) {
        let der = rustls::pki_types::CertificateDer::from(body);
        let _ = slotd_agent::tls::who_of(&der);
        let mut real = CERT.with(|c| c.clone());
        let _ = slotd_agent::tls::who_of(&rustls::pki_types::CertificateDer::from(real[..cut.min(real.len())].to_vec()));
        if !real.is_empty() {
            let i = at % real.len();
            real[i] ^= 0x5a;
        }
        let _ = slotd_agent::tls::who_of(&rustls::pki_types::CertificateDer::from(real));
    }

    #[test]
    fn random_topologies_never_panic(text in ".{0,400}") {
        let _ = slotd_raft_store::topology::parse(&text);
    }

    #[test]
    fn random_configs_never_panic(text in ".{0,400}") {
        let _ = slotd_agent::config::Config::parse(&text, "fuzz.toml");
    }

    #[test]
    fn damaged_topologies_and_configs_never_panic(cut in 0usize..2000, at in 0usize..2000, with in any::<char>()) {
        for text in [TOPOLOGY, CONFIG] {
            let chars: Vec<char> = text.chars().collect();
            let cut: String = chars[..cut.min(chars.len())].iter().collect();
            let mut changed = chars.clone();
            if !changed.is_empty() {
                let i = at % changed.len();
                changed[i] = with;
            }
            let changed: String = changed.into_iter().collect();
            for t in [cut, changed] {
                let _ = slotd_raft_store::topology::parse(&t);
                let _ = slotd_agent::config::Config::parse(&t, "fuzz.toml");
            }
        }
    }
}

thread_local! {
    /// A real node certificate (DER), to damage.
    static CERT: Vec<u8> = {
        let ca = slotd_agent::tls::certs::Authority::generate().expect("ca");
        let (pem, _) = ca
            .issue(&slotd_agent::tls::Who::Node("imap1".into()), &[], 1)
            .expect("certificate");
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    };
}

#[test]
fn the_damaged_files_start_from_valid_ones() {
    let der = CERT.with(|c| c.clone());
    assert_eq!(
        slotd_agent::tls::who_of(&rustls::pki_types::CertificateDer::from(der)),
        Ok(slotd_agent::tls::Who::Node("imap1".into()))
    );
    assert!(slotd_raft_store::topology::parse(TOPOLOGY).is_ok());
    assert!(slotd_agent::config::Config::parse(CONFIG, "good.toml").is_ok());
}

/// The valid files damaged above: the examples the package ships.
const TOPOLOGY: &str = include_str!("../../examples/topology.toml");
const CONFIG: &str = include_str!("../../examples/slotd.toml");
