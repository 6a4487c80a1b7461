//! Object paths: `NAMESPACE/KIND/NAME`, or just `NAME` for a service of the root namespace.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::echo::echo;
pub use crate::config::keywords::ObjectKind;
use crate::config::kind::check_name;

/// The namespace of paths given as a bare name.
pub const ROOT: &str = "root";

/// A reserved namespace: it holds the cluster's own config maps, secrets and users only.
pub const SYSTEM: &str = "system";

/// A checked object path. In the log's commands it is written as a record of its three parts;
/// as a key of the state's maps (`keyed`), as its text `NAMESPACE/KIND/NAME`. It orders as that
/// text does, so listings and every walk over the state keep the order they always had.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectPath {
    pub namespace: String,
    pub kind: ObjectKind,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PathError {
    #[error("{:?} is not an object path: expected NAMESPACE/KIND/NAME or NAME", echo(.0))]
    Shape(String),
    #[error("{:?}: unknown kind {:?} (kinds: svc, vol, cfg, sec, usr)", echo(.0), echo(.1))]
    Kind(String, String),
    #[error("{path:?}: namespace {namespace:?}: {2}", path = echo(.0), namespace = echo(.1))]
    Namespace(String, String, String),
    #[error("{path:?}: name {name:?}: {2}", path = echo(.0), name = echo(.1))]
    Name(String, String, String),
    #[error("{:?}: the system namespace holds only cfg, sec and usr objects", echo(.0))]
    Reserved(String),
}

impl ObjectPath {
    pub fn parse(s: &str) -> Result<ObjectPath, PathError> {
        let parts: Vec<&str> = s.split('/').collect();
        let (ns, kind, name) = match parts[..] {
            [name] => (ROOT, ObjectKind::Svc.as_str(), name),
            [ns, kind, name] => (ns, kind, name),
            _ => return Err(PathError::Shape(s.into())),
        };
        let Some(kind) = ObjectKind::parse(kind) else {
            return Err(PathError::Kind(s.into(), kind.into()));
        };
        check_name(ns).map_err(|e| PathError::Namespace(s.into(), ns.into(), e))?;
        check_name(name).map_err(|e| PathError::Name(s.into(), name.into(), e))?;
        if ns == SYSTEM && matches!(kind, ObjectKind::Svc | ObjectKind::Vol) {
            return Err(PathError::Reserved(s.into()));
        }
        Ok(ObjectPath::new(ns, kind, name))
    }

    /// Checks a path that did not come through `parse` (decoded from a command) by the same
    /// rules: as a key of the state's maps it is written as its text and read back through
    /// `parse`, so a path `parse` refuses would leave a snapshot unreadable.
    pub fn check(&self) -> Result<(), PathError> {
        let text = self.to_string();
        match ObjectPath::parse(&text) {
            Ok(p) if p == *self => Ok(()),
            Ok(_) => Err(PathError::Shape(text)),
            Err(e) => Err(e),
        }
    }

    /// A path from parts already checked (a service's own namespace and name, say).
    pub fn new(namespace: &str, kind: ObjectKind, name: &str) -> ObjectPath {
        ObjectPath {
            namespace: namespace.into(),
            kind,
            name: name.into(),
        }
    }

    /// The volume object `name` of this path's namespace (a service's volume).
    pub fn volume(&self, name: &str) -> ObjectPath {
        ObjectPath::new(&self.namespace, ObjectKind::Vol, name)
    }

    /// The bytes of `NAMESPACE/KIND/NAME`, without building the text.
    fn text(&self) -> impl Iterator<Item = u8> + '_ {
        let parts = [self.namespace.as_str(), self.kind.as_str(), self.name.as_str()];
        parts
            .into_iter()
            .enumerate()
            .flat_map(|(i, p)| (i > 0).then_some(b'/').into_iter().chain(p.bytes()))
    }
}

impl Ord for ObjectPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text().cmp(other.text())
    }
}

impl PartialOrd for ObjectPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Serde for maps keyed by path (`#[serde(with = "keyed")]`): keys written as their text,
/// which is how the state always stored them, and read back through `ObjectPath::parse`.
pub mod keyed {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ObjectPath;

    pub fn serialize<S: Serializer, V: Serialize>(map: &BTreeMap<ObjectPath, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<ObjectPath, V>, D::Error> {
        BTreeMap::<String, V>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((ObjectPath::parse(&k).map_err(D::Error::custom)?, v)))
            .collect()
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        assert_eq!(ObjectPath::parse("demo/svc/kvm1").unwrap().to_string(), "demo/svc/kvm1");
        assert_eq!(ObjectPath::parse("kvm1").unwrap().to_string(), "root/svc/kvm1");
        assert!(matches!(ObjectPath::parse("a/b"), Err(PathError::Shape(_))));
        assert!(matches!(ObjectPath::parse("demo/vm/x"), Err(PathError::Kind(..))));
        assert!(matches!(ObjectPath::parse("Demo/svc/x"), Err(PathError::Namespace(..))));
        assert!(matches!(ObjectPath::parse("demo/svc/x_y"), Err(PathError::Name(..))));
        assert!(matches!(ObjectPath::parse("system/svc/x"), Err(PathError::Reserved(_))));
        assert!(ObjectPath::parse("system/cfg/drbd").is_ok());
    }

    #[test]
    fn a_decoded_path_is_checked_as_a_parsed_one() {
        ObjectPath::parse("demo/svc/kvm1").unwrap().check().unwrap();
        let decoded = |namespace: &str, kind, name: &str| ObjectPath::new(namespace, kind, name).check();
        assert!(matches!(
            decoded("../x", ObjectKind::Cfg, "y"),
            Err(PathError::Shape(_))
        ));
        assert!(matches!(
            decoded("demo", ObjectKind::Svc, "a b"),
            Err(PathError::Name(..))
        ));
        assert!(matches!(
            decoded("\0emo", ObjectKind::Svc, "a"),
            Err(PathError::Namespace(..))
        ));
        assert!(matches!(
            decoded(SYSTEM, ObjectKind::Vol, "a"),
            Err(PathError::Reserved(_))
        ));
    }

    #[test]
    fn orders_as_its_text() {
        let texts = [
            "a-b/svc/x",
            "a/svc/x",
            "a/vol/a",
            "a/svc/xy",
            "a/cfg/z",
            "ab/cfg/a",
            "system/cfg/drbd",
        ];
        let mut paths: Vec<ObjectPath> = texts.iter().map(|t| ObjectPath::parse(t).unwrap()).collect();
        paths.sort();
        let mut sorted = texts.map(String::from).to_vec();
        sorted.sort();
        assert_eq!(paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(), sorted);
    }

    #[test]
    fn keyed_maps_read_back_what_they_wrote() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct M(#[serde(with = "keyed")] std::collections::BTreeMap<ObjectPath, u8>);
        let m = M([(ObjectPath::parse("demo/svc/kvm1").unwrap(), 1)].into());
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"demo/svc/kvm1":1}"#);
        assert_eq!(serde_json::from_str::<M>(&text).unwrap(), m);
        assert!(serde_json::from_str::<M>(r#"{"demo/vm/kvm1":1}"#).is_err());
        let cmd = serde_json::to_string(&ObjectPath::parse("kvm1").unwrap()).unwrap();
        assert_eq!(cmd, r#"{"namespace":"root","kind":"svc","name":"kvm1"}"#);
    }

    #[test]
    fn globs() {
        assert!(glob("*/svc/*", "demo/svc/kvm1"));
        assert!(!glob("*/svc/*", "demo/vol/kvm1"));
        assert!(glob("demo/*/kvm?", "demo/vol/kvm1"));
        assert!(glob("*", "x"));
        assert!(!glob("a*b", "acbd"));
    }
}
