//! The DRBD driver: resource files in a configuration directory, and the `drbdadm` and
//! `drbdsetup` commands, run through a `Runner`. The simulator (`omsim`) is driven through this
//! same code, so what it builds and parses is what runs in production.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::render::{self, RenderError, TemplateData};
use super::status::{self, ResourceStatus};
use crate::drivers::run::{Invocation, RunError, Runner};

/// Why a DRBD operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DrbdError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Parse(#[from] status::ParseError),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// The DRBD operations a node needs.
pub trait Drbd: Send + Sync {
    /// The resource file as written, if any.
    fn config(&self, resource: &str) -> Option<String>;
    /// Checks `text` (ours, then `drbdadm`'s) and writes it; nothing is written if refused.
    fn write_config(&self, resource: &str, text: &str, data: &TemplateData) -> Result<(), DrbdError>;
    fn remove_config(&self, resource: &str) -> Result<(), DrbdError>;
    fn create_md(&self, resource: &str) -> Result<(), DrbdError>;
    fn up(&self, resource: &str) -> Result<(), DrbdError>;
    fn down(&self, resource: &str) -> Result<(), DrbdError>;
    fn primary(&self, resource: &str, force: bool) -> Result<(), DrbdError>;
    fn secondary(&self, resource: &str) -> Result<(), DrbdError>;
    fn allow_two_primaries(&self, resource: &str, allow: bool) -> Result<(), DrbdError>;
    /// Per resource up here, the peers whose connection allows two primaries now (the running
    /// configuration, `drbdsetup show`): a reboot or `up` resets it to the resource file's.
    fn two_primaries(&self) -> Result<BTreeMap<String, BTreeSet<String>>, DrbdError>;
    /// Every resource that is up on this node.
    fn status(&self) -> Result<Vec<ResourceStatus>, DrbdError>;
    /// The current state as `drbdsetup events2 --now` lists it (ending with `exists -`).
    fn events_now(&self) -> Result<Vec<status::Event>, DrbdError>;
}

/// `drbdadm`/`drbdsetup` as commands: each is a program and leading arguments, so the
/// simulator (`omsim drbdadm`) plugs in where the real tools would. The real tools run as
/// they would by hand: drbdadm finds this node's `on NAME` section by the host name, and
/// reads the loaded kernel module's version.
pub struct DrbdCommands<R: Runner> {
    pub runner: R,
    pub drbdadm: Vec<String>,
    pub drbdsetup: Vec<String>,
    /// Where resource files go (`/etc/drbd.d` in production).
    pub config_dir: PathBuf,
    /// The real `drbdadm` to validate files with, when installed: as this host
    /// (`Validation::Host`).
    pub validator: Option<PathBuf>,
    /// Extra environment for every command: none for the real tools; the simulator's
    /// directory and node for `omsim` (`sim::drbd::omsim_env`).
    pub env: Vec<(String, String)>,
}

impl<R: Runner> DrbdCommands<R> {
    fn path(&self, resource: &str) -> PathBuf {
        self.config_dir.join(format!("{resource}.res"))
    }

    fn invocation(&self, tool: &[String], args: &[&str]) -> Invocation {
        let mut inv = Invocation::new(&tool[0], &tool[1..].iter().map(String::as_str).collect::<Vec<_>>());
        inv.args.extend(args.iter().map(|a| a.to_string()));
        inv.env = self.env.clone();
        inv
    }

    fn adm(&self, resource: &str, cmd: &[&str]) -> Result<(), DrbdError> {
        let file = self.path(resource).display().to_string();
        let mut args = vec!["-c", file.as_str()];
        args.extend_from_slice(cmd);
        args.push(resource);
        self.runner.check(&self.invocation(&self.drbdadm, &args))?;
        Ok(())
    }
}

impl<R: Runner> Drbd for DrbdCommands<R> {
    fn config(&self, resource: &str) -> Option<String> {
        std::fs::read_to_string(self.path(resource)).ok()
    }

    fn write_config(&self, resource: &str, text: &str, data: &TemplateData) -> Result<(), DrbdError> {
        render::check(text, data)?;
        let io = |p: &PathBuf, e| DrbdError::Io(p.clone(), e);
        std::fs::create_dir_all(&self.config_dir).map_err(|e| io(&self.config_dir, e))?;
        // Validated under a name drbdadm's `include *.res` never picks up, then renamed.
        let tmp = self.config_dir.join(format!(".{resource}.res.new"));
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        if let Some(v) = &self.validator {
            if let Err(e) = render::check_with_drbdadm(v, &tmp, render::Validation::Host) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
        let path = self.path(resource);
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    fn remove_config(&self, resource: &str) -> Result<(), DrbdError> {
        let path = self.path(resource);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DrbdError::Io(path, e)),
            _ => Ok(()),
        }
    }

    fn create_md(&self, resource: &str) -> Result<(), DrbdError> {
        self.adm(resource, &["create-md", "--force"])
    }

    fn up(&self, resource: &str) -> Result<(), DrbdError> {
        self.adm(resource, &["up"])
    }

    fn down(&self, resource: &str) -> Result<(), DrbdError> {
        self.adm(resource, &["down"])
    }

    fn primary(&self, resource: &str, force: bool) -> Result<(), DrbdError> {
        if force {
            self.adm(resource, &["primary", "--force"])
        } else {
            self.adm(resource, &["primary"])
        }
    }

    fn secondary(&self, resource: &str) -> Result<(), DrbdError> {
        self.adm(resource, &["secondary"])
    }

    fn allow_two_primaries(&self, resource: &str, allow: bool) -> Result<(), DrbdError> {
        let opt = format!("--allow-two-primaries={}", if allow { "yes" } else { "no" });
        self.adm(resource, &["net-options", &opt])
    }

    fn two_primaries(&self) -> Result<BTreeMap<String, BTreeSet<String>>, DrbdError> {
        let out = self.runner.check(&self.invocation(&self.drbdsetup, &["show"]))?;
        Ok(status::parse_show(&out))
    }

    fn status(&self) -> Result<Vec<ResourceStatus>, DrbdError> {
        let out = self
            .runner
            .check(&self.invocation(&self.drbdsetup, &["status", "--json"]))?;
        Ok(status::parse_status(&out)?)
    }

    fn events_now(&self) -> Result<Vec<status::Event>, DrbdError> {
        let out = self
            .runner
            .check(&self.invocation(&self.drbdsetup, &["events2", "--now"]))?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(status::parse_event)
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::drivers::run::Finished;

    struct Recorder(Mutex<Vec<String>>);

    impl Runner for Recorder {
        fn run(&self, inv: &Invocation) -> Result<Finished, RunError> {
            // The real tools run with omd's environment only: no test hook of drbdadm's.
            let env = inv.env.iter().map(|(k, v)| format!("{k}={v} "));
            self.0.lock().unwrap().push(env.collect::<String>() + &inv.display());
            Ok(Finished {
                code: Some(0),
                stdout: "[]".into(),
                stderr: String::new(),
            })
        }
    }

    #[test]
    fn builds_drbdadm_command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let d = DrbdCommands {
            runner: Recorder(Mutex::new(vec![])),
            drbdadm: vec!["drbdadm".into()],
            drbdsetup: vec!["omsim".into(), "drbdsetup".into()],
            config_dir: dir.path().into(),
            validator: None,
            env: vec![],
        };
        let r = "kvm1.demo.vol.drbd4kvm";
        d.create_md(r).unwrap();
        d.up(r).unwrap();
        d.primary(r, true).unwrap();
        d.allow_two_primaries(r, true).unwrap();
        d.secondary(r).unwrap();
        d.down(r).unwrap();
        assert_eq!(d.status().unwrap(), vec![]);
        assert!(d.two_primaries().unwrap().is_empty());
        let f = dir.path().join(format!("{r}.res")).display().to_string();
        let ran = d.runner.0.lock().unwrap();
        assert_eq!(
            *ran,
            vec![
                format!("drbdadm -c {f} create-md --force {r}"),
                format!("drbdadm -c {f} up {r}"),
                format!("drbdadm -c {f} primary --force {r}"),
                format!("drbdadm -c {f} net-options --allow-two-primaries=yes {r}"),
                format!("drbdadm -c {f} secondary {r}"),
                format!("drbdadm -c {f} down {r}"),
                "omsim drbdsetup status --json".to_string(),
                "omsim drbdsetup show".to_string(),
            ]
        );
    }

    #[test]
    fn a_refused_file_never_reaches_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = DrbdCommands {
            runner: Recorder(Mutex::new(vec![])),
            drbdadm: vec!["drbdadm".into()],
            drbdsetup: vec!["drbdsetup".into()],
            config_dir: dir.path().join("drbd.d"),
            validator: None,
            env: vec![],
        };
        let data = TemplateData {
            name: "r".into(),
            nodes: vec![],
        };
        assert!(d.write_config("r", "resource r {", &data).is_err());
        assert!(!dir.path().join("drbd.d/r.res").exists());
        d.write_config("r", "resource r {\n}\n", &data).unwrap();
        assert_eq!(d.config("r").as_deref(), Some("resource r {\n}\n"));
        d.remove_config("r").unwrap();
        assert_eq!(d.config("r"), None);
    }
}
