//! What the log wants of one service on one node, read from the replicated state: its
//! volumes with their rendered DRBD resource files, whether it is provisioned here, and
//! whether this node holds it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::plan::{Desired, DesiredContainer, DesiredDrbd, DesiredMigration, DesiredVolume};
use crate::config::kind::parse_duration;
use crate::drivers::drbd::render::{self, TemplateData, TemplateNode, BUILTIN_TEMPLATE};
use crate::drivers::hypervisor::MigrationTarget;
use crate::model::objects::drbd_templates;
use crate::model::{ClusterState, NodeId, ObjectPath};

/// The local socket of this node's daemon, for the DRBD handlers (DRBD passes them no
/// `OMCTL_SERVER`): set once by `omd` before its applier starts.
static HANDLER_SOCKET: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Names this daemon's socket in `.Omctl`: `omctl --server unix:SOCKET`.
pub fn set_handler_socket(socket: &std::path::Path) {
    let _ = HANDLER_SOCKET.set(socket.to_path_buf());
}

/// Where the `omctl` of the `omd` at `exe` is: beside it (a build tree, `/usr/local/sbin`), or
/// in the `bin` beside its `sbin` (the package: `/usr/sbin/omd`, `/usr/bin/omctl`); the one
/// beside it when neither exists.
pub fn omctl_of(exe: &std::path::Path) -> std::path::PathBuf {
    let beside = exe.with_file_name("omctl");
    let bin = exe
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == "sbin"))
        .and_then(|sbin| sbin.parent())
        .map(|prefix| prefix.join("bin").join("omctl"));
    match bin {
        Some(bin) if !beside.exists() && bin.exists() => bin,
        _ => beside,
    }
}

/// `.Omctl` for DRBD templates: the running executable's (omd's) `omctl` (`omctl_of`), as a
/// shell word for DRBD's handlers, followed by `--server unix:SOCKET` when the daemon named its
/// socket; worked out once. An error when the path cannot be a handler's word; a warning is
/// logged if no omctl is there, since DRBD would find its fence-peer handler broken and keep
/// I/O frozen at every loss of a peer.
fn omctl() -> Result<&'static str, &'static str> {
    static OMCTL: OnceLock<Result<String, String>> = OnceLock::new();
    let r = OMCTL.get_or_init(|| {
        let path = std::env::current_exe()
            .map(|e| omctl_of(&e))
            .map_err(|e| format!("the path of omd itself is unknown ({e}), so omctl's is"))?;
        if !path.exists() {
            tracing::warn!(
                "{} does not exist: the DRBD fence-peer handlers of the built-in template need omctl beside omd \
                 (or in the bin beside its sbin)",
                path.display()
            );
        }
        let text = path
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
        let word = render::shell_word(text).ok_or_else(|| format!("{text:?} cannot be quoted for a DRBD handler"))?;
        match HANDLER_SOCKET.get() {
            None => Ok(word),
            Some(sock) => {
                let server = format!("unix:{}", sock.display());
                let server = render::shell_word(&server)
                    .ok_or_else(|| format!("{server:?} cannot be quoted for a DRBD handler"))?;
                Ok(format!("{word} --server {server}"))
            }
        }
    });
    r.as_deref().map_err(|e| e.as_str())
}

/// Where a live migration to node `name` at `host` goes: `migration.libvirt_uri` and
/// `migration.uri` from the cluster configuration, `{host}` replaced.
fn migration_target(state: &ClusterState, name: &str, host: &str) -> MigrationTarget {
    let get = |k: &str| crate::model::catalog::get(&state.config, k).ok().flatten();
    let fill = |t: String| t.replace("{host}", host);
    MigrationTarget {
        node: name.to_string(),
        libvirt_uri: fill(get("migration.libvirt_uri").unwrap_or_else(|| "qemu+tcp://{host}/system".into())),
        migration_uri: get("migration.uri").map(fill),
    }
}

/// Why the configured migration URIs may not be used, if so: a value an older version
/// accepted that the transport rules (`config::kind::check_migration_libvirt_uri`,
/// `check_migration_uri`) refuse now, kept by the log but never opened.
fn unusable_migration_uris(state: &ClusterState) -> Option<String> {
    use crate::config::kind::{check_migration_libvirt_uri, check_migration_uri};
    let get = |k: &str| crate::model::catalog::get(&state.config, k).ok().flatten();
    let refused = |key: &str, rule: fn(&str) -> Result<(), String>| {
        let value = get(key)?;
        rule(&value)
            .err()
            .map(|why| format!("{key} cannot be used: {why}; set it again"))
    };
    refused("migration.libvirt_uri", check_migration_libvirt_uri)
        .or_else(|| refused("migration.uri", check_migration_uri))
}

/// The host part of a node's `HOST:PORT` cluster address, which DRBD uses too.
fn host(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// The desired state of `path` on node `me`, and per resource why some part of it could not
/// be worked out (a template that does not render): those resources are left alone.
/// Without a valid lease (`leased` false) the node holds nothing: it is fenced.
/// `may_take`: the node may promote and start guests (its watchdog is armed, or it has none).
/// `read` then `Unrendered::render`; the applier's loop calls them apart, so that no
/// template renders under the state's lock.
pub fn desired(
    state: &ClusterState,
    me: NodeId,
    path: &ObjectPath,
    leased: bool,
    may_take: bool,
) -> (Desired, BTreeMap<String, String>) {
    read(state, me, path, leased, may_take).render()
}

/// The desired state as read from the state, its DRBD resource files not yet rendered.
pub struct Unrendered {
    desired: Desired,
    volumes: Vec<(DesiredVolume, Option<ToRender>)>,
}

/// A DRBD resource file to render: the template (or why there is none) and its data.
struct ToRender {
    template: Result<String, String>,
    resource: String,
    minor: u32,
    data: TemplateData,
}

impl Unrendered {
    /// The desired state, its DRBD resource files not yet rendered.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Renders the DRBD resource files (each within `render::Budget::DEFAULT`), leaving out
    /// the volumes whose file cannot be made, with why.
    pub fn render(self) -> (Desired, BTreeMap<String, String>) {
        let mut out = self.desired;
        let mut errors = BTreeMap::new();
        for (mut volume, to_render) in self.volumes {
            if let Some(r) = to_render {
                let rendered = match (r.template, omctl()) {
                    (Err(e), _) => Err(e),
                    (_, Err(e)) => Err(format!("omctl for the DRBD handlers: {e}")),
                    (Ok(t), Ok(omctl)) => render::render_with(&t, &r.data, omctl).map_err(|e| e.to_string()),
                };
                match rendered.and_then(|c| render::check(&c, &r.data).map(|_| c).map_err(|e| e.to_string())) {
                    Ok(config) => {
                        volume.drbd = Some(DesiredDrbd {
                            resource: r.resource,
                            minor: r.minor,
                            config,
                            data: r.data,
                        })
                    }
                    Err(e) => {
                        errors.insert(volume.rid, format!("DRBD resource file: {e}"));
                        continue;
                    }
                }
            }
            out.volumes.push(volume);
        }
        (out, errors)
    }
}

/// `desired`'s reading of the state: cheap, and renders nothing.
pub fn read(state: &ClusterState, me: NodeId, path: &ObjectPath, leased: bool, may_take: bool) -> Unrendered {
    let svc = state.services.get(path).cloned().unwrap_or_default();
    let mut volumes = vec![];
    // The source of a switch in phase Stopping releases the service it still holds.
    let stopping = svc
        .migration
        .as_ref()
        .is_some_and(|m| m.phase == crate::model::Phase::Stopping && m.from == me);
    let mut out = Desired {
        provisioned: svc.provisioned,
        active: svc.provisioned && svc.started && svc.placement == Some(me) && leased && !stopping,
        // Whatever runs here without a lease goes at once, a migrated guest included.
        fenced: svc.provisioned && !leased,
        gone: svc
            .fenced
            .iter()
            .filter_map(|id| state.nodes.get(id).map(|n| n.name.clone()))
            .collect(),
        volumes: vec![],
        containers: vec![],
        may_take,
        migration: svc
            .migration
            .as_ref()
            .filter(|m| leased && (m.from == me || m.to == me))
            .and_then(|m| {
                let source = m.from == me;
                let peer = state.nodes.get(if source { &m.to } else { &m.from })?;
                Some(DesiredMigration {
                    id: m.id,
                    phase: m.phase,
                    dual: m.dual,
                    source,
                    peer: migration_target(state, &peer.name, host(&peer.addr)),
                    unusable: unusable_migration_uris(state),
                })
            }),
    };
    let Some(obj) = state.objects.get(path) else {
        return Unrendered { desired: out, volumes };
    };
    for section in obj.config.sections_of("container") {
        let eval = |kw: &str| state.eval(path, &obj.config, &section.name, kw, None).ok().flatten();
        if eval("type").as_deref() != Some("kvm") {
            continue;
        }
        let Some(domain) = eval("name") else { continue };
        out.containers.push(DesiredContainer {
            rid: section.name.to_string(),
            xml: svc.domains.get(&domain).cloned(),
            domain,
            stop_timeout_secs: eval("stop_timeout")
                .and_then(|t| parse_duration(&t).ok())
                .unwrap_or(120),
        });
    }
    for section in obj.config.sections_of("volume") {
        let Ok(Some(name)) = state.eval(path, &obj.config, &section.name, "name", None) else {
            continue;
        };
        let vol = path.volume(&name);
        let Some(alloc) = state.objects.get(&vol).and_then(|v| v.alloc.clone()) else {
            continue;
        };
        if !alloc.nodes.contains(&me) {
            continue;
        }
        let to_render = alloc.drbd.as_ref().map(|d| {
            let pool = state.config.get(&format!("pool#{}", alloc.pool));
            let template = match pool.and_then(|p| p.get("template")) {
                None => Some(BUILTIN_TEMPLATE.to_string()),
                Some(t) => state
                    .objects
                    .get(&drbd_templates())
                    .and_then(|o| o.keys.get(t))
                    .and_then(|b| String::from_utf8(b.clone()).ok()),
            };
            ToRender {
                template: template
                    .ok_or_else(|| "the pool's template is missing from system/cfg/drbd or not UTF-8".to_string()),
                resource: alloc.lv.clone(),
                minor: d.minor,
                data: TemplateData {
                    name: alloc.lv.clone(),
                    nodes: d
                        .node_ids
                        .iter()
                        .filter_map(|(id, drbd_id)| {
                            let n = state.nodes.get(id)?;
                            Some(TemplateNode {
                                name: n.name.clone(),
                                addr: format!("ipv4 {}:{}", host(&n.addr), d.port),
                                device: format!("/dev/drbd{}", d.minor),
                                disk: format!("/dev/{}/{}", alloc.vg, alloc.lv),
                                node_id: *drbd_id,
                            })
                        })
                        .collect(),
                },
            }
        });
        let volume = DesiredVolume {
            rid: section.name.to_string(),
            volume: vol.to_string(),
            vg: alloc.vg.clone(),
            lv: alloc.lv.clone(),
            size: alloc.size,
            drbd: None,
        };
        volumes.push((volume, to_render));
    }
    Unrendered { desired: out, volumes }
}

/// The data a DRBD template is rendered with when it is written (by the API, within the
/// same budget): a resource named as the cluster names volumes, on every data node of the
/// cluster (the most any resource can have), at least two (then `node1`, `node2`).
pub fn sample(state: &ClusterState) -> TemplateData {
    let lv = crate::model::objects::DrbdResource {
        name: "sample".into(),
        namespace: "system".into(),
        cluster: state.cluster_name(),
    }
    .to_string();
    let mut hosts: Vec<(String, String)> = state
        .nodes
        .values()
        .filter(|n| !n.witness)
        .map(|n| (n.name.clone(), host(&n.addr).to_string()))
        .collect();
    for i in hosts.len()..2 {
        hosts.push((format!("node{}", i + 1), format!("192.0.2.{}", i + 1)));
    }
    let nodes = hosts
        .into_iter()
        .zip(0..)
        .map(|((name, host), node_id)| TemplateNode {
            name,
            addr: format!("ipv4 {host}:{}", crate::model::objects::DRBD_BASE_PORT),
            device: "/dev/drbd0".into(),
            disk: format!("/dev/data/{lv}"),
            node_id,
        })
        .collect();
    TemplateData { name: lv, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handlers_use_the_omctl_beside_the_running_executable() {
        let beside = std::env::current_exe().unwrap().with_file_name("omctl");
        let word = omctl().unwrap();
        assert_eq!(word, render::shell_word(beside.to_str().unwrap()).unwrap());
        assert!(word.trim_start_matches('\'').starts_with('/'), "absolute: {word}");
    }

    #[test]
    fn a_packaged_omd_finds_omctl_in_the_bin_beside_its_sbin() {
        let root = tempfile::tempdir().unwrap();
        let (sbin, bin) = (root.path().join("usr/sbin"), root.path().join("usr/bin"));
        std::fs::create_dir_all(&sbin).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let omd = sbin.join("omd");
        // Neither there: the one beside omd, which the warning names.
        assert_eq!(omctl_of(&omd), sbin.join("omctl"));
        std::fs::write(bin.join("omctl"), "").unwrap();
        assert_eq!(omctl_of(&omd), bin.join("omctl"), "the package's layout");
        std::fs::write(sbin.join("omctl"), "").unwrap();
        assert_eq!(omctl_of(&omd), sbin.join("omctl"), "beside omd comes first");
        // A build tree has no sbin: beside it only.
        let tree = root.path().join("target/debug");
        assert_eq!(omctl_of(&tree.join("omd")), tree.join("omctl"));
    }

    #[test]
    fn migration_targets_come_from_the_cluster_config() {
        let mut s = ClusterState::default();
        let t = migration_target(&s, "n2", "10.0.0.2");
        assert_eq!(
            (t.libvirt_uri.as_str(), t.migration_uri),
            ("qemu+tcp://10.0.0.2/system", None)
        );
        let kv = |k: &str, v: &str| (crate::model::ConfigKey::parse(k).unwrap().0, v.to_string());
        let r = s.apply(&crate::model::Command::UpdateConfig {
            set: vec![
                kv("migration.libvirt_uri", "qemu+ssh://root@{host}/system"),
                kv("migration.uri", "tcp://{host}:49152"),
            ],
            unset: vec![],
        });
        assert_eq!(r, crate::model::Response::Done);
        let t = migration_target(&s, "n2", "10.0.0.2");
        assert_eq!(t.libvirt_uri, "qemu+ssh://root@10.0.0.2/system");
        assert_eq!(t.migration_uri.as_deref(), Some("tcp://10.0.0.2:49152"));
    }

    #[test]
    fn migration_uris_an_older_version_accepted_are_never_used() {
        let mut s = ClusterState::default();
        assert_eq!(unusable_migration_uris(&s), None, "the default");
        let kv = |k: &str, v: &str| (crate::model::ConfigKey::parse(k).unwrap().0, v.to_string());
        // As a log written before the transports were checked may hold it.
        let r = s.apply(&crate::model::Command::UpdateConfig {
            set: vec![kv("migration.libvirt_uri", "qemu+ext:///system?command=/tmp/x")],
            unset: vec![],
        });
        assert_eq!(r, crate::model::Response::Done);
        let why = unusable_migration_uris(&s).unwrap();
        assert!(
            why.contains("migration.libvirt_uri") && why.contains("qemu+ext"),
            "{why}"
        );
        let r = s.apply(&crate::model::Command::UpdateConfig {
            set: vec![
                kv("migration.libvirt_uri", "qemu+tls://{host}/system"),
                kv("migration.uri", "exec:/bin/sh"),
            ],
            unset: vec![],
        });
        assert_eq!(r, crate::model::Response::Done);
        assert!(unusable_migration_uris(&s).unwrap().contains("migration.uri"));
    }

    #[test]
    fn templates_are_checked_on_every_data_node_or_two() {
        let mut s = ClusterState::default();
        let two = sample(&s);
        assert_eq!(
            two.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["node1", "node2"]
        );
        let add = |s: &mut ClusterState, id, name: &str, witness| {
            let info = crate::model::NodeInfo {
                name: name.into(),
                addr: format!("10.0.0.{id}:1215"),
                witness,
                watchdog: false,
                ssh_key: None,
                cert: None,
            };
            s.nodes.insert(id, info);
        };
        for (id, name) in [(1, "n1"), (2, "n2"), (3, "n3")] {
            add(&mut s, id, name, false);
        }
        add(&mut s, 4, "w", true);
        let d = sample(&s);
        assert_eq!(d.name, format!("sample.system.vol.{}", s.cluster_name()));
        let nodes: Vec<_> = d
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.addr.as_str(), n.node_id))
            .collect();
        assert_eq!(
            nodes,
            [
                ("n1", "ipv4 10.0.0.1:7289", 0),
                ("n2", "ipv4 10.0.0.2:7289", 1),
                ("n3", "ipv4 10.0.0.3:7289", 2)
            ]
        );
        render::check(&render::render(BUILTIN_TEMPLATE, &d).unwrap(), &d).unwrap();
    }

    #[test]
    fn hosts() {
        assert_eq!(host("10.30.0.11:1215"), "10.30.0.11");
        assert_eq!(host("[::1]:1215"), "::1");
    }
}
