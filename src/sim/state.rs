//! The simulators' state files: JSON that several processes share (each simulated node is its
//! own `omd`, and `omsim` commands, handlers and watchdogs come and go beside them), changed
//! only under an exclusive file lock and replaced whole, so a reader never sees half a file and
//! no writer loses another's update.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One JSON state file, `PATH`, and its lock file beside it (`PATH` with the extension `lock`).
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

/// An exclusive lock on a state file, held until dropped (the kernel drops it with the process).
pub struct Locked {
    _file: File,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock, waiting for whoever holds it. Another `StateFile` on the same
    /// path waits too, in this process or another: the lock belongs to the open file.
    pub fn lock(&self) -> Result<Locked, String> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let lock = self.path.with_extension("lock");
        let file = File::create(&lock).map_err(|e| format!("{}: {e}", lock.display()))?;
        file.lock().map_err(|e| format!("locking {}: {e}", lock.display()))?;
        Ok(Locked { _file: file })
    }

    /// The file's bytes, `None` when it does not exist.
    pub fn read_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// The state, or its default when the file does not exist yet. No lock needed: the file is
    /// only ever replaced whole.
    pub fn read<S: DeserializeOwned + Default>(&self) -> Result<S, String> {
        match self.read_bytes()? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", self.path.display())),
            None => Ok(S::default()),
        }
    }

    /// Replaces the file with `bytes`: written beside it, then renamed over it. Call it under
    /// the lock (two writers would share the file beside).
    pub fn write_bytes(&self, _locked: &Locked, bytes: &[u8]) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Runs `f` on the state under the lock and saves what it leaves when it succeeds and
    /// changed something; a refusal (`Err`) saves nothing.
    pub fn update<S, T, E>(&self, f: impl FnOnce(&mut S) -> Result<T, E>) -> Result<Result<T, E>, String>
    where
        S: Serialize + DeserializeOwned + Default,
    {
        let locked = self.lock()?;
        let before = self.read_bytes()?;
        let mut state: S = match &before {
            Some(b) => serde_json::from_slice(b).map_err(|e| format!("{}: {e}", self.path.display()))?,
            None => S::default(),
        };
        let out = f(&mut state);
        if out.is_ok() {
            let after = serde_json::to_vec_pretty(&state).expect("serialize");
            if before.as_ref() != Some(&after) {
                self.write_bytes(&locked, &after)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn concurrent_updates_through_separate_handles_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let f = StateFile::new(&path);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        f.update(|s: &mut BTreeMap<String, u32>| {
                            s.insert(format!("{t}-{i}"), i);
                            Ok::<_, ()>(())
                        })
                        .unwrap()
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s: BTreeMap<String, u32> = StateFile::new(&path).read().unwrap();
        assert_eq!(s.len(), 200);
    }

    #[test]
    fn a_refused_update_saves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("s.json"));
        f.update(|s: &mut Vec<u32>| {
            s.push(1);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        let refused = f
            .update(|s: &mut Vec<u32>| {
                s.push(2);
                Err::<(), _>("no")
            })
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(f.read::<Vec<u32>>().unwrap(), vec![1]);
    }
}
