//! DRBD resource files: rendered from a Go `text/template` (a pool's template from
//! `system/cfg/drbd`, or the built-in one), within the budget of `budget.rs`, and checked
//! before they are written anywhere.

use std::path::Path;

use serde::Serialize;

use super::budget::{self, Failure};
pub use super::budget::{Budget, Exceeded};
use crate::config::echo::echo;

/// What a template sees: `.Name` and `.Nodes`, each with `.Name`, `.Addr`, `.Device`,
/// `.Disk`, `.NodeId`, as in the tutorial's template; `render_with` adds `.Omctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateData {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Nodes")]
    pub nodes: Vec<TemplateNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateNode {
    #[serde(rename = "Name")]
    pub name: String,
    /// `ipv4 IP:PORT`.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// `/dev/drbdMINOR`.
    #[serde(rename = "Device")]
    pub device: String,
    /// The backing device, `/dev/VG/LV`.
    #[serde(rename = "Disk")]
    pub disk: String,
    #[serde(rename = "NodeId")]
    pub node_id: u32,
}

/// The template used when a pool names none: protocol C, and DRBD fencing through the
/// cluster. A Primary that loses sight of a peer freezes I/O and runs `omctl drbd fence-peer`,
/// which succeeds only once the cluster committed the peer outdated; a node cut from the
/// majority cannot commit, so its I/O stays frozen until it fences itself.
pub const BUILTIN_TEMPLATE: &str = r#"resource {{.Name}} {
    net {
        protocol C;
        fencing resource-and-stonith;
    }
    handlers {
        fence-peer "{{.Omctl}} drbd fence-peer";
        unfence-peer "{{.Omctl}} drbd unfence-peer";
    }
{{- range $node := .Nodes}}
    on {{$node.Name}} {
        device    {{$node.Device}};
        disk      {{$node.Disk}};
        meta-disk internal;
        address   {{$node.Addr}};
        node-id   {{$node.NodeId}};
    }
{{- end}}
    connection-mesh {
        hosts{{range $node := .Nodes}} {{$node.Name}}{{end}};
    }
}
"#;

/// Why a resource file cannot be produced or is refused.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template: {0}")]
    Template(String),
    #[error("the template is over budget: {0}")]
    OverBudget(#[from] Exceeded),
    #[error("the rendered file is refused: {0}")]
    Invalid(String),
    #[error("drbdadm refused the rendered file: {0}")]
    Drbdadm(String),
    #[error("cannot run {0}")]
    Run(String, #[source] std::io::Error),
}

/// `.Omctl` when the caller does not say where omctl is (`render`); the applier always says
/// (`render_with`, the omctl beside the running omd).
pub const DEFAULT_OMCTL: &str = "/usr/sbin/omctl";

/// The template data with `.Omctl`: the absolute path of `omctl` for DRBD handlers (DRBD runs
/// them through `/bin/sh -c` with a minimal PATH), as one shell word.
#[derive(Serialize)]
struct WithOmctl<'a> {
    #[serde(flatten)]
    data: &'a TemplateData,
    #[serde(rename = "Omctl")]
    omctl: &'a str,
}

/// Renders `template` for `data` exactly as Go's `text/template` would, with `.Omctl` set to
/// `DEFAULT_OMCTL`, within `Budget::DEFAULT`; a key the template uses and the data lacks is
/// an error, not an empty string.
pub fn render(template: &str, data: &TemplateData) -> Result<String, RenderError> {
    render_with(template, data, DEFAULT_OMCTL)
}

/// `render`, with `.Omctl` set to `omctl` (an absolute path, quoted for the shell if it must
/// be: see `shell_word`).
pub fn render_with(template: &str, data: &TemplateData, omctl: &str) -> Result<String, RenderError> {
    render_within(template, data, omctl, Budget::DEFAULT)
}

/// `render_with` within `budget`: over it, `RenderError::OverBudget` says which budget and
/// how far the rendering got.
pub fn render_within(template: &str, data: &TemplateData, omctl: &str, budget: Budget) -> Result<String, RenderError> {
    const ROOT: &str = "drbd";
    let value = gotmpl::to_value(&WithOmctl { data, omctl }).map_err(template_error)?;
    let parsed = gotmpl::Template::new(ROOT)
        .missing_key(gotmpl::MissingKey::Error)
        .parse(template)
        .map_err(template_error)?;
    budget::execute(parsed, ROOT, &value, budget).map_err(|e| match e {
        Failure::Exceeded(why) => RenderError::OverBudget(why),
        Failure::Template(e) => template_error(e),
    })
}

/// gotmpl's error, which may quote the template at any length (a field name, a function
/// name), as every error repeats input: through `echo`.
fn template_error(e: impl std::fmt::Display) -> RenderError {
    RenderError::Template(echo(&e.to_string()).to_string())
}

/// `path` as one word for `/bin/sh -c` inside a DRBD handler string (`"..."`): as is when
/// it holds only safe characters, else in single quotes; `None` when not even that works (a
/// quote, a backslash or a control character in it).
pub fn shell_word(path: &str) -> Option<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._+-,:@%=".contains(c);
    if !path.is_empty() && path.chars().all(safe) {
        return Some(path.to_string());
    }
    let quotable = !path.is_empty()
        && !path
            .chars()
            .any(|c| c == '\'' || c == '"' || c == '\\' || c.is_control());
    quotable.then(|| format!("'{path}'"))
}

/// Our own checks of a rendered file, for what `drbdadm` lets pass (an empty file, a missing
/// final brace): one `resource NAME` block, balanced braces, an `on` section per node.
pub fn check(text: &str, data: &TemplateData) -> Result<(), RenderError> {
    let invalid = |why: String| Err(RenderError::Invalid(why));
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 3 || words[0] != "resource" || words[1] != data.name || words[2] != "{" {
        return invalid(format!("it must start with `resource {} {{`", data.name));
    }
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return invalid(format!("unbalanced '}}' at byte {i}"));
        }
    }
    if depth != 0 {
        return invalid(format!("{depth} unclosed '{{'"));
    }
    for n in &data.nodes {
        let on = words.windows(3).any(|w| w[0] == "on" && w[1] == n.name && w[2] == "{");
        if !on {
            return invalid(format!("no `on {} {{` section", n.name));
        }
    }
    Ok(())
}

/// How `drbdadm` reads a resource file when checking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation<'a> {
    /// As this host: drbdadm picks the file's `on` section by the host name and checks that
    /// section's address against this host's; what the real driver uses, with nothing
    /// overridden.
    Host,
    /// On a machine without the DRBD kernel module, as node `node`: drbdadm's own test hooks
    /// (`__DRBD_NODE__`, `DRBD_DRIVER_VERSION_OVERRIDE`) make it read the file as that node of
    /// a DRBD 9.2 machine. Only the simulator and tests choose it.
    WithoutKernel { node: &'a str },
}

/// Has `drbdadm` parse the file (`drbdadm -c FILE dump all`), read as `how` says.
pub fn check_with_drbdadm(drbdadm: &Path, file: &Path, how: Validation) -> Result<(), RenderError> {
    let mut cmd = std::process::Command::new(drbdadm);
    cmd.arg("-c").arg(file).args(["dump", "all"]);
    if let Validation::WithoutKernel { node } = how {
        cmd.env("__DRBD_NODE__", node)
            .env("DRBD_DRIVER_VERSION_OVERRIDE", "9.2.0");
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RenderError::Run(drbdadm.display().to_string(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        // Pretending to be NODE, drbdadm first says so; the rest is the complaint.
        let lines: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains("__DRBD_NODE__") && !l.starts_with("PRETENDING"))
            .collect();
        Err(RenderError::Drbdadm(lines.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// drbdadm reads the test files as node n1 of a DRBD 9.2 machine, module loaded or not.
    const N1: Validation = Validation::WithoutKernel { node: "n1" };

    /// The real drbdadm; without it the calling test fails, or skips when `OMRAFT_ALLOW_SKIP`
    /// names `drbdadm` (then `None`: the test returns).
    fn drbdadm() -> Option<&'static Path> {
        let drbdadm = Path::new("/usr/sbin/drbdadm");
        if drbdadm.exists() {
            return Some(drbdadm);
        }
        crate::testing::cannot_run(
            "drbdadm",
            "/usr/sbin/drbdadm is missing: drbd-utils is not installed (apt-get install drbd-utils)",
        );
        None
    }

    /// The tutorial's `live-migration` template, as stored in `system/cfg/drbd`.
    const LIVE_MIGRATION: &str = "resource {{.Name}} {
    {{range $node := .Nodes}}
    on {{$node.Name}} {
        device    {{$node.Device}};
        disk      {{$node.Disk}};
        meta-disk internal;
        address   {{$node.Addr}};
        node-id   {{$node.NodeId}};
    }
    {{end}}
    connection-mesh {
        hosts{{range $node := .Nodes}} {{$node.Name}}{{end}};
    }
    net {
\tallow-two-primaries yes;
    }
}
";

    /// What Go's text/template produces for it: a range body keeps its leading newline and
    /// indentation, so each node section starts after a line of four spaces.
    const LIVE_MIGRATION_RENDERED: &str = "resource kvm1.demo.vol.drbd4kvm {
    
    on n1 {
        device    /dev/drbd0;
        disk      /dev/data/kvm1.demo.vol.drbd4kvm;
        meta-disk internal;
        address   ipv4 10.30.0.11:7289;
        node-id   0;
    }
    
    on n2 {
        device    /dev/drbd0;
        disk      /dev/data/kvm1.demo.vol.drbd4kvm;
        meta-disk internal;
        address   ipv4 10.30.0.12:7289;
        node-id   1;
    }
    
    connection-mesh {
        hosts n1 n2;
    }
    net {
\tallow-two-primaries yes;
    }
}
";

    fn tutorial() -> TemplateData {
        let node = |name: &str, ip: &str, id| TemplateNode {
            name: name.into(),
            addr: format!("ipv4 {ip}:7289"),
            device: "/dev/drbd0".into(),
            disk: "/dev/data/kvm1.demo.vol.drbd4kvm".into(),
            node_id: id,
        };
        TemplateData {
            name: "kvm1.demo.vol.drbd4kvm".into(),
            nodes: vec![node("n1", "10.30.0.11", 0), node("n2", "10.30.0.12", 1)],
        }
    }

    #[test]
    fn tutorial_template_renders_as_go_does() {
        let out = render(LIVE_MIGRATION, &tutorial()).unwrap();
        assert_eq!(out, LIVE_MIGRATION_RENDERED);
        check(&out, &tutorial()).unwrap();
        // `.Omctl` beside the data changes nothing for a template that does not use it.
        let with = render_with(LIVE_MIGRATION, &tutorial(), "/opt/omraft/bin/omctl").unwrap();
        assert_eq!(with, LIVE_MIGRATION_RENDERED);
    }

    #[test]
    fn builtin_template_renders_and_passes_our_checks() {
        let out = render_with(BUILTIN_TEMPLATE, &tutorial(), "/opt/omraft/bin/omctl").unwrap();
        check(&out, &tutorial()).unwrap();
        let head = "resource kvm1.demo.vol.drbd4kvm {
    net {
        protocol C;
        fencing resource-and-stonith;
    }
    handlers {
        fence-peer \"/opt/omraft/bin/omctl drbd fence-peer\";
        unfence-peer \"/opt/omraft/bin/omctl drbd unfence-peer\";
    }
    on n1 {
";
        assert!(out.starts_with(head), "{out}");
        assert!(out.contains("    on n2 {\n        device    /dev/drbd0;\n"), "{out}");
        // Users' templates may wire the handlers too.
        let user = render_with("{{.Name}} {{.Omctl}}", &tutorial(), "/usr/bin/omctl").unwrap();
        assert_eq!(user, "kvm1.demo.vol.drbd4kvm /usr/bin/omctl");
        assert!(render(BUILTIN_TEMPLATE, &tutorial()).unwrap().contains(DEFAULT_OMCTL));
    }

    #[test]
    fn the_omctl_path_is_one_shell_word_or_refused() {
        assert_eq!(shell_word("/usr/sbin/omctl").as_deref(), Some("/usr/sbin/omctl"));
        assert_eq!(
            shell_word("/opt/om raft/omctl").as_deref(),
            Some("'/opt/om raft/omctl'")
        );
        assert_eq!(shell_word("/a/$(x)/omctl").as_deref(), Some("'/a/$(x)/omctl'"));
        for bad in ["", "/a'b/omctl", "/a\"b/omctl", "/a\\b", "/a\nb"] {
            assert_eq!(shell_word(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn drbdadm_accepts_the_builtin_file_with_its_fencing_handlers() {
        let Some(drbdadm) = drbdadm() else { return };
        let mut data = tutorial();
        data.nodes[0].addr = "ipv4 127.0.0.1:7289".into();
        let dir = tempfile::tempdir().unwrap();
        for omctl in ["/opt/omraft/bin/omctl", "'/opt/om raft/omctl'"] {
            let text = render_with(BUILTIN_TEMPLATE, &data, omctl).unwrap();
            check(&text, &data).unwrap();
            let file = dir.path().join("builtin.res");
            std::fs::write(&file, &text).unwrap();
            check_with_drbdadm(drbdadm, &file, N1).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
        // drbdadm would refuse fencing in the disk section: the check catches such a template.
        let text = render_with(BUILTIN_TEMPLATE, &data, "/x/omctl").unwrap().replace(
            "    net {\n",
            "    disk {\n        fencing resource-and-stonith;\n    }\n    net {\n",
        );
        let file = dir.path().join("disk.res");
        std::fs::write(&file, &text).unwrap();
        assert!(check_with_drbdadm(drbdadm, &file, N1).is_err(), "{text}");
    }

    #[test]
    fn the_budget_changes_nothing_of_what_a_template_renders() {
        let data = tutorial();
        let value = gotmpl::to_value(&WithOmctl {
            data: &data,
            omctl: DEFAULT_OMCTL,
        })
        .unwrap();
        let plain = |t: &str| {
            gotmpl::Template::new("drbd")
                .missing_key(gotmpl::MissingKey::Error)
                .parse(t)
                .and_then(|t| t.execute_to_string(&value))
                .unwrap()
        };
        let templates = [
            BUILTIN_TEMPLATE,
            LIVE_MIGRATION,
            "{{define \"on\"}}on {{.Name}} { node-id {{.NodeId}}; }{{end}}resource {{.Name}} {\n\
             {{- range $i, $n := .Nodes}}{{if $i}},{{end}} {{template \"on\" $n}}{{else}}none{{end}}\n\
             {{with index .Nodes 1}}{{.Addr}}{{end}} {{block \"tail\" .}}{{len .Nodes}}{{end}}\n\
             {{range .Nodes}}{{if eq .Name \"n1\"}}{{continue}}{{end}}{{.Name}}{{break}}{{end}}\n\
             {{$x := printf \"%s:%d\" .Name 7}}{{$x}} {{print 1 2 \"a\"}}{{println .Omctl}}\
             {{html \"<a>\"}} {{js \"'\"}} {{urlquery \"a b\"}} {{printf \"%q %v\" .Name nil}}\n}\n",
            "   \n",
            "",
        ];
        for t in templates {
            assert_eq!(render(t, &data).unwrap(), plain(t), "{t}");
        }
    }

    #[test]
    fn template_errors_are_reported() {
        assert!(matches!(
            render("{{.Nmae}}", &tutorial()),
            Err(RenderError::Template(_))
        ));
        assert!(matches!(
            render("{{range}}", &tutorial()),
            Err(RenderError::Template(_))
        ));
    }

    #[test]
    fn a_template_error_repeats_the_template_cut() {
        // gotmpl names the field, the function or the template whole (the fuzz target found
        // a field name of 8 KiB repeated in full): the error stays short and on one line.
        let long = "A".repeat(100_000);
        for template in [
            format!("{{{{.{long}}}}}"),
            format!("{{{{{long}}}}}"),
            format!("{{{{template \"{long}\"}}}}"),
            format!("{{{{template \"\u{1b}[2J{long}\"}}}}"),
        ] {
            let e = render(&template, &tutorial()).unwrap_err().to_string();
            assert!(e.len() < 1000 && e.contains("bytes)"), "{e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        let e = render("{{.Nmae}}", &tutorial()).unwrap_err().to_string();
        assert_eq!(e, "template: map has no entry for key: Nmae", "short ones as they were");
    }

    #[test]
    fn our_checks_catch_what_drbdadm_lets_pass() {
        let d = tutorial();
        assert!(check("", &d).is_err(), "empty file");
        let missing_brace = LIVE_MIGRATION_RENDERED.trim_end().trim_end_matches('}');
        assert!(check(missing_brace, &d).is_err(), "missing final brace");
        assert!(
            check(&LIVE_MIGRATION_RENDERED.replace("on n2", "on n3"), &d).is_err(),
            "node missing"
        );
        assert!(
            check(&LIVE_MIGRATION_RENDERED.replace("kvm1.demo", "other.demo"), &d).is_err(),
            "wrong name"
        );
    }

    #[test]
    fn drbdadm_validates_the_tutorial_file() {
        let Some(drbdadm) = drbdadm() else { return };
        // drbdadm checks that the local node's address is on this host: use loopback's.
        let text = LIVE_MIGRATION_RENDERED.replace("10.30.0.11", "127.0.0.1");
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.res");
        std::fs::write(&good, &text).unwrap();
        check_with_drbdadm(drbdadm, &good, N1).unwrap();
        let bad = dir.path().join("bad.res");
        std::fs::write(&bad, text.replace("meta-disk internal;", "meta-disk;")).unwrap();
        let err = check_with_drbdadm(drbdadm, &bad, N1).unwrap_err().to_string();
        assert!(
            err.contains("bad.res:"),
            "drbdadm's complaint names file and line: {err}"
        );
        // On a host without the node's address, drbdadm says so.
        let elsewhere = dir.path().join("elsewhere.res");
        std::fs::write(&elsewhere, LIVE_MIGRATION_RENDERED).unwrap();
        let err = check_with_drbdadm(drbdadm, &elsewhere, N1).unwrap_err().to_string();
        assert!(err.contains("10.30.0.11"), "{err}");
    }

    #[test]
    fn the_host_validation_reads_the_file_as_this_host_with_nothing_overridden() {
        let Some(drbdadm) = drbdadm() else { return };
        // drbdadm picks the section of this host's name (uname -n).
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim();
        let text = LIVE_MIGRATION_RENDERED
            .replace("on n1 {", &format!("on {host} {{"))
            .replace("hosts n1 n2", &format!("hosts {host} n2"));
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("here.res");
        std::fs::write(&here, text.replace("10.30.0.11", "127.0.0.1")).unwrap();
        check_with_drbdadm(drbdadm, &here, Validation::Host).unwrap();
        // This host's section with an address elsewhere: drbdadm, reading it as this host, says so.
        let elsewhere = dir.path().join("elsewhere.res");
        std::fs::write(&elsewhere, &text).unwrap();
        let err = check_with_drbdadm(drbdadm, &elsewhere, Validation::Host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.30.0.11"), "{err}");
        // Syntax errors are refused whoever reads the file.
        let bad = dir.path().join("bad.res");
        std::fs::write(&bad, text.replace("meta-disk internal;", "meta-disk;")).unwrap();
        assert!(check_with_drbdadm(drbdadm, &bad, Validation::Host).is_err());
    }
}
