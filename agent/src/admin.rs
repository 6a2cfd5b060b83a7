//! `slotd.v1.Admin`: operator calls. Arguments are checked here (errors name
//! the field), then carried out on the leader through the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use slotd_proto::v1 as pb;
use slotd_proto::v1::admin_server::Admin;
use slotd_raft_store::{ClusterState, Command, NodeSpec, ServiceIp, SlotRef, StoreSpec, Topology};
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::access;
use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::tls::{self, Caller};
use crate::wire::{LeaderCall, LeaderReply, NamedStore};

/// The Admin service of one agent.
pub struct AdminService {
    pub cluster: Arc<Cluster>,
    /// Set first at shutdown: from then on admin calls are refused.
    pub closing: Arc<AtomicBool>,
    /// How many admin calls may run at once.
    pub calls: CallLimit,
    /// The port runs mutual TLS: callers are known by their certificate.
    pub secure: bool,
}

/// An admitted call: its permit (ends with the call) and who made it.
struct Opened {
    _permit: tokio::sync::OwnedSemaphorePermit,
    by: String,
}

/// The most admin calls one agent carries out at once: more are refused
/// (RESOURCE_EXHAUSTED), not queued, so that a flood of calls cannot pile
/// up work on the leader.
pub const MAX_ADMIN_CALLS: usize = 64;

/// The most calls other agents pass on to this one as leader at once.
pub const MAX_LEADER_CALLS: usize = 128;

/// Largest admin request: a topology of thousands of stores fits many
/// times over.
pub const MAX_ADMIN_MESSAGE: usize = 4 << 20;

/// A bound on calls under way.
#[derive(Clone)]
pub struct CallLimit {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl CallLimit {
    pub fn new(max: usize) -> CallLimit {
        CallLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// A permit for one call, or the refusal.
    pub fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "more than {} calls at once on this agent; try again shortly",
                self.max
            ))
        })
    }
}

/// gRPC code for each kind of failure; slotctl prints the message as is.
pub fn to_status(e: AgentError) -> Status {
    let msg = e.to_string();
    match e {
        AgentError::Refused(_) | AgentError::Precondition(_) => Status::failed_precondition(msg),
        AgentError::Invalid(_) => Status::invalid_argument(msg),
        AgentError::NotLeader { .. } | AgentError::NoLeader | AgentError::ShuttingDown => Status::unavailable(msg),
        AgentError::Raft(_) | AgentError::Unreachable(_) => Status::unavailable(msg),
    }
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// Turns a protobuf node into the command's, naming bad fields.
pub fn node_spec(n: pb::NodeSpec) -> NodeSpec {
    NodeSpec {
        id: n.id,
        name: n.name,
        addr: n.addr,
        voter: n.voter,
        slots: n.slots,
    }
}

/// Turns a protobuf store into the command's: IPs parsed, `NODE:SLOT`
/// resolved against `state` (or the nodes of the same request).
pub fn store_spec(s: pb::StoreSpec, nodes: &dyn Fn(&str) -> Option<u64>) -> Result<StoreSpec, Status> {
    let what = format!("store {:?}", s.name);
    let master_ip: ServiceIp = s
        .master_ip
        .parse()
        .map_err(|e| invalid(&format!("{what}: master_ip"), e))?;
    let replica_ip: ServiceIp = s
        .replica_ip
        .parse()
        .map_err(|e| invalid(&format!("{what}: replica_ip"), e))?;
    let mut slots = Vec::new();
    for r in s.slots {
        let Some((node, slot)) = r.split_once(':') else {
            return Err(invalid(&format!("{what}: slots"), format!("{r:?} is not NODE:SLOT")));
        };
        let Some(id) = nodes(node) else {
            return Err(invalid(
                &format!("{what}: slots"),
                format!("{r:?} names unknown node {node:?}"),
            ));
        };
        slots.push(SlotRef {
            node: id,
            slot: slot.to_owned(),
        });
    }
    Ok(StoreSpec {
        name: s.name,
        master_ip,
        replica_ip,
        slots,
    })
}

impl AdminService {
    /// Admits one call: refused from a certificate that may not call Admin
    /// (`access::admin`), while the agent stops, or when too many are under
    /// way.
    fn open<T>(&self, req: &Request<T>) -> Result<Opened, Status> {
        self.open_as(req, false)
    }

    /// `open`, saying whether the call is the bootstrap (`init`).
    fn open_as<T>(&self, req: &Request<T>, init: bool) -> Result<Opened, Status> {
        let caller = tls::caller(req, self.secure)?;
        self.cluster
            .reader
            .with(|d| access::admin(&caller, &d.state, init))
            .map_err(|denied| {
                warn!(caller = %caller, error = %denied, "admin call refused");
                Status::permission_denied(denied.to_string())
            })?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(to_status(AgentError::ShuttingDown));
        }
        let by = match (&caller, req.remote_addr()) {
            (Caller::Insecure, Some(addr)) => format!("{caller} from {addr}"),
            _ => caller.to_string(),
        };
        Ok(Opened {
            _permit: self.calls.enter()?,
            by,
        })
    }

    async fn written(&self, by: &str, call: LeaderCall) -> Result<Response<pb::WriteReply>, Status> {
        match self.cluster.call_by(by, call).await.map_err(to_status)? {
            LeaderReply::Written { index } => Ok(Response::new(pb::WriteReply { index })),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let open = self.open(&req)?;
        if req.into_inner().stale {
            return Ok(Response::new(self.cluster.status()));
        }
        match self
            .cluster
            .call_by(&open.by, LeaderCall::Status)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Status(view) => Ok(Response::new(view)),
            other => Err(unexpected(&other)),
        }
    }

    async fn init(&self, req: Request<pb::InitRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open_as(&req, true)?;
        let req = req.into_inner();
        let nodes: Vec<NodeSpec> = req.nodes.into_iter().map(node_spec).collect();
        let by_name = |name: &str| nodes.iter().find(|n| n.name == name).map(|n| n.id);
        let stores = req
            .stores
            .into_iter()
            .map(|s| store_spec(s, &by_name))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = Topology { nodes, stores };
        ClusterState::default()
            .check(&Command::Init(topology.clone()))
            .map_err(|r| to_status(AgentError::Refused(r)))?;
        // Init is carried out by the topology's first voter (there is no
        // leader to pass it to yet).
        let init = LeaderCall::Init {
            topology,
            forwarded: false,
        };
        match self.cluster.execute(init, &open.by).await.map_err(to_status)? {
            LeaderReply::Written { index } => Ok(Response::new(pb::WriteReply { index })),
            other => Err(unexpected(&other)),
        }
    }

    async fn add_node(&self, req: Request<pb::AddNodeRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let Some(node) = req.into_inner().node else {
            return Err(invalid("node", "missing"));
        };
        self.written(&open.by, LeaderCall::AddNode(node_spec(node))).await
    }

    async fn remove_node(&self, req: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        // Resolved on the leader: this node's view may be behind.
        self.written(&open.by, LeaderCall::RemoveNode(req.into_inner().node))
            .await
    }

    async fn add_store(&self, req: Request<pb::AddStoreRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let Some(store) = req.into_inner().store else {
            return Err(invalid("store", "missing"));
        };
        // Checked here for form (errors name the field); node names are
        // resolved on the leader, whose view is current.
        let placeholder = |_: &str| Some(0);
        store_spec(store.clone(), &placeholder)?;
        self.written(&open.by, LeaderCall::AddStore(store.into())).await
    }

    async fn failover(&self, req: Request<pb::FailoverRequest>) -> Result<Response<pb::FailoverReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        name_arg("store", &req.store)?;
        if let Some(to) = &req.to {
            name_arg("to", to)?;
        }
        let call = LeaderCall::Failover {
            store: req.store,
            to: req.to,
            force: req.force,
        };
        match self.cluster.call_by(&open.by, call).await.map_err(to_status)? {
            LeaderReply::Failover(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<pb::DrainReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        name_arg("node", &req.node)?;
        concurrency_arg(req.concurrency)?;
        let call = LeaderCall::Drain {
            node: req.node,
            concurrency: req.concurrency,
            on_stop: false,
        };
        match self.cluster.call_by(&open.by, call).await.map_err(to_status)? {
            LeaderReply::Drain { reply, .. } => Ok(Response::new(reply)),
            other => Err(unexpected(&other)),
        }
    }

    async fn undrain(&self, req: Request<pb::UndrainRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let node = req.into_inner().node;
        name_arg("node", &node)?;
        self.written(
            &open.by,
            LeaderCall::Undrain {
                node,
                after_stop: false,
            },
        )
        .await
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Result<Response<pb::RebalanceReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        concurrency_arg(req.concurrency)?;
        let call = LeaderCall::Rebalance {
            dry_run: req.dry_run,
            concurrency: req.concurrency,
        };
        match self.cluster.call_by(&open.by, call).await.map_err(to_status)? {
            LeaderReply::Rebalance(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        if let Some(store) = &req.store {
            name_arg("store", store)?;
        }
        let call = LeaderCall::History {
            store: req.store,
            limit: req.limit,
        };
        match self.cluster.call_by(&open.by, call).await.map_err(to_status)? {
            LeaderReply::History(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn remove_store(&self, req: Request<pb::RemoveStoreRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        self.written(
            &open.by,
            LeaderCall::RemoveStore {
                store: req.store,
                epoch: req.epoch,
            },
        )
        .await
    }
}

/// A leader answered a call with a reply of another call (a bug, or a
/// leader of another version).
fn unexpected(reply: &LeaderReply) -> Status {
    let kind = match reply {
        LeaderReply::Status(_) => "a status",
        LeaderReply::Written { .. } => "a write",
        LeaderReply::Failover(_) => "a failover",
        LeaderReply::Drain { .. } => "a drain",
        LeaderReply::Rebalance(_) => "a rebalance",
        LeaderReply::History(_) => "a history",
    };
    Status::internal(format!("the leader answered with {kind}, not what was asked"))
}

/// A node or store name argument: present, and a name (errors name the field).
fn name_arg(field: &str, value: &str) -> Result<(), Status> {
    match slotd_raft_store::apply::name_problem(value) {
        Some(problem) => Err(invalid(field, problem)),
        None => Ok(()),
    }
}

/// A `concurrency` argument, when given, within the state machine's bounds.
fn concurrency_arg(value: Option<u32>) -> Result<(), Status> {
    let max = slotd_raft_store::apply::MAX_CONCURRENCY;
    match value {
        Some(k) if !(1..=max).contains(&k) => Err(invalid("concurrency", format!("{k} is not from 1 to {max}"))),
        _ => Ok(()),
    }
}

impl From<pb::StoreSpec> for NamedStore {
    fn from(s: pb::StoreSpec) -> Self {
        NamedStore {
            name: s.name,
            master_ip: s.master_ip,
            replica_ip: s.replica_ip,
            slots: s.slots,
        }
    }
}

impl From<NamedStore> for pb::StoreSpec {
    fn from(s: NamedStore) -> Self {
        pb::StoreSpec {
            name: s.name,
            master_ip: s.master_ip,
            replica_ip: s.replica_ip,
            slots: s.slots,
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::CallLimit;

    #[test]
    fn calls_beyond_the_bound_are_refused_until_one_ends() {
        let limit = CallLimit::new(2);
        let a = limit.enter().expect("first");
        let _b = limit.enter().expect("second");
        let refused = limit.enter().expect_err("a third at once");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("more than 2 calls"), "{}", refused.message());
        drop(a);
        assert!(limit.enter().is_ok(), "admitted again once one ended");
    }
}
