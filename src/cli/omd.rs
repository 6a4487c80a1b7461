//! `omd`'s command line and process lifecycle: bind, start the node and its loops
//! (`daemon::run`), serve the API, shut down on SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::api::{serve, Listeners};
use crate::daemon::run::Loops;
use crate::daemon::{Settings, Watchdog};
use crate::drivers::Drivers;
use crate::files::restrict;

/// omd: the omraft node daemon.
///
/// Starts one node. A fresh data directory founds a new one-node cluster; an existing one
/// resumes from disk. Join other clusters with `omctl cluster join`. The local API listens on
/// DATA_DIR/omd.sock (mode 0600); the TCP listener serves peers and authenticated clients.
///
/// Every flag can also be set in a configuration file: TOML, its keys the long flags without
/// their dashes (`listen = "10.30.0.11:1215"`, `report-vg = ["data=5G"]`). Flags and the OMD_*
/// variables override the file. `omd --print-config` shows the settings in effect.
#[derive(Debug, Parser)]
#[command(name = "omd", version)]
pub struct Args {
    /// The configuration file (default /etc/omraft/omd.toml when it exists).
    #[arg(long, env = "OMD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the settings in effect, as a configuration file saying where each came from, and
    /// exit.
    #[arg(long)]
    pub print_config: bool,
    /// How the log (standard error) is written: text lines, or one JSON object per event (its
    /// fields, target and level, for a log collector).
    #[arg(long, env = "OMD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This node's name: lowercase letters, digits and '-' (defaults to the hostname).
    #[arg(long, env = "OMD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where the Raft log, the state snapshots and the local socket live.
    #[arg(long, env = "OMD_DATA_DIR", default_value = "/var/lib/omraft")]
    pub data_dir: PathBuf,
    /// TCP address to listen on for peers and remote clients (HOST:PORT).
    #[arg(long, env = "OMD_LISTEN", default_value = "127.0.0.1:1215", value_parser = parse_addr)]
    pub listen: String,
    /// Serve Prometheus metrics on this address (IP:PORT), at /metrics, without credentials:
    /// bind it to a management address. Off when not given.
    #[arg(long, env = "OMD_METRICS_LISTEN", value_name = "IP:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Address peers use to reach this node, if not --listen (required when listening on 0.0.0.0).
    ///
    /// HOST:PORT, HOST a DNS name, an IPv4 address or an IPv6 address in brackets: it goes
    /// into the node's certificate, DRBD address lines and migration URIs ({host}).
    #[arg(long, env = "OMD_ADVERTISE", value_parser = parse_addr)]
    pub advertise: Option<String>,
    /// Raft heartbeat interval in milliseconds; also the time a peer has to answer an append.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Minimal Raft election timeout in milliseconds (the maximum is 1.5 times it). After a
    /// leader's loss an election takes about 2.5 times it: keep that well under the lease
    /// duration (`lease.duration`, 2.4 s by default), or every node loses its lease meanwhile.
    #[arg(long, default_value_t = 250)]
    pub election_timeout_ms: u64,
    /// Build a state snapshot every this many log entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for followers that lag.
    #[arg(long, default_value_t = 1000)]
    pub keep_logs: u64,
    /// Declare a volume group and its size for pool capacity, e.g. data=5G; repeatable.
    /// Stands in for the LVM driver's `vgs` report (simulation, tests, the demo).
    #[arg(long, value_name = "NAME=SIZE", value_parser = parse_vg)]
    pub report_vg: Vec<(String, u64)>,
    /// Declare the memory available for guests, e.g. 16G, reported for `placement=score`
    /// instead of /proc/meminfo's MemAvailable (simulation, tests).
    #[arg(long, value_name = "SIZE", value_parser = parse_mem)]
    pub report_mem: Option<u64>,
    /// real: LVM, drbdadm, drbdsetup, libvirt and the watchdog device of this machine. sim: the
    /// simulators (`omsim watchdog` for the watchdog), with their state in --sim-dir (shared by
    /// every simulated node of one machine).
    #[arg(long, value_enum, default_value_t = DriverKind::Real)]
    pub drivers: DriverKind,
    /// The simulators' shared directory (with --drivers sim).
    #[arg(long, required_if_eq("drivers", "sim"))]
    pub sim_dir: Option<PathBuf>,
    /// With --drivers sim: the simulator program (default: omsim beside omd; the package does
    /// not contain it).
    #[arg(long, value_name = "PATH")]
    pub omsim: Option<PathBuf>,
    /// Where DRBD resource files are written (default /etc/drbd.d; SIM_DIR/NODE/drbd.d with sim).
    #[arg(long)]
    pub drbd_config_dir: Option<PathBuf>,
    /// The drbdadm program.
    #[arg(long, default_value = "drbdadm")]
    pub drbdadm: String,
    /// The drbdsetup program.
    #[arg(long, default_value = "drbdsetup")]
    pub drbdsetup: String,
    /// With --drivers sim: the simulated watchdog's timeout, shorter than the lease duration.
    #[arg(long, default_value_t = 1500)]
    pub watchdog_timeout_ms: u64,
    /// Where ssh trust (`omctl cluster ssh trust`) keeps this node's key pair (omraft,
    /// omraft.pub) and the authorized_keys listing the data nodes' keys.
    #[arg(long, env = "OMD_SSH_DIR", default_value = "/root/.ssh")]
    pub ssh_dir: PathBuf,
    /// With --drivers real: the watchdog device, armed while this node holds a started service
    /// or takes part in a live switch.
    ///
    /// Its timeout is the driver's (e.g. `modprobe softdog soft_margin=1`): twice it must be
    /// shorter than lease.duration minus lease.renew, or it is never armed. Without the device,
    /// the cluster never moves this node's services away automatically.
    #[arg(long, default_value = crate::drivers::watchdog::DEVICE)]
    pub watchdog_device: PathBuf,
    /// The watchdog device's sysfs directory, where its timeout and nowayout are read
    /// (default /sys/class/watchdog/NAME; watchdog0 for /dev/watchdog).
    #[arg(long)]
    pub watchdog_sysfs: Option<PathBuf>,
    /// The libvirt connection of the real hypervisor driver.
    ///
    /// qemu:///system, or qemu+tcp://, qemu+tls:// or qemu+ssh://HOST/system.
    #[arg(long, default_value = "qemu:///system", value_parser = parse_libvirt_uri)]
    pub libvirt_uri: String,
    /// With --drivers sim: run the guests with the real libvirt (at --libvirt-uri) beside the
    /// simulated DRBD and LVM (the real-host test bed, where the DRBD module cannot load).
    #[arg(long, requires = "sim_dir")]
    pub real_libvirt: bool,
}

/// How `omd` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which drivers a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    Real,
    Sim,
}

/// The drivers `args` ask for.
fn drivers(args: &Args, node: &str) -> anyhow::Result<Drivers> {
    use crate::drivers::drbd::commands::DrbdCommands;
    use crate::drivers::lvm::LvmCommands;
    use crate::drivers::run::SystemRunner;
    use crate::sim::lvm::SimLvm;
    let runner = || SystemRunner {
        timeout: std::time::Duration::from_secs(120),
    };
    let real_drbdadm = std::path::Path::new("/usr/sbin/drbdadm");
    let validator = real_drbdadm.exists().then(|| real_drbdadm.to_path_buf());
    Ok(match args.drivers {
        DriverKind::Real => Drivers {
            hypervisor: std::sync::Arc::new(crate::drivers::libvirt::Libvirt::new(&args.libvirt_uri)),
            lvm: std::sync::Arc::new(LvmCommands { runner: runner() }),
            drbd: std::sync::Arc::new(DrbdCommands {
                runner: runner(),
                drbdadm: vec![args.drbdadm.clone()],
                drbdsetup: vec![args.drbdsetup.clone()],
                config_dir: args.drbd_config_dir.clone().unwrap_or_else(|| "/etc/drbd.d".into()),
                validator,
                env: vec![],
            }),
        },
        DriverKind::Sim => {
            let dir = args.sim_dir.clone().context("--drivers sim needs --sim-dir")?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let omsim = omsim(args)?;
            if !omsim.exists() {
                bail!(
                    "--drivers sim needs the omsim binary ({} is missing: give --omsim PATH)",
                    omsim.display()
                );
            }
            let omsim = omsim.display().to_string();
            let vgs = args.report_vg.iter().cloned().collect();
            Drivers {
                hypervisor: if args.real_libvirt {
                    std::sync::Arc::new(crate::drivers::libvirt::Libvirt::new(&args.libvirt_uri))
                } else {
                    std::sync::Arc::new(crate::sim::hypervisor::SimHypervisor::new(&dir, node))
                },
                lvm: std::sync::Arc::new(SimLvm::open(&dir, node, &vgs)?),
                drbd: std::sync::Arc::new(DrbdCommands {
                    runner: runner(),
                    drbdadm: vec![omsim.clone(), "drbdadm".into()],
                    drbdsetup: vec![omsim, "drbdsetup".into()],
                    config_dir: args
                        .drbd_config_dir
                        .clone()
                        .unwrap_or_else(|| dir.join(node).join("drbd.d")),
                    validator,
                    env: crate::sim::drbd::omsim_env(&dir, node),
                }),
            }
        }
    })
}

/// The simulator program: `--omsim`, else omsim beside omd.
fn omsim(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.omsim {
        Some(path) => Ok(path.clone()),
        None => Ok(std::env::current_exe()?.with_file_name("omsim")),
    }
}

/// The watchdog `args` ask for: the simulator's, the device when it can be read, else none
/// (loudly). Whether the device's timeout suits the lease is checked when it is armed, since
/// the lease configuration is replicated state that changes at run time and with a join.
fn watchdog(args: &Args) -> anyhow::Result<Watchdog> {
    use crate::drivers::watchdog::{nowayout, probe, sysfs_dir};
    let none = |why: String| {
        tracing::warn!(
            "no watchdog: {why}. A hung daemon could not stop this node's services, so the cluster will never move \
             them away from this node automatically"
        );
        Watchdog::None
    };
    Ok(match (&args.drivers, &args.sim_dir) {
        (DriverKind::Sim, Some(dir)) => Watchdog::Sim {
            dir: dir.clone(),
            omsim: omsim(args)?,
            timeout_ms: args.watchdog_timeout_ms,
        },
        (DriverKind::Sim, None) => none("--drivers sim without --sim-dir".into()),
        (DriverKind::Real, _) => {
            let path = args.watchdog_device.clone();
            let sysfs = args.watchdog_sysfs.clone().unwrap_or_else(|| sysfs_dir(&path));
            match probe(&path, &sysfs) {
                Err(e) => none(e.to_string()),
                Ok(timeout) => {
                    if nowayout(&sysfs) {
                        tracing::warn!(
                            "the watchdog {} has nowayout set (or {} is unreadable): once armed, nothing stops it, and \
                             stopping omd resets this machine",
                            path.display(),
                            sysfs.join("nowayout").display()
                        );
                    }
                    tracing::info!("watchdog: {} ({} s)", path.display(), timeout.as_secs());
                    Watchdog::Device {
                        path,
                        sysfs,
                        timeout_ms: timeout.as_millis() as u64,
                    }
                }
            }
        }
    })
}

/// `--listen`, `--advertise`: `HOST:PORT` as the cluster accepts a node address.
fn parse_addr(s: &str) -> Result<String, String> {
    crate::config::kind::check_addr(s).map(|()| s.to_string())
}

/// `--libvirt-uri`: this machine's libvirt, or one reached over a documented transport.
fn parse_libvirt_uri(s: &str) -> Result<String, String> {
    crate::config::kind::check_local_libvirt_uri(s).map(|()| s.to_string())
}

fn parse_vg(s: &str) -> Result<(String, u64), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=SIZE, e.g. data=5G"))?;
    crate::config::kind::Kind::Ident
        .check(name)
        .map_err(|e| format!("volume group {name:?}: {e}"))?;
    Ok((name.to_string(), crate::config::kind::parse_size(size)?))
}

/// `--report-mem`: a size the cluster accepts (`model::MAX_MEMORY_REPORT` at most).
fn parse_mem(s: &str) -> Result<u64, String> {
    let bytes = crate::config::kind::parse_size(s)?;
    if bytes > crate::model::MAX_MEMORY_REPORT {
        return Err(format!(
            "{s:?} is more memory than a node can have (at most {} bytes)",
            crate::model::MAX_MEMORY_REPORT
        ));
    }
    Ok(bytes)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs the daemon until SIGTERM or SIGINT.
/// Open files the daemon may need at its connection limits: handshakes, nodes' and clients'
/// connections, and a margin for its database, sockets and children.
const FILES_NEEDED: u64 =
    (crate::tls::MAX_HANDSHAKES + crate::tls::MAX_NODE_CONNECTIONS + crate::tls::MAX_CLIENT_CONNECTIONS + 256) as u64;

/// Raises the soft limit on open files to the hard one (the usual soft limit, 1024, is below
/// what the connection limits need) and logs the limit the daemon runs with.
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let current = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(e) => {
            tracing::warn!("raising the open file limit to {:?}: {e}", limit.maximum);
            limit.current
        }
    };
    match current {
        None => tracing::info!("open file limit: unlimited"),
        Some(n) if n < FILES_NEEDED => tracing::warn!(
            "open file limit: {n}, below the {FILES_NEEDED} the connection limits need: \
             raise it (LimitNOFILE in a systemd unit, ulimit -n)"
        ),
        Some(n) => tracing::info!("open file limit: {n}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let name = match args.node_name.clone().or_else(hostname) {
        Some(n) => n,
        None => bail!("no --node-name given and the hostname cannot be read"),
    };
    let addr = args.advertise.clone().unwrap_or_else(|| args.listen.clone());
    if addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:") {
        bail!(
            "--listen {} is not an address peers can reach: give --advertise HOST:PORT",
            args.listen
        );
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    restrict(&args.data_dir, 0o700)?;
    raise_file_limit();
    let tcp = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let sock = args.data_dir.join("omd.sock");
    if sock.exists() {
        if UnixStream::connect(&sock).await.is_ok() {
            bail!("another omd is already serving {}", sock.display());
        }
        std::fs::remove_file(&sock).with_context(|| format!("removing stale {}", sock.display()))?;
    }
    let unix = UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    restrict(&sock, 0o600)?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?,
        ),
        None => None,
    };

    let settings = Settings {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms: args.election_timeout_ms,
        snapshot_every: args.snapshot_every,
        keep_logs: args.keep_logs,
        vgs: args.report_vg.iter().cloned().collect(),
        memory: args.report_mem,
        watchdog: watchdog(&args)?,
        ..Settings::new(&name, args.data_dir.clone(), &addr)
    };
    let drivers = drivers(&args, &name)?;
    crate::applier::desired::set_handler_socket(&sock);
    let loops = Loops {
        drivers: Some(drivers.clone()),
        ssh_dir: Some(args.ssh_dir.clone()),
    };
    let node = crate::daemon::run::start(settings, loops)
        .await
        .context("starting the node")?;
    if let Some(listener) = metrics {
        let addr = listener.local_addr().context("--metrics-listen")?;
        let weak = std::sync::Arc::downgrade(&node);
        tokio::spawn(crate::daemon::metrics::count_events(weak.clone()));
        tokio::spawn(crate::daemon::metrics::serve(weak, Some(drivers), listener));
        tracing::info!("metrics on http://{addr}/metrics");
    }
    if let Watchdog::Device { timeout_ms, .. } = &node.settings.watchdog {
        // Early word only: the lease configuration may still change (a join, `config set`);
        // the daemon checks again each time it would arm the device.
        let lease = node.read(|d| crate::model::catalog::lease_config(&d.state.config));
        if let Err(why) = crate::drivers::watchdog::check_timeout(Duration::from_millis(*timeout_ms), &lease) {
            tracing::warn!("the watchdog will not be armed under the current lease configuration: {why}");
        }
    }
    tracing::info!(node = %name, listen = %args.listen, socket = %sock.display(), "omd serving");
    // Raft runs and both listeners are bound (connections wait in their backlogs until
    // `serve` takes them): the node is ready.
    notify_systemd(&format!("READY=1\nSTATUS=serving as {name} on {}", args.listen));

    let listeners = Listeners {
        tcp,
        unix,
        unix_path: sock,
    };
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        notify_systemd("STOPPING=1\nSTATUS=releasing this node's services and stopping");
    };
    serve(node.clone(), listeners, stop).await.context("serving the API")?;
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Tells systemd how the daemon is doing (`Type=notify` units): `state` as one datagram to
/// `$NOTIFY_SOCKET`, a socket path or, with a leading `@`, an abstract socket name. Nothing
/// when the variable is unset (not started by systemd); a failure is logged, never fatal.
fn notify_systemd(state: &str) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        }
        None => sock.send_to(state.as_bytes(), &path),
    });
    if let Err(e) = sent {
        tracing::warn!("telling systemd {state:?} through {}: {e}", path.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_mem, Args};
    use clap::Parser;

    #[test]
    fn addresses_and_the_libvirt_uri_are_checked_as_flags() {
        let args = |extra: &[&str]| Args::try_parse_from([&["omd", "--node-name", "n1"][..], extra].concat());
        let ok = args(&["--listen", "0.0.0.0:1215", "--advertise", "10.30.0.11:1215"]).unwrap();
        assert_eq!(ok.advertise.as_deref(), Some("10.30.0.11:1215"));
        assert_eq!(ok.libvirt_uri, "qemu:///system");
        for (flag, value, why) in [
            ("--advertise", "n1:1215\naddress ipv4 6.6.6.6:1", "only letters"),
            ("--advertise", "n1", "HOST:PORT"),
            ("--listen", "127.0.0.1:0", "port"),
            ("--libvirt-uri", "qemu+ext:///system?command=/bin/sh", "transport"),
        ] {
            let e = args(&[flag, value]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(why), "{flag} {value:?}: {e}");
        }
    }

    #[test]
    fn report_mem_is_a_bounded_size() {
        assert_eq!(parse_mem("16G"), Ok(16 << 30));
        assert!(parse_mem("lots").is_err());
        let e = parse_mem("5000T").unwrap_err();
        assert!(e.contains("\"5000T\"") && e.contains("at most"), "{e}");
    }
}
