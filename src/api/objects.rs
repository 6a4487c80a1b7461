//! The object half of the `Cluster` API: create, update, show, get, doc, list, delete, keys,
//! pools and devices, and DRBD fencing (the `fence-peer` handlers' outdated marks). Writes are
//! checked against the state first (confirmed by a linearizable read when the local state
//! refuses), so bad input never reaches the log.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::cluster::ClusterService;
use super::{authorize, Access};
use crate::config::echo::echo;
use crate::config::ini::{Ini, DEFAULT};
use crate::config::keywords;
use crate::model::objects::ObjectError;
use crate::model::placement;
use crate::model::{
    ClusterState, Command, KeyMode, Migration, NodeId, ObjectKey, ObjectKind, ObjectPath, Phase, Rejection,
    Response as Applied,
};
use crate::pb::*;

fn path(s: &str) -> Result<ObjectPath, Status> {
    ObjectPath::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The status a refusal maps to: all are the caller's doing (exit code 1).
pub fn refused(e: Rejection) -> Status {
    let msg = e.to_string();
    match e {
        Rejection::Object(ObjectError::NotFound(_)) | Rejection::UnknownNode(_) | Rejection::UnknownResource(_) => {
            Status::not_found(msg)
        }
        Rejection::Object(ObjectError::Exists(_)) | Rejection::DuplicateNodeName(_) => Status::already_exists(msg),
        Rejection::Object(
            ObjectError::InUse { .. }
            | ObjectError::OutOfSpace { .. }
            | ObjectError::Pool { .. }
            | ObjectError::Template { .. },
        )
        | Rejection::HolderNotOutdated { .. } => Status::failed_precondition(msg),
        _ => Status::invalid_argument(msg),
    }
}

/// A random (version 4) UUID for a new object.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("system random source");
    crate::model::objects::uuid_from(b, 4)
}

fn parse_keys(path: &str, kvs: &[KeyValue]) -> Result<Vec<(ObjectKey, String)>, Status> {
    kvs.iter()
        .map(|kv| {
            ObjectKey::parse(kv.key.trim())
                .map(|k| (k, kv.value.clone()))
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", echo(path))))
        })
        .collect()
}

impl ClusterService {
    /// The id of the node called `name`, from a linearizable read.
    async fn node_id_of(&self, name: &str) -> Result<NodeId, Status> {
        self.node
            .read_linearizable(|d| d.state.node_id(name))
            .await?
            .ok_or_else(|| Status::not_found(format!("unknown node {:?}", echo(name))))
    }

    /// Refuses `cmd` if the state refuses it; proposes it otherwise.
    pub(super) async fn commit(&self, cmd: Command) -> Result<Response<ConfigUpdateReply>, Status> {
        if self.node.read(|d| d.state.check(&cmd)).is_err() {
            // The local state may lag: only a linearizable read may refuse.
            self.node
                .read_linearizable(|d| d.state.check(&cmd))
                .await?
                .map_err(refused)?;
        }
        let (log_index, r) = self.node.write(cmd).await?;
        match r {
            Applied::Refused(why) => Err(super::refused(&why)),
            _ => Ok(Response::new(ConfigUpdateReply { log_index })),
        }
    }

    pub(super) async fn object_create(
        &self,
        req: Request<ObjectCreateRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let mut config = Ini::parse(&req.config_text)
            .map_err(|e| Status::invalid_argument(format!("{}: --config: {e}", echo(&req.path))))?;
        for (k, v) in parse_keys(&req.path, &req.kws)? {
            config
                .set(&k.section, &k.keyword, &v)
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", echo(&k.to_string()))))?;
        }
        if config.get(DEFAULT, "id").is_some() {
            return Err(Status::invalid_argument(format!(
                "{}: id is set by the cluster: remove it",
                echo(&req.path)
            )));
        }
        config.set(DEFAULT, "id", &new_uuid()).expect("a uuid is one line");
        self.commit(Command::CreateObject { path: p, config }).await
    }

    pub(super) async fn object_delete(&self, req: Request<ObjectRef>) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let p = path(&req.into_inner().path)?;
        self.commit(Command::DeleteObject { path: p }).await
    }

    pub(super) async fn object_config_update(
        &self,
        req: Request<ObjectConfigUpdateRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let set = parse_keys(&req.path, &req.set)?;
        let unset = req
            .unset
            .iter()
            .map(|k| {
                ObjectKey::parse(k.trim()).map_err(|e| Status::invalid_argument(format!("{}: {e}", echo(&req.path))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(Command::UpdateObject { path: p, set, unset }).await
    }

    async fn read_object<T>(
        &self,
        p: &ObjectPath,
        f: impl FnOnce(&ClusterState, &crate::model::Object) -> T,
    ) -> Result<T, Status> {
        self.node
            .read_linearizable(|d| d.state.objects.get(p).map(|o| f(&d.state, o)))
            .await?
            .ok_or_else(|| Status::not_found(format!("{p} does not exist")))
    }

    pub(super) async fn object_config_show(
        &self,
        req: Request<ObjectConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        authorize(&req, Access::View)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let config = self.read_object(&p, |_, o| o.config.clone()).await?;
        let sections: Vec<Section> = config
            .sections()
            .iter()
            .filter(|s| req.section.is_empty() || s.name == req.section)
            .filter(|s| !s.entries.is_empty())
            .map(|s| Section {
                name: s.name.to_string(),
                values: s
                    .entries
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            })
            .collect();
        if !req.section.is_empty() && sections.is_empty() {
            return Err(Status::not_found(format!("{p}: no section [{}]", echo(&req.section))));
        }
        Ok(Response::new(ConfigShowReply { sections }))
    }

    pub(super) async fn object_config_get(
        &self,
        req: Request<ObjectConfigGetRequest>,
    ) -> Result<Response<ConfigGetReply>, Status> {
        authorize(&req, Access::View)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let key = ObjectKey::parse(req.key.trim()).map_err(|e| Status::invalid_argument(format!("{p}: {e}")))?;
        let (kw, scope) = key.split_scope();
        keywords::lookup(p.kind, &key.section, kw).map_err(|e| Status::invalid_argument(format!("{p}: {e}")))?;
        if scope.is_some() && req.eval {
            return Err(Status::invalid_argument(
                "give --node instead of an @node scope with --eval",
            ));
        }
        let node = (!req.node.is_empty()).then_some(req.node.clone());
        let value = self
            .read_object(&p, |s, o| {
                if let Some(n) = &node {
                    if !s.nodes.values().any(|i| &i.name == n) {
                        return Err(Status::not_found(format!("unknown node {:?}", echo(n))));
                    }
                }
                if req.eval {
                    s.eval(&p, &o.config, &key.section, kw, node.as_deref())
                        .map_err(|e| Status::invalid_argument(e.to_string()))
                } else {
                    Ok(o.config.get(&key.section, &key.keyword).map(str::to_string))
                }
            })
            .await??;
        Ok(Response::new(ConfigGetReply {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    pub(super) async fn object_config_doc(
        &self,
        req: Request<ObjectConfigDocRequest>,
    ) -> Result<Response<ObjectConfigDocReply>, Status> {
        authorize(&req, Access::View)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let filter = if req.key.trim().is_empty() {
            None
        } else {
            let k = ObjectKey::parse(req.key.trim()).map_err(|e| Status::invalid_argument(e.to_string()))?;
            keywords::lookup(p.kind, &k.section, k.split_scope().0)
                .map_err(|e| Status::invalid_argument(format!("{p}: {e}")))?;
            Some(k)
        };
        let keywords = keywords::doc(p.kind)
            .filter(|k| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.split_scope().0 == k.name && keywords::section_type(&f.section) == k.section)
            })
            .map(|k| KeywordDoc {
                section: if k.section == DEFAULT {
                    DEFAULT.into()
                } else {
                    format!("{}#ID", k.section)
                },
                keyword: k.name.into(),
                kind: k.kind.describe(),
                default_value: k.default.map(str::to_string),
                readonly: k.readonly,
                required: k.required,
                doc: k.doc.into(),
            })
            .collect();
        Ok(Response::new(ObjectConfigDocReply { keywords }))
    }

    pub(super) async fn object_list(
        &self,
        req: Request<ObjectListRequest>,
    ) -> Result<Response<ObjectListReply>, Status> {
        authorize(&req, Access::View)?;
        let sel = req.into_inner().selector;
        let sel = if sel.trim().is_empty() {
            "*".to_string()
        } else {
            sel.trim().to_string()
        };
        let objects = self
            .node
            .read_linearizable(|d| {
                d.state
                    .objects
                    .iter()
                    .map(|(p, o)| (p.to_string(), p.kind, o))
                    .filter(|(p, ..)| crate::model::path::glob(&sel, p))
                    .map(|(p, kind, o)| ObjectRow {
                        path: p,
                        kind: kind.to_string(),
                        orchestrate: o.config.get(DEFAULT, "orchestrate").unwrap_or("").into(),
                        nodes: o.config.get(DEFAULT, "nodes").unwrap_or("").into(),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(ObjectListReply { objects }))
    }

    pub(super) async fn key_put(&self, req: Request<KeyPutRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let mode = if req.change { KeyMode::Change } else { KeyMode::Add };
        let p = path(&req.path)?;
        self.check_key_template(&p, &req.name, &req.value).await?;
        let cmd = Command::PutKey {
            path: p,
            key: req.name,
            value: req.value,
            mode,
        };
        self.commit(cmd).await
    }

    pub(super) async fn key_list(&self, req: Request<ObjectRef>) -> Result<Response<KeyListReply>, Status> {
        authorize(&req, Access::View)?;
        let p = path(&req.into_inner().path)?;
        let names = self.read_object(&p, |_, o| o.keys.keys().cloned().collect()).await?;
        Ok(Response::new(KeyListReply { names }))
    }

    pub(super) async fn key_decode(&self, req: Request<KeyRequest>) -> Result<Response<KeyDecodeReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let value = self.read_object(&p, |_, o| o.keys.get(&req.name).cloned()).await?;
        let value = value.ok_or_else(|| Status::not_found(format!("{p}: no key {:?}", echo(&req.name))))?;
        Ok(Response::new(KeyDecodeReply { value }))
    }

    pub(super) async fn key_remove(&self, req: Request<KeyRequest>) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        self.commit(Command::RemoveKey {
            path: path(&req.path)?,
            key: req.name,
        })
        .await
    }

    pub(super) async fn pool_list(&self, req: Request<PoolListRequest>) -> Result<Response<PoolListReply>, Status> {
        authorize(&req, Access::View)?;
        let req = req.into_inner();
        let pools = self
            .node
            .read_linearizable(|d| pool_rows(&d.state, &req.name, &req.node))
            .await??;
        Ok(Response::new(PoolListReply { pools }))
    }

    pub(super) async fn device_list(&self, req: Request<ObjectRef>) -> Result<Response<DeviceListReply>, Status> {
        authorize(&req, Access::View)?;
        let p = path(&req.into_inner().path)?;
        let devices = self.read_object(&p, |s, o| device_rows(s, &p, o)).await?;
        Ok(Response::new(DeviceListReply { devices }))
    }

    pub(super) async fn report_volume_groups(
        &self,
        req: Request<ReportVolumeGroupsRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Node)?;
        let from = super::caller(&req);
        let req = req.into_inner();
        let node_id = self.node_id_of(&req.node).await?;
        if let super::auth::Caller::Node(id) = from {
            if id != node_id {
                return Err(Status::permission_denied(format!(
                    "node id {id} may report only its own volume groups, not {}'s",
                    req.node
                )));
            }
        }
        let vgs: BTreeMap<String, u64> = req.vgs.into_iter().map(|v| (v.name, v.size)).collect();
        self.commit(Command::ReportVolumeGroups { node_id, vgs }).await
    }
}

impl ClusterService {
    pub(super) async fn object_action(
        &self,
        req: Request<ObjectActionRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let p = path(&req.path)?;
        let cmd = match req.action.as_str() {
            "provision" => Command::Provision { path: p },
            "unprovision" => Command::Unprovision { path: p },
            "start" => Command::SetStarted { path: p, started: true },
            "stop" => Command::SetStarted {
                path: p,
                started: false,
            },
            "freeze" | "thaw" => Command::FreezeService {
                path: p,
                frozen: req.action == "freeze",
            },
            // takeover: to the node asked; giveback: to the node the service's placement
            // policy prefers.
            "takeover" | "giveback" => {
                let me = self.node.settings.name.clone();
                let target = self
                    .node
                    .read_linearizable(|d| match req.action.as_str() {
                        "takeover" => d.state.node_id(&me),
                        _ => placement::first_choice(&d.state, &p),
                    })
                    .await?
                    .ok_or_else(|| Status::failed_precondition(format!("{p}: no node to move to")))?;
                Command::Switch { path: p, to: target }
            }
            "abort-switch" => {
                let m = self
                    .node
                    .read_linearizable(|d| d.state.services.get(&p).and_then(|s| s.migration.clone()))
                    .await?
                    .ok_or_else(|| Status::failed_precondition(format!("{p}: no switch in progress")))?;
                if !m.phase.before_hand_over() {
                    return Err(Status::failed_precondition(format!(
                        "{p}: the switch already handed the service over (phase {}): it finishes on its own",
                        m.phase
                    )));
                }
                Command::MigrationPhase {
                    path: p,
                    id: m.id,
                    from: m.phase,
                    to: Phase::Abort,
                    error: Some("aborted by the operator".into()),
                    fenced: None,
                }
            }
            "switch" | "live-switch" => {
                let target = self
                    .node
                    .read_linearizable(|d| {
                        if !req.node.is_empty() {
                            return d
                                .state
                                .node_id(&req.node)
                                .ok_or_else(|| format!("unknown node {:?}", echo(&req.node)));
                        }
                        // The node the service's placement policy prefers after the one
                        // holding it.
                        placement::best_other(&d.state, &p).ok_or_else(|| format!("{p} has no other node to switch to"))
                    })
                    .await?
                    .map_err(Status::failed_precondition)?;
                if req.action == "live-switch" {
                    Command::LiveSwitch { path: p, to: target }
                } else {
                    Command::Switch { path: p, to: target }
                }
            }
            "provision-state-only" => {
                let node_id = self.node_id_of(&req.node).await?;
                Command::MarkProvisioned { path: p, node_id }
            }
            other => return Err(Status::invalid_argument(format!("unknown action {:?}", echo(other)))),
        };
        self.commit(cmd).await
    }

    pub(super) async fn node_freeze(
        &self,
        req: Request<NodeFreezeRequest>,
    ) -> Result<Response<ConfigUpdateReply>, Status> {
        authorize(&req, Access::Operate)?;
        let req = req.into_inner();
        let node_id = self.node_id_of(&req.node).await?;
        self.commit(Command::FreezeNode {
            node_id,
            frozen: req.frozen,
        })
        .await
    }

    pub(super) async fn instance_status(
        &self,
        req: Request<ObjectRef>,
    ) -> Result<Response<InstanceStatusReply>, Status> {
        authorize(&req, Access::View)?;
        let p = path(&req.into_inner().path)?;
        if p.kind != ObjectKind::Svc {
            return Err(Status::invalid_argument(format!("{p} is not a service")));
        }
        let reply = self.read_object(&p, |s, _| instance_status(s, &p)).await?;
        Ok(Response::new(reply))
    }

    /// `omctl drbd fence-peer|unfence-peer`: marks `node`'s disk of a DRBD resource outdated
    /// (or clears the mark) and replies once that is committed, or refused. DRBD runs the
    /// handler with its output going nowhere, so the outcome is logged here.
    pub(super) async fn drbd_fence(&self, req: Request<DrbdFenceRequest>) -> Result<Response<DrbdFenceReply>, Status> {
        authorize(&req, Access::Admin)?;
        let req = req.into_inner();
        let handler = if req.unfence { "unfence-peer" } else { "fence-peer" };
        let result = self.drbd_fence_commit(&req).await;
        match &result {
            Ok(r) if r.unchanged => {
                tracing::info!(resource = %req.resource, peer = %req.node, "DRBD {handler}: nothing to change")
            }
            Ok(r) => {
                tracing::info!(resource = %req.resource, peer = %req.node, index = r.log_index, "DRBD {handler}: committed")
            }
            Err(e) => {
                tracing::warn!(resource = %req.resource, peer = %req.node, "DRBD {handler} refused: {}", e.message())
            }
        }
        result.map(Response::new)
    }

    async fn drbd_fence_commit(&self, req: &DrbdFenceRequest) -> Result<DrbdFenceReply, Status> {
        let (cmd, marked) = self
            .node
            .read_linearizable(|d| {
                let node_id = d.state.node_id(&req.node).ok_or_else(|| {
                    let known: Vec<&str> = d.state.nodes.values().map(|n| n.name.as_str()).collect();
                    Status::not_found(format!(
                        "unknown node {:?} (nodes: {})",
                        echo(&req.node),
                        known.join(", ")
                    ))
                })?;
                let (resource, node_id) = (req.resource.clone(), node_id);
                let cmd = if req.unfence {
                    Command::UnfencePeer { resource, node_id }
                } else {
                    Command::OutdatePeer { resource, node_id }
                };
                d.state.check(&cmd).map_err(refused)?;
                let marked = d
                    .state
                    .outdated
                    .get(&req.resource)
                    .is_some_and(|n| n.contains(&node_id));
                Ok::<_, Status>((cmd, marked))
            })
            .await??;
        // Already so, as a linearizable read shows: nothing to commit.
        if marked != req.unfence {
            return Ok(DrbdFenceReply {
                log_index: 0,
                unchanged: true,
            });
        }
        let log_index = self.commit(cmd).await?.into_inner().log_index;
        Ok(DrbdFenceReply {
            log_index,
            unchanged: false,
        })
    }
}

/// The desired state of a service and every node's report of it.
pub fn instance_status(s: &ClusterState, p: &ObjectPath) -> InstanceStatusReply {
    let svc = s.services.get(p).cloned().unwrap_or_default();
    let name = |id: u64| {
        s.nodes
            .get(&id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("id{id}"))
    };
    let reports = s.reports.get(p);
    // Each volume resource's DRBD resource name, to show a fence-peer's outdated mark on it.
    let drbd_of: BTreeMap<String, String> = s
        .objects
        .get(p)
        .map(|o| {
            o.config
                .sections_of("volume")
                .filter_map(|sec| {
                    let name = s.eval(p, &o.config, &sec.name, "name", None).ok()??;
                    let vol = s.objects.get(&p.volume(&name))?;
                    let a = vol.alloc.as_ref().filter(|a| a.drbd.is_some())?;
                    Some((sec.name.to_string(), a.lv.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    let instances = s
        .service_nodes(p)
        .into_iter()
        .map(|id| match reports.and_then(|r| r.get(&id)) {
            None => InstanceView {
                node: name(id),
                node_frozen: s.frozen_nodes.contains(&id),
                node_drained: s.drained(id),
                reported: false,
                avail: "n/a".into(),
                outdated: s.outdated_on(p, id),
                ..Default::default()
            },
            Some(r) => InstanceView {
                node: name(id),
                outdated: s.outdated_on(p, id),
                node_frozen: s.frozen_nodes.contains(&id),
                node_drained: s.drained(id),
                reported: true,
                avail: r.avail.to_string(),
                warn: r.warn,
                provisioned: r.provisioned || svc.state_only.contains(&id),
                resources: r
                    .resources
                    .iter()
                    .map(|x| {
                        let mut messages = x.messages.clone();
                        let outdated = drbd_of
                            .get(&x.rid)
                            .filter(|res| s.outdated.get(*res).is_some_and(|n| n.contains(&id)));
                        if let Some(res) = outdated {
                            messages.push(format!(
                                "DRBD {res} outdated by a peer's fence-peer: old data until it resyncs"
                            ));
                        }
                        ResourceView {
                            rid: x.rid.clone(),
                            avail: x.avail.to_string(),
                            label: x.label.clone(),
                            messages,
                        }
                    })
                    .collect(),
            },
        })
        .collect();
    InstanceStatusReply {
        path: p.to_string(),
        provisioned: svc.provisioned,
        placement: svc.placement.map(name).unwrap_or_default(),
        started: svc.started,
        frozen: svc.frozen,
        epoch: svc.epoch,
        instances,
        migration_phase: svc.migration.as_ref().map(|m| m.phase.to_string()).unwrap_or_default(),
        migration_to: svc.migration.as_ref().map(|m| name(m.to)).unwrap_or_default(),
        migration_from: svc.migration.as_ref().map(|m| name(m.from)).unwrap_or_default(),
        migration_error: svc.migration.as_ref().and_then(|m| m.error.clone()).unwrap_or_default(),
        pending_action: svc
            .migration
            .as_ref()
            .map(|m| {
                let guest_on_target = reports.and_then(|r| r.get(&m.to)).is_some_and(|r| {
                    let guests: Vec<_> = r.resources.iter().filter(|x| x.rid.starts_with("container#")).collect();
                    !guests.is_empty() && guests.iter().all(|x| x.avail == crate::model::Avail::Up)
                });
                pending_action(m, &name(m.from), &name(m.to), guest_on_target)
            })
            .unwrap_or_default(),
        last_migration_error: svc
            .last_migration
            .as_ref()
            .and_then(|m| m.error.clone())
            .unwrap_or_default(),
    }
}

/// What the cluster does or waits for on a service with switch `m` in progress, and who must
/// act next: in `Stopping` the source, `Starting` the target, `Prepare` the source,
/// `DualPrimary` the target, `Migrating` the source (the target once the guest runs there),
/// `Finalize` the source then the target, `Abort` the target then the source.
pub fn pending_action(m: &Migration, from: &str, to: &str, guest_on_target: bool) -> String {
    let live = !matches!(m.phase, Phase::Stopping | Phase::Starting) && (m.phase != Phase::Abort || m.dual);
    let what = if live { "live switch" } else { "switch" };
    let waiting = match m.phase {
        Phase::Stopping => format!("{from} to stop the guests and demote"),
        Phase::Starting => format!("{to} to promote and start the guests"),
        Phase::Prepare => format!("{from} to check the guest runs there and {to}'s DRBD is Connected and UpToDate"),
        Phase::DualPrimary => format!("{to} to allow two primaries and promote"),
        Phase::Migrating if guest_on_target => format!("{to} to commit Finalize (the guest runs there)"),
        Phase::Migrating => format!("{from} to live-migrate the guest"),
        Phase::Finalize => format!("{from} to demote, then {to} to end the switch"),
        Phase::Abort if m.dual => format!("{to} to stop what it has and demote, then {from} to end the switch"),
        Phase::Abort => format!("{from} to end the switch"),
        Phase::Done => return format!("{what} to {to}: done"),
    };
    let why = match (&m.phase, &m.error) {
        (Phase::Abort, Some(e)) => format!(" ({e})"),
        _ => String::new(),
    };
    format!("{what} to {to}: phase {}{why}: waiting for {waiting}", m.phase)
}

const DRBD_CAPABILITIES: &str = "rox,rwx,roo,rwo,snap,blk,shared";
const LVM_CAPABILITIES: &str = "rox,rwx,roo,rwo,snap,blk";

/// `pool list` rows: cluster-wide sums, or one node's figures.
pub fn pool_rows(s: &ClusterState, name: &str, node: &str) -> Result<Vec<PoolRow>, Status> {
    let node_id = if node.is_empty() {
        None
    } else {
        Some(
            s.node_id(node)
                .ok_or_else(|| Status::not_found(format!("unknown node {:?}", echo(node))))?,
        )
    };
    let mut rows = Vec::new();
    for (section, values) in s.config.iter() {
        let Some(pool) = section.strip_prefix("pool#") else {
            continue;
        };
        if !name.is_empty() && pool != name {
            continue;
        }
        let vg = values.get("vg").cloned().unwrap_or_default();
        let ty = values.get("type").cloned().unwrap_or_default();
        let nodes: Vec<u64> = match node_id {
            Some(id) => vec![id],
            None => s.nodes.iter().filter(|(_, n)| !n.witness).map(|(id, _)| *id).collect(),
        };
        // Saturating: reports are bounded (`model::MAX_VG_BYTES`), but not their sum over
        // many nodes, nor what an older log holds.
        let size = nodes
            .iter()
            .filter_map(|id| s.vgs.get(id)?.get(&vg))
            .fold(0u64, |sum, b| sum.saturating_add(*b));
        let used = nodes
            .iter()
            .map(|id| s.vg_used(*id, &vg))
            .fold(0u64, u64::saturating_add);
        let count = s
            .pool_volumes(pool)
            .filter(|(_, a)| node_id.is_none_or(|id| a.nodes.contains(&id)))
            .count();
        rows.push(PoolRow {
            node: node.to_string(),
            name: pool.into(),
            capabilities: if ty == "drbd" {
                DRBD_CAPABILITIES
            } else {
                LVM_CAPABILITIES
            }
            .into(),
            r#type: ty,
            head: vg,
            volume_count: count as u64,
            size,
            used,
            free: size.saturating_sub(used),
        });
    }
    if !name.is_empty() && rows.is_empty() {
        return Err(Status::not_found(format!("no pool named {:?}", echo(name))));
    }
    Ok(rows)
}

/// `instance device list` rows: for each volume resource, the exposed and the base device.
pub fn device_rows(s: &ClusterState, p: &ObjectPath, o: &crate::model::Object) -> Vec<DeviceRow> {
    let mut rows = Vec::new();
    let mut push = |resource: &str, alloc: &crate::model::objects::Allocation| {
        let base = format!("/dev/{}/{}", alloc.vg, alloc.lv);
        let exposed = alloc
            .drbd
            .as_ref()
            .map_or(base.clone(), |d| format!("/dev/drbd{}", d.minor));
        for (role, device) in [("exposed", exposed), ("base", base)] {
            rows.push(DeviceRow {
                object: p.to_string(),
                resource: resource.into(),
                driver_group: "volume".into(),
                driver_name: String::new(),
                role: role.into(),
                device,
            });
        }
    };
    if let Some(a) = &o.alloc {
        push("volume", a);
    }
    for section in o.config.sections_of("volume") {
        let Ok(Some(name)) = s.eval(p, &o.config, &section.name, "name", None) else {
            continue;
        };
        if let Some(a) = s.objects.get(&p.volume(&name)).and_then(|v| v.alloc.as_ref()) {
            push(&section.name, a);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(phase: Phase, dual: bool, error: Option<&str>) -> Migration {
        Migration {
            id: 7,
            from: 1,
            to: 2,
            phase,
            error: error.map(Into::into),
            dual,
        }
    }

    #[test]
    fn the_pending_action_names_the_phase_and_who_acts_next() {
        let cases = [
            (switch(Phase::Stopping, false, None), false, "switch to n2: phase Stopping: waiting for n1 to stop the guests and demote"),
            (switch(Phase::Starting, false, None), false, "switch to n2: phase Starting: waiting for n2 to promote and start the guests"),
            (switch(Phase::Prepare, false, None), false, "live switch to n2: phase Prepare: waiting for n1 to check the guest runs there and n2's DRBD is Connected and UpToDate"),
            (switch(Phase::DualPrimary, true, None), false, "live switch to n2: phase DualPrimary: waiting for n2 to allow two primaries and promote"),
            (switch(Phase::Migrating, true, None), false, "live switch to n2: phase Migrating: waiting for n1 to live-migrate the guest"),
            (switch(Phase::Migrating, true, None), true, "live switch to n2: phase Migrating: waiting for n2 to commit Finalize (the guest runs there)"),
            (switch(Phase::Finalize, true, None), true, "live switch to n2: phase Finalize: waiting for n1 to demote, then n2 to end the switch"),
            (switch(Phase::Abort, true, Some("n2: DRBD not UpToDate")), false, "live switch to n2: phase Abort (n2: DRBD not UpToDate): waiting for n2 to stop what it has and demote, then n1 to end the switch"),
            (switch(Phase::Abort, false, Some("aborted by request")), false, "switch to n2: phase Abort (aborted by request): waiting for n1 to end the switch"),
        ];
        for (m, guest_on_target, want) in cases {
            assert_eq!(pending_action(&m, "n1", "n2", guest_on_target), want);
        }
    }

    #[test]
    fn pool_totals_saturate_instead_of_overflowing() {
        // Reports as large as an older version accepted, on two nodes: `pool list` sums them.
        let mut s = crate::model::objects_tests::nodes_with_vgs();
        for id in [1, 2] {
            s.vgs.insert(id, [("data".to_string(), u64::MAX - 1)].into());
        }
        s.config.insert(
            "pool#p".into(),
            [
                ("type".to_string(), "lvm".to_string()),
                ("vg".to_string(), "data".to_string()),
            ]
            .into(),
        );
        let rows = pool_rows(&s, "p", "").unwrap();
        assert_eq!((rows[0].size, rows[0].used, rows[0].free), (u64::MAX, 0, u64::MAX));
        let rows = pool_rows(&s, "p", "n1").unwrap();
        assert_eq!(rows[0].size, u64::MAX - 1);
    }

    #[test]
    fn errors_repeat_long_names_cut() {
        let s = crate::model::objects_tests::nodes_with_vgs();
        let long = "x".repeat(20_000);
        let e = pool_rows(&s, &long, "").unwrap_err();
        assert!(
            e.message().len() < 300 && e.message().contains("(20000 bytes)"),
            "{e:?}"
        );
        let e = pool_rows(&s, "", &long).unwrap_err();
        assert!(e.message().len() < 300, "{e:?}");
    }

    #[test]
    fn instance_status_carries_the_switch_and_every_frozen_node() {
        let mut s = ClusterState::default();
        for (id, name) in [(1, "n1"), (2, "n2")] {
            s.nodes.insert(
                id,
                crate::model::NodeInfo {
                    name: name.into(),
                    addr: format!("127.0.0.1:{id}"),
                    witness: false,
                    watchdog: false,
                    ssh_key: None,
                    cert: None,
                },
            );
        }
        s.frozen_nodes.insert(2);
        let p = ObjectPath::parse("demo/svc/kvm1").unwrap();
        s.services.insert(
            p.clone(),
            crate::model::ServiceState {
                provisioned: true,
                started: true,
                frozen: true,
                placement: Some(1),
                migration: Some(switch(Phase::Stopping, false, None)),
                ..Default::default()
            }
            .into(),
        );
        let r = instance_status(&s, &p);
        assert!(r.frozen);
        assert_eq!((r.migration_from.as_str(), r.migration_to.as_str()), ("n1", "n2"));
        assert_eq!(r.migration_phase, "Stopping");
        assert!(
            r.pending_action
                .starts_with("switch to n2: phase Stopping: waiting for n1"),
            "{}",
            r.pending_action
        );
    }
}
