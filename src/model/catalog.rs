//! The cluster configuration keyword catalog: which keywords exist, their types and docs.
//!
//! Every `cluster config update` is checked here, inside and before the log, so that an unknown
//! keyword or a bad value is refused with a message naming it. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ClusterConfig;
use crate::config::echo::echo;
pub use crate::config::kind::Kind;
use crate::config::kind::{self, check_name};

/// `SECTION.KEYWORD`, for example `cluster.name` or `pool#drbdvm.vg`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigKey {
    pub section: String,
    pub keyword: String,
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.section, self.keyword)
    }
}

/// Why a configuration change is refused. Each names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ConfigError {
    #[error("{:?} is not a keyword: expected SECTION.KEYWORD, e.g. cluster.name", echo(.0))]
    Malformed(String),
    #[error("unknown section {:?} (known: cluster, lease, migration, pool#NAME)", echo(.0))]
    UnknownSection(String),
    #[error("unknown keyword {key}; see the keywords of section {1:?}: {2}", key = echo(&.0.to_string()))]
    UnknownKeyword(ConfigKey, String, String),
    #[error("bad value {:?} for {}: {why}", echo(.value), echo(&.key.to_string()))]
    BadValue { key: ConfigKey, value: String, why: String },
    #[error("{0} is both set and unset in one update")]
    SetAndUnset(ConfigKey),
    #[error("{0} is set twice in one update")]
    SetTwice(ConfigKey),
    #[error("section {section} needs keyword {keyword}")]
    Missing { section: String, keyword: String },
    #[error("nothing to change: give at least one --set or --unset")]
    Empty,
}

/// One keyword of the catalog.
#[derive(Debug)]
pub struct Keyword {
    /// `cluster` or `pool` (the kind of `pool#NAME`).
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// Every cluster configuration keyword, in the order `config show` prints them.
pub const CATALOG: &[Keyword] = &[
    Keyword {
        section: "lease",
        name: "renew",
        kind: Kind::Interval,
        required: false,
        default: Some("200ms"),
        doc: "How often a node asks the leader to renew its lease.",
    },
    Keyword {
        section: "lease",
        name: "duration",
        kind: Kind::Interval,
        required: false,
        default: Some("2400ms"),
        doc: "How long a lease lasts from the request; a node without one stops its services.",
    },
    Keyword {
        section: "lease",
        name: "drift",
        kind: Kind::Interval,
        required: false,
        default: Some("500ms"),
        doc: "Clock drift allowance the leader adds before moving a service off a node.",
    },
    Keyword {
        section: "cluster",
        name: "name",
        kind: Kind::Name,
        required: false,
        default: Some("default"),
        doc: "The cluster name, used in DRBD resource names (NAME.NAMESPACE.vol.CLUSTER).",
    },
    Keyword {
        section: "cluster",
        name: "ssh_trust",
        kind: Kind::Bool,
        required: false,
        default: Some("false"),
        doc: "Every data node keeps an ssh key pair (omraft, in omd's --ssh-dir) and every node trusts the data nodes' public keys in a managed block of its authorized_keys (`omctl cluster ssh trust` sets it).",
    },
    Keyword {
        section: "migration",
        name: "libvirt_uri",
        kind: Kind::Text,
        required: false,
        default: Some("qemu+tcp://{host}/system"),
        doc: "The libvirt URI a live migration's source connects to; {host} is the target node's address (e.g. qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft with ssh trust).",
    },
    Keyword {
        section: "migration",
        name: "uri",
        kind: Kind::Text,
        required: false,
        default: None,
        doc: "Where QEMU sends the memory, e.g. tcp://{host}:49152 ({host}: the target node's address); unset, libvirt picks.",
    },
    Keyword {
        section: "pool",
        name: "type",
        kind: Kind::Choice(&["drbd", "lvm"]),
        required: true,
        default: None,
        doc: "The pool driver: drbd (replicated volumes over LVM) or lvm (local volumes).",
    },
    Keyword {
        section: "pool",
        name: "vg",
        kind: Kind::Ident,
        required: false,
        default: None,
        doc: "The LVM volume group volumes are carved from, on every node.",
    },
    Keyword {
        section: "pool",
        name: "template",
        kind: Kind::Ident,
        required: false,
        default: None,
        doc: "For drbd pools: the key of system/cfg/drbd holding the resource file template.",
    },
];

/// The section kind of a section name: `cluster` -> `cluster`, `pool#x` -> `pool`.
fn section_kind(section: &str) -> Result<&'static str, ConfigError> {
    if section == "cluster" {
        return Ok("cluster");
    }
    if section == "lease" {
        return Ok("lease");
    }
    if section == "migration" {
        return Ok("migration");
    }
    if let Some(name) = section.strip_prefix("pool#") {
        check_name(name).map_err(|why| ConfigError::UnknownSection(format!("{} (pool name: {why})", echo(section))))?;
        return Ok("pool");
    }
    Err(ConfigError::UnknownSection(section.to_string()))
}

fn keywords_of(kind: &str) -> impl Iterator<Item = &'static Keyword> + '_ {
    CATALOG.iter().filter(move |k| k.section == kind)
}

impl ConfigKey {
    /// Parses and checks `SECTION.KEYWORD` against the catalog.
    pub fn parse(s: &str) -> Result<(ConfigKey, &'static Keyword), ConfigError> {
        let (section, keyword) = s.split_once('.').ok_or_else(|| ConfigError::Malformed(s.to_string()))?;
        if section.is_empty() || keyword.is_empty() {
            return Err(ConfigError::Malformed(s.to_string()));
        }
        let key = ConfigKey {
            section: section.to_string(),
            keyword: keyword.to_string(),
        };
        let kind = section_kind(section)?;
        match keywords_of(kind).find(|k| k.name == keyword) {
            Some(kw) => Ok((key, kw)),
            None => {
                let known: Vec<_> = keywords_of(kind).map(|k| k.name).collect();
                Err(ConfigError::UnknownKeyword(key, kind.to_string(), known.join(", ")))
            }
        }
    }
}

/// A parsed update: keywords to set with their values, keywords to unset.
pub type Update = (Vec<(ConfigKey, String)>, Vec<ConfigKey>);

/// Parses `SECTION.KEYWORD` strings and checks each value's type and the update's
/// consistency, without looking at the current configuration: what the API checks before
/// anything reaches the log.
pub fn parse_update(set: &[(String, String)], unset: &[String]) -> Result<Update, ConfigError> {
    if set.is_empty() && unset.is_empty() {
        return Err(ConfigError::Empty);
    }
    let mut parsed_set: Vec<(ConfigKey, String)> = Vec::with_capacity(set.len());
    for (k, value) in set {
        let (key, kw) = ConfigKey::parse(k)?;
        if parsed_set.iter().any(|(p, _)| p == &key) {
            return Err(ConfigError::SetTwice(key));
        }
        kw.kind.check(value).map_err(|why| ConfigError::BadValue {
            key: key.clone(),
            value: value.clone(),
            why,
        })?;
        parsed_set.push((key, value.clone()));
    }
    let mut parsed_unset = Vec::with_capacity(unset.len());
    for k in unset {
        let (key, _) = ConfigKey::parse(k)?;
        if parsed_set.iter().any(|(p, _)| p == &key) {
            return Err(ConfigError::SetAndUnset(key));
        }
        parsed_unset.push(key);
    }
    Ok((parsed_set, parsed_unset))
}

/// The rules a new value meets beyond its keyword's type, checked before an update reaches
/// the log (never in `plan`, which `apply` runs: an older log may hold what they refuse): one
/// line without control characters (`kind::check_line`), and for `migration.libvirt_uri` and
/// `migration.uri` the transports the README documents, to the target node (`{host}`).
pub fn check_input(set: &[(ConfigKey, String)]) -> Result<(), ConfigError> {
    for (key, value) in set {
        let rule = match (key.section.as_str(), key.keyword.as_str()) {
            ("migration", "libvirt_uri") => kind::check_migration_libvirt_uri,
            ("migration", "uri") => kind::check_migration_uri,
            _ => kind::check_line,
        };
        rule(value).map_err(|why| ConfigError::BadValue {
            key: key.clone(),
            value: value.clone(),
            why,
        })?;
    }
    Ok(())
}

/// Touched sections and their new contents, `None` for a section the update empties.
pub type Plan = Vec<(String, Option<BTreeMap<String, String>>)>;

/// The sections an update touches, as they are after it (`None`: the section is emptied and
/// removed), or why the update is refused. Costs the size of the touched sections, not of the
/// whole configuration, since it runs for every update on every node.
pub fn plan(cfg: &ClusterConfig, set: &[(ConfigKey, String)], unset: &[ConfigKey]) -> Result<Plan, ConfigError> {
    // Commands come from the log: check them again as if they were new input.
    let raw_set: Vec<(String, String)> = set.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let raw_unset: Vec<String> = unset.iter().map(ToString::to_string).collect();
    let (set, unset) = parse_update(&raw_set, &raw_unset)?;
    let mut touched: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for section in unset
        .iter()
        .map(|k| &k.section)
        .chain(set.iter().map(|(k, _)| &k.section))
    {
        if !touched.contains_key(section) {
            touched.insert(section.clone(), cfg.get(section).cloned().unwrap_or_default());
        }
    }
    for key in unset {
        touched.get_mut(&key.section).expect("touched").remove(&key.keyword);
    }
    for (key, value) in set {
        touched
            .get_mut(&key.section)
            .expect("touched")
            .insert(key.keyword, value);
    }
    for (section, values) in touched.iter().filter(|(_, v)| !v.is_empty()) {
        let kind = section_kind(section)?;
        for kw in keywords_of(kind).filter(|k| k.required) {
            if !values.contains_key(kw.name) {
                return Err(ConfigError::Missing {
                    section: section.clone(),
                    keyword: kw.name.to_string(),
                });
            }
        }
    }
    if let Some(lease) = touched.get("lease") {
        let ms = |k: &str, default: u64| {
            lease
                .get(k)
                .and_then(|v| crate::config::kind::parse_millis(v).ok())
                .unwrap_or(default)
        };
        let (renew, duration, drift) = (ms("renew", 200), ms("duration", 2400), ms("drift", 500));
        if renew.saturating_mul(2) > duration || drift >= duration {
            return Err(ConfigError::BadValue {
                key: ConfigKey {
                    section: "lease".into(),
                    keyword: "duration".into(),
                },
                value: format!("{duration}ms"),
                why: format!("must be at least twice lease.renew ({renew}ms) and more than lease.drift ({drift}ms)"),
            });
        }
    }
    Ok(touched
        .into_iter()
        .map(|(s, v)| (s, (!v.is_empty()).then_some(v)))
        .collect())
}

/// The configuration after applying `unset` then `set` to `cfg`, or why that is refused.
pub fn updated(
    cfg: &ClusterConfig,
    set: &[(ConfigKey, String)],
    unset: &[ConfigKey],
) -> Result<ClusterConfig, ConfigError> {
    let mut out = cfg.clone();
    apply_plan(&mut out, plan(cfg, set, unset)?);
    Ok(out)
}

/// Writes the sections of a `plan` into `cfg`.
pub fn apply_plan(cfg: &mut ClusterConfig, plan: Plan) {
    for (section, values) in plan {
        match values {
            Some(v) => cfg.insert(section, v),
            None => cfg.remove(&section),
        };
    }
}

/// The lease timing the configuration sets (or the defaults).
pub fn lease_config(cfg: &ClusterConfig) -> crate::lease::LeaseConfig {
    let ms = |k: &str| {
        get(cfg, &format!("lease.{k}"))
            .ok()
            .flatten()
            .and_then(|v| crate::config::kind::parse_millis(&v).ok())
    };
    let d = crate::lease::LeaseConfig::default();
    let dur = |v: Option<u64>, d: std::time::Duration| v.map(std::time::Duration::from_millis).unwrap_or(d);
    crate::lease::LeaseConfig {
        renew: dur(ms("renew"), d.renew),
        duration: dur(ms("duration"), d.duration),
        drift: dur(ms("drift"), d.drift),
    }
}

/// The value of `key`: the one set, else the catalog default.
pub fn get(cfg: &ClusterConfig, key: &str) -> Result<Option<String>, ConfigError> {
    let (key, kw) = ConfigKey::parse(key)?;
    let set = cfg.get(&key.section).and_then(|s| s.get(&key.keyword)).cloned();
    Ok(set.or_else(|| kw.default.map(str::to_string)))
}

/// The keywords of `section` in catalog order, with their values.
pub fn ordered(section: &str, values: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let kind = section_kind(section).unwrap_or("");
    let mut out: Vec<(String, String)> = keywords_of(kind)
        .filter_map(|k| values.get(k.name).map(|v| (k.name.to_string(), v.clone())))
        .collect();
    // Keywords no longer in the catalog are still shown, last.
    for (k, v) in values {
        if !out.iter().any(|(o, _)| o == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (ConfigKey, String) {
        (ConfigKey::parse(k).unwrap().0, v.to_string())
    }

    #[test]
    fn tutorial_pool_update_applies_at_once() {
        let set = [
            kv("pool#drbdvm.type", "drbd"),
            kv("pool#drbdvm.vg", "data"),
            kv("pool#drbdvm.template", "live-migration"),
        ];
        let cfg = updated(&ClusterConfig::new(), &set, &[]).unwrap();
        let order = ordered("pool#drbdvm", &cfg["pool#drbdvm"]);
        let names: Vec<_> = order.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["type", "vg", "template"]);
    }

    #[test]
    fn unknown_keyword_is_named() {
        let e = ConfigKey::parse("cluster.nmae").unwrap_err();
        assert!(e.to_string().contains("cluster.nmae"), "{e}");
        let e = ConfigKey::parse("clutser.name").unwrap_err();
        assert!(e.to_string().contains("\"clutser\""), "{e}");
        assert!(matches!(ConfigKey::parse("name"), Err(ConfigError::Malformed(_))));
        assert!(matches!(
            ConfigKey::parse("pool#Bad.type"),
            Err(ConfigError::UnknownSection(_))
        ));
    }

    #[test]
    fn bad_value_is_named_and_nothing_changes() {
        let cfg = updated(&ClusterConfig::new(), &[kv("cluster.name", "ok")], &[]).unwrap();
        let e = updated(&cfg, &[kv("cluster.name", "x"), kv("pool#p.type", "nfs")], &[]).unwrap_err();
        assert!(
            e.to_string().contains("\"nfs\"") && e.to_string().contains("pool#p.type"),
            "{e}"
        );
        assert_eq!(get(&cfg, "cluster.name").unwrap().as_deref(), Some("ok"));
    }

    #[test]
    fn pool_without_type_is_refused() {
        let e = updated(&ClusterConfig::new(), &[kv("pool#p.vg", "data")], &[]).unwrap_err();
        assert_eq!(
            e,
            ConfigError::Missing {
                section: "pool#p".into(),
                keyword: "type".into()
            }
        );
    }

    #[test]
    fn unset_removes_and_empties_sections() {
        let cfg = updated(
            &ClusterConfig::new(),
            &[kv("pool#p.type", "lvm"), kv("pool#p.vg", "data")],
            &[],
        )
        .unwrap();
        let cfg = updated(&cfg, &[], &[kv("pool#p.vg", "").0]).unwrap();
        assert_eq!(cfg["pool#p"].len(), 1);
        let cfg = updated(&cfg, &[], &[kv("pool#p.type", "").0]).unwrap();
        assert!(cfg.is_empty());
    }

    #[test]
    fn conflicting_update_is_refused() {
        let k = kv("cluster.name", "a");
        assert!(matches!(
            updated(
                &ClusterConfig::new(),
                std::slice::from_ref(&k),
                std::slice::from_ref(&k.0)
            ),
            Err(ConfigError::SetAndUnset(_))
        ));
        assert!(matches!(
            updated(&ClusterConfig::new(), &[k.clone(), k], &[]),
            Err(ConfigError::SetTwice(_))
        ));
        assert_eq!(updated(&ClusterConfig::new(), &[], &[]), Err(ConfigError::Empty));
    }

    #[test]
    fn lease_timing_is_checked_as_a_whole() {
        let cfg = updated(&ClusterConfig::new(), &[kv("lease.duration", "5s")], &[]).unwrap();
        assert_eq!(lease_config(&cfg).duration, std::time::Duration::from_secs(5));
        let e = updated(&cfg, &[kv("lease.renew", "3s")], &[]).unwrap_err();
        assert!(e.to_string().contains("lease.duration"), "{e}");
        assert!(
            updated(&cfg, &[kv("lease.renew", "300")], &[]).is_err(),
            "a unit is required"
        );
    }

    #[test]
    fn new_values_are_one_line_and_migration_uris_documented_transports() {
        let e = check_input(&[kv("migration.uri", "tcp://{host}:1\n[evil]\nk = v")]).unwrap_err();
        assert!(
            e.to_string().contains("migration.uri") && e.to_string().contains("one line"),
            "{e}"
        );
        let e = check_input(&[kv("migration.libvirt_uri", "qemu+ext:///system?command=/tmp/x")]).unwrap_err();
        assert!(
            e.to_string().contains("migration.libvirt_uri") && e.to_string().contains("\"qemu+ext\""),
            "{e}"
        );
        assert!(check_input(&[kv("migration.uri", "rdma://{host}:1")]).is_err());
        assert!(check_input(&[kv("pool#p.vg", "da\0ta")]).is_err());
        check_input(&[
            kv(
                "migration.libvirt_uri",
                "qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft",
            ),
            kv("migration.uri", "tcp://{host}:49152"),
            kv("cluster.name", "drbd4kvm"),
        ])
        .unwrap();
        // Not in `plan`: an entry an older version committed still applies.
        let old = [kv("migration.libvirt_uri", "qemu+ext:///system?command=/tmp/x")];
        let cfg = updated(&ClusterConfig::new(), &old, &[]).unwrap();
        assert_eq!(
            get(&cfg, "migration.libvirt_uri").unwrap().as_deref(),
            Some("qemu+ext:///system?command=/tmp/x")
        );
    }

    #[test]
    fn errors_repeat_long_input_cut() {
        let long = format!("cluster.{}", "n".repeat(20_000));
        let e = ConfigKey::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 600 && e.contains("(20008 bytes)"), "{e}");
        let e = updated(&ClusterConfig::new(), &[kv("lease.renew", &"9".repeat(20_000))], &[])
            .unwrap_err()
            .to_string();
        assert!(e.len() < 800 && e.contains("(20000 bytes)"), "{e}");
    }

    #[test]
    fn huge_lease_timings_are_refused_without_overflow() {
        let e = updated(
            &ClusterConfig::new(),
            &[kv("lease.renew", "18446744073709551615ms")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("lease.duration"), "{e}");
    }

    #[test]
    fn default_applies_when_unset() {
        assert_eq!(
            get(&ClusterConfig::new(), "cluster.name").unwrap().as_deref(),
            Some("default")
        );
        assert_eq!(get(&ClusterConfig::new(), "pool#x.vg").unwrap(), None);
    }
}
