//! The one way an agent calls another over `slotd.v1.Peer`: encode the
//! request as a versioned payload, call the method on the shared channel to
//! the peer, map the gRPC status, decode the reply. openraft's network, lease
//! renewals, calls passed on to the leader and `slotd fence` all go through
//! [`call`].
//!
//! One lazily connected tonic `Channel` per peer address is kept and reused
//! (tonic reconnects by itself). Nothing here retries or sleeps: callers
//! decide (openraft backs off on `Unreachable`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_client::PeerClient;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::codec;
use tonic::transport::Channel;

use crate::identity::{Identity, HEADER};
use crate::tls::Credentials;

/// Largest gRPC message between agents: a snapshot chunk or a batch of
/// entries, with room to spare (snapshots of 4,000 stores are ~300 KB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The Peer methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Heartbeat,
    Fenced,
    Leader,
    Join,
}

/// Why a peer call got no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached in time (down, refused, too slow).
    #[error("{addr}: {message}")]
    Unreachable { addr: String, message: String },
    /// The peer answered with an error status (it refused the call).
    #[error("{addr}: {message}")]
    Refused {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    /// The request or the reply could not be encoded or decoded.
    #[error("{addr}: {message}")]
    Codec { addr: String, message: String },
}

/// Channels by address, shared by every caller, and the cluster id every
/// call carries (see `identity`).
#[derive(Clone)]
pub struct Channels {
    inner: Arc<Mutex<BTreeMap<String, Channel>>>,
    identity: Identity,
    /// This node's certificate, shown to every peer; none on a plain-text
    /// cluster (`tls.insecure`).
    tls: Option<Credentials>,
}

impl Channels {
    pub fn new(identity: Identity, tls: Option<Credentials>) -> Channels {
        Channels {
            inner: Arc::default(),
            identity,
            tls,
        }
    }

    /// The cluster id calls carry.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The channel to `addr` (`host:port`), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = crate::tls::endpoint(addr, self.tls.as_ref())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// Calls `method` on the agent at `addr` with `request`, waiting at most
    /// `timeout`, and decodes its reply.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        method: Method,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let codec_err = |message: String| CallError::Codec {
            addr: addr.to_owned(),
            message,
        };
        let channel = self.get(addr).map_err(|e| CallError::Unreachable {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let payload = codec::encode(request).map_err(|e| codec_err(format!("encode: {e}")))?;
        let mut req = tonic::Request::new(RaftPayload { payload });
        req.set_timeout(timeout);
        if let Some(id) = self.identity.get() {
            if let Ok(value) = id.to_string().parse() {
                req.metadata_mut().insert(HEADER, value);
            }
        }
        let reply = match method {
            Method::AppendEntries => client.append_entries(req).await,
            Method::Vote => client.vote(req).await,
            Method::InstallSnapshot => client.install_snapshot(req).await,
            Method::Heartbeat => client.heartbeat(req).await,
            Method::Fenced => client.fenced(req).await,
            Method::Leader => client.leader(req).await,
            Method::Join => client.join(req).await,
        };
        let reply = reply.map_err(|status| status_error(addr, &status))?;
        codec::decode(&reply.into_inner().payload).map_err(|e| codec_err(format!("decode: {e}")))
    }
}

/// Transport failures (refused, reset, DNS) and deadlines mean the peer is
/// down or too slow; any other status is the peer's own answer.
fn status_error(addr: &str, status: &tonic::Status) -> CallError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => CallError::Unreachable {
            addr: addr.to_owned(),
            message: status.message().to_owned(),
        },
        code => CallError::Refused {
            addr: addr.to_owned(),
            code,
            message: status.message().to_owned(),
        },
    }
}
