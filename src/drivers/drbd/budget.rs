//! The bounds every rendering of a DRBD template runs under, whoever renders it: the API when
//! a template is written, the applier when it writes a resource file. A template is text from
//! the log that any operator may write, so it must never hold a node's CPU or memory. gotmpl
//! bounds nesting depth and `range` iterations, but not how often templates call each other,
//! what they write or how large the values they build grow; this module bounds those:
//!
//! - **Steps.** Before execution, every list of the parse trees (a template's body, a define,
//!   each branch of `if`, `with` and `range`) gets a first action calling a counter with the
//!   list's cost: one for entering it, and for each of its nodes one plus the expressions of
//!   its pipeline. A list entered (a template call, a range iteration) pays for all its nodes
//!   whether or not they all run, so the count bounds the work from above, and templates that
//!   call each other without writing anything pay all the same.
//! - **Output.** The writer refuses any byte past the output budget.
//! - **Values.** `print`, `println`, `printf`, `html`, `js` and `urlquery` are the builtins
//!   that make a string larger than their arguments. Each call is bounded before it runs: the
//!   most it could make from its arguments (and printf's widths and precisions) must fit the
//!   output budget; then gotmpl's own builtin makes the value. A string doubled into a
//!   variable over and over is refused before it outgrows the budget.
//! - **Time.** The counter and those builtins also check a deadline: the last resort.
//!
//! A template over budget stops at once with `Exceeded`, saying which budget and how far it
//! got.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gotmpl::parse::{ActionNode, CommandNode, Expr, ListNode, Node, Number, PipeNode};
use gotmpl::{Template, TemplateError, Value};

/// The most one rendering may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Steps: lists entered, their nodes and their expressions (see the module's doc).
    pub steps: u64,
    /// Bytes written, and the most any one call of a growing builtin may make.
    pub output: usize,
    /// Wall-clock time, checked at every step.
    pub time: Duration,
}

impl Budget {
    /// What every DRBD template gets. The built-in template on 32 nodes (as many as a DRBD 9
    /// resource can have) takes about 900 steps and writes 6.5 KiB, in well under a
    /// millisecond: these leave room for far larger resource files, and stop a template that
    /// calls others in a doubling chain within milliseconds.
    pub const DEFAULT: Budget = Budget {
        steps: 100_000,
        output: 64 << 10,
        time: Duration::from_secs(1),
    };
}

/// Which budget a rendering went over, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error(
        "more than {limit} steps (template calls, range iterations, actions and their expressions), having written {written} bytes"
    )]
    Steps { limit: u64, written: usize },
    #[error("more than {limit} bytes of output, after {steps} steps")]
    Output { limit: usize, steps: u64 },
    #[error("{function} could make up to {bound} bytes, more than the {limit} a value may hold, after {steps} steps")]
    Value {
        function: &'static str,
        bound: usize,
        limit: usize,
        steps: u64,
    },
    #[error("still running after {limit:?}, having taken {steps} steps and written {written} bytes")]
    Time {
        limit: Duration,
        steps: u64,
        written: usize,
    },
}

/// Why a budgeted execution failed: over budget, or gotmpl's own error.
#[derive(Debug)]
pub(super) enum Failure {
    Exceeded(Exceeded),
    Template(TemplateError),
}

/// The counter's name in the instrumented trees.
const STEP: &str = "omraft_budget_step";

/// The builtins whose result may be larger than their arguments.
const GROWING: [&str; 6] = ["print", "println", "printf", "html", "js", "urlquery"];

/// What one execution has used, shared by the counter, the guards and the writer.
struct Meter {
    budget: Budget,
    started: Instant,
    steps: AtomicU64,
    written: AtomicUsize,
    exceeded: Mutex<Option<Exceeded>>,
}

impl Meter {
    fn new(budget: Budget) -> Meter {
        Meter {
            budget,
            started: Instant::now(),
            steps: AtomicU64::new(0),
            written: AtomicUsize::new(0),
            exceeded: Mutex::new(None),
        }
    }

    fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    /// Records why execution stops (the first reason counts) and the error that stops it.
    fn refuse(&self, why: Exceeded) -> TemplateError {
        let message = why.to_string();
        let mut first = self.exceeded.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
        TemplateError::Exec(message)
    }

    fn check_time(&self) -> Result<(), TemplateError> {
        if self.started.elapsed() > self.budget.time {
            return Err(self.refuse(Exceeded::Time {
                limit: self.budget.time,
                steps: self.steps(),
                written: self.written(),
            }));
        }
        Ok(())
    }

    /// The counter: a list entered, of cost `args[0]`.
    fn step(&self, args: &[Value]) -> Result<Value, TemplateError> {
        let cost = match args.first() {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(1),
            _ => 1,
        };
        let steps = self.steps.fetch_add(cost, Ordering::Relaxed).saturating_add(cost);
        if steps > self.budget.steps {
            return Err(self.refuse(Exceeded::Steps {
                limit: self.budget.steps,
                written: self.written(),
            }));
        }
        self.check_time()?;
        Ok(Value::String("".into()))
    }

    /// A growing builtin, bounded before gotmpl's own runs.
    fn guarded(&self, function: &'static str, args: &[Value]) -> Result<Value, TemplateError> {
        self.check_time()?;
        let bound = most_made(function, args);
        if bound > self.budget.output {
            return Err(self.refuse(Exceeded::Value {
                function,
                bound,
                limit: self.budget.output,
                steps: self.steps(),
            }));
        }
        builtin(function, args)
    }
}

/// The executor's output: refuses bytes past the budget.
struct Out<'a> {
    text: String,
    meter: &'a Meter,
}

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let limit = self.meter.budget.output;
        if self.text.len().saturating_add(s.len()) > limit {
            self.meter.refuse(Exceeded::Output {
                limit,
                steps: self.meter.steps(),
            });
            return Err(std::fmt::Error);
        }
        self.text.push_str(s);
        self.meter.written.store(self.text.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// Executes `template` (parsed by gotmpl, named `root`) on `data` within `budget`.
pub(super) fn execute(template: Template, root: &str, data: &Value, budget: Budget) -> Result<String, Failure> {
    let meter = Arc::new(Meter::new(budget));
    // Registered on the parsed template (the executor reads the functions when it runs); a
    // template that calls the counter itself only pays more.
    let counter = meter.clone();
    let mut template = template.func(STEP, move |args| counter.step(args));
    for function in GROWING {
        let guard = meter.clone();
        template = template.func(function, move |args| guard.guarded(function, args));
    }
    let names: Vec<String> = template.templates().into_iter().map(str::to_string).collect();
    for name in names {
        if let Some(tree) = template.lookup(&name) {
            let mut tree = tree.clone();
            instrument(&mut tree);
            template = template.add_parse_tree(&name, tree);
        }
    }
    let mut out = Out {
        text: String::new(),
        meter: &meter,
    };
    // A template whose body is only whitespace has no tree by its name; executing it writes
    // that whitespace and runs nothing.
    let result = if template.lookup(root).is_some() {
        template.execute_template_fmt(&mut out, root, data)
    } else {
        template.execute_fmt(&mut out, data)
    };
    let exceeded = meter.exceeded.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (exceeded, result) {
        (Some(why), _) => Err(Failure::Exceeded(why)),
        (None, Err(e)) => Err(Failure::Template(e)),
        (None, Ok(())) => Ok(out.text),
    }
}

/// Adds the counter at the head of `list` and of every list inside it.
fn instrument(list: &mut ListNode) {
    for node in &mut list.nodes {
        match node {
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                instrument(&mut b.body);
                if let Some(e) = &mut b.else_body {
                    instrument(e);
                }
            }
            Node::List(l) => instrument(l),
            Node::Define(d) => instrument(&mut d.body),
            _ => {}
        }
    }
    let cost = list.nodes.iter().fold(1u64, |sum, n| sum.saturating_add(node_cost(n)));
    let pos = list.pos;
    let count = Expr::Number(pos, Number::Int(i64::try_from(cost).unwrap_or(i64::MAX)));
    let call = Node::Action(ActionNode {
        pos,
        pipe: PipeNode {
            pos,
            decl: vec![],
            commands: vec![CommandNode {
                pos,
                args: vec![Expr::Identifier(pos, STEP.into()), count],
            }],
            is_assign: false,
        },
    });
    list.nodes.insert(0, call);
}

/// One for the node, plus its pipeline's expressions (its body, a list, pays when entered).
fn node_cost(node: &Node) -> u64 {
    let pipe = match node {
        Node::Action(a) => Some(&a.pipe),
        Node::If(b) | Node::Range(b) | Node::With(b) => Some(&b.pipe),
        Node::Template(t) => t.pipe.as_ref(),
        _ => None,
    };
    pipe.map_or(0, pipe_cost).saturating_add(1)
}

fn pipe_cost(pipe: &PipeNode) -> u64 {
    pipe.commands
        .iter()
        .flat_map(|c| &c.args)
        .fold(0u64, |sum, e| sum.saturating_add(expr_cost(e)))
}

fn expr_cost(expr: &Expr) -> u64 {
    let inner = match expr {
        Expr::Pipe(_, p) => pipe_cost(p),
        Expr::Chain(_, e, fields) => expr_cost(e).saturating_add(fields.len() as u64),
        Expr::Field(_, fields) | Expr::Variable(_, _, fields) => fields.len() as u64,
        _ => 0,
    };
    inner.saturating_add(1)
}

/// The most bytes `value` shows as (`<no value>` for nil, gotmpl's display otherwise).
fn shown(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Nil => "<no value>".len(),
        other => other.to_string().len(),
    }
}

/// The most the growing builtin `function` could make from `args`: what they show as, six
/// times over for the escapers (`<` is `\u003C` in js), and for printf, per verb, its
/// width and precision (gotmpl clamps each to 65,535) plus six times the longest argument
/// (any verb may show any argument, `%q` and `% #x` several bytes per byte) plus room for
/// numbers and error notes, and every argument again for `%!(EXTRA ...)`.
fn most_made(function: &str, args: &[Value]) -> usize {
    let all = args.iter().fold(0usize, |sum, a| sum.saturating_add(shown(a)));
    match function {
        "print" => all.saturating_add(args.len()),
        "println" => all.saturating_add(args.len()).saturating_add(1),
        "printf" => {
            let Some((Value::String(format), rest)) = args.split_first() else {
                return all.saturating_add(args.len());
            };
            let longest = rest.iter().map(shown).max().unwrap_or(0);
            let per_verb = longest.saturating_mul(6).saturating_add(400);
            let extra = rest
                .iter()
                .fold(0usize, |sum, a| sum.saturating_add(shown(a)).saturating_add(32));
            let mut bound = format.len().saturating_add(extra);
            for (i, _) in format.match_indices('%') {
                bound = bound.saturating_add(per_verb).saturating_add(widths(&format[i + 1..]));
            }
            bound
        }
        _ => all.saturating_mul(6),
    }
}

/// The widths and precisions of the printf verb `spec` begins (after its `%`): each number
/// of its flags, widths, precisions and argument indexes, and 65,535 for each `*`.
fn widths(spec: &str) -> usize {
    const MAX: usize = u16::MAX as usize;
    let mut sum = 0usize;
    let mut number = 0usize;
    for c in spec.chars() {
        match c {
            '0'..='9' => {
                number = number
                    .saturating_mul(10)
                    .saturating_add(c as usize - '0' as usize)
                    .min(MAX)
            }
            '*' => sum = sum.saturating_add(MAX),
            '+' | '-' | '#' | ' ' | '.' | '[' | ']' => {}
            _ => break,
        }
        if !c.is_ascii_digit() {
            sum = sum.saturating_add(number);
            number = 0;
        }
    }
    sum.saturating_add(number)
}

/// gotmpl's own builtin `function` on `args`: the template `{{FUNCTION .A0 .A1 ...}}` on a
/// map of them. Each growing builtin returns a string, which the action writes as it is.
fn builtin(function: &str, args: &[Value]) -> Result<Value, TemplateError> {
    let mut source = format!("{{{{{function}");
    let mut map = BTreeMap::new();
    for (i, a) in args.iter().enumerate() {
        let _ = write!(source, " .A{i}");
        map.insert(Arc::from(format!("A{i}")), a.clone());
    }
    source.push_str("}}");
    let out = Template::new("")
        .parse(&source)?
        .execute_to_string(&Value::Map(Arc::new(map)))?;
    Ok(Value::String(out.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::drbd::render::{self, RenderError, TemplateData, TemplateNode, BUILTIN_TEMPLATE};

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

    fn within(template: &str, budget: Budget) -> Result<String, RenderError> {
        render::render_within(template, &data(2), "/usr/sbin/omctl", budget)
    }

    fn exceeded(template: &str) -> Exceeded {
        match within(template, Budget::DEFAULT) {
            Err(RenderError::OverBudget(why)) => why,
            other => panic!("not refused for its budget: {other:?}"),
        }
    }

    /// The finding's template: 40 defines, each calling the one before twice, so the last
    /// would run 2^40 calls; `leaf` is what the first writes.
    fn doubling(leaf: &str) -> String {
        let mut t = format!("{{{{define \"d0\"}}}}{leaf}{{{{end}}}}");
        for i in 1..=40 {
            let p = i - 1;
            t += &format!("{{{{define \"d{i}\"}}}}{{{{template \"d{p}\" .}}}}{{{{template \"d{p}\" .}}}}{{{{end}}}}\n");
        }
        t + "resource {{.Name}} {\n{{template \"d40\" .}}}\n"
    }

    #[test]
    fn a_doubling_chain_of_defines_is_refused_for_its_steps_output_or_not() {
        for leaf in ["", "x"] {
            let why = exceeded(&doubling(leaf));
            assert!(
                matches!(why, Exceeded::Steps { limit: 100_000, .. }),
                "leaf {leaf:?}: {why}"
            );
        }
        let shown = RenderError::OverBudget(exceeded(&doubling(""))).to_string();
        assert!(
            shown.contains("more than 100000 steps") && shown.contains("having written 74 bytes"),
            "{shown}"
        );
    }

    #[test]
    fn the_builtin_template_on_drbds_most_nodes_fits_well_within_the_budget() {
        // About 900 steps and 6.5 KiB.
        let data = data(32);
        let small = Budget {
            steps: Budget::DEFAULT.steps / 100,
            output: Budget::DEFAULT.output / 8,
            ..Budget::DEFAULT
        };
        let out = render::render_within(BUILTIN_TEMPLATE, &data, "/usr/sbin/omctl", small).unwrap();
        render::check(&out, &data).unwrap();
        // Half that many steps is too few: the counter counts what runs.
        let fewer = Budget {
            steps: small.steps / 2,
            ..small
        };
        assert!(matches!(
            render::render_within(BUILTIN_TEMPLATE, &data, "/usr/sbin/omctl", fewer),
            Err(RenderError::OverBudget(Exceeded::Steps { .. }))
        ));
    }

    #[test]
    fn output_past_the_budget_is_refused() {
        // Few steps, much output: a range of long lines, and one long text.
        let line = "x".repeat(99);
        let why = exceeded(&format!("{{{{range 1000000}}}}{line}\n{{{{end}}}}"));
        assert!(matches!(why, Exceeded::Output { limit: 65536, .. }), "{why}");
        let why = exceeded(&"y".repeat(100 << 10));
        assert_eq!(why, Exceeded::Output { limit: 65536, steps: 2 });
        // Right at the budget is fine.
        let exact = Budget {
            output: 100,
            ..Budget::DEFAULT
        };
        assert_eq!(within(&"z".repeat(100), exact).unwrap().len(), 100);
        assert!(within(&"z".repeat(101), exact).is_err());
    }

    #[test]
    fn a_value_that_would_outgrow_the_budget_is_refused_before_it_is_made() {
        // Doubled into a variable 30 times, writing nothing: 16 GiB at the end.
        let mut t = String::from("{{$x := \"0123456789abcdef\"}}");
        for _ in 0..30 {
            t += "{{$x = print $x $x}}";
        }
        let why = exceeded(&t);
        assert!(
            matches!(
                why,
                Exceeded::Value {
                    function: "print",
                    limit: 65536,
                    ..
                }
            ),
            "{why}"
        );
        for (t, function) in [
            ("{{printf \"%65535d%65535d\" 1 2}}", "printf"),
            ("{{printf \"%*d\" 70000 1}}", "printf"),
            (
                "{{$x := printf \"%09999d\" 1}}{{$x = println $x $x $x $x $x $x $x}}",
                "println",
            ),
            ("{{$x := printf \"%011000d\" 1}}{{js $x}}", "js"),
            ("{{$x := printf \"%011000d\" 1}}{{html $x}}", "html"),
            ("{{$x := printf \"%011000d\" 1}}{{urlquery $x}}", "urlquery"),
        ] {
            let why = exceeded(t);
            assert!(
                matches!(why, Exceeded::Value { function: f, .. } if f == function),
                "{t}: {why}"
            );
        }
        // What fits is made by gotmpl's own builtins.
        assert_eq!(
            within(
                "{{printf \"%5d|%-4s|%q\" 42 \"ab\" \"<\"}} {{print 1 2 \"x\"}}{{js \"<\"}}",
                Budget::DEFAULT
            )
            .unwrap(),
            "   42|ab  |\"<\" 1 2x\\u003C"
        );
    }

    #[test]
    fn a_rendering_still_running_at_its_deadline_is_refused() {
        let budget = Budget {
            steps: u64::MAX,
            time: Duration::from_millis(1),
            ..Budget::DEFAULT
        };
        match within("{{range 1000000000}}{{end}}", budget) {
            Err(RenderError::OverBudget(Exceeded::Time { steps, written: 0, .. })) => assert!(steps > 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_template_calling_the_counter_only_pays_more() {
        assert!(matches!(
            exceeded(&format!("{{{{{STEP} 200000}}}}")),
            Exceeded::Steps { limit: 100_000, .. }
        ));
        assert_eq!(
            within(&format!("a{{{{{STEP} -1000000}}}}b"), Budget::DEFAULT).unwrap(),
            "ab"
        );
    }

    #[test]
    fn printf_widths_and_precisions_are_counted_from_the_format() {
        assert_eq!(widths("d"), 0);
        assert_eq!(widths("65535d rest 99"), 65535);
        assert_eq!(widths("-10.3f"), 13);
        assert_eq!(widths("*d"), 65535);
        assert_eq!(widths("[2]*[1]d"), 2 + 65535 + 1);
        assert_eq!(widths("99999999999999999999999d"), 65535);
    }
}
