//! omraft: a cluster manager for highly available KVM guests on DRBD 9 replicated volumes,
//! whose cluster state lives in a Raft log (openraft) stored in sled.
//!
//! - [`model`]: the replicated state, the log's commands and the pure `apply`.
//! - [`config`]: object configuration: INI format, keyword catalogs, references.
//! - [`lease`]: the lease rules: when a node may run services.
//! - [`orchestrator`]: the leader's failover decisions.
//! - [`raft`]: openraft types, the sled store and the tonic transport between nodes.
//! - [`applier`]: per-node reconciliation of desired and observed state.
//! - [`api`]: the gRPC services, authentication and the only code that knows protobuf.
//! - [`drivers`]: the external systems a node manages (LVM, DRBD, libvirt, watchdog, ssh).
//! - [`sim`]: simulators of LVM, DRBD (command-compatible) and libvirt, for machines without
//!   the real systems.
//! - [`daemon`]: `omd`, wiring a node together.
//! - [`cli`]: the `omctl` command line.
//! - [`testing`]: for tests only: what a test that cannot run here does (fail, or skip when
//!   allowed).

pub mod api;
pub mod applier;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod files;
pub mod lease;
pub mod model;
pub mod orchestrator;
pub mod raft;
pub mod sim;
pub mod testing;
pub mod tls;

/// Code generated from `proto/omraft.proto`.
pub mod pb {
    tonic::include_proto!("omraft.v1");

    /// The compiled `proto/omraft.proto` (a protobuf `FileDescriptorSet`, with its comments),
    /// served by the gRPC reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/omraft_descriptor.bin"));
}

/// The modules from the bottom layer up: a module may use only the modules of lower layers
/// (and its own). ARCHITECTURE.md's "Layers" section explains each step; `layering` checks
/// the code against it.
#[cfg(test)]
const LAYERS: &[&[&str]] = &[
    &["pb", "files", "config", "lease", "testing"],
    &["model"],
    &["tls"],
    &["drivers"],
    &["sim"],
    &["raft"],
    &["applier", "orchestrator"],
    &["daemon"],
    &["api"],
    &["cli"],
];

#[cfg(test)]
mod layering {
    use std::path::Path;

    /// The layer of a top-level module.
    fn layer(module: &str) -> Option<usize> {
        super::LAYERS.iter().position(|l| l.contains(&module))
    }

    /// Every `crate::MODULE` a source file names outside its tests.
    fn uses(text: &str) -> Vec<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        code.match_indices("crate::")
            .map(|(i, m)| {
                code[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_module_uses_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = vec![];
        files(&src, &mut all);
        let mut broken = vec![];
        let mut checked = 0;
        for file in all {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel
                .iter()
                .next()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let name = file.file_name().unwrap().to_string_lossy();
            // The binaries sit above everything; test modules may reach across layers.
            if top == "bin" || top == "lib" || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let Some(own) = layer(&top) else {
                broken.push(format!("src/{}: module {top} is in no layer", rel.display()));
                continue;
            };
            checked += 1;
            for used in uses(&std::fs::read_to_string(&file).unwrap()) {
                match layer(&used) {
                    Some(l) if used == top || l < own => {}
                    Some(_) => broken.push(format!("src/{}: {top} uses crate::{used}", rel.display())),
                    None => broken.push(format!("src/{}: crate::{used} is in no layer", rel.display())),
                }
            }
        }
        assert!(checked > 50, "only {checked} files read");
        assert!(broken.is_empty(), "upward or sideways uses:\n{}", broken.join("\n"));
    }

    #[test]
    fn the_check_sees_an_upward_use() {
        assert_eq!(
            uses("use crate::daemon::Node;\nfn f() { crate::model::x() }"),
            ["daemon", "model"]
        );
        assert_eq!(
            uses("use crate::api::x;\n#[cfg(test)]\nmod t { use crate::cli; }"),
            ["api"]
        );
    }
}
