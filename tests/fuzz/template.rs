//! DRBD templates (`drivers::drbd::render`, within `budget.rs`): any template renders or is
//! refused, never a panic, whatever the budget; a rendering that succeeds stays within the
//! budget's output and is byte for byte what plain gotmpl renders (the budget changes nothing
//! of what a template writes); a refusal is a short one-line error.

use omraft::drivers::drbd::render::{self, Budget, Exceeded, RenderError, TemplateData, TemplateNode};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde::Serialize;

use crate::hostile::{self, check_error};

/// What `render` gives a template: the data, and `.Omctl`.
#[derive(Serialize)]
struct WithOmctl<'a> {
    #[serde(flatten)]
    data: &'a TemplateData,
    #[serde(rename = "Omctl")]
    omctl: &'a str,
}

const OMCTL: &str = render::DEFAULT_OMCTL;

/// A resource on `n` nodes, as the applier renders one.
fn data(n: u32) -> TemplateData {
    TemplateData {
        name: "kvm1.demo.vol.drbd4kvm".into(),
        nodes: (0..n)
            .map(|i| TemplateNode {
                name: format!("n{}", i + 1),
                addr: format!("ipv4 10.30.0.{}:7289", i + 11),
                device: "/dev/drbd0".into(),
                disk: "/dev/data/kvm1.demo.vol.drbd4kvm".into(),
                node_id: i,
            })
            .collect(),
    }
}

/// Plain gotmpl's rendering, as `render` sets it up but without a budget.
fn plain(template: &str, data: &TemplateData) -> Result<String, String> {
    let value = gotmpl::to_value(&WithOmctl { data, omctl: OMCTL }).map_err(|e| e.to_string())?;
    gotmpl::Template::new("drbd")
        .missing_key(gotmpl::MissingKey::Error)
        .parse(template)
        .and_then(|t| t.execute_to_string(&value))
        .map_err(|e| e.to_string())
}

/// Actions, text and hostile pieces a template is made of.
fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&[
            "{{.Name}}", "{{.Omctl}}", "{{len .Nodes}}", "{{.Nmae}}", "{{$}}", "{{.}}", "{{nil}}",
            "{{index .Nodes 0}}", "{{index .Nodes 9}}", "{{(index .Nodes 0).Addr}}", "{{printf \"%q %v %x\" .Name . 255}}",
            "{{print .Name .Nodes}}", "{{println .}}", "{{html .}}", "{{js .Nodes}}", "{{urlquery .Name}}",
            "{{- .Name -}}", "{{/* comment */}}", "{{template \"t\" .}}", "{{template \"t\"}}", "{{block \"b\" .}}b{{end}}",
            "{{break}}", "{{continue}}", "{{and 1 0 .}}", "{{or 0 \"\" .Name}}", "{{not .}}", "{{eq .Name \"x\"}}",
            "{{lt 1 2.5}}", "{{slice .Name 1 3}}", "{{slice .Name 3 1}}", "{{call .}}", "{{$x}}", "{{$x := 1}}",
            "{{$x = 2}}", "{{.Name | printf \"%s-%s\" .Name}}", "{{index .Name 99}}", "{{len 3}}",
            "{{printf \"%*d\" 70000 1}}", "{{printf \"%.*f\" -1 1.5}}", "{{printf \"%!\"}}", "{{printf}}",
            "{{omraft}}", "{{end}}", "{{else}}", "{{", "}}", "{{-", "-}}", "{{\"", "{{`", "`}}", "\"}}",
        ][..])
        .prop_map(str::to_string),
        3 => select(&["resource ", "on ", " {\n", "}\n", ";", " ", "\n", "\t"][..]).prop_map(str::to_string),
        1 => (0u32..100_000).prop_map(|w| format!("{{{{printf \"%{w}d\" 1}}}}")),
        1 => hostile::number().prop_map(|n| format!("{{{{{n}}}}}")),
        2 => hostile::chars(12).prop_map(|s| format!("{{{{{s}}}}}")),
        2 => hostile::chars(12),
        1 => (hostile::long(), select(&["{{", "{{\"", "{{.", "{{$", "{{template \""][..]))
            .prop_map(|(s, open)| format!("{open}{s}}}}}")),
    ]
}

/// Templates nested in ranges, conditions, defines and growing variables.
fn nested() -> impl Strategy<Value = String> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        let heads = select(
            &[
                "range .Nodes",
                "range $i, $n := .Nodes",
                "range 3",
                "range 1000000",
                "range .Name",
                "range $i := 5",
                "if .Name",
                "if $",
                "if not .",
                "with .Nodes",
                "with index .Nodes 0",
                "with $x := .Name",
            ][..],
        );
        prop_oneof![
            3 => vec(inner.clone(), 0..6).prop_map(|parts| parts.concat()),
            3 => (heads, inner.clone(), option::of(inner.clone())).prop_map(|(head, body, otherwise)| {
                let otherwise = otherwise.map(|e| format!("{{{{else}}}}{e}")).unwrap_or_default();
                format!("{{{{{head}}}}}{body}{otherwise}{{{{end}}}}")
            }),
            2 => (select(&["t", "b", "d", "drbd"][..]), inner.clone())
                .prop_map(|(name, body)| format!("{{{{define \"{name}\"}}}}{body}{{{{end}}}}")),
            1 => (inner.clone(), 0usize..40).prop_map(|(body, doublings)| {
                let grow = "{{$x = print $x $x}}".repeat(doublings);
                format!("{{{{$x := \"0123456789abcdef\"}}}}{body}{grow}{{{{$x}}}}")
            }),
            1 => (inner, 1usize..20).prop_map(|(body, calls)| {
                format!("{{{{define \"t\"}}}}{body}{{{{end}}}}{}", "{{template \"t\" .}}".repeat(calls))
            }),
        ]
    })
}

/// A template: nested pieces, the built-in one mutated, or arbitrary text.
fn template() -> impl Strategy<Value = String> {
    let mutated = vec((any::<usize>(), any::<u8>(), hostile::char()), 1..6).prop_map(|edits| {
        edits
            .into_iter()
            .fold(render::BUILTIN_TEMPLATE.to_string(), |t, (at, how, c)| {
                hostile::mutate(&t, at, how, c)
            })
    });
    prop_oneof![
        6 => nested(),
        2 => mutated,
        1 => hostile::chars(200),
        1 => hostile::long(),
    ]
}

/// A budget far smaller than the default, often, so that every limit is reached.
fn budget() -> impl Strategy<Value = Budget> {
    prop_oneof![
        3 => (1u64..20_000, 1usize..16_384).prop_map(|(steps, output)| Budget { steps, output, ..Budget::DEFAULT }),
        1 => Just(Budget::DEFAULT),
    ]
}

proptest! {
    #![proptest_config(crate::config(30_000))]

    #[test]
    fn any_template_renders_within_its_budget_as_gotmpl_does_or_is_refused(
        template in template(),
        nodes in 0u32..4,
        budget in budget(),
    ) {
        let data = data(nodes);
        match render::render_within(&template, &data, OMCTL, budget) {
            Ok(out) => {
                prop_assert!(out.len() <= budget.output, "{} bytes, over {}", out.len(), budget.output);
                prop_assert_eq!(Ok(out), plain(&template, &data));
            }
            Err(e) => {
                if let RenderError::OverBudget(why) = &e {
                    match *why {
                        Exceeded::Steps { limit, .. } => prop_assert_eq!(limit, budget.steps),
                        Exceeded::Output { limit, .. } | Exceeded::Value { limit, .. } => prop_assert_eq!(limit, budget.output),
                        Exceeded::Time { limit, .. } => prop_assert_eq!(limit, budget.time),
                    }
                }
                check_error("render_within", &e.to_string())?;
            }
        }
    }
}
