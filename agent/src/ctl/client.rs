//! What `slotctl` uses to talk to an agent: a connection to the Admin
//! service, and how a failed call becomes a one-line message and exit code.

use std::path::Path;
use std::time::Duration;

use slotd_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::tls::{Credentials, Files};

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
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                Failure::refused(format!("refused by the agent: {message}"))
            }
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
                Failure::refused(message)
            }
            _ => Failure::failed(message),
        }
    }
}

/// How slotctl reaches the agent: with a certificate of the cluster CA, or
/// in plain text (`--insecure`).
#[derive(Clone, Debug)]
pub enum Tls {
    Cert(Credentials),
    Insecure,
}

impl Tls {
    /// From `--ca`, `--cert`, `--key` and `--insecure` (or their
    /// environment variables): all three files, or `--insecure`.
    pub fn from_args(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        insecure: bool,
    ) -> Result<Tls, Failure> {
        match (ca, cert, key) {
            (None, None, None) if insecure => Ok(Tls::Insecure),
            _ if insecure => Err(Failure::refused(
                "--insecure together with --ca/--cert/--key (or SLOTCTL_CA/CERT/KEY): choose one",
            )),
            (Some(ca), Some(cert), Some(key)) => Credentials::load(&Files {
                ca: ("--ca", ca),
                cert: ("--cert", cert),
                key: ("--key", key),
            })
            .map(Tls::Cert)
            .map_err(|e| Failure::refused(e.to_string())),
            (None, None, None) => Err(Failure::refused(
                "no TLS credentials: pass --ca, --cert and --key (or set SLOTCTL_CA, SLOTCTL_CERT and \
                 SLOTCTL_KEY); --insecure only for an agent with tls.insecure = true",
            )),
            (ca, cert, _) => {
                let missing = if ca.is_none() {
                    "--ca"
                } else if cert.is_none() {
                    "--cert"
                } else {
                    "--key"
                };
                Err(Failure::refused(format!(
                    "{missing} is missing: --ca, --cert and --key go together"
                )))
            }
        }
    }
}

/// Connects to the agent at `endpoint` (`host:port`).
pub async fn connect(endpoint: &str, tls: &Tls) -> Result<AdminClient<Channel>, Failure> {
    let bad = |e: tonic::transport::Error| Failure::refused(format!("--endpoint {endpoint:?}: {e}"));
    let creds = match tls {
        Tls::Cert(creds) => Some(creds),
        Tls::Insecure => None,
    };
    let ep = crate::tls::endpoint(endpoint, creds).map_err(bad)?;
    let ep = ep
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
