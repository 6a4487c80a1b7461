//! ssh trust between the nodes (`omctl cluster ssh trust`, the tutorial's `om cluster ssh
//! trust`): each data node keeps an ed25519 key pair `omraft`/`omraft.pub` in its ssh
//! directory and publishes the public key through the cluster; every node lists the data
//! nodes' keys in its `authorized_keys`, in one block it manages (between `BEGIN` and `END`)
//! beside the lines it leaves alone.

use std::path::Path;

use super::run::{Invocation, RunError, Runner};

/// The key pair's file name in the ssh directory.
pub const KEY_FILE: &str = "omraft";

/// The line that opens the managed block of `authorized_keys`.
pub const BEGIN: &str = "# BEGIN omraft managed keys (do not edit)";

/// The line that closes the managed block of `authorized_keys`.
pub const END: &str = "# END omraft managed keys";

/// The comment of a node's line in the managed block.
fn comment(node: &str) -> String {
    format!("omraft@{node}")
}

/// Whether an `authorized_keys` line is a managed line of the old format, from before the
/// block: a key whose comment starts with `omraft@`, anywhere in the file.
fn legacy(line: &str) -> bool {
    line.split_whitespace().nth(2).is_some_and(|c| c.starts_with("omraft@"))
}

/// A line of the managed block: a node's public key, checked, with the comment `omraft@NODE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey(String);

impl TrustedKey {
    /// The line trusting `key`, the key node `node` reported: its type and base64 body once
    /// `model::parse_ssh_key` accepts them, and the comment `omraft@NODE` built from `node`,
    /// never the reported one.
    pub fn new(node: &str, key: &str) -> Result<TrustedKey, String> {
        crate::model::validate_node_name(node).map_err(|e| e.to_string())?;
        let k = crate::model::parse_ssh_key(key).map_err(|e| format!("the key of node {node:?}: {e}"))?;
        Ok(TrustedKey(format!("{} {} {}", k.kind, k.body, comment(node))))
    }

    /// The `authorized_keys` line.
    pub fn line(&self) -> &str {
        &self.0
    }
}

/// This node's public key, creating the key pair first if it does not exist; its comment is
/// `omraft@NODE` whatever the file says. The error names the file or command that failed.
pub fn ensure_key(runner: &dyn Runner, dir: &Path, node: &str) -> Result<String, String> {
    let private = dir.join(KEY_FILE);
    let public = dir.join(format!("{KEY_FILE}.pub"));
    if !public.exists() {
        std::fs::create_dir_all(dir)
            .and_then(|()| crate::files::restrict(dir, 0o700))
            .map_err(|e| format!("making {}: {e}", dir.display()))?;
        let path = private.display().to_string();
        let comment = comment(node);
        let inv = Invocation::new(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &path],
        );
        runner.check(&inv).map_err(|e: RunError| e.to_string())?;
    }
    let text = std::fs::read_to_string(&public).map_err(|e| format!("reading {}: {e}", public.display()))?;
    let mut fields = text.split_whitespace();
    let (kind, body) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let key = format!("{kind} {body} {}", comment(node));
    crate::model::valid_ssh_key(&key).map_err(|e| format!("{}: {e}", public.display()))?;
    Ok(key)
}

/// `authorized_keys` with the managed block rewritten whole to list `keys` (in the order
/// given; no block when there are none), in the place of the first block there was, or at the
/// end. Every line outside a block is kept as it was, except the managed lines of the old
/// format: a file without a block has not been migrated yet, and loses them. A block whose
/// `END` line is missing runs to the end of the file.
pub fn authorized_keys(existing: &str, keys: &[TrustedKey]) -> String {
    let migrated = existing.lines().any(|l| l == BEGIN);
    let mut block: Vec<&str> = Vec::new();
    if !keys.is_empty() {
        block.push(BEGIN);
        block.extend(keys.iter().map(TrustedKey::line));
        block.push(END);
    }
    let mut out: Vec<&str> = Vec::new();
    let (mut inside, mut placed) = (false, false);
    for line in existing.lines() {
        if inside {
            inside = line != END;
        } else if line == BEGIN {
            inside = true;
            if !placed {
                out.append(&mut block);
                placed = true;
            }
        } else if migrated || !legacy(line) {
            out.push(line);
        }
    }
    // No block in the file yet: at the end (once placed, `block` is empty).
    out.append(&mut block);
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Writes `authorized_keys` in `dir` if its content differs; returns whether it did.
pub fn write_authorized_keys(dir: &Path, keys: &[TrustedKey]) -> std::io::Result<bool> {
    let file = dir.join("authorized_keys");
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    let wanted = authorized_keys(&existing, keys);
    if wanted == existing {
        return Ok(false);
    }
    crate::files::write_atomic(&file, wanted.as_bytes(), 0o600)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgCrZCehGhMPJK5j1ImjfzEKCaoSTiUBweLHteT8Hxd omraft@n1";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKRBR+niCfqJPDINuIeZjQo17FhYK0FpQMutb3474p48 omraft@n2";

    fn trusted(pairs: &[(&str, &str)]) -> Vec<TrustedKey> {
        pairs.iter().map(|(n, k)| TrustedKey::new(n, k).unwrap()).collect()
    }

    fn block(lines: &[&str]) -> String {
        format!("{BEGIN}\n{}\n{END}\n", lines.join("\n"))
    }

    #[test]
    fn the_block_is_rewritten_whole_and_the_other_lines_kept() {
        let mine = "# the admin's keys\nssh-rsa AAAAB3Nza admin@laptop\n";
        let both = trusted(&[("n1", K1), ("n2", K2)]);
        let once = authorized_keys(mine, &both);
        assert_eq!(once, format!("{mine}{}", block(&[K1, K2])));
        assert_eq!(authorized_keys(&once, &both), once, "idempotent");
        // n2 left the cluster: its line goes, the admin's stay.
        assert_eq!(authorized_keys(&once, &both[..1]), format!("{mine}{}", block(&[K1])));
        assert_eq!(authorized_keys(&once, &[]), mine);
        assert_eq!(authorized_keys("", &[]), "");
    }

    #[test]
    fn the_block_keeps_its_place_and_lines_after_it() {
        let text = format!("ssh-rsa A a@b\n{}# after\nssh-rsa B c@d\n", block(&["stale", "lines"]));
        let want = format!("ssh-rsa A a@b\n{}# after\nssh-rsa B c@d\n", block(&[K2]));
        assert_eq!(authorized_keys(&text, &trusted(&[("n2", K2)])), want);
        // A second block goes; one without its END runs to the end of the file.
        let two = format!("{text}{}", block(&["more"]));
        assert_eq!(authorized_keys(&two, &trusted(&[("n2", K2)])), want);
        let open = format!("ssh-rsa A a@b\n{BEGIN}\n{K1}\nssh-rsa B c@d\n");
        assert_eq!(
            authorized_keys(&open, &trusted(&[("n2", K2)])),
            format!("ssh-rsa A a@b\n{}", block(&[K2]))
        );
    }

    #[test]
    fn old_format_lines_are_migrated_into_the_block_once() {
        let old = format!("{K1}\nssh-rsa AAAAB3Nza admin@laptop\n{K2}\nssh-ed25519 AAAA omraft@gone\n");
        let keys = trusted(&[("n1", K1), ("n2", K2)]);
        let migrated = authorized_keys(&old, &keys);
        assert_eq!(
            migrated,
            format!("ssh-rsa AAAAB3Nza admin@laptop\n{}", block(&[K1, K2]))
        );
        assert_eq!(authorized_keys(&migrated, &keys), migrated, "idempotent");
        // Once there is a block, a line outside it is the admin's, whatever its comment.
        let added = format!("ssh-ed25519 AAAA omraft@mine\n{migrated}");
        assert_eq!(authorized_keys(&added, &keys), added);
    }

    #[test]
    fn a_trusted_line_is_the_reported_key_with_our_comment() {
        let body = K1.split(' ').nth(1).unwrap();
        let reported = format!("ssh-ed25519 {body} root@elsewhere");
        assert_eq!(TrustedKey::new("n1", &reported).unwrap().line(), K1);
        assert_eq!(
            TrustedKey::new("n1", &format!("ssh-ed25519 {body}")).unwrap().line(),
            K1
        );
        let smuggled = format!("{K1}\n\tssh-rsa\tEVIL\tx");
        let why = TrustedKey::new("n1", &smuggled).unwrap_err();
        assert!(
            why.starts_with("the key of node \"n1\": the key contains a control character"),
            "{why}"
        );
        assert!(TrustedKey::new("n1\nx", K1).unwrap_err().contains("node name"));
    }

    #[test]
    fn only_one_line_ed25519_keys_are_accepted() {
        crate::model::valid_ssh_key(K1).unwrap();
        crate::model::valid_ssh_key(K2).unwrap();
        let body = K1.split(' ').nth(1).unwrap();
        for bad in [
            format!("ssh-rsa {body} omraft@n1"),
            "ssh-ed25519 AAAA".into(),
            format!("{K1}\n{K2}"),
            format!("{K1}\n\tssh-rsa\tEVIL\tx"),
            format!("{K1}\r\nssh-rsa EVIL x"),
            format!("{K1}\tssh-rsa EVIL x"),
            format!("{K1}\0ssh-rsa EVIL x"),
            format!("{K1}\u{2028}ssh-rsa EVIL x"),
            "ssh-ed25519 AA;rm omraft@n1".into(),
        ] {
            assert!(crate::model::valid_ssh_key(&bad).is_err(), "{bad:?} accepted");
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
        let keys = [TrustedKey::new("n1", &key).unwrap()];
        assert!(write_authorized_keys(&ssh, &keys).unwrap());
        assert!(!write_authorized_keys(&ssh, &keys).unwrap(), "unchanged");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ssh.join("authorized_keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
