//! `omctl drbd fence-peer|unfence-peer`: DRBD's `fence-peer` and `unfence-peer` handlers.
//!
//! DRBD runs them through `drbdadm`, from the kernel, with the resource and the peer in the
//! environment and a minimal PATH; they ask the local daemon to have the cluster commit that
//! the peer's disk is outdated (or up to date again) and answer with the exit code DRBD reads.
//! fence-peer never claims a success it does not have: any failure exits 1, which DRBD takes
//! for a broken handler, keeping I/O frozen under `fencing resource-and-stonith`. Never 3, 5,
//! 6 or 7: those would let DRBD resume I/O or outdate this node on a guess.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::render::Printer;
use super::{connect, user_error, Cli, Failure};
use crate::pb;

/// The exit code DRBD reads from fence-peer as "the peer's disk is outdated".
pub const PEER_OUTDATED: i32 = 4;
/// Any failure: for fence-peer, DRBD's "handler broken" (I/O stays frozen).
pub const FAILED: i32 = 1;

#[derive(Debug, Subcommand)]
pub enum DrbdCmd {
    /// DRBD fence-peer handler: exits 4 once the cluster committed the peer outdated.
    ///
    /// Run by DRBD, not by hand: `handlers { fence-peer "/usr/sbin/omctl drbd fence-peer"; }`
    /// with `net { protocol C; fencing resource-and-stonith; }` (the built-in template does
    /// this with the omctl beside omd). DRBD calls it when this node, Primary or becoming
    /// Primary, loses sight of a peer. It reads the resource (DRBD_RESOURCE) and the peer's
    /// host name (DRBD_NODE_ID_<DRBD_PEER_NODE_ID>), which is its cluster node name, from the
    /// environment DRBD sets (or --resource and --peer), and asks the local daemon to commit
    /// that the peer's disk of that resource is outdated. DRBD's PATH is minimal: give the
    /// absolute path of omctl. The daemon is reached at --server (DRBD passes no OMCTL_SERVER:
    /// with another data directory, put --server in the handler).
    ///
    /// Exit 4: committed (or already marked): DRBD marks the peer's disk Outdated and resumes
    /// I/O; nothing fails over to the peer until it resynced (unfence-peer clears the mark).
    ///
    /// Exit 1: anything else (incomplete environment, unknown resource or node, the peer holds
    /// the service, daemon unreachable, no commit within --timeout as on a node cut from the
    /// majority). DRBD then takes the handler for broken and, with resource-and-stonith, keeps
    /// I/O frozen until the node fences itself or the peer is back. Codes 3, 5, 6, 7 are never
    /// used.
    FencePeer(HandlerArgs),
    /// DRBD unfence-peer handler: clears the peer's outdated mark once it resynced.
    ///
    /// Run by DRBD (`handlers { unfence-peer "/usr/sbin/omctl drbd unfence-peer"; }`) when the
    /// peer is UpToDate again, with the same environment as fence-peer. By hand, with
    /// --resource and --peer, it clears a mark left behind (one the cluster could not clear
    /// when DRBD called it). Exit 0 when committed or nothing was marked, 1 on failure (DRBD
    /// ignores the exit code; the failure is printed and logged by the daemon).
    UnfencePeer(HandlerArgs),
}

#[derive(Debug, Args)]
pub struct HandlerArgs {
    /// The DRBD resource (default: DRBD_RESOURCE from DRBD's environment).
    #[arg(long)]
    pub resource: Option<String>,
    /// The peer's node name (default: DRBD_NODE_ID_<DRBD_PEER_NODE_ID> from DRBD's environment).
    #[arg(long)]
    pub peer: Option<String>,
    /// How long to wait for the cluster to commit, e.g. 20s; then exit 1.
    #[arg(long, default_value = "20s", value_parser = super::parse_duration)]
    pub timeout: Duration,
}

/// What a handler acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The DRBD resource name, a volume's (`kvm1.demo.vol.drbd4kvm`).
    pub resource: String,
    /// The peer's cluster node name (the host name in its `on NAME` section).
    pub peer: String,
}

/// The target from the arguments, else from DRBD's handler environment (`env` looks a
/// variable up): DRBD_RESOURCE, and the peer's host name DRBD_NODE_ID_<DRBD_PEER_NODE_ID>.
pub fn target(args: &HandlerArgs, env: impl Fn(&str) -> Option<String>) -> Result<Target, String> {
    const HINT: &str = "not run by DRBD? give --resource and --peer";
    let var = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let resource = match &args.resource {
        Some(r) => r.trim().to_string(),
        None => var("DRBD_RESOURCE").ok_or_else(|| format!("DRBD_RESOURCE is not set ({HINT})"))?,
    };
    let peer = match &args.peer {
        Some(p) => p.trim().to_string(),
        None => {
            let id = var("DRBD_PEER_NODE_ID").ok_or_else(|| format!("DRBD_PEER_NODE_ID is not set ({HINT})"))?;
            let id: u32 = id
                .parse()
                .map_err(|_| format!("DRBD_PEER_NODE_ID={id:?} is not a DRBD node id"))?;
            var(&format!("DRBD_NODE_ID_{id}"))
                .ok_or_else(|| format!("DRBD_NODE_ID_{id} (the host name of peer node-id {id}) is not set"))?
        }
    };
    if resource.is_empty() || peer.is_empty() {
        return Err("--resource and --peer must not be empty".into());
    }
    Ok(Target { resource, peer })
}

/// The exit code of handler `cmd` given whether it succeeded: fence-peer 4 (DRBD: peer
/// outdated) only on success; every failure 1.
pub fn exit_code(cmd: &DrbdCmd, succeeded: bool) -> i32 {
    match (cmd, succeeded) {
        (_, false) => FAILED,
        (DrbdCmd::FencePeer(_), true) => PEER_OUTDATED,
        (DrbdCmd::UnfencePeer(_), true) => 0,
    }
}

/// Runs the handler: the target, then the commit through the local daemon, bounded by
/// --timeout as a whole.
pub async fn run(cli: &Cli, cmd: &DrbdCmd, out: &mut Printer) -> Result<(), Failure> {
    let (args, unfence, handler) = match cmd {
        DrbdCmd::FencePeer(a) => (a, false, "fence-peer"),
        DrbdCmd::UnfencePeer(a) => (a, true, "unfence-peer"),
    };
    let t = target(args, |k| std::env::var(k).ok()).map_err(|e| user_error(format!("{handler}: {e}")))?;
    let what = if unfence { "up to date" } else { "outdated" };
    let call = async {
        let mut c = connect(cli).await?;
        let req = pb::DrbdFenceRequest {
            resource: t.resource.clone(),
            node: t.peer.clone(),
            unfence,
        };
        Ok::<_, Failure>(c.drbd_fence(req).await.map_err(Failure::write)?.into_inner())
    };
    let failed = |why: String| Failure {
        user: true,
        message: format!("{handler}: {}: {} not confirmed {what}: {why}", t.resource, t.peer),
    };
    let reply = match tokio::time::timeout(args.timeout, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(f)) => return Err(failed(f.message)),
        Err(_) => {
            return Err(failed(format!(
                "{} (it may commit later): no answer within {} s (is this node cut from the cluster's majority?)",
                crate::daemon::OUTCOME_UNKNOWN,
                args.timeout.as_secs()
            )))
        }
    };
    out.fence(&t.resource, &t.peer, !unfence, reply.unchanged, reply.log_index);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn args(resource: Option<&str>, peer: Option<&str>) -> HandlerArgs {
        HandlerArgs {
            resource: resource.map(Into::into),
            peer: peer.map(Into::into),
            timeout: Duration::from_secs(20),
        }
    }

    /// DRBD's environment for a fence-peer on n1 (node-id 0) about n2 (node-id 1).
    fn drbd_env() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("DRBD_RESOURCE", "kvm1.demo.vol.drbd4kvm"),
            ("DRBD_PEER_NODE_ID", "1"),
            ("DRBD_MY_NODE_ID", "0"),
            ("DRBD_NODE_ID_0", "n1"),
            ("DRBD_NODE_ID_1", "n2"),
            ("DRBD_MINOR", "0"),
            ("DRBD_CSTATE", "Connecting"),
            ("UP_TO_DATE_NODES", "0x00000001"),
        ])
    }

    fn lookup<'a>(env: &'a BTreeMap<&'static str, &'static str>) -> impl Fn(&str) -> Option<String> + 'a {
        |k| env.get(k).map(|v| v.to_string())
    }

    #[test]
    fn the_peer_is_the_host_name_of_its_drbd_node_id() {
        let env = drbd_env();
        assert_eq!(
            target(&args(None, None), lookup(&env)),
            Ok(Target {
                resource: "kvm1.demo.vol.drbd4kvm".into(),
                peer: "n2".into(),
            })
        );
        // Arguments win over the environment (an operator clearing a mark by hand).
        let t = target(&args(Some("r"), Some("n9")), lookup(&env)).unwrap();
        assert_eq!((t.resource.as_str(), t.peer.as_str()), ("r", "n9"));
    }

    #[test]
    fn an_incomplete_environment_is_an_error_naming_the_variable() {
        let cases: [(&str, Option<&str>, &str); 5] = [
            ("DRBD_RESOURCE", None, "DRBD_RESOURCE is not set"),
            ("DRBD_RESOURCE", Some(" "), "DRBD_RESOURCE is not set"),
            ("DRBD_PEER_NODE_ID", None, "DRBD_PEER_NODE_ID is not set"),
            ("DRBD_PEER_NODE_ID", Some("x"), "\"x\" is not a DRBD node id"),
            (
                "DRBD_NODE_ID_1",
                None,
                "DRBD_NODE_ID_1 (the host name of peer node-id 1) is not set",
            ),
        ];
        for (var, value, named) in cases {
            let mut env = drbd_env();
            match value {
                Some(v) => env.insert(var, v),
                None => env.remove(var),
            };
            let e = target(&args(None, None), lookup(&env)).unwrap_err();
            assert!(e.contains(named), "{var}={value:?}: {e}");
        }
        assert!(target(&args(Some(""), Some("n2")), |_| None).is_err());
    }

    #[test]
    fn fence_peer_exits_4_only_on_success_and_never_another_drbd_code() {
        let fence = DrbdCmd::FencePeer(args(None, None));
        let unfence = DrbdCmd::UnfencePeer(args(None, None));
        assert_eq!(exit_code(&fence, true), 4);
        assert_eq!(exit_code(&unfence, true), 0);
        for cmd in [&fence, &unfence] {
            let code = exit_code(cmd, false);
            assert!(!(3..=7).contains(&code), "{code}: DRBD would act on it");
            assert_ne!(code, 0);
        }
    }

    #[test]
    fn help_explains_the_exit_codes() {
        use clap::CommandFactory;
        let mut cmd = super::super::Cli::command();
        let fence = cmd
            .find_subcommand_mut("drbd")
            .and_then(|d| d.find_subcommand_mut("fence-peer"))
            .expect("omctl drbd fence-peer")
            .render_long_help()
            .to_string();
        for part in ["Exit 4", "Exit 1", "resource-and-stonith", "DRBD_NODE_ID_", "--timeout"] {
            assert!(fence.contains(part), "{part:?} not in:\n{fence}");
        }
    }
}
