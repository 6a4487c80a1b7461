//! References in object configuration values: `{name}`, `{namespace}`, `{kind}`,
//! `{nodename}`, `{clusternodes}`, `{clustername}`, `{fqdn}`. Stored as written, resolved
//! when a value is evaluated, for a given node.

use super::echo::echo;

/// Every reference a value may use.
pub const REFERENCES: &[&str] = &[
    "name",
    "namespace",
    "kind",
    "nodename",
    "clusternodes",
    "clustername",
    "fqdn",
];

/// What references resolve to.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    /// The node the value is evaluated for, if any.
    pub nodename: Option<&'a str>,
    /// Nodes that may host services (witnesses excluded), in node id order.
    pub clusternodes: &'a [String],
    pub clustername: &'a str,
}

/// Why a value's references are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RefError {
    #[error("unknown reference {{{}}} (known: {known})", echo(.0), known = REFERENCES.iter().map(|r| format!("{{{r}}}")).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("unclosed '{{' in {:?}", echo(.0))]
    Unclosed(String),
    #[error("{{nodename}} needs a node: give --node")]
    NoNode,
}

/// The references a value uses, or why it is malformed.
pub fn references(value: &str) -> Result<Vec<&str>, RefError> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}').ok_or_else(|| RefError::Unclosed(value.to_string()))?;
        let name = &after[..end];
        if !REFERENCES.contains(&name) {
            return Err(RefError::Unknown(name.to_string()));
        }
        out.push(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// The value with every reference replaced.
pub fn evaluate(value: &str, ctx: &Context) -> Result<String, RefError> {
    references(value)?;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('}').expect("checked by references");
        out.push_str(&match &after[..end] {
            "name" => ctx.name.to_string(),
            "namespace" => ctx.namespace.to_string(),
            "kind" => ctx.kind.to_string(),
            "nodename" => ctx.nodename.ok_or(RefError::NoNode)?.to_string(),
            "fqdn" => format!("{}.{}.svc.{}", ctx.name, ctx.namespace, ctx.clustername),
            "clusternodes" => ctx.clusternodes.join(" "),
            "clustername" => ctx.clustername.to_string(),
            other => unreachable!("unknown reference {other} passed references()"),
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(nodes: &[String]) -> Context<'_> {
        Context {
            name: "kvm1",
            namespace: "demo",
            kind: "svc",
            nodename: Some("n1"),
            clusternodes: nodes,
            clustername: "drbd4kvm",
        }
    }

    #[test]
    fn evaluates_every_reference() {
        let nodes = vec!["n1".to_string(), "n2".to_string()];
        let c = ctx(&nodes);
        assert_eq!(evaluate("{name}", &c).unwrap(), "kvm1");
        assert_eq!(evaluate("{clusternodes}", &c).unwrap(), "n1 n2");
        assert_eq!(
            evaluate("{name}.{namespace}.{kind}@{nodename}/{clustername}", &c).unwrap(),
            "kvm1.demo.svc@n1/drbd4kvm"
        );
        assert_eq!(evaluate("{fqdn}", &c).unwrap(), "kvm1.demo.svc.drbd4kvm");
        assert_eq!(evaluate("plain", &c).unwrap(), "plain");
    }

    #[test]
    fn refuses_unknown_and_unclosed() {
        assert_eq!(references("{nmae}"), Err(RefError::Unknown("nmae".into())));
        assert!(matches!(references("a{name"), Err(RefError::Unclosed(_))));
        let nodes = vec![];
        let c = Context {
            nodename: None,
            ..ctx(&nodes)
        };
        assert_eq!(evaluate("{nodename}", &c), Err(RefError::NoNode));
    }
}
