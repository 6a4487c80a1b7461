//! References in values (`config::refs`): any value's references are found or refused in a
//! short error, never a panic; a value evaluates exactly when its references are known (and
//! `{nodename}` has a node), to the value with each reference replaced in turn.

use omraft::config::refs::{self, Context, RefError, REFERENCES};
use proptest::prelude::*;

use crate::hostile::{self, check_error};

/// What each reference resolves to in `ctx` (none holds a brace).
fn resolved(name: &str, ctx: &Context) -> Option<String> {
    Some(match name {
        "name" => ctx.name.to_string(),
        "namespace" => ctx.namespace.to_string(),
        "kind" => ctx.kind.to_string(),
        "nodename" => ctx.nodename?.to_string(),
        "clusternodes" => ctx.clusternodes.join(" "),
        "clustername" => ctx.clustername.to_string(),
        "fqdn" => format!("{}.{}.svc.{}", ctx.name, ctx.namespace, ctx.clustername),
        other => panic!("{other} is no reference"),
    })
}

fn value() -> impl Strategy<Value = String> {
    hostile::text(&[
        "{",
        "}",
        "{name}",
        "{namespace}",
        "{kind}",
        "{nodename}",
        "{clusternodes}",
        "{clustername}",
        "{fqdn}",
        "{nmae}",
        "{{",
        "}}",
        "{}",
        "name",
        "x",
    ])
}

proptest! {
    #![proptest_config(crate::config(50_000))]

    #[test]
    fn references_evaluate_as_written_or_are_refused_in_a_short_error(v in value(), with_node in any::<bool>()) {
        let nodes = ["n1".to_string(), "n2".to_string()];
        let ctx = Context {
            name: "kvm1",
            namespace: "demo",
            kind: "svc",
            nodename: with_node.then_some("n1"),
            clusternodes: &nodes,
            clustername: "drbd4kvm",
        };
        let found = refs::references(&v);
        let evaluated = refs::evaluate(&v, &ctx);
        let names = match found {
            Ok(names) => names,
            Err(e) => {
                check_error("references", &e.to_string())?;
                prop_assert_eq!(evaluated, Err(e));
                return Ok(());
            }
        };
        prop_assert!(names.iter().all(|n| REFERENCES.contains(n)));
        prop_assert_eq!(names.len(), v.matches('{').count(), "every '{{' opens a reference");
        let mut expected = v.clone();
        for name in &names {
            let Some(with) = resolved(name, &ctx) else {
                prop_assert_eq!(evaluated, Err(RefError::NoNode));
                return Ok(());
            };
            expected = expected.replacen(&format!("{{{name}}}"), &with, 1);
        }
        prop_assert_eq!(evaluated, Ok(expected));
    }
}
