//! File helpers shared by the layers that write to disk: permission bits, and a write that a
//! crash leaves either old or new, never half-done.

use std::path::Path;

/// Sets a path's permission bits.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Writes `data` to `path` with permission bits `mode` from its creation: a temporary file in
/// the same directory (made with `mode`, so a secret is never readable by others, even for a
/// moment), synced, then renamed over `path`, and the directory synced so the rename survives a
/// power loss too. The parent directory is created if missing.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_parts(path, &[data], mode)
}

/// How much of a file `write_atomic` writes between two syncs.
const SYNC_EVERY: usize = 4 << 20;

/// `write_atomic` of the concatenation of `parts`, without copying them into one buffer.
pub fn write_atomic_parts(path: &Path, parts: &[&[u8]], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".omraft.tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // A large file is synced as it goes, every `SYNC_EVERY` bytes: its writeback then never
    // holds up another file's sync (the Raft log's) for more than one piece.
    let mut unsynced = 0;
    for part in parts {
        for piece in part.chunks(SYNC_EVERY) {
            f.write_all(piece)?;
            unsynced += piece.len();
            if unsynced >= SYNC_EVERY {
                f.sync_data()?;
                unsynced = 0;
            }
        }
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
