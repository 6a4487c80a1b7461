//! omsim: command-compatible stand-ins for `drbdadm` and `drbdsetup`, for tests and demos on
//! machines where DRBD cannot run. `omsim drbdadm ARGS...`, `omsim drbdsetup ARGS...`; the
//! node comes from `__DRBD_NODE__` (as drbdadm's own override) and the shared state directory
//! from `OMRAFT_SIM_DIR`.

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Ok(dir), Ok(node)) = (std::env::var("OMRAFT_SIM_DIR"), std::env::var("__DRBD_NODE__")) else {
        eprintln!("omsim: set OMRAFT_SIM_DIR and __DRBD_NODE__");
        std::process::exit(20);
    };
    let sim = omraft::sim::drbd::from_env(&PathBuf::from(dir), &node);
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
