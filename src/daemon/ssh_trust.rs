//! ssh trust between data nodes (`cluster.ssh_trust`): each data node's key pair made and its
//! public key published in the log; on every node, the managed block of `authorized_keys`
//! listing the data nodes' keys, rewritten whole from the state.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use super::Node;
use crate::model::Command;

/// Keeps ssh trust (`cluster.ssh_trust`) in `dir`: on a data node, its key pair made and its
/// public key published; on every node, the managed block of `authorized_keys` listing the
/// data nodes' keys (a witness's key is never trusted). Checked every 2 seconds.
pub async fn keep(weak: Weak<Node>, dir: PathBuf) {
    let mut last_error = String::new();
    let mut last_skipped = Vec::new();
    loop {
        let Some(node) = Node::alive(&weak) else { return };
        let m = node.member();
        let (trust, witness, keyed, mine) = m.sm.read(|d| {
            let trust = crate::model::catalog::get(&d.state.config, "cluster.ssh_trust")
                .ok()
                .flatten()
                .is_some_and(|v| v == "true");
            let mut keyed: Vec<(String, String)> = d
                .state
                .nodes
                .values()
                .filter(|n| !n.witness)
                .filter_map(|n| Some((n.name.clone(), n.ssh_key.clone()?)))
                .collect();
            keyed.sort();
            let me = d.state.nodes.get(&m.id);
            (
                trust,
                me.is_some_and(|n| n.witness),
                keyed,
                me.and_then(|n| n.ssh_key.clone()),
            )
        });
        // The lines are built from the state's node names and the keys checked again: a key
        // committed before the check was strict is skipped, not written.
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (name, key) in &keyed {
            match crate::drivers::ssh::TrustedKey::new(name, key) {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(e),
            }
        }
        if trust && skipped != last_skipped {
            for e in &skipped {
                tracing::warn!("ssh trust: not trusted: {e}");
            }
            last_skipped = skipped;
        }
        if trust {
            let (d, name, listed) = (dir.clone(), node.settings.name.clone(), keys.len());
            let done = tokio::task::spawn_blocking(move || -> Result<(Option<String>, bool), String> {
                let runner = crate::drivers::run::SystemRunner {
                    timeout: Duration::from_secs(10),
                };
                let key = if witness {
                    None
                } else {
                    Some(crate::drivers::ssh::ensure_key(&runner, &d, &name)?)
                };
                let wrote = crate::drivers::ssh::write_authorized_keys(&d, &keys)
                    .map_err(|e| format!("writing {}/authorized_keys: {e}", d.display()))?;
                Ok((key, wrote))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match done {
                Ok((key, wrote)) => {
                    last_error.clear();
                    if wrote {
                        tracing::info!("ssh trust: authorized_keys lists {listed} node keys");
                    }
                    if let Some(key) = key.filter(|k| mine.as_ref() != Some(k)) {
                        let cmd = Command::ReportSshKey { node_id: m.id, key };
                        match tokio::time::timeout(Duration::from_secs(2), node.write(cmd)).await {
                            Ok(Ok(_)) => tracing::info!("ssh trust: public key published"),
                            Ok(Err(e)) => tracing::warn!("ssh trust: publishing the key: {}", e.message()),
                            Err(_) => tracing::warn!(
                                "ssh trust: publishing the key: outcome unknown: not committed within 2 s"
                            ),
                        }
                    }
                }
                Err(e) if e != last_error => {
                    tracing::warn!("ssh trust: {e}");
                    last_error = e;
                }
                Err(_) => {}
            }
        }
        drop((node, m));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
