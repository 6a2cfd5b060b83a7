//! `slotd.v1.Admin`: operator calls. Arguments are checked here (errors name
//! the field), then carried out on the leader through the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use slotd_proto::v1 as pb;
use slotd_proto::v1::admin_server::Admin;
use slotd_raft_store::{ClusterState, Command, NodeSpec, Topology};
use tonic::{Request, Response, Status};
use tracing::warn;

use super::access::{self, AdminCall};
use super::{to_status, CallLimit};
use crate::cluster::status;
use crate::cluster::wire::{Asker, LeaderCall, LeaderReply};
use crate::cluster::Cluster;
use crate::convert::{node_spec, store_spec, FieldError};
use crate::error::AgentError;
use crate::leader::{bootstrap, calls};
use crate::stats::Stats;
use crate::tls::{self, Caller};

/// The Admin service of one agent.
pub struct AdminService {
    pub cluster: Arc<Cluster>,
    /// Set first at shutdown: from then on admin calls are refused.
    pub closing: Arc<AtomicBool>,
    /// How many admin calls may run at once.
    pub calls: CallLimit,
    /// The port runs mutual TLS: callers are known by their certificate.
    pub secure: bool,
    pub stats: Arc<Stats>,
}

/// An admitted call: its permit (ends with the call) and who made it.
struct Opened {
    _permit: tokio::sync::OwnedSemaphorePermit,
    by: String,
    asker: Asker,
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// A request field that cannot be used, as the caller's error.
fn field(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

impl AdminService {
    /// Admits one call: refused from a certificate that may not call Admin
    /// (`access::admin`), while the agent stops, or when too many are under
    /// way.
    fn open<T>(&self, req: &Request<T>) -> Result<Opened, Status> {
        self.open_as(req, AdminCall::Change)
    }

    /// `open`, saying what kind of call it is.
    fn open_as<T>(&self, req: &Request<T>, call: AdminCall) -> Result<Opened, Status> {
        let caller = tls::caller(req, self.secure)?;
        self.cluster
            .reader
            .with(|d| access::admin(&caller, &d.state, call))
            .map_err(|denied| {
                Stats::add(&self.stats.admin_refused, 1);
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
            asker: Asker::from(&caller),
        })
    }

    async fn written(&self, open: &Opened, call: LeaderCall) -> Result<Response<pb::WriteReply>, Status> {
        match calls::call_by(&self.cluster, &open.by, &open.asker, call)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Written { index } => Ok(Response::new(pb::WriteReply { index })),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let open = self.open_as(&req, AdminCall::Read)?;
        if req.into_inner().stale {
            return Ok(Response::new(status::of(&self.cluster)));
        }
        match calls::call_by(&self.cluster, &open.by, &open.asker, LeaderCall::Status)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Status(view) => Ok(Response::new(view)),
            other => Err(unexpected(&other)),
        }
    }

    async fn init(&self, req: Request<pb::InitRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open_as(&req, AdminCall::Init)?;
        let req = req.into_inner();
        let nodes: Vec<NodeSpec> = req.nodes.into_iter().map(node_spec).collect();
        let by_name = |name: &str| nodes.iter().find(|n| n.name == name).map(|n| n.id);
        let stores = req
            .stores
            .into_iter()
            .map(|s| store_spec(s, &by_name).map_err(field))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = Topology { nodes, stores };
        ClusterState::default()
            .check(&Command::Init(topology.clone()))
            .map_err(|r| to_status(AgentError::Refused(r)))?;
        // Init is carried out by the topology's first voter (there is no
        // leader to pass it to yet).
        match bootstrap::init(&self.cluster, topology, false, &open.by, &open.asker)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Written { index } => Ok(Response::new(pb::WriteReply { index })),
            other => Err(unexpected(&other)),
        }
    }

    async fn add_node(&self, req: Request<pb::AddNodeRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let Some(node) = req.into_inner().node else {
            return Err(invalid("node", "missing"));
        };
        self.written(&open, LeaderCall::AddNode(node_spec(node))).await
    }

    async fn remove_node(&self, req: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        // Resolved on the leader: this node's view may be behind.
        self.written(&open, LeaderCall::RemoveNode(req.into_inner().node)).await
    }

    async fn add_store(&self, req: Request<pb::AddStoreRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let Some(store) = req.into_inner().store else {
            return Err(invalid("store", "missing"));
        };
        // Checked here for form (errors name the field); node names are
        // resolved on the leader, whose view is current.
        let placeholder = |_: &str| Some(0);
        store_spec(store.clone(), &placeholder).map_err(field)?;
        self.written(&open, LeaderCall::AddStore(store.into())).await
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
        match calls::call_by(&self.cluster, &open.by, &open.asker, call)
            .await
            .map_err(to_status)?
        {
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
        match calls::call_by(&self.cluster, &open.by, &open.asker, call)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Drain { reply, .. } => Ok(Response::new(reply)),
            other => Err(unexpected(&other)),
        }
    }

    async fn undrain(&self, req: Request<pb::UndrainRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let node = req.into_inner().node;
        name_arg("node", &node)?;
        self.written(
            &open,
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
        match calls::call_by(&self.cluster, &open.by, &open.asker, call)
            .await
            .map_err(to_status)?
        {
            LeaderReply::Rebalance(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryReply>, Status> {
        let open = self.open_as(&req, AdminCall::Read)?;
        let req = req.into_inner();
        if let Some(store) = &req.store {
            name_arg("store", store)?;
        }
        let call = LeaderCall::History {
            store: req.store,
            limit: req.limit,
        };
        match calls::call_by(&self.cluster, &open.by, &open.asker, call)
            .await
            .map_err(to_status)?
        {
            LeaderReply::History(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn config(&self, req: Request<pb::ConfigRequest>) -> Result<Response<pb::ConfigReply>, Status> {
        let show = req.get_ref().set.is_empty();
        let open = self.open_as(&req, if show { AdminCall::Read } else { AdminCall::Change })?;
        let mut set: Vec<(String, u64)> = Vec::new();
        for s in req.into_inner().set {
            if set.iter().any(|(k, _)| *k == s.key) {
                return Err(invalid("set", format!("{:?} given twice", s.key)));
            }
            set.push((s.key, s.value));
        }
        match calls::call_by(&self.cluster, &open.by, &open.asker, LeaderCall::Config { set })
            .await
            .map_err(to_status)?
        {
            LeaderReply::Config(r) => Ok(Response::new(r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn remove_store(&self, req: Request<pb::RemoveStoreRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let open = self.open(&req)?;
        let req = req.into_inner();
        self.written(
            &open,
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
        LeaderReply::Config(_) => "the timings",
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
