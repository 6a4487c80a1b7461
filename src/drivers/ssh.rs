//! ssh trust between the nodes (`omctl cluster ssh trust`, the tutorial's `om cluster ssh
//! trust`): each node keeps an ed25519 key pair `omraft`/`omraft.pub` in its ssh directory,
//! publishes the public key through the cluster, and lists every node's key in its
//! `authorized_keys`, in lines it manages (their comment is `omraft@NODE`) beside the ones it
//! leaves alone.

use std::path::Path;

use super::run::{Invocation, RunError, Runner};

/// The key pair's file name in the ssh directory.
pub const KEY_FILE: &str = "omraft";

/// The comment that marks the lines this module manages.
fn comment(node: &str) -> String {
    format!("omraft@{node}")
}

/// Whether an `authorized_keys` line is one this module manages.
fn managed(line: &str) -> bool {
    line.split_whitespace().nth(2).is_some_and(|c| c.starts_with("omraft@"))
}

/// This node's public key, creating the key pair first if it does not exist.
pub fn ensure_key(runner: &dyn Runner, dir: &Path, node: &str) -> Result<String, RunError> {
    let private = dir.join(KEY_FILE);
    let public = dir.join(format!("{KEY_FILE}.pub"));
    let io = |e: std::io::Error, what: &Path| RunError::Spawn(format!("{}", what.display()), e.to_string());
    if !public.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        crate::daemon::restrict(dir, 0o700).map_err(|e| io(e, dir))?;
        let path = private.display().to_string();
        let comment = comment(node);
        let inv = Invocation::new(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &path],
        );
        runner.check(&inv)?;
    }
    let text = std::fs::read_to_string(&public).map_err(|e| io(e, &public))?;
    // Our comment, whatever ssh-keygen was given: the marker of the managed lines.
    let mut fields = text.split_whitespace();
    let (kind, body) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    Ok(format!("{kind} {body} {}", comment(node)))
}

/// `authorized_keys` with the managed lines replaced by `keys` (in the order given), every
/// other line kept as it was.
pub fn authorized_keys(existing: &str, keys: &[String]) -> String {
    let mut out: Vec<&str> = existing.lines().filter(|l| !managed(l)).collect();
    out.extend(keys.iter().map(String::as_str));
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Writes `authorized_keys` in `dir` if its content differs; returns whether it did.
pub fn write_authorized_keys(dir: &Path, keys: &[String]) -> std::io::Result<bool> {
    let file = dir.join("authorized_keys");
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    let wanted = authorized_keys(&existing, keys);
    if wanted == existing {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("authorized_keys.omraft.tmp");
    std::fs::write(&tmp, &wanted)?;
    crate::daemon::restrict(&tmp, 0o600)?;
    std::fs::rename(&tmp, &file)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgCrZCehGhMPJK5j1ImjfzEKCaoSTiUBweLHteT8Hxd omraft@n1";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKRBR+niCfqJPDINuIeZjQo17FhYK0FpQMutb3474p48 omraft@n2";

    #[test]
    fn managed_lines_are_replaced_and_the_others_kept() {
        let mine = "ssh-rsa AAAAB3Nza admin@laptop\n";
        let once = authorized_keys(mine, &[K1.into(), K2.into()]);
        assert_eq!(once, format!("{mine}{K1}\n{K2}\n"));
        // n2 left: its line goes, the admin's stays.
        assert_eq!(authorized_keys(&once, &[K1.into()]), format!("{mine}{K1}\n"));
        assert_eq!(authorized_keys("", &[]), "");
    }

    #[test]
    fn only_one_line_ed25519_keys_are_accepted() {
        crate::model::valid_ssh_key(K1).unwrap();
        for bad in [
            "ssh-rsa AAAA omraft@n1",
            "ssh-ed25519 AAAA",
            "ssh-ed25519 AAAA omraft@n1\nssh-ed25519 BBBB omraft@n2",
            "ssh-ed25519 AA;rm omraft@n1",
        ] {
            assert!(crate::model::valid_ssh_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_key_pair_is_made_once_with_ssh_keygen() {
        if !Path::new("/usr/bin/ssh-keygen").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        let runner = crate::drivers::run::SystemRunner {
            timeout: std::time::Duration::from_secs(10),
        };
        let key = ensure_key(&runner, &ssh, "n1").unwrap();
        crate::model::valid_ssh_key(&key).unwrap();
        assert!(key.ends_with(" omraft@n1"));
        assert_eq!(ensure_key(&runner, &ssh, "n1").unwrap(), key, "kept, not remade");
        assert!(write_authorized_keys(&ssh, std::slice::from_ref(&key)).unwrap());
        assert!(
            !write_authorized_keys(&ssh, std::slice::from_ref(&key)).unwrap(),
            "unchanged"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ssh.join("authorized_keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
