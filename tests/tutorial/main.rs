//! `docs/tutorial.md`, replayed as written: its shell blocks run in order against three real
//! `omd` processes on loopback addresses with the simulated drivers, and the outputs it marks
//! as expected are checked. The convention (also described at the end of the tutorial):
//!
//! - a ```` ```sh ```` block begins with `# on HOST[, HOST...]` and runs on each host named, in
//!   order; any other shell-like fence (`bash`, `console`, `shell`) fails the test;
//! - each host has a directory standing for its `/` (`/root` the working directory,
//!   `/var/lib/omraft` the data directory); `IP:1215` of a host stands for its daemon's
//!   loopback address;
//! - `omctl` runs as written against that host's daemon; every other command must be in
//!   `TRANSLATIONS`, else the test fails, and every entry there must be used by the document;
//! - a block run on a host whose power was cut starts its enabled `omd` first, as a boot would;
//! - `<!-- expect -->` before a fenced block: the last command of the block before must print
//!   that (whitespace runs compared as one space, a `...` line skips lines, `…` any text within
//!   a line); `<!-- expect within 30s -->` re-runs that command until it does, at most that long.
//!
//! Every daemon is killed by pid when the test ends, and the temporary directory removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TUTORIAL: &str = include_str!("../../docs/tutorial.md");

/// The tutorial's hosts and their addresses (its table at the top).
const HOSTS: [(&str, &str); 3] = [("n1", "10.30.0.11"), ("n2", "10.30.0.12"), ("w", "10.30.0.13")];
/// The port the tutorial's daemons listen on.
const OMD_PORT: &str = "1215";
/// The size of a volume group `vgcreate` makes: the tutorial's `/dev/sdb`.
const VG_SIZE: &str = "10G";
/// The longest any one command may take (`--wait` commands included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What the test does for a command of the tutorial that is not `omctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Nothing: what the command prepares, the simulators or cargo's build already are.
    Nothing,
    /// `vgcreate NAME DEVICE`: the host's `omd` gets `--report-vg NAME=VG_SIZE`, which creates
    /// and sizes the simulated volume group.
    VolumeGroup,
    /// `cat > FILE <<'EOF'`: the heredoc written to FILE under the host's directory.
    WriteFile,
    /// `systemctl enable --now omd`: the unit's `ExecStartPre` lines through this same table,
    /// then its `ExecStart` as written, plus the simulated drivers and the host's directories.
    StartOmd,
    /// `scp FILE root@IP:`: FILE copied to that host's `/root`.
    Scp,
    /// `virt-install --name NAME ... --disk path=DEVICE,...`: a domain NAME with that disk,
    /// defined and started in the host's simulated hypervisor (`omsim virsh`).
    VirtInstall,
    /// `virsh list --name`: the names of the domains running in the host's simulated hypervisor.
    VirshList,
    /// `echo o > /proc/sysrq-trigger`: the host's `omd` killed (SIGKILL) and the simulator's
    /// power-off (guests and DRBD down on that host).
    PowerLoss,
}

/// The translation table: a command whose words begin with the pattern (the program compared
/// by its file name) gets the act. Each entry says why it exists.
const TRANSLATIONS: &[(&[&str], Act, &str)] = &[
    (
        &["add-apt-repository"],
        Act::Nothing,
        "the DRBD 9 package source: DRBD is simulated (omsim drbdadm/drbdsetup)",
    ),
    (
        &["apt-get"],
        Act::Nothing,
        "packages: DRBD, LVM and libvirt are simulated; omraft's package holds the omd and omctl \
         cargo built for this test (CARGO_BIN_EXE_*), the package the real-host test bed installs",
    ),
    (
        &["cp", "/usr/share/doc/omraft/examples/omd-softdog.conf"],
        Act::Nothing,
        "softdog's options: the watchdog is simulated",
    ),
    (
        &["pvcreate"],
        Act::Nothing,
        "the physical volume belongs to the simulated volume group",
    ),
    (
        &["vgcreate"],
        Act::VolumeGroup,
        "the simulated volume group omd is given",
    ),
    (
        &["modprobe"],
        Act::Nothing,
        "the DRBD module and softdog: the simulated DRBD and watchdog",
    ),
    (
        &["cat"],
        Act::WriteFile,
        "files the later steps read: omd's configuration, the DRBD template",
    ),
    (
        &["systemctl", "enable", "--now", "omd"],
        Act::StartOmd,
        "starting omd from the package's unit, with the host's configuration file",
    ),
    (&["scp"], Act::Scp, "moving a join token between hosts"),
    (
        &["ssh-keyscan"],
        Act::Nothing,
        "ssh host keys for libvirt's qemu+ssh: the simulated hypervisor migrates without ssh",
    ),
    (
        &["virt-install"],
        Act::VirtInstall,
        "creating the guest on the DRBD device",
    ),
    (&["virsh", "list", "--name"], Act::VirshList, "where the guest runs"),
    (&["echo", "o"], Act::PowerLoss, "the active node's power loss"),
];

// ---- the document ------------------------------------------------------------------------

/// One command line of a block, as the shell would split it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cmd {
    line: usize,
    words: Vec<String>,
    stdin: Option<Stdin>,
    /// `> FILE` or `>> FILE` (append).
    stdout: Option<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stdin {
    File(String),
    Heredoc(String),
}

#[derive(Debug)]
enum Step {
    Run {
        line: usize,
        hosts: Vec<String>,
        cmds: Vec<Cmd>,
    },
    Expect {
        line: usize,
        within: Duration,
        text: String,
    },
}

/// The steps of a markdown document: its `sh` blocks and its marked outputs.
fn parse_doc(doc: &str) -> Result<Vec<Step>, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut steps = Vec::new();
    let mut marker: Option<(usize, Duration)> = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_end();
        let n = i + 1;
        if let Some(m) = l.strip_prefix("<!-- expect").and_then(|m| m.strip_suffix("-->")) {
            let within = match m.trim() {
                "" => Duration::ZERO,
                w => {
                    let secs = w
                        .strip_prefix("within ")
                        .and_then(|s| s.strip_suffix('s'))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| format!("line {n}: bad marker {l:?}: `<!-- expect within Ns -->`"))?;
                    Duration::from_secs(secs)
                }
            };
            marker = Some((n, within));
            i += 1;
            continue;
        }
        let Some(info) = l.strip_prefix("```") else {
            if !l.is_empty() && marker.is_some() {
                return Err(format!("line {n}: an expect marker must be followed by its block"));
            }
            i += 1;
            continue;
        };
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .ok_or_else(|| format!("line {n}: unclosed block"))?;
        let body: Vec<(usize, &str)> = (i + 1..end).map(|j| (j + 1, lines[j])).collect();
        if let Some((_, within)) = marker.take() {
            if !matches!(steps.last(), Some(Step::Run { .. })) {
                return Err(format!("line {n}: an expected output must follow a sh block"));
            }
            let text = body.iter().map(|(_, l)| format!("{l}\n")).collect();
            steps.push(Step::Expect { line: n, within, text });
        } else if info == "sh" {
            let (first_line, first) = body.first().copied().unwrap_or((n, ""));
            let hosts: Vec<String> = first
                .strip_prefix("# on ")
                .ok_or_else(|| format!("line {first_line}: a sh block begins with `# on HOST`"))?
                .split(',')
                .map(|h| h.trim().to_string())
                .collect();
            for h in &hosts {
                if !HOSTS.iter().any(|(name, _)| name == h) {
                    return Err(format!("line {first_line}: unknown host {h:?}"));
                }
            }
            steps.push(Step::Run {
                line: n,
                hosts,
                cmds: parse_commands(&body[1..])?,
            });
        } else if ["bash", "shell", "console", "zsh", "shell-session"].contains(&info.trim()) {
            return Err(format!("line {n}: shell commands go in ```sh blocks with `# on HOST`"));
        }
        i = end + 1;
    }
    Ok(steps)
}

/// The commands of a block: one a line (`\` continues it), words split and quoted as the shell
/// does, `<`, `>`, `>>` and quoted heredocs (`<<'EOF'`). What would need the shell's expansions,
/// pipes or lists is refused, so that what runs is exactly what is written.
fn parse_commands(body: &[(usize, &str)]) -> Result<Vec<Cmd>, String> {
    let mut cmds = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let (n, first) = body[k];
        k += 1;
        let mut text = first.to_string();
        while text.ends_with('\\') {
            text.pop();
            let (_, next) = body.get(k).ok_or_else(|| format!("line {n}: `\\` on the last line"))?;
            text.push_str(next);
            k += 1;
        }
        let tokens = split_words(&text).map_err(|e| format!("line {n}: {e}"))?;
        if tokens.is_empty() {
            continue;
        }
        let mut cmd = Cmd {
            line: n,
            words: vec![],
            stdin: None,
            stdout: None,
        };
        let mut t = tokens.into_iter();
        while let Some(tok) = t.next() {
            match tok {
                Token::Word(w) => cmd.words.push(w),
                Token::Op(op) => {
                    let Some(Token::Word(target)) = t.next() else {
                        return Err(format!("line {n}: {op} without a word after it"));
                    };
                    match op.as_str() {
                        "<" => cmd.stdin = Some(Stdin::File(target)),
                        ">" | ">>" => cmd.stdout = Some((target, op == ">>")),
                        _ => {
                            // `<<DELIM`: the quoted delimiter was unquoted by split_words;
                            // an unquoted one would expand `$` in the body.
                            if !text.contains(&format!("<<'{target}'")) {
                                return Err(format!("line {n}: write heredocs as <<'{target}'"));
                            }
                            let mut body_text = String::new();
                            loop {
                                let (_, l) = body
                                    .get(k)
                                    .ok_or_else(|| format!("line {n}: heredoc without its {target} line"))?;
                                k += 1;
                                if *l == target {
                                    break;
                                }
                                body_text.push_str(l);
                                body_text.push('\n');
                            }
                            cmd.stdin = Some(Stdin::Heredoc(body_text));
                        }
                    }
                }
            }
        }
        if cmd.words.is_empty() {
            return Err(format!("line {n}: a redirection without a command"));
        }
        cmds.push(cmd);
    }
    Ok(cmds)
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Op(String),
}

/// Splits a command line into words and redirection operators, with the shell's quoting.
fn split_words(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    out.push(Token::Word(w));
                }
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unclosed '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('$' | '`' | '\\') => return Err("expansions or escapes inside \"...\"".into()),
                        Some(c) => w.push(c),
                        None => return Err("unclosed \"".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("a trailing \\".into()),
            },
            '<' | '>' => {
                if let Some(w) = word.take() {
                    out.push(Token::Word(w));
                }
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    op.push(chars.next().unwrap());
                }
                out.push(Token::Op(op));
            }
            '|' | '&' | ';' | '$' | '`' | '(' | ')' | '*' | '?' | '[' | '~' => {
                return Err(format!("{c:?} needs the shell: keep the tutorial's commands plain"));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        out.push(Token::Word(w));
    }
    Ok(out)
}

/// Whether `actual` shows `expected`: line by line with whitespace runs as one space, a `...`
/// line matching any lines (none included), `…` any text within a line.
fn output_matches(expected: &str, actual: &str) -> bool {
    let norm = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = |s: &str| {
        let mut v: Vec<String> = s.lines().map(norm).collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        v
    };
    let exp = trimmed(expected);
    let act = trimmed(actual);
    let line_ok = |e: &str, a: &str| {
        let parts: Vec<&str> = e.split('…').collect();
        if parts.len() == 1 {
            return e == a;
        }
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if !a.starts_with(first) || !a[first.len()..].ends_with(last) {
            return false;
        }
        let mut rest = &a[first.len()..a.len() - last.len()];
        for p in &parts[1..parts.len() - 1] {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
        true
    };
    let chunk_at = |chunk: &[String], at: usize| {
        at + chunk.len() <= act.len() && chunk.iter().zip(&act[at..]).all(|(e, a)| line_ok(e, a))
    };
    let chunks: Vec<&[String]> = exp.split(|l| l == "...").collect();
    if chunks.len() == 1 {
        return exp.len() == act.len() && chunk_at(&exp, 0);
    }
    let mut pos = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.is_empty() {
            continue;
        }
        let found = if i == 0 {
            chunk_at(chunk, 0).then_some(0)
        } else if i == chunks.len() - 1 {
            let at = act.len().checked_sub(chunk.len());
            at.filter(|&at| at >= pos && chunk_at(chunk, at))
        } else {
            (pos..act.len()).find(|&at| chunk_at(chunk, at))
        };
        match found {
            Some(at) => pos = at + chunk.len(),
            None => return false,
        }
    }
    true
}

// ---- the simulated hosts -----------------------------------------------------------------

struct Host {
    name: String,
    /// The tutorial's address of the host (`IP`), and its daemon's (`127.0.0.1:PORT`).
    ip: String,
    addr: String,
    /// The directory standing for the host's `/`.
    root: PathBuf,
    vgs: Vec<String>,
    omd: Option<Child>,
    enabled: bool,
    powered_off: bool,
}

impl Host {
    fn home(&self) -> PathBuf {
        self.root.join("root")
    }

    /// `path` on this host: absolute under its directory, relative to its `/root`.
    fn path(&self, path: &str) -> PathBuf {
        match path.strip_prefix('/') {
            Some(p) => self.root.join(p),
            None => self.home().join(path),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.path("/var/lib/omraft")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("omd.log")).unwrap_or_default()
    }
}

/// What a command printed.
struct Ran {
    host: String,
    cmd: Cmd,
    stdout: String,
}

struct World {
    tmp: tempfile::TempDir,
    hosts: Vec<Host>,
    last: Option<Ran>,
    used: Vec<usize>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let hosts = HOSTS
            .iter()
            .map(|(name, ip)| {
                let root = tmp.path().join(name);
                std::fs::create_dir_all(root.join("root")).unwrap();
                Host {
                    name: name.to_string(),
                    ip: ip.to_string(),
                    addr: format!("127.0.0.1:{}", free_port()),
                    root,
                    vgs: vec![],
                    omd: None,
                    enabled: false,
                    powered_off: false,
                }
            })
            .collect();
        World {
            tmp,
            hosts,
            last: None,
            used: vec![],
        }
    }

    fn sim(&self) -> PathBuf {
        self.tmp.path().join("sim")
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts.iter_mut().find(|h| h.name == name).unwrap()
    }

    /// A word of a command with the tutorial's addresses as the test's: `IP:1215` becomes the
    /// host's loopback address; any other private address left is an error (the test never
    /// sends anything off this machine).
    fn map_addr(&self, word: &str) -> Result<String, String> {
        let mut w = word.to_string();
        for h in &self.hosts {
            w = w.replace(&format!("{}:{OMD_PORT}", h.ip), &h.addr);
        }
        if self.hosts.iter().any(|h| w.contains(&h.ip)) || w.contains("10.30.") {
            return Err(format!("{word:?}: an address the test does not map"));
        }
        Ok(w)
    }

    /// Output as it reads on the tutorial's hosts: loopback addresses and host directories back
    /// to the tutorial's.
    fn unmap(&self, text: &str) -> String {
        let mut t = text.to_string();
        for h in &self.hosts {
            t = t.replace(&h.addr, &format!("{}:{OMD_PORT}", h.ip));
            t = t.replace(&h.root.display().to_string(), "");
        }
        t
    }

    fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                let log = h.log();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "---- {} omd ----\n{}",
                    h.name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs every step of `doc`, in order.
    fn replay(&mut self, doc: &str) -> Result<(), String> {
        for step in parse_doc(doc)? {
            match step {
                Step::Run { line, hosts, cmds } => {
                    for h in &hosts {
                        if self.host(h).powered_off {
                            self.host_mut(h).powered_off = false;
                            if self.host(h).enabled {
                                eprintln!("[{h}] (power on: its enabled omd starts)");
                                self.start_omd(h)
                                    .map_err(|e| format!("line {line}: powering {h} on: {e}"))?;
                            }
                        }
                        for cmd in &cmds {
                            let stdout = self
                                .run(h, cmd)
                                .map_err(|e| format!("docs/tutorial.md line {} on {h}: {e}", cmd.line))?;
                            for l in self.unmap(&stdout).lines() {
                                eprintln!("    {l}");
                            }
                            self.last = Some(Ran {
                                host: h.clone(),
                                cmd: cmd.clone(),
                                stdout,
                            });
                        }
                    }
                }
                Step::Expect { line, within, text } => {
                    self.expect(&text, within)
                        .map_err(|e| format!("docs/tutorial.md line {line}: {e}"))?;
                }
            }
        }
        for (i, (pattern, _, _)) in TRANSLATIONS.iter().enumerate() {
            if !self.used.contains(&i) {
                return Err(format!("the translation of {pattern:?} is never used: remove it"));
            }
        }
        Ok(())
    }

    fn expect(&mut self, text: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let ran = self.last.as_ref().ok_or("no command before an expected output")?;
            let actual = self.unmap(&ran.stdout);
            if output_matches(text, &actual) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "`{}` on {} printed\n{actual}\ninstead of\n{text}",
                    ran.cmd.words.join(" "),
                    ran.host
                ));
            }
            if !is_read(&ran.cmd.words) {
                return Err(format!(
                    "`{}` is not a read: it cannot be run again",
                    ran.cmd.words.join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
            let ran = self.last.take().unwrap();
            let (host, cmd) = (ran.host.clone(), ran.cmd.clone());
            let stdout = self.run(&host, &cmd)?;
            if stdout != ran.stdout {
                for l in self.unmap(&stdout).lines() {
                    eprintln!("    {l}");
                }
            }
            self.last = Some(Ran { host, cmd, stdout });
        }
    }

    /// Runs one command on `host`: omctl as written, anything else by its translation.
    fn run(&mut self, host: &str, cmd: &Cmd) -> Result<String, String> {
        eprintln!("[{host}] {}", cmd.words.join(" "));
        let program = Path::new(&cmd.words[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if program == "omctl" {
            return self.omctl(host, cmd);
        }
        let mut words = cmd.words.clone();
        words[0] = program;
        let found = TRANSLATIONS.iter().position(|(pattern, _, _)| {
            words.len() >= pattern.len() && words.iter().zip(pattern.iter()).all(|(w, p)| w == p)
        });
        let Some(i) = found else {
            return Err(format!(
                "`{}` is neither omctl nor in the test's translation table",
                cmd.words.join(" ")
            ));
        };
        self.used.push(i);
        eprintln!("    (translated: {})", TRANSLATIONS[i].2);
        let args = &words[TRANSLATIONS[i].0.len()..];
        match TRANSLATIONS[i].1 {
            Act::Nothing => Ok(String::new()),
            Act::VolumeGroup => match args {
                [vg, dev] if dev.starts_with("/dev/") => {
                    self.host_mut(host).vgs.push(vg.clone());
                    Ok(String::new())
                }
                _ => Err("expected `vgcreate NAME DEVICE`".into()),
            },
            Act::WriteFile => match (args, &cmd.stdin, &cmd.stdout) {
                ([], Some(Stdin::Heredoc(body)), Some((file, false))) => {
                    let path = self.host(host).path(file);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(String::new())
                }
                _ => Err("expected `cat > FILE <<'EOF'`".into()),
            },
            Act::StartOmd => {
                self.host_mut(host).enabled = true;
                self.start_omd(host)?;
                Ok(String::new())
            }
            Act::Scp => {
                let [file, target] = args else {
                    return Err("expected `scp FILE root@IP:`".into());
                };
                let to = target
                    .strip_prefix("root@")
                    .and_then(|t| t.strip_suffix(':'))
                    .and_then(|ip| self.hosts.iter().find(|h| h.ip == ip))
                    .ok_or_else(|| format!("{target:?}: not `root@IP:` of a host"))?;
                let dest = to.home().join(Path::new(file).file_name().unwrap());
                std::fs::copy(self.host(host).path(file), &dest).map_err(|e| format!("{file}: {e}"))?;
                Ok(String::new())
            }
            Act::VirtInstall => {
                let value = |flag: &str| {
                    args.iter()
                        .position(|a| a == flag)
                        .and_then(|p| args.get(p + 1))
                        .cloned()
                        .ok_or_else(|| format!("virt-install without {flag}"))
                };
                let name = value("--name")?;
                let disk = value("--disk")?;
                let dev = disk
                    .split(',')
                    .find_map(|o| o.strip_prefix("path="))
                    .ok_or("virt-install --disk without path=")?;
                let xml = format!(
                    "<domain type='kvm'><name>{name}</name><devices><disk type='block' device='disk'>\
                     <source dev='{dev}'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n"
                );
                let file = self.tmp.path().join(format!("{name}.xml"));
                std::fs::write(&file, xml).unwrap();
                self.virsh(host, &["define", file.to_str().unwrap()])?;
                self.virsh(host, &["start", &name])?;
                Ok(String::new())
            }
            Act::VirshList => {
                if !args.is_empty() {
                    return Err("expected `virsh list --name`".into());
                }
                let list = self.virsh(host, &["list"])?;
                // The simulator lists `NAME STATE boots=N`; `virsh list --name` the running names.
                Ok(list
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("running"))
                    .map(|l| format!("{}\n", l.split_whitespace().next().unwrap()))
                    .collect())
            }
            Act::PowerLoss => {
                if !args.is_empty() || cmd.stdout != Some(("/proc/sysrq-trigger".into(), false)) {
                    return Err("expected `echo o > /proc/sysrq-trigger`".into());
                }
                let h = self.host_mut(host);
                if let Some(mut c) = h.omd.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                h.powered_off = true;
                self.virsh(host, &["poweroff"])?;
                Ok(String::new())
            }
        }
    }

    /// omctl as written, against `host`'s daemon (the default socket, under its directory).
    fn omctl(&self, host: &str, cmd: &Cmd) -> Result<String, String> {
        let h = self.host(host);
        let args = cmd.words[1..]
            .iter()
            .map(|w| self.map_addr(w))
            .collect::<Result<Vec<_>, _>>()?;
        let mut c = Command::new(env!("CARGO_BIN_EXE_omctl"));
        c.args(&args).current_dir(h.home()).env(
            "OMCTL_SERVER",
            format!("unix:{}", h.data_dir().join("omd.sock").display()),
        );
        for var in ["OMCTL_TOKEN", "OMCTL_CA", "OMCTL_CERT", "OMCTL_JOIN_TOKEN"] {
            c.env_remove(var);
        }
        let input = match &cmd.stdin {
            None => None,
            Some(Stdin::File(f)) => Some(std::fs::read(h.path(f)).map_err(|e| format!("{f}: {e}"))?),
            Some(Stdin::Heredoc(body)) => Some(body.clone().into_bytes()),
        };
        let (code, stdout, stderr) = run_bounded(c, input, &self.tmp.path().join("out"))?;
        if code != Some(0) {
            return Err(format!(
                "`{}` exited {code:?}\nstdout:\n{}\nstderr:\n{}\n{}",
                cmd.words.join(" "),
                self.unmap(&stdout),
                self.unmap(&stderr),
                self.logs()
            ));
        }
        match &cmd.stdout {
            None => Ok(stdout),
            Some((file, append)) => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(h.path(file))
                    .map_err(|e| format!("{file}: {e}"))?;
                f.write_all(stdout.as_bytes()).unwrap();
                Ok(String::new())
            }
        }
    }

    /// `omsim virsh --node HOST ARGS...`, which must succeed; its stdout.
    fn virsh(&self, host: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_omsim"))
            .args(["virsh", "--node", host])
            .args(args)
            .env("OMRAFT_SIM_DIR", self.sim())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("omsim: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "omsim virsh {args:?} on {host}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `host`'s omd from its unit file, and waits (bounded) until it answers with a
    /// leader known.
    fn start_omd(&mut self, host: &str) -> Result<(), String> {
        let h = self.host(host);
        // The package's unit: its ExecStart, reading /etc/omraft/omd.toml.
        let unit = include_str!("../../contrib/systemd/omd.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .ok_or("the unit has no ExecStart")?;
        let words = word_list(exec)?;
        if words != ["/usr/sbin/omd"] {
            return Err(format!(
                "the unit runs {words:?}, not /usr/sbin/omd and its configuration file"
            ));
        }
        let config = h.path("/etc/omraft/omd.toml");
        let text = std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
        let table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", config.display()))?;
        // The test supplies these: the simulated drivers and the host's own directories; and
        // the addresses, mapped to loopback.
        for key in ["drivers", "sim-dir", "data-dir", "ssh-dir", "report-vg", "advertise"] {
            if table.contains_key(key) {
                return Err(format!("/etc/omraft/omd.toml sets {key}, which the test sets"));
            }
        }
        let listen = table
            .get("listen")
            .and_then(|v| v.as_str())
            .ok_or("/etc/omraft/omd.toml sets no listen address")?;
        let words = [
            "omd".to_string(),
            "--config".to_string(),
            config.display().to_string(),
            "--listen".into(),
            listen.to_string(),
        ];
        let h = self.host(host);
        let mut args = words[1..]
            .iter()
            .map(|w| self.map_addr(w))
            .collect::<Result<Vec<_>, _>>()?;
        args.extend(["--drivers".into(), "sim".into(), "--sim-dir".into()]);
        args.push(self.sim().display().to_string());
        args.push("--data-dir".into());
        args.push(h.data_dir().display().to_string());
        args.push("--ssh-dir".into());
        args.push(h.path("/root/.ssh").display().to_string());
        for vg in &h.vgs {
            args.push("--report-vg".into());
            args.push(format!("{vg}={VG_SIZE}"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.root.join("omd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_omd"))
            .args(&args)
            // A short initial DRBD sync in the simulator.
            .env("OMRAFT_SIM_SYNC_MS", "1500")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning omd: {e}"))?;
        let server = format!("unix:{}", h.data_dir().join("omd.sock").display());
        self.host_mut(host).omd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(env!("CARGO_BIN_EXE_omctl"))
                .args(["--server", &server, "mon", "-o", "json"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let led = serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|ns| ns.iter().any(|n| n["leader"].as_str().is_some_and(|l| !l.is_empty())))
            });
            if out.status.success() && led {
                return Ok(());
            }
            let h = self.host_mut(host);
            if let Some(Ok(Some(status))) = h.omd.as_mut().map(|c| c.try_wait()) {
                return Err(format!("omd exited {status}:\n{}", h.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("omd on {host} did not answer within 30 s:\n{}", h.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.omd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The words of a unit's command line.
fn word_list(line: &str) -> Result<Vec<String>, String> {
    split_words(line)?
        .into_iter()
        .map(|t| match t {
            Token::Word(w) => Ok(w),
            Token::Op(op) => Err(format!("{op} in a unit's command")),
        })
        .collect()
}

/// omctl reads that may be run again while waiting for an expected output.
fn is_read(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(w.first(), Some(&"virsh"))
        || w.contains(&"mon")
        || w.ends_with(&["instance", "ls"])
        || w.ends_with(&["instance", "status", "-r"])
        || w.contains(&"list")
        || w.ends_with(&["show"])
}

/// Runs `c` with `input` on its stdin, for at most COMMAND_TIMEOUT (killed then); its exit
/// code, stdout and stderr.
fn run_bounded(
    mut c: Command,
    input: Option<Vec<u8>>,
    scratch: &Path,
) -> Result<(Option<i32>, String, String), String> {
    std::fs::create_dir_all(scratch).unwrap();
    let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
    c.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().map_err(|e| format!("spawn: {e}"))?;
    if let Some(bytes) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&bytes);
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("killed after {} s", COMMAND_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Ok((status.code(), read(&out_path), read(&err_path)))
}

/// A free loopback port: bind port 0 and release it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn the_tutorial_runs_as_written_on_simulated_hosts() {
    let started = Instant::now();
    let mut world = World::new();
    if let Err(e) = world.replay(TUTORIAL) {
        panic!("{e}");
    }
    let violations = std::fs::read_to_string(world.sim().join("violations.log")).unwrap_or_default();
    assert_eq!(violations, "", "the simulators saw a split brain");
    eprintln!("the tutorial ran in {:.1} s", started.elapsed().as_secs_f64());
}

/// A command that is neither omctl nor translated fails, before anything runs.
#[test]
fn an_untranslated_command_fails_the_tutorial() {
    let mut world = World::new();
    let doc = "```sh\n# on n1\npvcreate /dev/sdb\nrm -rf /var/lib/omraft\n```\n";
    let err = world.replay(doc).unwrap_err();
    assert!(
        err.contains("line 4 on n1") && err.contains("neither omctl nor in the test's translation table"),
        "{err}"
    );
}

#[test]
fn shell_constructs_the_test_cannot_run_as_written_are_refused() {
    for (doc, why) in [
        ("```sh\n# on n1\nomctl mon | grep n1\n```\n", "'|' needs the shell"),
        ("```sh\n# on n1\nomctl $X mon\n```\n", "'$' needs the shell"),
        ("```sh\nomctl mon\n```\n", "begins with `# on HOST`"),
        ("```sh\n# on n3\nomctl mon\n```\n", "unknown host"),
        ("```bash\n# on n1\nomctl mon\n```\n", "```sh blocks"),
        ("```sh\n# on n1\ncat > f <<EOF\nx\nEOF\n```\n", "<<'EOF'"),
        ("<!-- expect -->\n```text\nx\n```\n", "must follow a sh block"),
    ] {
        let err = parse_doc(doc).unwrap_err();
        assert!(err.contains(why), "{doc:?}: {err}");
    }
    let steps = parse_doc(
        "```sh\n# on n1, n2\nomctl demo/svc/kvm1 config update --set 'a=b c' \\\n  --set x={name} # note\ncat > /etc/f <<'EOF'\nline $1\nEOF\nomctl cluster join --node 10.30.0.11:1215 < t\n```\n",
    )
    .unwrap();
    let Step::Run { hosts, cmds, .. } = &steps[0] else {
        panic!()
    };
    assert_eq!(hosts, &["n1", "n2"]);
    assert_eq!(
        cmds[0].words,
        [
            "omctl",
            "demo/svc/kvm1",
            "config",
            "update",
            "--set",
            "a=b c",
            "--set",
            "x={name}"
        ]
    );
    assert_eq!(cmds[1].stdin, Some(Stdin::Heredoc("line $1\n".into())));
    assert_eq!(cmds[1].stdout, Some(("/etc/f".into(), false)));
    assert_eq!(cmds[2].stdin, Some(Stdin::File("t".into())));
}

#[test]
fn expected_outputs_match_only_what_they_show() {
    let out = "OBJECT         NODE  AVAIL\ndemo/svc/kvm1  n1    down\ndemo/svc/kvm1  n2    up\n";
    assert!(output_matches(
        "OBJECT NODE AVAIL\ndemo/svc/kvm1  n1    down\ndemo/svc/kvm1  n2    up\n",
        out
    ));
    // The node that holds the service is checked.
    assert!(!output_matches(
        "OBJECT NODE AVAIL\ndemo/svc/kvm1  n1    up\ndemo/svc/kvm1  n2    down\n",
        out
    ));
    // Without `...`, nothing more and nothing less.
    assert!(!output_matches("OBJECT NODE AVAIL\n", out));
    assert!(output_matches("OBJECT NODE AVAIL\n...\n", out));
    assert!(output_matches("...\ndemo/svc/kvm1  n2    up\n", out));
    assert!(!output_matches("...\ndemo/svc/kvm1  n1    up\n...\n", out));
    assert!(output_matches(
        "OBJECT NODE AVAIL\ndemo/svc/kvm1  n1    …\ndemo/svc/kvm1  n2  up\n",
        out
    ));
    assert!(output_matches("…\n…\n… n2 u…\n", out));
    assert!(!output_matches("…\n…\n… n1 u…\n", out));
    assert!(output_matches("", "\n"));
    assert!(!output_matches("", "kvm1\n"));
}
