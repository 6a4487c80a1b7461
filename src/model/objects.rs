//! Objects in the replicated state: services, volumes, config maps, secrets, users; their
//! configuration checks; the volumes a service's `volume#` sections create; DRBD minors, ports
//! and node ids allocated here, inside `apply`, so they are identical on every node.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::path::{ObjectKind, ObjectPath};
use super::{ClusterState, NodeId};
use crate::config::echo::echo;
use crate::config::ini::{Ini, DEFAULT};
use crate::config::keywords::{self, KeywordError};
use crate::config::kind::{check_line, check_name, format_size, parse_bool, parse_size, Kind};
use crate::config::refs::{self, Context, RefError};

/// The first DRBD port, as in the tutorial's firewall notes.
pub const DRBD_BASE_PORT: u16 = 7289;
/// The highest DRBD minor number (DRBD 9 allows 2^20 minors).
pub const DRBD_MAX_MINOR: u32 = (1 << 20) - 1;
/// The largest key a config map or secret holds.
pub const MAX_KEY_BYTES: usize = 1 << 20;
/// The config map holding DRBD resource file templates.
pub const DRBD_TEMPLATES: &str = "system/cfg/drbd";

/// The path of `DRBD_TEMPLATES`.
pub fn drbd_templates() -> ObjectPath {
    ObjectPath::new(super::path::SYSTEM, ObjectKind::Cfg, "drbd")
}

/// One object: its configuration, its keys (config maps and secrets), and for volumes what
/// was allocated for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub config: Ini,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "byte_values")]
    pub keys: BTreeMap<String, Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<Allocation>,
}

/// Serde for a map of byte strings: each value written as bytes (`serde_bytes`), which a
/// binary encoding keeps as they are and JSON writes as it always did, an array of numbers.
mod byte_values {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, Bytes::new(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let map = BTreeMap::<String, ByteBuf>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

impl Object {
    /// The service a volume belongs to: its `owner` keyword.
    pub fn owner(&self) -> Option<ObjectPath> {
        ObjectPath::parse(self.config.get(DEFAULT, "owner")?).ok()
    }
}

/// A volume's storage, allocated from a pool on each of its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub pool: String,
    pub vg: String,
    pub size: u64,
    /// The logical volume (and DRBD resource) name: `NAME.NAMESPACE.vol.CLUSTER`.
    pub lv: String,
    pub nodes: Vec<NodeId>,
    pub drbd: Option<DrbdAllocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrbdAllocation {
    pub minor: u32,
    pub port: u16,
    /// DRBD `node-id` of each node, in `nodes` order.
    pub node_ids: Vec<(NodeId, u32)>,
}

/// `SECTION.KEYWORD[@NODE]` of an object; a bare keyword is in DEFAULT.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub section: String,
    /// The keyword as stored, with its `@node` scope if any.
    pub keyword: String,
}

impl ObjectKey {
    pub fn parse(s: &str) -> Result<ObjectKey, ObjectError> {
        let (section, keyword) = match s.rsplit_once('.') {
            // A dot may sit in a scope's node name? No: node names have no dots.
            Some((sec, kw)) => (sec, kw),
            None => (DEFAULT, s),
        };
        if section.is_empty() || keyword.is_empty() {
            return Err(ObjectError::BadKey(s.into()));
        }
        Ok(ObjectKey {
            section: section.into(),
            keyword: keyword.into(),
        })
    }

    /// The keyword without its scope, and the scope.
    pub fn split_scope(&self) -> (&str, Option<&str>) {
        match self.keyword.split_once('@') {
            Some((k, node)) => (k, Some(node)),
            None => (&self.keyword, None),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.section, self.keyword)
    }
}

/// How a key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyMode {
    /// A new key: refused if it exists.
    Add,
    /// An existing key: refused if it does not.
    Change,
}

/// Why an object change is refused. Each names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ObjectError {
    #[error("{:?} is not a keyword: expected [SECTION.]KEYWORD[@NODE], e.g. volume#data.size", echo(.0))]
    BadKey(String),
    #[error("{path}: {source}")]
    Keyword { path: String, source: KeywordError },
    #[error("{path}: bad value {:?} for {}: {why}", echo(.value), echo(.key))]
    Value {
        path: String,
        key: String,
        value: String,
        why: String,
    },
    #[error("{path}: {}: {source}", echo(.key))]
    Reference {
        path: String,
        key: String,
        source: RefError,
    },
    #[error("{path}: {}: unknown node {:?} (nodes: {known})", echo(.key), echo(.node))]
    UnknownNode {
        path: String,
        key: String,
        node: String,
        known: String,
    },
    #[error("{path}: section [{}] needs keyword {keyword}", echo(.section))]
    Missing {
        path: String,
        section: String,
        keyword: String,
    },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}: volumes are created by a service's volume section, not directly")]
    DirectVolume(String),
    #[error("{path}: {what} is used by {user}")]
    InUse { path: String, what: String, user: String },
    #[error("{path}: [{section}]: no pool: set {section}.pool (pools: {pools})")]
    NoPool {
        path: String,
        section: String,
        pools: String,
    },
    #[error("{path}: [{section}]: unknown pool {:?} (pools: {pools})", echo(.pool))]
    UnknownPool {
        path: String,
        section: String,
        pool: String,
        pools: String,
    },
    #[error("pool {pool}: {why}")]
    Pool { pool: String, why: String },
    #[error("pool {pool} is out of space on {node}: {need} needed, {free} free")]
    OutOfSpace {
        pool: String,
        node: String,
        need: String,
        free: String,
    },
    #[error("{path}: {node} is a witness: it never hosts services")]
    Witness { path: String, node: String },
    #[error("{path}: {why}")]
    Volume { path: String, why: String },
    #[error("{0} is provisioned: unprovision it before deleting it")]
    Provisioned(String),
    #[error("{0}: only config maps (cfg) and secrets (sec) hold keys")]
    NoKeys(String),
    #[error("{path}: key {:?} {why}", echo(.key))]
    Key { path: String, key: String, why: String },
    #[error("{path}: {why}")]
    TooLarge { path: String, why: String },
    #[error("{path}: {why}")]
    Unreadable { path: String, why: String },
    #[error("the cluster config refers to {key} of {DRBD_TEMPLATES}: {why}")]
    Template { key: String, why: String },
}

/// Totals derived from the volumes' allocations: bytes used per (node, volume group), DRBD
/// minors and ports in use. Kept beside the state so that planning a create does not scan
/// every object; derived from `objects` alone, so never serialized and rebuilt when missing
/// (after a snapshot is loaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocIndex {
    used: BTreeMap<(NodeId, String), u64>,
    minors: Runs,
    pub(super) ports: Runs,
}

/// A set of numbers kept as runs of consecutive ones (first -> last), so that the lowest
/// number missing from it is found in logarithmic time: minors and ports are allocated densely,
/// and walking every one in use made each create cost as much as the volumes already there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs(BTreeMap<u32, u32>);

impl Runs {
    /// The run holding `v`, as (first, last).
    fn run_of(&self, v: u32) -> Option<(u32, u32)> {
        self.0
            .range(..=v)
            .next_back()
            .filter(|(_, last)| **last >= v)
            .map(|(first, last)| (*first, *last))
    }

    pub fn contains(&self, v: u32) -> bool {
        self.run_of(v).is_some()
    }

    pub fn insert(&mut self, v: u32) {
        if self.contains(v) {
            return;
        }
        let mut first = v;
        let mut last = v;
        // Joins the run ending just below, and the one starting just above.
        if let Some((f, l)) = v.checked_sub(1).and_then(|below| self.run_of(below)) {
            debug_assert_eq!(l + 1, v);
            first = f;
        }
        if let Some(above) = v.checked_add(1) {
            if let Some(l) = self.0.remove(&above) {
                last = l;
            }
        }
        self.0.insert(first, last);
    }

    pub fn remove(&mut self, v: u32) {
        let Some((first, last)) = self.run_of(v) else {
            return;
        };
        self.0.remove(&first);
        if first < v {
            self.0.insert(first, v - 1);
        }
        if v < last {
            self.0.insert(v + 1, last);
        }
    }

    /// The lowest number from `from` not in the set; `None` when none is left below `u32::MAX`.
    fn first_missing(&self, from: u32) -> Option<u32> {
        match self.run_of(from) {
            Some((_, last)) => last.checked_add(1),
            None => Some(from),
        }
    }
}

impl Extend<u32> for Runs {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, iter: I) {
        for v in iter {
            self.insert(v);
        }
    }
}

impl FromIterator<u32> for Runs {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Runs {
        let mut runs = Runs::default();
        runs.extend(iter);
        runs
    }
}

impl AllocIndex {
    pub fn build(objects: &BTreeMap<ObjectPath, Arc<Object>>) -> AllocIndex {
        let mut index = AllocIndex::default();
        for a in objects.values().filter_map(|o| o.alloc.as_ref()) {
            index.add(a);
        }
        index
    }

    fn add(&mut self, a: &Allocation) {
        for n in &a.nodes {
            let used = self.used.entry((*n, a.vg.clone())).or_default();
            *used = used.saturating_add(a.size);
        }
        if let Some(d) = &a.drbd {
            self.minors.insert(d.minor);
            self.ports.insert(u32::from(d.port));
        }
    }

    fn remove(&mut self, a: &Allocation) {
        for n in &a.nodes {
            let key = (*n, a.vg.clone());
            if let Some(u) = self.used.get_mut(&key) {
                *u = u.saturating_sub(a.size);
                if *u == 0 {
                    self.used.remove(&key);
                }
            }
        }
        if let Some(d) = &a.drbd {
            self.minors.remove(d.minor);
            self.ports.remove(u32::from(d.port));
        }
    }
}

/// The optional index inside `ClusterState`: equal whatever it holds, since it is derived.
#[derive(Debug, Clone, Default)]
pub struct IndexCache(Option<AllocIndex>);

impl PartialEq for IndexCache {
    fn eq(&self, _: &IndexCache) -> bool {
        true
    }
}

impl Eq for IndexCache {}

/// A deterministic id for objects the cluster creates itself (volumes).
pub fn derived_uuid(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    uuid_from(h[..16].try_into().expect("16 bytes"), 5)
}

/// A UUID of `version` (4: random, 5: name-based) from 16 bytes, in its text form.
pub fn uuid_from(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl ClusterState {
    /// Names of the nodes that may host services (witnesses excluded), by node id.
    pub fn data_nodes(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.witness)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The reference context of `path`, for `node` if given.
    pub fn ref_context<'a>(
        &'a self,
        path: &'a ObjectPath,
        node: Option<&'a str>,
        nodes: &'a [String],
        cluster: &'a str,
    ) -> Context<'a> {
        Context {
            name: &path.name,
            namespace: &path.namespace,
            kind: path.kind.as_str(),
            nodename: node,
            clusternodes: nodes,
            clustername: cluster,
        }
    }

    /// Checks every section and keyword of `config` for an object at `path`.
    pub fn check_config(&self, path: &ObjectPath, config: &Ini, allow_readonly: bool) -> Result<(), ObjectError> {
        let p = path.to_string();
        let node_names: Vec<String> = self.nodes.values().map(|n| n.name.clone()).collect();
        for section in config.sections() {
            for (kw, value) in &section.entries {
                let key = ObjectKey {
                    section: section.name.to_string(),
                    keyword: kw.to_string(),
                };
                let (name, scope) = key.split_scope();
                let def = match keywords::lookup(path.kind, &section.name, name) {
                    Ok(def) => def,
                    // Refused before the log (`check_retired`, from `ClusterState::check`);
                    // in `apply`, an entry written before the keyword was retired applies
                    // as it always did (kept, read by nothing), so replaying an old log
                    // gives every node the same state.
                    Err(KeywordError::Retired(..)) => continue,
                    Err(source) => {
                        return Err(ObjectError::Keyword {
                            path: p.clone(),
                            source,
                        })
                    }
                };
                if def.readonly && !allow_readonly {
                    return Err(ObjectError::Keyword {
                        path: p.clone(),
                        source: KeywordError::Readonly(key.to_string()),
                    });
                }
                if let Some(node) = scope {
                    if !node_names.iter().any(|n| n == node) {
                        return Err(ObjectError::UnknownNode {
                            path: p.clone(),
                            key: key.to_string(),
                            node: node.into(),
                            known: node_names.join(", "),
                        });
                    }
                }
                let refs = refs::references(value).map_err(|source| ObjectError::Reference {
                    path: p.clone(),
                    key: key.to_string(),
                    source,
                })?;
                if refs.is_empty() || def.kind == Kind::Nodes {
                    def.kind.check(value).map_err(|why| ObjectError::Value {
                        path: p.clone(),
                        key: key.to_string(),
                        value: value.to_string(),
                        why,
                    })?;
                }
                if def.kind == Kind::Nodes {
                    for n in value.split_whitespace().filter(|n| !n.starts_with('{')) {
                        if !node_names.iter().any(|k| k == n) {
                            return Err(ObjectError::UnknownNode {
                                path: p.clone(),
                                key: key.to_string(),
                                node: n.into(),
                                known: node_names.join(", "),
                            });
                        }
                    }
                }
            }
            for def in keywords::CATALOG.iter().filter(|k| {
                k.required && k.section == keywords::section_type(&section.name) && k.kinds.contains(&path.kind)
            }) {
                if config.get(&section.name, def.name).is_none() {
                    return Err(ObjectError::Missing {
                        path: p.clone(),
                        section: section.name.to_string(),
                        keyword: def.name.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Evaluated value of `section.keyword` of `path`'s config, or its catalog default.
    pub fn eval(
        &self,
        path: &ObjectPath,
        config: &Ini,
        section: &str,
        keyword: &str,
        node: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        let scoped = node.and_then(|n| config.get(section, &format!("{keyword}@{n}")));
        let raw = scoped
            .or_else(|| config.get(section, keyword))
            .map(str::to_string)
            .or_else(|| {
                keywords::lookup(path.kind, section, keyword)
                    .ok()
                    .and_then(|k| k.default.map(str::to_string))
            });
        let Some(raw) = raw else { return Ok(None) };
        let nodes = self.data_nodes();
        let cluster = self.cluster_name();
        let ctx = self.ref_context(path, node, &nodes, &cluster);
        refs::evaluate(&raw, &ctx)
            .map(Some)
            .map_err(|source| ObjectError::Reference {
                path: path.to_string(),
                key: format!("{section}.{keyword}"),
                source,
            })
    }

    /// The allocation index, built on the fly if the state has none yet.
    fn alloc_index(&self) -> Cow<'_, AllocIndex> {
        match &self.index.0 {
            Some(i) => Cow::Borrowed(i),
            None => Cow::Owned(AllocIndex::build(&self.objects)),
        }
    }

    /// Whether the kept index is the one the objects give (or there is none yet).
    #[cfg(test)]
    pub(super) fn index_is_consistent(&self) -> bool {
        self.index
            .0
            .as_ref()
            .is_none_or(|i| *i == AllocIndex::build(&self.objects))
    }

    /// The kept allocation index, built first if missing: tests fill it to exhaustion.
    #[cfg(test)]
    pub(super) fn index_mut(&mut self) -> &mut AllocIndex {
        self.ensure_index();
        self.index.0.as_mut().expect("just built")
    }

    /// Builds the allocation index if the state has none (after a snapshot was loaded).
    pub(super) fn ensure_index(&mut self) {
        if self.index.0.is_none() {
            self.index.0 = Some(AllocIndex::build(&self.objects));
        }
    }

    /// Adds or replaces objects, keeping the allocation index in step.
    pub(super) fn insert_objects(&mut self, objects: Vec<(ObjectPath, Object)>) {
        self.ensure_index();
        for (key, mut object) in objects {
            object.config.shrink_to_fit();
            let index = self.index.0.as_mut().expect("ensured");
            if let Some(a) = &object.alloc {
                index.add(a);
            }
            if let Some(old) = self.objects.insert(key, Arc::new(object)).and_then(|o| o.alloc.clone()) {
                index.remove(&old);
            }
        }
    }

    /// Removes an object, keeping the allocation index in step.
    pub(super) fn remove_object(&mut self, key: &ObjectPath) {
        self.ensure_index();
        if let Some(a) = self.objects.remove(key).and_then(|o| o.alloc.clone()) {
            self.index.0.as_mut().expect("ensured").remove(&a);
        }
    }

    /// Bytes allocated on `node` in `vg` by every volume.
    pub fn vg_used(&self, node: NodeId, vg: &str) -> u64 {
        self.alloc_index()
            .used
            .get(&(node, vg.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The volumes allocated from `pool`.
    pub fn pool_volumes(&self, pool: &str) -> impl Iterator<Item = (&ObjectPath, &Allocation)> + '_ {
        let pool = pool.to_string();
        self.objects
            .iter()
            .filter_map(move |(p, o)| o.alloc.as_ref().filter(|a| a.pool == pool).map(|a| (p, a)))
    }

    fn pool_names(&self) -> String {
        self.config
            .keys()
            .filter_map(|s| s.strip_prefix("pool#"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The volume objects a service's configuration needs that do not exist yet, allocated.
    fn plan_volumes(&self, svc: &ObjectPath, config: &Ini) -> Result<Vec<(ObjectPath, Object)>, ObjectError> {
        let p = svc.to_string();
        let mut out: Vec<(ObjectPath, Object)> = Vec::new();
        let index = self.alloc_index();
        // Minors and ports this plan takes, beside those already in use.
        let mut taken = Taken::default();
        for section in config.sections_of("volume") {
            let s = &section.name;
            let Some(size_raw) = self.eval(svc, config, s, "size", None)? else {
                continue;
            };
            let size = parse_size(&size_raw).map_err(|why| ObjectError::Value {
                path: p.clone(),
                key: format!("{s}.size"),
                value: size_raw.clone(),
                why,
            })?;
            let name = self.eval(svc, config, s, "name", None)?.unwrap_or_default();
            check_name(&name).map_err(|why| ObjectError::Value {
                path: p.clone(),
                key: format!("{s}.name"),
                value: name.clone(),
                why,
            })?;
            let vol = svc.volume(&name);
            let (pool, pool_cfg) = self.volume_pool(svc, config, s)?;
            let existing = self
                .objects
                .get(&vol)
                .map(|o| &**o)
                .or_else(|| out.iter().find(|(k, _)| *k == vol).map(|(_, o)| o));
            if let Some(existing) = existing {
                check_existing_volume(&p, &vol, existing, s, size, &pool)?;
                continue;
            }
            let vg = pool_cfg.get("vg").cloned().ok_or_else(|| ObjectError::Pool {
                pool: pool.clone(),
                why: "has no vg: set pool#NAME.vg".into(),
            })?;
            let is_drbd = pool_cfg.get("type").map(String::as_str) == Some("drbd");
            let nodes = self.volume_nodes(svc, config, s)?;
            self.check_capacity(&pool, &vg, &nodes, size, &index, &out)?;
            let lv = DrbdResource {
                name: name.clone(),
                namespace: svc.namespace.clone(),
                cluster: self.cluster_name(),
            }
            .to_string();
            let drbd = match is_drbd {
                false => None,
                true => Some(taken.allocate(&pool, &nodes, &index)?),
            };
            let alloc = Allocation {
                pool,
                vg,
                size,
                lv,
                nodes,
                drbd,
            };
            let config = self.volume_config(&p, config, &vol, &alloc);
            out.push((
                vol,
                Object {
                    config,
                    keys: BTreeMap::new(),
                    alloc: Some(alloc),
                },
            ));
        }
        Ok(out)
    }

    /// The pool of volume section `s` (its `pool`, else the first DRBD pool for a `shared`
    /// volume) and the pool's configuration.
    fn volume_pool(
        &self,
        svc: &ObjectPath,
        config: &Ini,
        s: &str,
    ) -> Result<(String, &BTreeMap<String, String>), ObjectError> {
        let p = svc.to_string();
        let shared = parse_bool(&self.eval(svc, config, s, "shared", None)?.unwrap_or_default()).unwrap_or(false);
        let no_pool = || ObjectError::NoPool {
            path: p.clone(),
            section: s.to_string(),
            pools: self.pool_names(),
        };
        let pool = match self.eval(svc, config, s, "pool", None)? {
            Some(pool) => pool,
            None if shared => self
                .config
                .iter()
                .find(|(sec, v)| sec.starts_with("pool#") && v.get("type").map(String::as_str) == Some("drbd"))
                .map(|(sec, _)| sec["pool#".len()..].to_string())
                .ok_or_else(no_pool)?,
            None => return Err(no_pool()),
        };
        let pool_cfg = self
            .config
            .get(&format!("pool#{pool}"))
            .ok_or_else(|| ObjectError::UnknownPool {
                path: p.clone(),
                section: s.to_string(),
                pool: pool.clone(),
                pools: self.pool_names(),
            })?;
        Ok((pool, pool_cfg))
    }

    /// The data nodes a service's volume (section `s`) is allocated on: the service's nodes, in
    /// order, witnesses refused.
    fn volume_nodes(&self, svc: &ObjectPath, config: &Ini, s: &str) -> Result<Vec<NodeId>, ObjectError> {
        let p = svc.to_string();
        let names = self.eval(svc, config, DEFAULT, "nodes", None)?.unwrap_or_default();
        let mut nodes = Vec::new();
        for n in names.split_whitespace() {
            let (id, info) = self
                .nodes
                .iter()
                .find(|(_, i)| i.name == n)
                .ok_or_else(|| ObjectError::UnknownNode {
                    path: p.clone(),
                    key: "nodes".into(),
                    node: n.into(),
                    known: self.data_nodes().join(", "),
                })?;
            if info.witness {
                return Err(ObjectError::Witness {
                    path: p.clone(),
                    node: n.into(),
                });
            }
            if !nodes.contains(id) {
                nodes.push(*id);
            }
        }
        if nodes.is_empty() {
            return Err(ObjectError::Volume {
                path: p,
                why: format!("{s}: the service has no nodes to allocate on"),
            });
        }
        Ok(nodes)
    }

    /// Refuses a volume of `size` bytes in volume group `vg` when one of `nodes` reported no
    /// such group or has less free than that, counting what `planned` takes already.
    fn check_capacity(
        &self,
        pool: &str,
        vg: &str,
        nodes: &[NodeId],
        size: u64,
        index: &AllocIndex,
        planned: &[(ObjectPath, Object)],
    ) -> Result<(), ObjectError> {
        for id in nodes {
            let node = &self.nodes[id].name;
            let reported = self
                .vgs
                .get(id)
                .and_then(|v| v.get(vg))
                .copied()
                .ok_or_else(|| ObjectError::Pool {
                    pool: pool.to_string(),
                    why: format!("node {node} has not reported a volume group {vg}"),
                })?;
            let planned = planned
                .iter()
                .filter_map(|(_, o)| o.alloc.as_ref())
                .filter(|a| a.vg == vg && a.nodes.contains(id))
                .fold(0u64, |sum, a| sum.saturating_add(a.size));
            let used = index.used.get(&(*id, vg.to_string())).copied().unwrap_or(0);
            let free = reported.saturating_sub(used.saturating_add(planned));
            if size > free {
                return Err(ObjectError::OutOfSpace {
                    pool: pool.to_string(),
                    node: node.clone(),
                    need: format_size(size),
                    free: format_size(free),
                });
            }
        }
        Ok(())
    }

    /// The configuration of a new volume object at `vol_key`, owned by service `owner`.
    fn volume_config(&self, owner: &str, svc_config: &Ini, vol: &ObjectPath, a: &Allocation) -> Ini {
        let mut vc = Ini::default();
        let svc_id = svc_config.get(DEFAULT, "id").unwrap_or_default();
        let node_names: Vec<&str> = a.nodes.iter().map(|id| self.nodes[id].name.as_str()).collect();
        let size_text = format_size(a.size).to_uppercase();
        let entries: Vec<(&str, &str, String)> = vec![
            (DEFAULT, "id", derived_uuid(&format!("{svc_id}/{vol}"))),
            (DEFAULT, "owner", owner.to_string()),
            (DEFAULT, "nodes", node_names.join(" ")),
            (DEFAULT, "pool", a.pool.clone()),
            (DEFAULT, "size", size_text.clone()),
            ("disk#1", "type", "lv".into()),
            ("disk#1", "name", a.lv.clone()),
            ("disk#1", "vg", a.vg.clone()),
            ("disk#1", "size", size_text),
        ];
        for (sec, k, v) in entries {
            vc.set(sec, k, &v).expect("one-line values");
        }
        if let Some(d) = &a.drbd {
            for (k, v) in [
                ("type", "drbd".to_string()),
                ("res", a.lv.clone()),
                ("disk", format!("/dev/{}/{}", a.vg, a.lv)),
                ("minor", d.minor.to_string()),
                ("port", d.port.to_string()),
            ] {
                vc.set("disk#2", k, &v).expect("one-line values");
            }
        }
        vc
    }

    /// Refuses keywords the catalog retired among `keys` of an object at `path`: a command is
    /// checked with it before it reaches the log (not in `apply`, see `check_config`).
    pub(super) fn check_retired<'a>(
        path: &ObjectPath,
        keys: impl IntoIterator<Item = &'a ObjectKey>,
    ) -> Result<(), ObjectError> {
        for k in keys {
            let (name, _) = k.split_scope();
            if let Err(source @ KeywordError::Retired(..)) = keywords::lookup(path.kind, &k.section, name) {
                return Err(ObjectError::Keyword {
                    path: path.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Refuses a value (of `section`, `keyword`, `value`) of an object at `path` that is not
    /// one line without control characters (`kind::check_line`): new input is checked with it
    /// before it reaches the log (not in `apply`, as `check_retired`).
    pub(super) fn check_lines<'a>(
        path: &ObjectPath,
        values: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<(), ObjectError> {
        for (section, keyword, value) in values {
            check_line(value).map_err(|why| ObjectError::Value {
                path: path.to_string(),
                key: format!("{section}.{keyword}"),
                value: value.into(),
                why,
            })?;
        }
        Ok(())
    }

    /// Refuses a configuration of an object at `path` beyond the bounds of a configuration
    /// text (`Ini::check_bounds`): new input only, as `check_retired`.
    pub(super) fn check_size(path: &ObjectPath, config: &Ini) -> Result<(), ObjectError> {
        config.check_bounds().map_err(|e| ObjectError::TooLarge {
            path: path.to_string(),
            why: e.to_string(),
        })
    }

    /// Refuses a configuration of an object at `path` that would not read back as written
    /// from `config show` (`Ini::check_form`): new input only, as `check_retired`.
    pub(super) fn check_form(path: &ObjectPath, config: &Ini) -> Result<(), ObjectError> {
        config.check_form().map_err(|e| ObjectError::Unreadable {
            path: path.to_string(),
            why: e.to_string(),
        })
    }

    /// Checks a new object; returns it with the volumes it creates.
    pub(super) fn plan_create(
        &self,
        path: &ObjectPath,
        config: &Ini,
    ) -> Result<Vec<(ObjectPath, Object)>, ObjectError> {
        if self.objects.contains_key(path) {
            return Err(ObjectError::Exists(path.to_string()));
        }
        if path.kind == ObjectKind::Vol {
            return Err(ObjectError::DirectVolume(path.to_string()));
        }
        self.check_config(path, config, true)?;
        let mut out = vec![(
            path.clone(),
            Object {
                config: config.clone(),
                keys: BTreeMap::new(),
                alloc: None,
            },
        )];
        if path.kind == ObjectKind::Svc {
            out.extend(self.plan_volumes(path, config)?);
        }
        Ok(out)
    }

    /// Checks a configuration update; returns the new configuration and the volumes it creates.
    pub(super) fn plan_update(
        &self,
        path: &ObjectPath,
        set: &[(ObjectKey, String)],
        unset: &[ObjectKey],
    ) -> Result<(Ini, Vec<(ObjectPath, Object)>), ObjectError> {
        let key = path.to_string();
        let obj = self
            .objects
            .get(path)
            .ok_or_else(|| ObjectError::NotFound(key.clone()))?;
        if set.is_empty() && unset.is_empty() {
            return Err(ObjectError::BadKey(
                "(nothing to change: give at least one --set or --unset)".into(),
            ));
        }
        let mut config = obj.config.clone();
        let mut user = Ini::default();
        for k in unset {
            let (name, _) = k.split_scope();
            let def = match keywords::lookup(path.kind, &k.section, name) {
                Ok(def) => def,
                // A configuration made before the keyword was retired can drop it.
                Err(KeywordError::Retired(..)) if config.get(&k.section, &k.keyword).is_some() => {
                    config.unset(&k.section, &k.keyword);
                    continue;
                }
                Err(source) => {
                    return Err(ObjectError::Keyword {
                        path: key.clone(),
                        source,
                    })
                }
            };
            if def.readonly {
                return Err(ObjectError::Keyword {
                    path: key.clone(),
                    source: KeywordError::Readonly(k.to_string()),
                });
            }
            config.unset(&k.section, &k.keyword);
        }
        for (k, v) in set {
            if unset.contains(k) {
                return Err(ObjectError::BadKey(format!("{k} (both set and unset)")));
            }
            config.set(&k.section, &k.keyword, v).map_err(|_| ObjectError::Value {
                path: key.clone(),
                key: k.to_string(),
                value: v.clone(),
                why: "a value holds one line".into(),
            })?;
            user.set(&k.section, &k.keyword, v)
                .map_err(|_| ObjectError::BadKey(k.to_string()))?;
        }
        // What the user sets is checked strictly (no read-only keywords)...
        self.check_config(path, &user, false)?;
        // ...and the result as a whole (required keywords, references).
        self.check_config(path, &config, true)?;
        let vols = if path.kind == ObjectKind::Svc {
            self.plan_volumes(path, &config)?
        } else {
            vec![]
        };
        Ok((config, vols))
    }

    /// Checks a deletion; returns every object it removes (a service takes its volumes along).
    pub(super) fn plan_delete(&self, path: &ObjectPath) -> Result<Vec<ObjectPath>, ObjectError> {
        let key = path.to_string();
        if self.services.get(path).is_some_and(|s| s.provisioned) {
            return Err(ObjectError::Provisioned(key));
        }
        let obj = self
            .objects
            .get(path)
            .ok_or_else(|| ObjectError::NotFound(key.clone()))?;
        if path.kind == ObjectKind::Vol {
            if let Some(owner) = obj.owner().filter(|o| self.objects.contains_key(o)) {
                return Err(ObjectError::InUse {
                    path: key,
                    what: "this volume".into(),
                    user: owner.to_string(),
                });
            }
        }
        if *path == drbd_templates() {
            if let Some((pool, t)) = self.templates_in_use().next() {
                return Err(ObjectError::InUse {
                    path: key,
                    what: format!("key {t}"),
                    user: pool,
                });
            }
        }
        let mut out = vec![path.clone()];
        if path.kind == ObjectKind::Svc {
            out.extend(
                self.objects
                    .iter()
                    .filter(|(_, o)| o.owner().as_ref() == Some(path))
                    .map(|(k, _)| k.clone()),
            );
        }
        Ok(out)
    }

    /// `(pool section, template key)` of every drbd pool naming a template.
    fn templates_in_use(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.config
            .iter()
            .filter(|(s, _)| s.starts_with("pool#"))
            .filter_map(|(s, v)| v.get("template").map(|t| (s.clone(), t.clone())))
    }

    pub(super) fn check_put_key(
        &self,
        path: &ObjectPath,
        key: &str,
        value: &[u8],
        mode: KeyMode,
    ) -> Result<(), ObjectError> {
        let p = path.to_string();
        let obj = self.objects.get(path).ok_or_else(|| ObjectError::NotFound(p.clone()))?;
        if !path.kind.holds_keys() {
            return Err(ObjectError::NoKeys(p));
        }
        Kind::Ident.check(key).map_err(|why| ObjectError::Key {
            path: p.clone(),
            key: key.into(),
            why: format!("is not a valid key name: {why}"),
        })?;
        if value.len() > MAX_KEY_BYTES {
            return Err(ObjectError::Key {
                path: p,
                key: key.into(),
                why: format!("is {} bytes; at most {MAX_KEY_BYTES}", value.len()),
            });
        }
        match (mode, obj.keys.contains_key(key)) {
            (KeyMode::Add, true) => Err(ObjectError::Key {
                path: p,
                key: key.into(),
                why: "exists: use key change".into(),
            }),
            (KeyMode::Change, false) => Err(ObjectError::Key {
                path: p,
                key: key.into(),
                why: "does not exist: use key add".into(),
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn check_remove_key(&self, path: &ObjectPath, key: &str) -> Result<(), ObjectError> {
        let p = path.to_string();
        let obj = self.objects.get(path).ok_or_else(|| ObjectError::NotFound(p.clone()))?;
        if !obj.keys.contains_key(key) {
            return Err(ObjectError::Key {
                path: p,
                key: key.into(),
                why: "does not exist".into(),
            });
        }
        if *path == drbd_templates() {
            if let Some((pool, _)) = self.templates_in_use().find(|(_, t)| t == key) {
                return Err(ObjectError::InUse {
                    path: p,
                    what: format!("key {key}"),
                    user: pool,
                });
            }
        }
        Ok(())
    }

    /// The state-dependent checks of a cluster configuration change: pools that volumes use,
    /// and DRBD templates that must exist.
    pub(super) fn check_pools(&self, plan: &super::catalog::Plan) -> Result<(), ObjectError> {
        for (section, values) in plan {
            let Some(pool) = section.strip_prefix("pool#") else {
                continue;
            };
            let used = self.pool_volumes(pool).count();
            let old = self.config.get(section);
            if used > 0 {
                let same = |k: &str| values.as_ref().and_then(|v| v.get(k)) == old.and_then(|o| o.get(k));
                if !same("type") || !same("vg") {
                    return Err(ObjectError::Pool {
                        pool: pool.into(),
                        why: format!("{used} volumes use it: its type and vg cannot change"),
                    });
                }
            }
            if let Some(t) = values.as_ref().and_then(|v| v.get("template")) {
                let why = match self.objects.get(&drbd_templates()) {
                    None => Some(format!(
                        "{DRBD_TEMPLATES} does not exist: create it and add the key first"
                    )),
                    Some(o) if !o.keys.contains_key(t) => Some(format!(
                        "no such key (keys: {})",
                        o.keys.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    Some(_) => None,
                };
                if let Some(why) = why {
                    return Err(ObjectError::Template { key: t.clone(), why });
                }
            }
        }
        Ok(())
    }
}

/// The lowest value `>= start` in neither `used` nor `planned`.
/// Refuses a service's volume section whose volume exists already but belongs to another
/// object, or was allocated with another size or pool (resizing and moving are not supported).
fn check_existing_volume(
    owner: &str,
    vol: &ObjectPath,
    existing: &Object,
    section: &str,
    size: u64,
    pool: &str,
) -> Result<(), ObjectError> {
    let by = existing.config.get(DEFAULT, "owner").unwrap_or("");
    if by != owner {
        return Err(ObjectError::InUse {
            path: vol.to_string(),
            what: "this volume".into(),
            user: if by.is_empty() {
                "another object".into()
            } else {
                by.into()
            },
        });
    }
    if existing
        .alloc
        .as_ref()
        .is_some_and(|a| a.size != size || a.pool != pool)
    {
        return Err(ObjectError::Volume {
            path: vol.to_string(),
            why: format!(
                "already allocated from another pool or size; resizing or moving ({section}) is not supported"
            ),
        });
    }
    Ok(())
}

/// The DRBD minors and ports one plan takes, beside those the index says are in use.
#[derive(Default)]
struct Taken {
    minors: BTreeSet<u32>,
    ports: BTreeSet<u32>,
}

impl Taken {
    /// The lowest free minor and port, and DRBD node ids in `nodes`' order; refused when
    /// either is exhausted.
    fn allocate(&mut self, pool: &str, nodes: &[NodeId], index: &AllocIndex) -> Result<DrbdAllocation, ObjectError> {
        let exhausted = |why: String| ObjectError::Pool {
            pool: pool.to_string(),
            why,
        };
        let minor = first_free(&index.minors, &self.minors, 0)
            .filter(|m| *m <= DRBD_MAX_MINOR)
            .ok_or_else(|| {
                exhausted(format!(
                    "no free DRBD minor: minors 0 to {DRBD_MAX_MINOR} are all in use"
                ))
            })?;
        let port = first_free(&index.ports, &self.ports, u32::from(DRBD_BASE_PORT))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                exhausted(format!(
                    "no free DRBD port: ports {DRBD_BASE_PORT} to 65535 are all in use"
                ))
            })?;
        self.minors.insert(minor);
        self.ports.insert(u32::from(port));
        Ok(DrbdAllocation {
            minor,
            port,
            node_ids: nodes.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect(),
        })
    }
}

/// A volume's DRBD resource name, which is also its logical volume's:
/// `NAME.NAMESPACE.vol.CLUSTER`. Formatted and parsed here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrbdResource {
    pub name: String,
    pub namespace: String,
    pub cluster: String,
}

impl DrbdResource {
    /// Reads a resource name back. Names and namespaces hold no dots; the cluster name is the
    /// rest.
    pub fn parse(text: &str) -> Option<DrbdResource> {
        let mut parts = text.splitn(4, '.');
        let (name, namespace, kind, cluster) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (kind == ObjectKind::Vol.as_str() && !name.is_empty() && !namespace.is_empty()).then(|| DrbdResource {
            name: name.into(),
            namespace: namespace.into(),
            cluster: cluster.into(),
        })
    }

    /// The volume object this resource belongs to.
    pub fn volume(&self) -> ObjectPath {
        ObjectPath::new(&self.namespace, ObjectKind::Vol, &self.name)
    }
}

impl std::fmt::Display for DrbdResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.name,
            self.namespace,
            ObjectKind::Vol,
            self.cluster
        )
    }
}

/// The lowest number from `start` in neither `used` nor `planned`; `None` when none is left.
fn first_free(used: &Runs, planned: &BTreeSet<u32>, start: u32) -> Option<u32> {
    let mut candidate = start;
    loop {
        candidate = used.first_missing(candidate)?;
        if !planned.contains(&candidate) {
            return Some(candidate);
        }
        candidate = candidate.checked_add(1)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_fills_gaps() {
        let used: Runs = [0, 1, 3].into_iter().collect();
        let none = BTreeSet::new();
        assert_eq!(first_free(&used, &none, 0), Some(2));
        assert_eq!(first_free(&used, &[2].into(), 0), Some(4));
        assert_eq!(first_free(&Runs::default(), &none, 7289), Some(7289));
        let top: Runs = [u32::MAX].into_iter().collect();
        assert_eq!(first_free(&top, &none, u32::MAX), None, "no wrap");
    }

    #[test]
    fn runs_hold_what_a_set_holds_and_find_the_lowest_gap() {
        // Against a plain set, over a deterministic mix of inserts and removes.
        let mut runs = Runs::default();
        let mut set = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 300) as u32;
            if x.is_multiple_of(3) {
                runs.remove(v);
                set.remove(&v);
            } else {
                runs.insert(v);
                set.insert(v);
            }
            let from = ((x >> 20) % 300) as u32;
            let lowest = (from..).find(|c| !set.contains(c));
            assert_eq!(runs.first_missing(from), lowest, "from {from} in {set:?}");
        }
        assert_eq!(runs.0.iter().map(|(f, l)| l - f + 1).sum::<u32>() as usize, set.len());
        for (first, last) in &runs.0 {
            assert!(
                !runs.0.contains_key(&(last + 1)),
                "runs {first}..{last} and the next touch"
            );
        }
        let mut edge = Runs::default();
        edge.insert(u32::MAX);
        edge.insert(u32::MAX - 1);
        edge.remove(u32::MAX);
        assert!(edge.contains(u32::MAX - 1) && !edge.contains(u32::MAX));
    }

    #[test]
    fn a_drbd_resource_name_reads_back_as_its_volume() {
        let r = DrbdResource::parse("kvm1.demo.vol.drbd4kvm").unwrap();
        assert_eq!(r.to_string(), "kvm1.demo.vol.drbd4kvm");
        assert_eq!(r.volume().to_string(), "demo/vol/kvm1");
        for bad in ["kvm1.demo.svc.x", "kvm1.demo.vol", ".demo.vol.x", "kvm1"] {
            assert_eq!(DrbdResource::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_keys() {
        let k = ObjectKey::parse("volume#data.size@n1").unwrap();
        assert_eq!(
            (k.section.as_str(), k.split_scope()),
            ("volume#data", ("size", Some("n1")))
        );
        assert_eq!(ObjectKey::parse("nodes").unwrap().section, DEFAULT);
        assert!(ObjectKey::parse("a.").is_err());
    }

    #[test]
    fn derived_ids_are_uuids() {
        let id = derived_uuid("x");
        assert!(Kind::Uuid.check(&id).is_ok(), "{id}");
        assert_ne!(id, derived_uuid("y"));
    }
}
