//! What systemd and generic gRPC tools see of a running agent: gRPC health
//! and reflection on `listen`, and sd_notify READY / WATCHDOG / STOPPING.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use common::{wait_for, TestCluster, WAIT};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let c = TestCluster::start(1);
    // Tools show a certificate of the cluster CA like everyone else.
    let channel = c.channel_as(1, "operator-ops").await;

    let mut health = HealthClient::new(channel.clone());
    let r = health
        .check(HealthCheckRequest {
            service: "slotd.v1.Admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);

    // Reflection in both versions, as tools ask it: list the services, get
    // the file that defines Admin, find Status in it; then call it.
    for version in ["v1", "v1alpha"] {
        let (names, files) = match version {
            "v1" => reflect_v1(channel.clone()).await,
            _ => reflect_v1alpha(channel.clone()).await,
        };
        for want in ["slotd.v1.Admin", "slotd.v1.Peer"] {
            assert!(names.iter().any(|n| n == want), "{version}: {want} not in {names:?}");
        }
        let status = files
            .iter()
            .filter_map(|bytes| <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice()).ok())
            .filter(|f| f.package() == "slotd.v1")
            .flat_map(|f| f.service)
            .filter(|s| s.name() == "Admin")
            .flat_map(|s| s.method)
            .find(|m| m.name() == "Status");
        let status = status.unwrap_or_else(|| panic!("{version}: no Admin/Status in the descriptors"));
        assert_eq!(status.input_type(), ".slotd.v1.StatusRequest", "{version}");
        let reply = slotd_proto::v1::admin_client::AdminClient::new(channel.clone())
            .status(slotd_proto::v1::StatusRequest { stale: true })
            .await
            .unwrap_or_else(|e| panic!("{version}: Admin/Status: {e}"))
            .into_inner();
        assert_eq!(reply.answered_by, 1, "{version}");
    }
}

/// Reflection of one version (`$r`: its generated module): the service
/// names, and the files defining slotd.v1.Admin.
macro_rules! reflect {
    ($name:ident, $r:path, $version:literal) => {
        async fn $name(channel: tonic::transport::Channel) -> (Vec<String>, Vec<Vec<u8>>) {
            use $r as r;
            let ask = |m| r::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            };
            let requests = vec![
                ask(r::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
                ask(r::server_reflection_request::MessageRequest::FileContainingSymbol("slotd.v1.Admin".into())),
            ];
            let mut answers = r::server_reflection_client::ServerReflectionClient::new(channel)
                .server_reflection_info(futures::stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let (mut names, mut files) = (Vec::new(), Vec::new());
            while let Some(answer) = answers.message().await.unwrap() {
                match answer.message_response {
                    Some(r::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                        names.extend(l.service.into_iter().map(|s| s.name))
                    }
                    Some(r::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
                        files.extend(f.file_descriptor_proto)
                    }
                    other => panic!("{}: unexpected answer {other:?}", $version),
                }
            }
            (names, files)
        }
    };
}

reflect!(reflect_v1, tonic_reflection::pb::v1, "v1");
reflect!(reflect_v1alpha, tonic_reflection::pb::v1alpha, "v1alpha");

#[test]
fn sd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = slotd_agent::config::Config::builder(1, "imap1", "127.0.0.1:0".parse().unwrap(), data.clone());
    let path = dir.path().join("slotd.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let recv = |got: &mut Vec<String>| {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification before the timeout");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    while !got.iter().any(|m| m == "READY=1") {
        recv(&mut got);
    }
    // Watchdog pings while the lease keeper, the reconciler and Raft run.
    while !got.iter().any(|m| m == "WATCHDOG=1") {
        recv(&mut got);
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    while !got.iter().any(|m| m == "STOPPING=1") {
        recv(&mut got);
    }
    let status = wait_for("slotd to exit", WAIT, || child.try_wait().ok().flatten());
    assert!(status.success(), "{status:?}");
    let ready = got.iter().position(|m| m == "READY=1").unwrap();
    let stopping = got.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{got:?}");
}

/// A watchdog too long for the clock margin would let a frozen agent keep
/// its master IPs past lease + margin: the agent refuses to start, saying
/// what to set.
#[test]
fn a_watchdog_too_long_for_the_margin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let _socket = UnixDatagram::bind(&socket_path).unwrap();
    let data = dir.path().join("data");
    let config = slotd_agent::config::Config::builder(1, "imap1", "127.0.0.1:0".parse().unwrap(), data);
    let path = dir.path().join("slotd.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WatchdogSec=1000ms is too long for clock_skew_margin_ms=500")
            && err.contains("use WatchdogSec=264ms or less"),
        "{err}"
    );
}
