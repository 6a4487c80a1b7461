//! `omctl PATH ...`: commands on one object, and `object ls` / `pool list`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::render::Printer;
use super::{connect, user_error, Cli, Failure, Output, UpdateArgs};
use crate::pb;

/// omctl PATH: commands on the object at PATH (NAMESPACE/KIND/NAME, or NAME for root/svc/NAME).
#[derive(Debug, Parser)]
#[command(name = "omctl PATH", no_binary_name = true)]
pub struct PathCli {
    /// Output format (overrides the one given before PATH).
    #[arg(long, short, global = true, value_enum)]
    pub output: Option<Output>,
    #[command(subcommand)]
    pub command: PathCmd,
}

#[derive(Debug, Subcommand)]
pub enum PathCmd {
    /// Create the object, from --kw settings and/or a --config file.
    Create {
        /// [SECTION.]KEYWORD=VALUE, e.g. nodes={clusternodes} or volume#data.size=4G; repeatable.
        #[arg(long)]
        kw: Vec<String>,
        /// A configuration file in INI form.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete the object (a service's volumes go with it).
    Delete,
    /// Read and change the object's configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Keys of a config map (cfg) or secret (sec).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Per-node views of the object.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Create the service's volumes on all its nodes (LVs, DRBD up), active on the first node.
    Provision(WaitArgs),
    /// Stop the service and remove its volumes from every node.
    Unprovision(WaitArgs),
    /// Start the service where it is placed.
    Start(WaitArgs),
    /// Stop the service.
    Stop(WaitArgs),
    /// Move the service to another of its nodes, in committed phases: Stopping (the source
    /// stops the guest and demotes), Starting (the target promotes and starts it). With
    /// --live, live-migrate the running guest instead (DRBD dual-primary for the duration),
    /// in committed phases: Prepare (refused unless the target's DRBD is Connected and
    /// UpToDate), DualPrimary, Migrating, then Finalize, or Abort (the guest stays put).
    Switch {
        /// The node to move to (default: the next one in the service's nodes order).
        #[arg(long)]
        to: Option<String>,
        /// Live migration: the guest keeps running.
        #[arg(long, conflicts_with = "abort")]
        live: bool,
        /// Abort the switch in progress, before it hands the service over: the guest stays on (or
        /// returns to) its source.
        #[arg(long, conflicts_with = "to")]
        abort: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print views of the object.
    #[command(subcommand)]
    Print(PrintCmd),
    /// Move the service to the node this command talks to.
    Takeover(WaitArgs),
    /// Move the service back to the first node of its nodes order.
    Giveback(WaitArgs),
    /// Freeze the service: no automatic action (failover) on it.
    Freeze,
    /// Thaw a frozen service.
    Thaw,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until every node reports the result (provision: volumes in sync).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    pub time: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum PrintCmd {
    /// The object's status tree.
    Status {
        /// Include instances and their resources.
        #[arg(short, long)]
        recursive: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the configuration as INI.
    Show {
        /// Only this section, e.g. volume#data.
        #[arg(long)]
        section: Option<String>,
    },
    /// Apply every --set and --unset in one committed change, or none.
    Update(UpdateArgs),
    /// Print one keyword's value.
    Get {
        /// [SECTION.]KEYWORD[@NODE], e.g. volume#data.size.
        #[arg(long)]
        kw: String,
        /// Resolve references ({name}, {clusternodes}...) and defaults.
        #[arg(long)]
        eval: bool,
        /// Evaluate for this node (its @NODE values, {nodename}).
        #[arg(long)]
        node: Option<String>,
    },
    /// Describe the keywords this kind of object accepts.
    Doc {
        /// Only this [SECTION.]KEYWORD.
        #[arg(long)]
        kw: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct KeyValueArgs {
    /// The key's name.
    #[arg(long)]
    pub name: String,
    /// Read the value from this file.
    #[arg(long, conflicts_with = "value", required_unless_present = "value")]
    pub from: Option<PathBuf>,
    /// The value itself.
    #[arg(long)]
    pub value: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Add a new key.
    Add(KeyValueArgs),
    /// Change an existing key.
    Change(KeyValueArgs),
    /// List the keys' names (never their values).
    List,
    /// Print a key's value.
    Decode {
        #[arg(long)]
        name: String,
    },
    /// Remove a key.
    Remove {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// Devices of the object's volumes.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// One line per node: OBJECT NODE AVAIL.
    Ls,
    /// The status tree: object, instances per node, their resources.
    Status {
        /// Include instances and their resources.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Declare a node's instance provisioned (after a manual install), changing nothing there.
    Provision {
        /// Record the state only: required, nothing is done on the node.
        #[arg(long, required = true)]
        state_only: bool,
        /// The node.
        #[arg(long)]
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Exposed and base devices of each volume resource.
    List,
}

fn kvs(args: &[String], flag: &str) -> Result<Vec<pb::KeyValue>, Failure> {
    args.iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| user_error(format!("{flag} {s:?}: expected [SECTION.]KEYWORD=VALUE")))?;
            Ok(pb::KeyValue {
                key: k.trim().into(),
                value: v.into(),
            })
        })
        .collect()
}

fn read_file(p: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(p).map_err(|e| user_error(format!("reading {}: {e}", p.display())))
}

/// Runs `omctl PATH ARGS...`.
pub async fn run(cli: &Cli, args: &[String], out: &mut Printer) -> Result<(), Failure> {
    let (path, rest) = args.split_first().ok_or_else(|| user_error("no object path"))?;
    let parsed = match PathCli::try_parse_from(rest) {
        Ok(p) => p,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return Ok(());
        }
        Err(e) => {
            return Err(user_error(format!(
                "{path}: {}",
                e.to_string().trim_start_matches("error: ").trim()
            )))
        }
    };
    if let Some(o) = parsed.output {
        out.set_format(o);
    }
    let mut c = connect(cli).await?;
    let path = path.clone();
    match parsed.command {
        PathCmd::Create { kw, config } => {
            let config_text = match &config {
                Some(f) => String::from_utf8(read_file(f)?)
                    .map_err(|_| user_error(format!("{}: not UTF-8 text", f.display())))?,
                None => String::new(),
            };
            let req = pb::ObjectCreateRequest {
                path,
                kws: kvs(&kw, "--kw")?,
                config_text,
            };
            let r = c.object_create(req).await.map_err(Failure::write)?.into_inner();
            out.quiet_commit(r.log_index);
        }
        PathCmd::Delete => {
            let r = c
                .object_delete(pb::ObjectRef { path })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.quiet_commit(r.log_index);
        }
        PathCmd::Config(ConfigCmd::Show { section }) => {
            let req = pb::ObjectConfigShowRequest {
                path,
                section: section.unwrap_or_default(),
            };
            out.ini(&c.object_config_show(req).await?.into_inner());
        }
        PathCmd::Config(ConfigCmd::Update(a)) => {
            if a.set.is_empty() && a.unset.is_empty() {
                return Err(user_error("nothing to change: give at least one --set or --unset"));
            }
            let req = pb::ObjectConfigUpdateRequest {
                path,
                set: kvs(&a.set, "--set")?,
                unset: a.unset,
            };
            out.committed(
                c.object_config_update(req)
                    .await
                    .map_err(Failure::write)?
                    .into_inner()
                    .log_index,
            );
        }
        PathCmd::Config(ConfigCmd::Get { kw, eval, node }) => {
            let req = pb::ObjectConfigGetRequest {
                path: path.clone(),
                key: kw.clone(),
                eval,
                node: node.unwrap_or_default(),
            };
            let r = c.object_config_get(req).await?.into_inner();
            if !r.found {
                return Err(user_error(format!(
                    "{path}: {kw} is not set{}",
                    if eval {
                        " and has no default"
                    } else {
                        " (try --eval for its default)"
                    }
                )));
            }
            out.value(&r.value);
        }
        PathCmd::Config(ConfigCmd::Doc { kw }) => {
            let req = pb::ObjectConfigDocRequest {
                path,
                key: kw.unwrap_or_default(),
            };
            out.doc(&c.object_config_doc(req).await?.into_inner());
        }
        PathCmd::Key(KeyCmd::Add(a) | KeyCmd::Change(a)) if a.from.is_none() && a.value.is_none() => {
            return Err(user_error("give --from FILE or --value VALUE"));
        }
        PathCmd::Key(cmd @ (KeyCmd::Add(_) | KeyCmd::Change(_))) => {
            let (a, change) = match cmd {
                KeyCmd::Add(a) => (a, false),
                KeyCmd::Change(a) => (a, true),
                _ => unreachable!("matched above"),
            };
            let value = match (&a.from, a.value) {
                (Some(f), _) => read_file(f)?,
                (None, Some(v)) => v.into_bytes(),
                (None, None) => unreachable!("checked above"),
            };
            let req = pb::KeyPutRequest {
                path: path.clone(),
                name: a.name.clone(),
                value,
                change,
            };
            let r = c.key_put(req).await.map_err(Failure::write)?.into_inner();
            out.key_set(&path, &a.name, r.log_index);
        }
        PathCmd::Key(KeyCmd::List) => out.names(&c.key_list(pb::ObjectRef { path }).await?.into_inner().names),
        PathCmd::Key(KeyCmd::Decode { name }) => {
            let r = c.key_decode(pb::KeyRequest { path, name }).await?.into_inner();
            out.raw(&r.value);
        }
        PathCmd::Key(KeyCmd::Remove { name }) => {
            let r = c
                .key_remove(pb::KeyRequest { path, name })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.quiet_commit(r.log_index);
        }
        PathCmd::Instance(InstanceCmd::Device(DeviceCmd::List)) => {
            out.devices(&c.device_list(pb::ObjectRef { path }).await?.into_inner());
        }
        PathCmd::Instance(InstanceCmd::Ls) => {
            out.instances(&c.instance_status(pb::ObjectRef { path }).await?.into_inner());
        }
        PathCmd::Instance(InstanceCmd::Status { recursive }) | PathCmd::Print(PrintCmd::Status { recursive }) => {
            out.status_tree(
                &c.instance_status(pb::ObjectRef { path }).await?.into_inner(),
                recursive,
            );
        }
        PathCmd::Instance(InstanceCmd::Provision { node, .. }) => {
            let req = pb::ObjectActionRequest {
                path: path.clone(),
                action: "provision-state-only".into(),
                node: node.clone(),
            };
            let r = c.object_action(req).await.map_err(Failure::write)?.into_inner();
            out.state_only(&path, &node, r.log_index);
        }
        PathCmd::Freeze | PathCmd::Thaw => {
            let action = if matches!(parsed.command, PathCmd::Freeze) {
                "freeze"
            } else {
                "thaw"
            };
            let req = pb::ObjectActionRequest {
                path: path.clone(),
                action: action.into(),
                node: String::new(),
            };
            out.committed(
                c.object_action(req)
                    .await
                    .map_err(Failure::write)?
                    .into_inner()
                    .log_index,
            );
        }
        PathCmd::Takeover(w) => action(&mut c, out, &path, "takeover", &w).await?,
        PathCmd::Giveback(w) => action(&mut c, out, &path, "giveback", &w).await?,
        PathCmd::Provision(w) => action(&mut c, out, &path, "provision", &w).await?,
        PathCmd::Unprovision(w) => action(&mut c, out, &path, "unprovision", &w).await?,
        PathCmd::Start(w) => action(&mut c, out, &path, "start", &w).await?,
        PathCmd::Stop(w) => action(&mut c, out, &path, "stop", &w).await?,
        PathCmd::Switch { to, live, abort, wait } => {
            let action = match (live, abort) {
                (_, true) => "abort-switch",
                (true, _) => "live-switch",
                _ => "switch",
            };
            let req = pb::ObjectActionRequest {
                path: path.clone(),
                action: action.into(),
                node: to.unwrap_or_default(),
            };
            orchestrate(&mut c, out, &path, action, req, &wait).await?
        }
    }
    Ok(())
}

/// Whether every node shows the result of `action`.
fn done(action: &str, s: &pb::InstanceStatusReply) -> bool {
    let all_reported = s.instances.iter().all(|i| i.reported);
    let placed = s.instances.iter().find(|i| i.node == s.placement);
    match action {
        "provision" => {
            // In sync everywhere: no instance carries a warning (a resync in progress).
            all_reported
                && s.instances.iter().all(|i| i.provisioned && !i.warn)
                && placed.is_some_and(|p| p.avail == "up")
        }
        "unprovision" => all_reported && s.instances.iter().all(|i| !i.provisioned),
        "start" => placed.is_some_and(|p| p.avail == "up"),
        // Up where it is placed now, down everywhere else.
        "switch" | "takeover" | "giveback" | "live-switch" | "abort-switch" => {
            s.migration_phase.is_empty()
                && all_reported
                && s.instances.iter().all(|i| (i.node == s.placement) == (i.avail == "up"))
        }
        _ => all_reported && s.instances.iter().all(|i| i.avail != "up"),
    }
}

/// Commits `action`, then with --wait polls until every node shows its result.
async fn action(
    c: &mut super::client::Client,
    out: &mut Printer,
    path: &str,
    action: &str,
    w: &WaitArgs,
) -> Result<(), Failure> {
    let req = pb::ObjectActionRequest {
        path: path.into(),
        action: action.into(),
        node: String::new(),
    };
    orchestrate(c, out, path, action, req, w).await
}

/// Polls `path`'s status every 100 ms until every node shows the result of `action`: that
/// status, or `None` once `time` passed.
pub(super) async fn wait_done(
    c: &mut super::client::Client,
    path: &str,
    action: &str,
    time: std::time::Duration,
) -> Result<Option<pb::InstanceStatusReply>, Failure> {
    let deadline = std::time::Instant::now() + time;
    loop {
        let s = c
            .instance_status(pb::ObjectRef { path: path.into() })
            .await?
            .into_inner();
        if done(action, &s) {
            return Ok(Some(s));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Commits `req`, then with --wait polls until every node shows the result of `action`.
async fn orchestrate(
    c: &mut super::client::Client,
    out: &mut Printer,
    path: &str,
    action: &str,
    req: pb::ObjectActionRequest,
    w: &WaitArgs,
) -> Result<(), Failure> {
    let index = c
        .object_action(req)
        .await
        .map_err(Failure::write)?
        .into_inner()
        .log_index;
    let id = crate::model::objects::derived_uuid(&format!("{path}@{index}"));
    let mut error = None;
    if w.wait {
        match wait_done(c, path, action, w.time).await? {
            // A switch that ended aborted failed, and says why.
            Some(s)
                if matches!(action, "switch" | "live-switch" | "takeover" | "giveback")
                    && !s.last_migration_error.is_empty() =>
            {
                error = Some(format!("switch aborted: {}", s.last_migration_error));
            }
            Some(_) => {}
            None => error = Some(format!("{action} not done on every node within {:?}", w.time)),
        }
    }
    out.orchestration(path, &id, error.as_deref());
    match error {
        Some(e) => Err(Failure {
            user: false,
            message: e,
        }),
        None => Ok(()),
    }
}
