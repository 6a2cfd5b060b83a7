//! What `slotctl` uses to talk to an agent: a connection to the Admin
//! service, and how a failed call becomes a one-line message and exit code.

use std::time::Duration;

use slotd_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Default `--endpoint`.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7420";

/// A failure to report: the message (one line) and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// 2: refused (bad argument, or the cluster said no; nothing changed);
    /// 1: could not get an answer.
    pub code: u8,
}

impl Failure {
    pub fn refused(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let message = s.message().replace('\n', " ");
        match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
                Failure::refused(message)
            }
            _ => Failure::failed(message),
        }
    }
}

/// Connects to the agent at `endpoint` (`host:port`).
pub async fn connect(endpoint: &str) -> Result<AdminClient<Channel>, Failure> {
    let ep = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| Failure::refused(format!("--endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = ep
        .connect()
        .await
        .map_err(|e| Failure::failed(format!("cannot reach slotd at {endpoint}: {}", source_chain(&e))))?;
    Ok(AdminClient::new(channel))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}
