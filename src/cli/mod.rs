//! `omctl`: the command line client. Parses arguments into a command, calls the daemon's
//! `Cluster` API and prints the answer through one printer: human tables and INI like the
//! tutorial's, or JSON from dedicated view structs (`--output json`).
//!
//! Exit codes: 0 success (and broken pipe), 1 user error, 2 unexpected error; the DRBD
//! handlers (`drbd.rs`) answer with the codes DRBD reads instead.

pub mod client;
pub mod config_file;
mod drain;
pub mod drbd;
mod events;
mod manpages;
mod object;
pub mod omd;
mod render;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tonic::Code;

use crate::api::auth::Role;
use crate::daemon::{NOT_COMMITTED, OUTCOME_UNKNOWN};
use crate::pb;
use client::Client;
use render::Printer;

/// omctl: manage an omraft cluster.
///
/// Talks to the local daemon's unix socket by default; `--server https://HOST:PORT` reaches a
/// remote one over TLS, verified against the cluster CA (`--ca`, a copy of any node's
/// `DATA_DIR/tls/ca.crt`), with a token (`omctl daemon auth --role root|operator|viewer`).
#[derive(Debug, Parser)]
#[command(
    name = "omctl",
    version,
    propagate_version = true,
    after_help = "Object commands: omctl PATH COMMAND, where PATH is NAMESPACE/KIND/NAME (or NAME for\n\
                  root/svc/NAME): create, delete, config show|update|get|doc, key add|change|list|decode|remove,\n\
                  provision, unprovision, start, stop (--wait), instance ls|status -r|device list|provision\n\
                  --state-only, print status -r. See `omctl PATH --help`, e.g. `omctl demo/svc/kvm1 --help`."
)]
pub struct Cli {
    /// Daemon to talk to: unix:PATH or https://HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "OMCTL_SERVER",
        default_value = "unix:/var/lib/omraft/omd.sock"
    )]
    pub server: String,
    /// Token for a remote (TCP) daemon.
    #[arg(long, global = true, env = "OMCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA certificate (PEM) a remote daemon must prove itself with: a copy of
    /// DATA_DIR/tls/ca.crt from any node.
    #[arg(long, global = true, env = "OMCTL_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate directory (client.key, client.crt, ca.crt, as `omctl daemon auth
    /// --client-cert DIR` writes it) to authenticate with instead of a token; its ca.crt
    /// serves as --ca unless given.
    #[arg(long, global = true, env = "OMCTL_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// `omctl mon`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MonArgs {
    /// Redraw in place after each change the cluster commits (from its event stream), until
    /// interrupted.
    #[arg(long, short)]
    watch: bool,
    /// With --watch, seconds between redraws while nothing is committed: whether a node
    /// answers is not in the log.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Only services whose path matches this glob (`*`, `?`), e.g. 'prod/svc/*'.
    #[arg(long, default_value = "")]
    filter: String,
    /// Services after this path: the next page.
    #[arg(long, default_value = "")]
    after: String,
    /// Services in a page (at most 1000; default 50, and 1000 for --all's pages).
    #[arg(long)]
    limit: Option<u32>,
    /// Every matching service, not one page.
    #[arg(long, conflicts_with = "after")]
    all: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and INI, as the tutorial shows them.
    Human,
    /// One JSON document.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster: daemons, nodes, the services counted by health, and one page of
    /// them with each node's instance state.
    ///
    /// A page holds 50 services (--limit); the line under it gives the command for the next
    /// one (--after). --filter keeps the services whose path matches a glob, counts included;
    /// --all lists every matching service (fetched a page at a time).
    Mon(MonArgs),
    /// The cluster's events: placement changes, switch phases, failovers and whose lease ran
    /// out, fencing marks, instance status changes, membership; each with the log index of
    /// the entry that gave it.
    ///
    /// The daemon asked keeps its last 10,000 events, from its last snapshot on; every node
    /// gives the same events for an entry. --follow keeps printing as entries are applied and,
    /// when the connection is lost, connects again and resumes after the last event printed,
    /// with nothing missed or repeated. -o json prints one JSON object per line.
    Events {
        /// Keep printing events as they come, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Start at this log index (the INDEX column; 0: the oldest event the daemon keeps).
        #[arg(long, value_name = "INDEX", default_value_t = 0)]
        since: u64,
    },
    /// Cluster-wide commands: configuration, join, removal.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Commands about the daemon itself.
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Objects: services, volumes, config maps, secrets, users.
    #[command(subcommand)]
    Object(ObjectsCmd),
    /// Storage pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Node-level commands.
    #[command(subcommand)]
    Node(NodeCmd),
    /// DRBD's fence-peer and unfence-peer handlers, run by DRBD (see their --help).
    #[command(subcommand)]
    Drbd(drbd::DrbdCmd),
    /// Print a completion script for a shell, e.g. `omctl completion bash >
    /// /etc/bash_completion.d/omctl` (zsh: a `_omctl` file in $fpath; fish:
    /// ~/.config/fish/completions/omctl.fish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of omctl and omd into DIR (omctl.1, omctl-COMMAND.1, omd.8), as
    /// the package installs them.
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
    /// PATH COMMAND...: commands on one object (NAMESPACE/KIND/NAME); see `omctl PATH --help`.
    #[command(external_subcommand)]
    Path(Vec<String>),
}

#[derive(Debug, Subcommand)]
pub enum ObjectsCmd {
    /// List objects whose path matches a glob.
    Ls {
        /// Glob over NAMESPACE/KIND/NAME, e.g. '*/svc/*' (default: every object).
        selector: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Freeze a node: the orchestrator places nothing on it.
    Freeze {
        #[arg(long)]
        node: String,
    },
    /// Thaw a frozen node.
    Thaw {
        #[arg(long)]
        node: String,
    },
    /// Move every service off a node for maintenance, then keep it frozen so nothing returns.
    ///
    /// Each service placed on the node goes to the first of its other nodes that has it
    /// provisioned, is not frozen and has no outdated disk; if one has nowhere to go, the drain
    /// is refused with why and nothing changes. Otherwise the node is frozen, then the services
    /// move one at a time, each waited for and reported: started ones by a switch (the guest
    /// stops, then starts on the other node) or with --live a live switch; stopped ones are
    /// only placed elsewhere. A move that fails stops the drain: the node stays frozen, and
    /// running the drain again goes on. `mon` shows the node `drained` once nothing is placed
    /// on it; `node undrain` thaws it (services do not move back by themselves).
    Drain {
        /// The node to drain.
        #[arg(long)]
        node: String,
        /// Live-migrate the running guests. A live switch refused (e.g. the target's disk not
        /// in sync) stops the drain: it never falls back to stopping a guest.
        #[arg(long)]
        live: bool,
        /// How long each move may take.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        time: Duration,
    },
    /// Thaw a drained node: services may be placed on it again.
    Undrain {
        /// The node to thaw.
        #[arg(long)]
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Pools with their capacity: cluster-wide sums, or one node's with --node.
    List {
        /// Only this pool.
        #[arg(long)]
        name: Option<String>,
        /// One node's figures.
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Read and change the cluster configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Make the local daemon leave its one-node cluster and join the cluster at --node.
    Join {
        /// HOST:PORT of any node of the cluster to join.
        #[arg(long)]
        node: String,
        /// Join token from `omctl daemon auth --role join` on that cluster; read from
        /// standard input when absent or `-` (keeps it out of `ps`).
        #[arg(long, env = "OMCTL_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Join as a witness: votes, never hosts services.
        #[arg(long)]
        witness: bool,
    },
    /// Make a new token signing key: every token minted before stops working.
    RotateSigningKey,
    /// Revoke a certificate (a client's) by its fingerprint: refused from then on.
    Revoke {
        /// SHA-256 fingerprint of the certificate, 64 hex digits.
        #[arg(long)]
        fingerprint: String,
    },
    /// Remove a node from the cluster (from the Raft membership, then from the state); its
    /// certificate is revoked.
    Remove {
        /// Name of the node to remove.
        #[arg(long)]
        node: String,
    },
    /// ssh between the nodes.
    #[command(subcommand)]
    Ssh(SshCmd),
}

#[derive(Debug, Subcommand)]
pub enum SshCmd {
    /// Make every node trust the data nodes over ssh: each data node keeps a key pair (omraft,
    /// omraft.pub in omd's --ssh-dir, /root/.ssh by default) and every node lists their public
    /// keys in its authorized_keys (in one block between `# BEGIN omraft managed keys` and
    /// `# END omraft managed keys`; other lines are kept). Sets cluster.ssh_trust=true; the
    /// nodes do the rest within seconds, and new nodes too.
    Trust,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Apply every --set and --unset in one committed change, or none.
    Update(UpdateArgs),
    /// Print one keyword's value (or its default).
    Get {
        /// SECTION.KEYWORD, e.g. cluster.name.
        #[arg(long)]
        kw: String,
    },
    /// Print the configuration as INI.
    Show {
        /// Only this section, e.g. pool#drbdvm.
        #[arg(long)]
        section: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// SECTION.KEYWORD=VALUE to set; repeatable.
    #[arg(long)]
    pub set: Vec<String>,
    /// SECTION.KEYWORD to remove; repeatable.
    #[arg(long)]
    pub unset: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Mint a token with the cluster's signing key (on the node holding it, or through it).
    Auth {
        /// What the token allows: join (one node joining, once), viewer (read), operator
        /// (objects, keys, actions, freeze) or root (everything).
        #[arg(long, value_enum)]
        role: Role,
        /// Bind a join token to this node name: any other name is refused.
        #[arg(long)]
        node: Option<String>,
        /// Instead of a token, make a client certificate for the role (viewer, operator or
        /// root): a key made here, certified by the cluster CA, written with the CA to DIR
        /// (client.key mode 0600); use it with `--cert DIR`. Revoke it with `omctl cluster
        /// revoke --fingerprint FP`.
        #[arg(long, value_name = "DIR")]
        client_cert: Option<std::path::PathBuf>,
        /// The client certificate's subject name.
        #[arg(long, default_value = "omctl", requires = "client_cert")]
        name: String,
        /// How long the token is valid, e.g. 90s, 10m, 1h, 2d (30d at most).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Heartbeats: one row per Raft link of every node.
    #[command(subcommand)]
    Hb(HbCmd),
}

#[derive(Debug, Subcommand)]
pub enum HbCmd {
    /// Show every node's Raft links: running, beating, last ack, match index.
    Status,
}

/// Parses `90s`, `10m`, `1h`, `2d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 10m, 1h or 2d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(n * mult))
}

/// A failed command: the message and whether the user caused it.
#[derive(Debug)]
pub struct Failure {
    pub user: bool,
    pub message: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        let user = matches!(
            s.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Aborted
        );
        let message = if s.message().is_empty() {
            s.code().to_string()
        } else {
            s.message().to_string()
        };
        Failure { user, message }
    }
}

impl Failure {
    /// A failed write. Refused input (a user error) changed nothing, and the daemon says when
    /// a command was certainly not committed; any other failure (the connection lost after the
    /// request went out, a deadline, an error from the leader) may come after the command was
    /// appended, so it says the outcome is unknown, never that the write failed.
    pub fn write(s: tonic::Status) -> Failure {
        let f = Failure::from(s);
        if f.user || f.message.starts_with(OUTCOME_UNKNOWN) || f.message.starts_with(NOT_COMMITTED) {
            return f;
        }
        Failure {
            user: false,
            message: format!("{OUTCOME_UNKNOWN} (it may have been committed): {}", f.message),
        }
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        let user = !matches!(e, client::ConnectError::Unreachable(..));
        Failure {
            user,
            message: e.to_string(),
        }
    }
}

fn user_error(message: impl Into<String>) -> Failure {
    Failure {
        user: true,
        message: message.into(),
    }
}

/// Runs omctl and returns its exit code.
pub async fn main() -> i32 {
    let cli = Cli::parse();
    let out = Printer::new(cli.output);
    run_cli(cli, out).await
}

/// Runs omctl with `args` (the program name first), its output written to `out`, errors to
/// stderr, and returns its exit code: the in-process tests drive omctl's own code this way.
pub async fn main_with(args: &[&str], out: Box<dyn std::io::Write + Send>) -> i32 {
    match Cli::try_parse_from(args) {
        Ok(cli) => {
            let out = Printer::to(cli.output, out);
            run_cli(cli, out).await
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

async fn run_cli(cli: Cli, mut out: Printer) -> i32 {
    let result = run(&cli, &mut out).await;
    let code = match &result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("omctl: error: {}", f.message);
            if f.user {
                1
            } else {
                2
            }
        }
    };
    let written = out.finish();
    // A DRBD handler's exit code says whether the cluster committed, and nothing else.
    if let Command::Drbd(cmd) = &cli.command {
        return drbd::exit_code(cmd, result.is_ok());
    }
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("omctl: error: writing output: {e}");
            2
        }
        _ => code,
    }
}

async fn connect(cli: &Cli) -> Result<Client, Failure> {
    let ca = cli.ca.clone().or_else(|| cli.cert.as_ref().map(|d| d.join("ca.crt")));
    Ok(client::connect(&cli.server, cli.token.as_deref(), ca.as_deref(), cli.cert.as_deref()).await?)
}

/// The page `args` asks for (every page's services with --all, the first's counts).
async fn mon_page(c: &mut Client, args: &MonArgs) -> Result<pb::MonReply, Failure> {
    let req = pb::MonRequest {
        filter: args.filter.clone(),
        after: args.after.clone(),
        limit: args.limit.unwrap_or(if args.all {
            crate::api::MON_PAGE_MAX
        } else {
            crate::api::MON_PAGE
        }),
    };
    let mut reply = c.mon(req.clone()).await?.into_inner();
    while let Some(next) = reply
        .summary
        .as_ref()
        .map(|s| s.next_after.clone())
        .filter(|n| args.all && !n.is_empty())
    {
        let more = c
            .mon(pb::MonRequest {
                after: next,
                ..req.clone()
            })
            .await?
            .into_inner();
        if more.objects.is_empty() {
            break;
        }
        reply.objects.extend(more.objects);
        if let (Some(s), Some(m)) = (reply.summary.as_mut(), more.summary) {
            s.next_after = m.next_after;
        }
    }
    Ok(reply)
}

async fn run(cli: &Cli, out: &mut Printer) -> Result<(), Failure> {
    match &cli.command {
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "omctl",
                &mut script,
            );
            out.raw(&script);
            Ok(())
        }
        Command::Manpages { dir } => {
            let pages = manpages::write(dir).map_err(|e| user_error(format!("{}: {e}", dir.display())))?;
            out.names(&pages.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
            Ok(())
        }
        Command::Mon(args) if args.watch => {
            let interval = Duration::from_secs(args.interval.max(1));
            events::watch_mon(cli, args, interval, out).await
        }
        Command::Mon(args) => {
            let mut c = connect(cli).await?;
            out.mon(&mon_page(&mut c, args).await?);
            Ok(())
        }
        Command::Events { follow, since } => events::events(cli, *since, *follow, out).await,
        Command::Cluster(ClusterCmd::Config(cmd)) => config(cli, cmd, out).await,
        Command::Cluster(ClusterCmd::Join { node, token, witness }) => {
            let token = match token.as_deref() {
                Some(t) if t != "-" => t.to_string(),
                _ => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| user_error(format!("reading the join token from standard input: {e}")))?;
                    if line.trim().is_empty() {
                        return Err(user_error(
                            "no join token: give --token, OMCTL_JOIN_TOKEN or the token on standard input",
                        ));
                    }
                    line
                }
            };
            let mut c = connect(cli).await?;
            let req = pb::JoinRequest {
                node: node.clone(),
                token: token.trim().to_string(),
                witness: *witness,
            };
            let reply = c.join(req).await?.into_inner();
            out.joined(&reply);
            Ok(())
        }
        Command::Cluster(ClusterCmd::Ssh(SshCmd::Trust)) => {
            let mut c = connect(cli).await?;
            let reply = c
                .config_update(pb::ConfigUpdateRequest {
                    set: vec![pb::KeyValue {
                        key: "cluster.ssh_trust".into(),
                        value: "true".into(),
                    }],
                    unset: vec![],
                })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.committed(reply.log_index);
            Ok(())
        }
        Command::Cluster(ClusterCmd::Revoke { fingerprint }) => {
            let mut c = connect(cli).await?;
            let reply = c
                .revoke_cert(pb::RevokeCertRequest {
                    fingerprint: fingerprint.clone(),
                })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.committed(reply.log_index);
            Ok(())
        }
        Command::Cluster(ClusterCmd::RotateSigningKey) => {
            let mut c = connect(cli).await?;
            let reply = c
                .rotate_signing_key(pb::RotateSigningKeyRequest {})
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.rotated(reply.generation);
            Ok(())
        }
        Command::Cluster(ClusterCmd::Remove { node }) => {
            let mut c = connect(cli).await?;
            let reply = c
                .remove_node(pb::RemoveNodeRequest { name: node.clone() })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.removed(node, reply.node_id);
            Ok(())
        }
        Command::Daemon(DaemonCmd::Auth {
            role,
            duration,
            node: _,
            client_cert: Some(dir),
            name,
        }) => {
            let mut c = connect(cli).await?;
            let key = crate::tls::pki::NodeKey::generate();
            let req = pb::IssueClientCertRequest {
                name: name.clone(),
                role: role.to_string(),
                duration_secs: duration.as_secs().max(1),
                public_key: key.public(),
                proof: key.prove(crate::tls::pki::CLIENT_PROOF, name),
            };
            let reply = c.issue_client_cert(req).await?.into_inner();
            client::save_client_cert(dir, &key, &reply.cert, &reply.ca)?;
            out.client_cert(dir, &reply.fingerprint);
            Ok(())
        }
        Command::Daemon(DaemonCmd::Auth {
            role, duration, node, ..
        }) => {
            let mut c = connect(cli).await?;
            let req = pb::IssueTokenRequest {
                role: role.to_string(),
                duration_secs: duration.as_secs().max(1),
                node: node.clone().unwrap_or_default(),
            };
            let reply = c.issue_token(req).await?.into_inner();
            out.token(&reply);
            Ok(())
        }
        Command::Path(args) => object::run(cli, args, out).await,
        Command::Drbd(cmd) => drbd::run(cli, cmd, out).await,
        Command::Node(NodeCmd::Drain { node, live, time }) => {
            let mut c = connect(cli).await?;
            drain::drain(&mut c, out, node, *live, *time).await
        }
        Command::Node(NodeCmd::Freeze { node } | NodeCmd::Thaw { node } | NodeCmd::Undrain { node }) => {
            let frozen = matches!(&cli.command, Command::Node(NodeCmd::Freeze { .. }));
            let mut c = connect(cli).await?;
            let r = c
                .node_freeze(pb::NodeFreezeRequest {
                    node: node.clone(),
                    frozen,
                })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.committed(r.log_index);
            Ok(())
        }
        Command::Object(ObjectsCmd::Ls { selector }) => {
            let mut c = connect(cli).await?;
            let req = pb::ObjectListRequest {
                selector: selector.clone().unwrap_or_default(),
            };
            out.objects(&c.object_list(req).await?.into_inner());
            Ok(())
        }
        Command::Pool(PoolCmd::List { name, node }) => {
            let mut c = connect(cli).await?;
            let req = pb::PoolListRequest {
                name: name.clone().unwrap_or_default(),
                node: node.clone().unwrap_or_default(),
            };
            out.pools(&c.pool_list(req).await?.into_inner(), node.is_some());
            Ok(())
        }
        Command::Daemon(DaemonCmd::Hb(HbCmd::Status)) => {
            let mut c = connect(cli).await?;
            let reply = c.mon(pb::MonRequest::default()).await?.into_inner();
            out.hb(&reply);
            Ok(())
        }
    }
}

async fn config(cli: &Cli, cmd: &ConfigCmd, out: &mut Printer) -> Result<(), Failure> {
    match cmd {
        ConfigCmd::Update(args) => {
            let mut set = Vec::new();
            for s in &args.set {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| user_error(format!("--set {s:?}: expected SECTION.KEYWORD=VALUE")))?;
                set.push(pb::KeyValue {
                    key: k.trim().to_string(),
                    value: v.to_string(),
                });
            }
            if set.is_empty() && args.unset.is_empty() {
                return Err(user_error("nothing to change: give at least one --set or --unset"));
            }
            let mut c = connect(cli).await?;
            let reply = c
                .config_update(pb::ConfigUpdateRequest {
                    set,
                    unset: args.unset.clone(),
                })
                .await
                .map_err(Failure::write)?
                .into_inner();
            out.committed(reply.log_index);
            Ok(())
        }
        ConfigCmd::Get { kw } => {
            let mut c = connect(cli).await?;
            let reply = c
                .config_get(pb::ConfigGetRequest { key: kw.clone() })
                .await?
                .into_inner();
            if !reply.found {
                return Err(user_error(format!("{kw} is not set and has no default")));
            }
            out.value(&reply.value);
            Ok(())
        }
        ConfigCmd::Show { section } => {
            let mut c = connect(cli).await?;
            let req = pb::ConfigShowRequest {
                section: section.clone().unwrap_or_default(),
            };
            let reply = c.config_show(req).await?.into_inner();
            out.ini(&reply);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn a_failed_write_says_the_outcome_is_unknown_unless_it_is_known() {
        use tonic::Status;
        for s in [
            Status::unavailable("transport error"),
            Status::unknown("h2 protocol error: error reading a body from connection"),
            Status::deadline_exceeded("Timeout expired"),
            Status::cancelled("operation was canceled"),
            Status::internal("commit failed: raft stopped"),
        ] {
            let f = Failure::write(s.clone());
            assert!(!f.user, "{}", f.message);
            assert!(f.message.starts_with("outcome unknown"), "{}", f.message);
            assert!(f.message.contains(s.message()), "{}", f.message);
        }
        // Known outcomes keep their message: refused, certainly not committed, already unknown.
        for s in [
            Status::failed_precondition("demo/svc/kvm1 is provisioned"),
            Status::invalid_argument("unknown keyword foo.bar"),
            Status::unavailable("not committed: no leader: the cluster has no quorum"),
            Status::unavailable("outcome unknown: the leader 10.0.0.1:1215: transport error"),
        ] {
            assert_eq!(Failure::write(s.clone()).message, s.message());
        }
        // A read keeps its message.
        assert_eq!(
            Failure::from(Status::unavailable("transport error")).message,
            "transport error"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
