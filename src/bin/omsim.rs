//! omsim: command-compatible stand-ins for `drbdadm` and `drbdsetup`, for tests and demos on
//! machines where DRBD cannot run. `omsim drbdadm ARGS...`, `omsim drbdsetup ARGS...`; the
//! node comes from `__DRBD_NODE__` (as drbdadm's own override) and the shared state directory
//! from `OMRAFT_SIM_DIR`.
//!
//! `omsim drbd-handler JOB` runs one DRBD handler the simulator started for a node (see
//! `sim::drbd`'s fencing), detached from the command that found it due.
//!
//! `omsim virsh --node NODE define FILE|start NAME|destroy NAME|list` acts on a node's
//! simulated libvirt: the simulator's equivalent of the tutorial's manual `virt-install`.
//! `omsim virsh --node NODE poweroff` pulls the plug on that node (guests and DRBD down).

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("virsh") {
        std::process::exit(virsh(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("watchdog") {
        std::process::exit(watchdog(&args[1..]));
    }
    let (Ok(dir), Ok(node)) = (std::env::var("OMRAFT_SIM_DIR"), std::env::var("__DRBD_NODE__")) else {
        eprintln!("omsim: set OMRAFT_SIM_DIR and __DRBD_NODE__");
        std::process::exit(20);
    };
    let mut sim = omraft::sim::drbd::from_env(&PathBuf::from(dir), &node);
    // DRBD's handlers run beside the kernel, not inside `drbdsetup status`: in a detached
    // `omsim drbd-handler JOB` process that records their outcome.
    if let Ok(me) = std::env::current_exe() {
        sim.handlers = omraft::sim::drbd::Handlers::Detached(me);
    }
    if let [verb, job] = args.as_slice() {
        if verb == "drbd-handler" {
            if let Err(e) = omraft::sim::drbd::run_detached(&sim, job) {
                eprintln!("omsim drbd-handler: {e}");
                std::process::exit(20);
            }
            std::process::exit(0);
        }
    }
    let out = match args.split_first() {
        Some((tool, rest)) if tool == "drbdadm" => sim.drbdadm(rest),
        Some((tool, rest)) if tool == "drbdsetup" => sim.drbdsetup(rest),
        _ => {
            eprintln!("usage: omsim drbdadm|drbdsetup ARGS...");
            std::process::exit(20);
        }
    };
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    std::process::exit(out.code);
}

/// `virsh --node NODE VERB ARG` on the simulated libvirt of NODE.
fn virsh(args: &[String]) -> i32 {
    use omraft::drivers::hypervisor::Hypervisor;
    use omraft::sim::hypervisor::SimHypervisor;
    let Ok(dir) = std::env::var("OMRAFT_SIM_DIR") else {
        eprintln!("omsim virsh: set OMRAFT_SIM_DIR");
        return 2;
    };
    let (node, verb, arg) = match args {
        [flag, node, verb, rest @ ..] if flag == "--node" => (node, verb.as_str(), rest.first()),
        _ => {
            eprintln!("usage: omsim virsh --node NODE define FILE|start NAME|destroy NAME|list|poweroff");
            return 2;
        }
    };
    let hv = SimHypervisor::new(&PathBuf::from(dir), node);
    let res = match (verb, arg) {
        ("define", Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| format!("{file}: {e}"))
            .and_then(|xml| hv.define(&xml).map_err(|e| e.to_string())),
        ("start", Some(name)) => hv.start(name).map_err(|e| e.to_string()),
        ("destroy", Some(name)) => hv.destroy(name).map_err(|e| e.to_string()),
        ("list", None) => hv.list().map(|l| print!("{l}")).map_err(|e| e.to_string()),
        // The simulator's power cut: guests gone, DRBD down on that node.
        ("poweroff", None) => hv.power_off().map_err(|e| e.to_string()),
        _ => Err(format!("unknown or incomplete command {verb:?}")),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `watchdog --node NODE --pid PID --timeout-ms T`: the simulated watchdog of one node. It
/// resets the node (guests and DRBD down, the daemon killed, as a reboot would) when the pet
/// file `SIM_DIR/watchdog-NODE` is older than T; it stops when the file says `disarm`, is
/// removed, or the simulator directory is gone.
fn watchdog(args: &[String]) -> i32 {
    use omraft::sim::hypervisor::SimHypervisor;
    let (Ok(dir), [flag_n, node, flag_p, pid, flag_t, timeout]) = (std::env::var("OMRAFT_SIM_DIR"), args) else {
        eprintln!("usage: OMRAFT_SIM_DIR=DIR omsim watchdog --node NODE --pid PID --timeout-ms T");
        return 2;
    };
    if flag_n != "--node" || flag_p != "--pid" || flag_t != "--timeout-ms" {
        eprintln!("usage: OMRAFT_SIM_DIR=DIR omsim watchdog --node NODE --pid PID --timeout-ms T");
        return 2;
    }
    let Ok(timeout) = timeout.parse::<u64>() else { return 2 };
    let dir = PathBuf::from(dir);
    let pet = dir.join(format!("watchdog-{node}"));
    loop {
        let Ok(meta) = std::fs::metadata(&pet) else { return 0 };
        if std::fs::read_to_string(&pet).is_ok_and(|s| s.trim() == "disarm") {
            return 0;
        }
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
        if age > std::time::Duration::from_millis(timeout) {
            let _ = std::process::Command::new("kill").args(["-KILL", pid]).status();
            let _ = SimHypervisor::new(&dir, node).power_off();
            let line = format!("watchdog reset {node} (not petted for {} ms)\n", age.as_millis());
            log(&dir, &line);
            // On the test bed a node is a network namespace: the reset takes every process in
            // it down (its libvirtd and real guests too), as a reboot would.
            if std::env::var("OMRAFT_SIM_RESET").as_deref() == Ok("netns") {
                if let Err(e) = kill_own_netns() {
                    log(&dir, &format!("watchdog reset {node}: {e}\n"));
                }
            }
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Appends `line` to `SIM_DIR/watchdog.log`.
fn log(dir: &std::path::Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("watchdog.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// SIGKILLs every other process in this process's network namespace; refused in the
/// machine's own (pid 1's) namespace.
fn kill_own_netns() -> Result<(), String> {
    let ns =
        |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let mine = ns("self").map_err(|e| format!("reading my network namespace: {e}"))?;
    if ns("1").ok() == Some(mine) {
        return Err("refusing to reset the machine's own network namespace".into());
    }
    let me = std::process::id().to_string();
    let entries = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
    let pids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && *p != me)
        .filter(|p| ns(p).ok() == Some(mine))
        .collect();
    if !pids.is_empty() {
        let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
    }
    Ok(())
}
