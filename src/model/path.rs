//! Object paths: `NAMESPACE/KIND/NAME`, or just `NAME` for a service of the root namespace.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::echo::echo;
use crate::config::kind::check_name;

/// Object kinds: services, volumes, config maps, secrets, users.
pub const KINDS: [&str; 5] = ["svc", "vol", "cfg", "sec", "usr"];

/// The namespace of paths given as a bare name.
pub const ROOT: &str = "root";

/// A reserved namespace: it holds the cluster's own config maps, secrets and users only.
pub const SYSTEM: &str = "system";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectPath {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
            [name] => (ROOT, "svc", name),
            [ns, kind, name] => (ns, kind, name),
            _ => return Err(PathError::Shape(s.into())),
        };
        if !KINDS.contains(&kind) {
            return Err(PathError::Kind(s.into(), kind.into()));
        }
        check_name(ns).map_err(|e| PathError::Namespace(s.into(), ns.into(), e))?;
        check_name(name).map_err(|e| PathError::Name(s.into(), name.into(), e))?;
        if ns == SYSTEM && !["cfg", "sec", "usr"].contains(&kind) {
            return Err(PathError::Reserved(s.into()));
        }
        Ok(ObjectPath {
            namespace: ns.into(),
            kind: kind.into(),
            name: name.into(),
        })
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
    fn globs() {
        assert!(glob("*/svc/*", "demo/svc/kvm1"));
        assert!(!glob("*/svc/*", "demo/vol/kvm1"));
        assert!(glob("demo/*/kvm?", "demo/vol/kvm1"));
        assert!(glob("*", "x"));
        assert!(!glob("a*b", "acbd"));
    }
}
