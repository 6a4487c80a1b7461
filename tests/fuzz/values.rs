//! Keyword values, keys and paths: every check a value meets on the way in (`config::kind`,
//! `model::catalog`, `config::keywords`, node names and addresses, ssh keys) takes any text
//! without panicking, refuses it in a short one-line error, and what it accepts has the shape
//! it promises (a port in range, a size within 1 EiB, one line without control characters...).
//! `ConfigKey`, `ObjectKey` and `ObjectPath` print as text that parses back to themselves.

use omraft::config::keywords::{self, ObjectKind};
use omraft::config::kind::{self, Kind};
use omraft::model::catalog::{self, ConfigKey, CATALOG};
use omraft::model::{self, ObjectKey, ObjectPath};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::hostile::{self, check_error};

/// A real ed25519 public key line, as ssh-keygen writes it.
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgCrZCehGhMPJK5j1ImjfzEKCaoSTiUBweLHteT8Hxd omraft@n1";

/// Valid values of every kind, to mutate.
const GOOD: &[&str] = &[
    "tcp://{host}:49152",
    "qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft&no_verify=1",
    "qemu+tcp://10.0.0.2:16509/system",
    "qemu:///system",
    "10.30.0.11:1215",
    "[fe80::1]:65535",
    "n1.example.org:1",
    "4G",
    "1.5gib",
    "1m30s",
    "300ms",
    "a6867a1e-e8b3-46eb-919f-78d4c60ca9c9",
    "n1 n2 {clusternodes}",
    "nodes order",
    SSH_KEY,
];

/// Parts of values of every kind.
const PARTS: &[&str] = &[
    "tcp://",
    "qemu+ssh://",
    "qemu+ext://",
    "{host}",
    "{name}",
    "root@",
    "/system",
    "?keyfile=",
    "&command=",
    ":",
    "[",
    "]",
    "::1",
    "10.0.0.1",
    "n1",
    ".",
    "-",
    "1215",
    "k",
    "g",
    "ib",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "true",
    "ssh-ed25519 ",
    "AAAA",
    "=",
    " ",
];

/// A value: hostile text, or a good one mutated.
pub fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hostile::text(PARTS),
        2 => (select(GOOD), vec((any::<usize>(), any::<u8>(), hostile::char()), 0..4)).prop_map(|(good, edits)| {
            edits
                .into_iter()
                .fold(good.to_string(), |t, (at, how, c)| hostile::mutate(&t, at, how, c))
        }),
    ]
}

/// Every kind a keyword value may have.
const KINDS: &[Kind] = &[
    Kind::Name,
    Kind::Choice(&["drbd", "lvm"]),
    Kind::Ident,
    Kind::Bool,
    Kind::Int,
    Kind::Size,
    Kind::Duration,
    Kind::Interval,
    Kind::Text,
    Kind::Nodes,
    Kind::Uuid,
];

fn one_line(v: &str) -> bool {
    !v.chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// A key, `SECTION.KEYWORD[@NODE]`: a catalog's, mutated, or hostile text.
fn key() -> impl Strategy<Value = String> {
    let known: Vec<String> = CATALOG
        .iter()
        .map(|k| {
            let section = if k.section == "pool" { "pool#p" } else { k.section };
            format!("{section}.{}", k.name)
        })
        .chain(keywords::CATALOG.iter().map(|k| {
            let section = if k.section == "DEFAULT" {
                "DEFAULT".into()
            } else {
                format!("{}#1", k.section)
            };
            format!("{section}.{}", k.name)
        }))
        .collect();
    prop_oneof![
        2 => select(known.clone()),
        2 => (select(known), any::<usize>(), any::<u8>(), hostile::char())
            .prop_map(|(k, at, how, c)| hostile::mutate(&k, at, how, c)),
        2 => hostile::text(&["cluster", "pool#", "lease", "migration", ".", "@", "#", "volume#", "DEFAULT", "name"]),
    ]
}

proptest! {
    #![proptest_config(crate::config(50_000))]

    #[test]
    fn every_value_check_refuses_in_a_short_error_and_accepts_only_its_shape(v in value()) {
        for k in KINDS {
            if let Err(e) = k.check(&v) {
                check_error(&format!("{k:?}"), &e)?;
            } else if matches!(k, Kind::Name | Kind::Ident | Kind::Bool | Kind::Uuid) {
                prop_assert!(!v.is_empty() && v.len() <= 127, "{:?} accepted {:?}", k, v);
                prop_assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c)), "{:?} accepted {:?}", k, v);
            } else if *k == Kind::Int {
                prop_assert!(v.chars().all(|c| c.is_ascii_digit() || c == '+'), "{:?} accepted {:?}", k, v);
            }
        }
        match kind::check_line(&v) {
            Ok(()) => prop_assert!(v.len() <= kind::MAX_VALUE_BYTES && one_line(&v)),
            Err(e) => check_error("check_line", &e)?,
        }
        match kind::check_addr(&v) {
            Ok(()) => {
                prop_assert!(v.len() <= kind::MAX_ADDR_BYTES);
                prop_assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)), "{:?}", v);
                let port: u16 = v.rsplit_once(':').unwrap().1.parse().unwrap();
                prop_assert!(port > 0);
                model::validate_node_addr(&v).unwrap();
            }
            Err(e) => {
                check_error("check_addr", &e)?;
                check_error("validate_node_addr", &model::validate_node_addr(&v).unwrap_err().to_string())?;
            }
        }
        match kind::check_migration_uri(&v) {
            Ok(()) => prop_assert!(v.starts_with("tcp://{host}") && one_line(&v), "{:?}", v),
            Err(e) => check_error("check_migration_uri", &e)?,
        }
        for (what, result) in [
            ("check_migration_libvirt_uri", kind::check_migration_libvirt_uri(&v)),
            ("check_local_libvirt_uri", kind::check_local_libvirt_uri(&v)),
        ] {
            match result {
                Ok(()) if v == "qemu:///system" => {}
                Ok(()) => {
                    let (scheme, _) = v.split_once("://").unwrap();
                    prop_assert!(kind::LIBVIRT_TRANSPORTS.contains(&scheme) && one_line(&v), "{}: {:?}", what, v);
                    for param in v.split_once('?').map(|(_, q)| q.split('&')).into_iter().flatten() {
                        let name = param.split_once('=').unwrap().0;
                        prop_assert!(kind::LIBVIRT_PARAMS.contains(&name), "{}: {:?}", what, v);
                    }
                }
                Err(e) => check_error(what, &e)?,
            }
        }
        match kind::parse_size(&v) {
            Ok(n) => prop_assert!((1..=1 << 60).contains(&n)),
            Err(e) => check_error("parse_size", &e)?,
        }
        match kind::parse_millis(&v) {
            Ok(n) => prop_assert!(n >= 1),
            Err(e) => check_error("parse_millis", &e)?,
        }
        if let Err(e) = kind::parse_duration(&v) {
            check_error("parse_duration", &e)?;
        }
        match model::parse_ssh_key(&v) {
            Ok(k) => {
                prop_assert!(v.len() <= model::SSH_KEY_MAX && v.starts_with("ssh-ed25519 "));
                prop_assert!(v.chars().all(|c| (' '..='~').contains(&c)), "{:?}", v);
                prop_assert_eq!(k.kind, model::SSH_KEY_TYPE);
            }
            Err(e) => check_error("parse_ssh_key", &e)?,
        }
        match model::validate_node_name(&v) {
            Ok(()) => prop_assert!(kind::check_name(&v).is_ok()),
            Err(e) => check_error("validate_node_name", &e.to_string())?,
        }
    }

    #[test]
    fn keys_and_paths_read_back_or_are_refused_in_a_short_error(text in key()) {
        match ConfigKey::parse(&text) {
            Ok((k, _)) => prop_assert_eq!(ConfigKey::parse(&k.to_string()).unwrap().0, k),
            Err(e) => check_error("ConfigKey::parse", &e.to_string())?,
        }
        match ObjectKey::parse(&text) {
            Ok(k) => prop_assert_eq!(ObjectKey::parse(&k.to_string()).unwrap(), k),
            Err(e) => check_error("ObjectKey::parse", &e.to_string())?,
        }
        match ObjectPath::parse(&text) {
            Ok(p) => prop_assert_eq!(ObjectPath::parse(&p.to_string()).unwrap(), p),
            Err(e) => check_error("ObjectPath::parse", &e.to_string())?,
        }
        if let Ok(k) = ObjectKey::parse(&text) {
            for kind in ObjectKind::ALL {
                if let Err(e) = keywords::lookup(kind, &k.section, k.split_scope().0) {
                    check_error("keywords::lookup", &e.to_string())?;
                }
            }
        }
    }

    #[test]
    fn config_updates_parse_and_check_or_are_refused_in_a_short_error(
        set in vec((key(), value()), 0..5),
        unset in vec(key(), 0..3),
    ) {
        let (set, unset) = match catalog::parse_update(&set, &unset) {
            Ok(update) => update,
            Err(e) => return check_error("parse_update", &e.to_string()),
        };
        for (k, v) in &set {
            let (again, keyword) = ConfigKey::parse(&k.to_string()).unwrap();
            prop_assert_eq!(&again, k);
            prop_assert!(keyword.kind.check(v).is_ok());
        }
        match catalog::check_input(&set) {
            Ok(()) => {
                for (_, v) in &set {
                    prop_assert!(kind::check_line(v).is_ok(), "{:?}", v);
                }
            }
            Err(e) => check_error("catalog::check_input", &e.to_string())?,
        }
        match catalog::updated(&Default::default(), &set, &unset) {
            Ok(config) => {
                for (k, v) in &set {
                    prop_assert_eq!(config.get(&k.section).and_then(|s| s.get(&k.keyword)), Some(v));
                }
            }
            Err(e) => check_error("catalog::updated", &e.to_string())?,
        }
    }
}
