//! Running external commands, bounded in time, behind a trait so a driver's command building
//! and output parsing can be tested against captured output.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Invocation {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Invocation {
        Invocation {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
        }
    }

    /// The command line as a person would type it, for errors and logs.
    pub fn display(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a command did not succeed. Carries the command line and what it said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("`{0}` could not start: {1}")]
    Spawn(String, String),
    #[error("`{0}` did not finish within {1:?} and was killed")]
    Timeout(String, Duration),
    #[error("`{cmd}` failed (exit {code:?}): {stderr}")]
    Failed {
        cmd: String,
        code: Option<i32>,
        stderr: String,
    },
}

/// Runs commands.
pub trait Runner: Send + Sync {
    fn run(&self, inv: &Invocation) -> Result<Finished, RunError>;

    /// Runs `inv`; a non-zero exit is an error carrying its stderr.
    fn check(&self, inv: &Invocation) -> Result<String, RunError> {
        let f = self.run(inv)?;
        if f.code == Some(0) {
            Ok(f.stdout)
        } else {
            let msg = if f.stderr.trim().is_empty() {
                f.stdout.trim()
            } else {
                f.stderr.trim()
            };
            Err(RunError::Failed {
                cmd: inv.display(),
                code: f.code,
                stderr: msg.to_string(),
            })
        }
    }
}

/// Runs real processes, killing any that outlive `timeout`.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    pub timeout: Duration,
}

impl Runner for SystemRunner {
    fn run(&self, inv: &Invocation) -> Result<Finished, RunError> {
        let mut child = Command::new(&inv.program)
            .args(&inv.args)
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RunError::Spawn(inv.display(), e.to_string()))?;
        // Drain both pipes on threads so a chatty command cannot block on a full pipe.
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunError::Timeout(inv.display(), self.timeout));
                }
                Err(e) => return Err(RunError::Spawn(inv.display(), e.to_string())),
            }
        };
        Ok(Finished {
            code: status.code(),
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_checks_and_times_out() {
        let r = SystemRunner {
            timeout: Duration::from_secs(5),
        };
        assert_eq!(r.check(&Invocation::new("sh", &["-c", "echo hi"])).unwrap(), "hi\n");
        let e = r
            .check(&Invocation::new("sh", &["-c", "echo boom >&2; exit 3"]))
            .unwrap_err();
        assert_eq!(
            e,
            RunError::Failed {
                cmd: "sh -c echo boom >&2; exit 3".into(),
                code: Some(3),
                stderr: "boom".into()
            }
        );
        let slow = SystemRunner {
            timeout: Duration::from_millis(100),
        };
        assert!(matches!(
            slow.run(&Invocation::new("sleep", &["5"])),
            Err(RunError::Timeout(..))
        ));
        assert!(matches!(
            r.run(&Invocation::new("/nonexistent/x", &[])),
            Err(RunError::Spawn(..))
        ));
    }
}
