//! The channel to other agents: the one way an agent calls another over
//! `slotd.v1.Peer` (the service that answers is `api::peer`). Encode the
//! request as a versioned payload, call the method on the shared channel to
//! the peer, map the gRPC status, decode the reply. openraft's network
//! ([`PeerNetwork`], below: `RaftNetwork` calls carrying openraft's own
//! types), lease renewals, calls passed on to the leader and `slotd fence`
//! all go through [`Channels::call`].
//!
//! One lazily connected tonic `Channel` per peer address is kept and reused
//! (tonic reconnects by itself). Nothing here retries or sleeps: callers
//! decide (openraft backs off on `Unreachable`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_client::PeerClient;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::{codec, NodeId, TypeConfig};
use tonic::transport::Channel;

use slotd_core::leader::standing::Standing;

use super::identity::{Identity, HEADER};
use crate::clock::{self, Mono};
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
    Reach,
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
            Method::Reach => client.reach(req).await,
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

// openraft's network: a peer that cannot be reached is reported as
// `Unreachable`, and openraft backs off; nothing here retries or sleeps.

/// Creates one `PeerConnection` per target for openraft.
#[derive(Clone)]
pub struct PeerNetwork {
    pub channels: Channels,
    /// How this node's appends are answered while it leads, and whether it
    /// gave up leading (`slotd_core::leader::standing`; the elector decides).
    pub standing: Arc<Mutex<Standing>>,
}

impl PeerNetwork {
    pub fn new(channels: Channels) -> PeerNetwork {
        PeerNetwork {
            channels,
            standing: Arc::default(),
        }
    }

    /// The standing, locked (never held across an await).
    pub fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            standing: self.standing.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    channels: Channels,
    standing: Arc<Mutex<Standing>>,
}

/// One append on its way: when it ends (answered, refused, or dropped by
/// openraft's deadline, which it does not survive), the standing hears.
struct Attempt<'a> {
    standing: &'a Mutex<Standing>,
    term: u64,
    target: NodeId,
    sent: Mono,
    answered: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut standing = self.standing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.answered {
            standing.answered(self.term, self.target);
        } else {
            standing.failed(self.term, self.target, self.sent);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerConnection {
    /// One RPC; the peer answers `Result<Resp, E>` (openraft's own error).
    async fn rpc<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .channels
            .call::<Req, Result<Resp, E>>(&self.addr, method, req, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ CallError::Unreachable { .. }) => Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "node {}: {e}",
                self.target
            ))))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&Msg(format!(
                "node {}: {e}",
                self.target
            ))))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let term = rpc.vote.leader_id().term;
        let gave_up = self
            .standing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gave_up_in(term);
        if gave_up {
            // Silent, so that the followers stop hearing this leader and
            // elect one they can hear in time.
            return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "node {}: not sent: this node gave up leading in term {term}",
                self.target
            )))));
        }
        let mut attempt = Attempt {
            standing: &self.standing,
            term,
            target: self.target,
            sent: clock::now(),
            answered: false,
        };
        let result = self.rpc(Method::AppendEntries, &rpc, &option).await;
        attempt.answered = matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_)));
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(Method::Vote, &rpc, &option).await
    }
}
