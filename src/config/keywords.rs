//! The object keyword catalog: which sections each kind of object has, and the keywords of
//! each section type with their type, default and one-line doc (`omctl PATH config doc`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::echo::echo;
use super::ini::DEFAULT;
use super::kind::Kind;

/// The kinds of objects: services, volumes, config maps, secrets, users. Written in paths and
/// in the log as `svc`, `vol`, `cfg`, `sec`, `usr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Svc,
    Vol,
    Cfg,
    Sec,
    Usr,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::Svc,
        ObjectKind::Vol,
        ObjectKind::Cfg,
        ObjectKind::Sec,
        ObjectKind::Usr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Svc => "svc",
            ObjectKind::Vol => "vol",
            ObjectKind::Cfg => "cfg",
            ObjectKind::Sec => "sec",
            ObjectKind::Usr => "usr",
        }
    }

    /// The kind written `s`, if there is one.
    pub fn parse(s: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Config maps and secrets hold keys (`key add`, `key decode`).
    pub fn holds_keys(self) -> bool {
        matches!(self, ObjectKind::Cfg | ObjectKind::Sec)
    }

    /// Section types this kind may have besides DEFAULT.
    pub fn section_types(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Svc => &["volume", "container"],
            ObjectKind::Vol => &["disk"],
            _ => &[],
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One keyword of an object section type.
#[derive(Debug)]
pub struct Keyword {
    /// `DEFAULT`, `volume`, `container` or `disk`.
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    /// Object kinds whose configuration may hold it.
    pub kinds: &'static [ObjectKind],
    /// Set by the cluster, never by the user.
    pub readonly: bool,
    pub required: bool,
    pub doc: &'static str,
}

const ALL: &[ObjectKind] = &ObjectKind::ALL;
const SVC: &[ObjectKind] = &[ObjectKind::Svc];
const VOL: &[ObjectKind] = &[ObjectKind::Vol];
const SVC_VOL: &[ObjectKind] = &[ObjectKind::Svc, ObjectKind::Vol];

const fn kw(section: &'static str, name: &'static str, kind: Kind, kinds: &'static [ObjectKind]) -> Keyword {
    Keyword {
        section,
        name,
        kind,
        default: None,
        kinds,
        readonly: false,
        required: false,
        doc: "",
    }
}

macro_rules! keyword {
    ($sec:literal, $name:literal, $kind:expr, $kinds:expr, default = $def:expr, $doc:literal $(, $flag:ident)*) => {{
        #[allow(unused_mut)]
        let mut k = kw($sec, $name, $kind, $kinds);
        k.default = $def;
        k.doc = $doc;
        $( k.$flag = true; )*
        k
    }};
}

/// Every object keyword, in the order `config doc` lists them.
pub static CATALOG: &[Keyword] = &[
    keyword!(
        "DEFAULT",
        "id",
        Kind::Uuid,
        ALL,
        default = None,
        "The object's unique id, set at creation.",
        readonly
    ),
    keyword!(
        "DEFAULT",
        "nodes",
        Kind::Nodes,
        SVC_VOL,
        default = Some("{clusternodes}"),
        "Nodes the object may run on, in placement order."
    ),
    keyword!(
        "DEFAULT",
        "orchestrate",
        Kind::Choice(&["no", "ha", "start"]),
        SVC,
        default = Some("no"),
        "no: the cluster never starts it; start: start once; ha: keep it running, failing over."
    ),
    keyword!(
        "DEFAULT",
        "placement",
        Kind::Choice(&["nodes order", "spread", "score"]),
        SVC,
        default = Some("nodes order"),
        "Where provision, failover, switch without a node and giveback send it: nodes order: the first of its nodes; spread: the one with the fewest started services; score: the one with the most free memory and volume group space reported (ties: nodes order)."
    ),
    keyword!(
        "DEFAULT",
        "priority",
        Kind::Int,
        SVC,
        default = Some("50"),
        "When several services fail over at once, the lower number moves first and gets the node its placement prefers."
    ),
    keyword!(
        "DEFAULT",
        "pool",
        Kind::Name,
        VOL,
        default = None,
        "The pool the volume was allocated from.",
        readonly
    ),
    keyword!(
        "DEFAULT",
        "size",
        Kind::Size,
        VOL,
        default = None,
        "The volume's size.",
        readonly
    ),
    keyword!(
        "DEFAULT",
        "owner",
        Kind::Text,
        VOL,
        default = None,
        "The service whose volume section created this volume.",
        readonly
    ),
    keyword!(
        "volume",
        "name",
        Kind::Text,
        SVC,
        default = Some("{name}"),
        "Name of the volume object (NAMESPACE/vol/NAME) backing this resource."
    ),
    keyword!(
        "volume",
        "pool",
        Kind::Name,
        SVC,
        default = None,
        "The pool to allocate from; default: the first drbd pool if shared, else none."
    ),
    keyword!(
        "volume",
        "size",
        Kind::Size,
        SVC,
        default = None,
        "Size of the volume to allocate; the volume is created once it is set."
    ),
    keyword!(
        "volume",
        "shared",
        Kind::Bool,
        SVC,
        default = Some("false"),
        "The volume must be reachable from every node (a replicated pool)."
    ),
    keyword!(
        "container",
        "type",
        Kind::Choice(&["kvm"]),
        SVC,
        default = None,
        "The container driver.",
        required
    ),
    keyword!(
        "container",
        "name",
        Kind::Text,
        SVC,
        default = None,
        "The libvirt domain name.",
        required
    ),
    keyword!(
        "container",
        "stop_timeout",
        Kind::Duration,
        SVC,
        default = Some("2m"),
        "How long a graceful shutdown may take before the domain is destroyed."
    ),
    keyword!(
        "disk",
        "type",
        Kind::Choice(&["lv", "drbd"]),
        VOL,
        default = None,
        "The disk layer.",
        readonly
    ),
    keyword!(
        "disk",
        "name",
        Kind::Text,
        VOL,
        default = None,
        "The logical volume name.",
        readonly
    ),
    keyword!(
        "disk",
        "vg",
        Kind::Ident,
        VOL,
        default = None,
        "The volume group.",
        readonly
    ),
    keyword!(
        "disk",
        "size",
        Kind::Size,
        VOL,
        default = None,
        "The logical volume size.",
        readonly
    ),
    keyword!(
        "disk",
        "res",
        Kind::Text,
        VOL,
        default = None,
        "The DRBD resource name.",
        readonly
    ),
    keyword!(
        "disk",
        "disk",
        Kind::Text,
        VOL,
        default = None,
        "The DRBD backing device.",
        readonly
    ),
    keyword!(
        "disk",
        "minor",
        Kind::Int,
        VOL,
        default = None,
        "The DRBD minor (/dev/drbdMINOR).",
        readonly
    ),
    keyword!(
        "disk",
        "port",
        Kind::Int,
        VOL,
        default = None,
        "The DRBD TCP port.",
        readonly
    ),
];

/// Why a keyword reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum KeywordError {
    #[error("section [{section}] is not allowed in a {1} object (sections: {2})", section = echo(.0))]
    Section(String, String, String),
    #[error("unknown keyword {keyword:?} in section [{section}] (keywords: {2})", keyword = echo(.0), section = echo(.1))]
    Unknown(String, String, String),
    #[error("{} is set by the cluster and cannot be changed", echo(.0))]
    Readonly(String),
    #[error("section name {:?}: the id after '#' must be 1 to 63 of [a-z0-9_-]", echo(.0))]
    BadId(String),
    #[error("keyword {keyword:?} in section [{section}] is not supported: {2}", keyword = echo(.0), section = echo(.1))]
    Retired(String, String, String),
}

/// Keywords other cluster managers have that this one refuses, by section type and name,
/// with why: a configuration that sets one gets the reason instead of "unknown keyword".
pub const RETIRED: &[(&str, &str, &str)] = &[
    (
        DEFAULT,
        "topology",
        "every service is a failover service (at most one instance runs at a time); remove it",
    ),
    (
        DEFAULT,
        "access",
        "a volume is read-write on the node holding its service, nowhere else; remove it",
    ),
    (
        "volume",
        "format",
        "volumes are raw block devices, never formatted by the cluster (the guest formats its disk); remove it",
    ),
    (
        "container",
        "start_timeout",
        "a start is libvirt's create, which returns once the domain runs; a failed start is retried with backoff; remove it",
    ),
];

/// The type of a section name: `DEFAULT` or the part before `#`.
pub fn section_type(section: &str) -> &str {
    section.split_once('#').map_or(section, |(t, _)| t)
}

/// Looks up `keyword` (without its `@node` scope) in `section` of a `kind` object.
pub fn lookup(kind: ObjectKind, section: &str, keyword: &str) -> Result<&'static Keyword, KeywordError> {
    let stype = section_type(section);
    if section != DEFAULT {
        let allowed = kind.section_types();
        let id = section.split_once('#').map(|(_, id)| id);
        if !allowed.contains(&stype) || id.is_none() {
            let list: Vec<String> = std::iter::once(DEFAULT.to_string())
                .chain(allowed.iter().map(|t| format!("{t}#ID")))
                .collect();
            return Err(KeywordError::Section(section.into(), kind.to_string(), list.join(", ")));
        }
        let id = id.unwrap_or_default();
        if id.is_empty()
            || id.len() > 63
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        {
            return Err(KeywordError::BadId(section.into()));
        }
    }
    let sec = if section == DEFAULT { DEFAULT } else { stype };
    let in_section = || CATALOG.iter().filter(|k| k.section == sec && k.kinds.contains(&kind));
    in_section().find(|k| k.name == keyword).ok_or_else(|| {
        if let Some((_, _, why)) = RETIRED.iter().find(|(s, k, _)| *s == sec && *k == keyword) {
            return KeywordError::Retired(keyword.into(), section.into(), why.to_string());
        }
        let names: Vec<&str> = in_section().map(|k| k.name).collect();
        KeywordError::Unknown(keyword.into(), section.into(), names.join(", "))
    })
}

/// The keywords of `kind` objects, optionally only `SECTION.KEYWORD`-matching `filter`.
pub fn doc(kind: ObjectKind) -> impl Iterator<Item = &'static Keyword> {
    CATALOG.iter().filter(move |k| k.kinds.contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup(ObjectKind::Svc, "volume#data", "size").unwrap().kind, Kind::Size);
        assert_eq!(
            lookup(ObjectKind::Svc, DEFAULT, "nodes").unwrap().default,
            Some("{clusternodes}")
        );
        assert!(matches!(
            lookup(ObjectKind::Svc, "volume#data", "sise"),
            Err(KeywordError::Unknown(..))
        ));
        assert!(matches!(
            lookup(ObjectKind::Svc, "disk#1", "type"),
            Err(KeywordError::Section(..))
        ));
        assert!(matches!(
            lookup(ObjectKind::Cfg, "volume#x", "size"),
            Err(KeywordError::Section(..))
        ));
        assert!(matches!(
            lookup(ObjectKind::Svc, "volume#Bad", "size"),
            Err(KeywordError::BadId(_))
        ));
        assert!(matches!(
            lookup(ObjectKind::Svc, "volume", "size"),
            Err(KeywordError::Section(..))
        ));
        assert!(lookup(ObjectKind::Vol, "disk#1", "minor").unwrap().readonly);
    }

    #[test]
    fn retired_keywords_are_refused_with_why() {
        for (section, keyword, why) in [
            (DEFAULT, "topology", "every service is a failover service"),
            ("volume#data", "format", "raw block devices"),
            ("container#1", "start_timeout", "libvirt's create"),
        ] {
            let e = lookup(ObjectKind::Svc, section, keyword).unwrap_err();
            assert!(matches!(e, KeywordError::Retired(..)), "{e}");
            let text = e.to_string();
            assert!(text.contains(&format!("{keyword:?}")) && text.contains(why), "{text}");
        }
        assert!(matches!(
            lookup(ObjectKind::Vol, DEFAULT, "access"),
            Err(KeywordError::Retired(..))
        ));
        // Only where it was: elsewhere it is just unknown.
        assert!(matches!(
            lookup(ObjectKind::Svc, "container#1", "format"),
            Err(KeywordError::Unknown(..))
        ));
        for (section, keyword, _) in RETIRED {
            assert!(
                !CATALOG.iter().any(|k| k.section == *section && k.name == *keyword),
                "{section}.{keyword} is both retired and in the catalog"
            );
        }
    }
}
