//! DRBD templates rendered before they are written: a key of `system/cfg/drbd` (`key add`,
//! `key change`) and the key a pool's `template` names (`cluster config update`) must render,
//! within the budget every rendering has (`render::Budget::DEFAULT`, the applier's too), for
//! the sample resource of `applier::desired::sample`. A template that does not, over budget
//! or broken, is refused with why, before anything reaches the log. Rendering runs on a
//! blocking thread, with no lock held: what it needs is cloned out of the state first; at
//! most `CHECKS_AT_ONCE` at a time.

use tonic::Status;

use super::cluster::ClusterService;
use crate::applier::desired;
use crate::config::echo::echo;
use crate::drivers::drbd::render::{self, TemplateData};
use crate::model::objects::{drbd_templates, DRBD_TEMPLATES, MAX_KEY_BYTES};
use crate::model::{ConfigKey, ObjectPath};

/// Renders `template` for `data` off the async workers; refuses it naming `what`.
/// Template checks rendering at once: each may take its whole budget (up to a second of a
/// thread), so many hostile writes at once wait their turn instead of taking every thread.
const CHECKS_AT_ONCE: usize = 2;
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CHECKS_AT_ONCE);

async fn check(what: String, template: Vec<u8>, data: TemplateData) -> Result<(), Status> {
    let text = String::from_utf8(template)
        .map_err(|_| Status::invalid_argument(format!("{what}: a DRBD template must be UTF-8 text")))?;
    let _turn = CHECKS
        .acquire()
        .await
        .map_err(|e| Status::internal(format!("{what}: {e}")))?;
    let rendered = tokio::task::spawn_blocking(move || render::render(&text, &data))
        .await
        .map_err(|e| Status::internal(format!("{what}: rendering the template failed: {e}")))?;
    rendered
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

impl ClusterService {
    /// A key put to `system/cfg/drbd` must render. One over the size limit is left to the
    /// state's check, which refuses it for its size.
    pub(super) async fn check_key_template(&self, path: &ObjectPath, key: &str, value: &[u8]) -> Result<(), Status> {
        if *path != drbd_templates() || value.len() > MAX_KEY_BYTES {
            return Ok(());
        }
        let data = self.node.read(|d| desired::sample(&d.state));
        check(format!("{path}: key {:?}", echo(key)), value.to_vec(), data).await
    }

    /// The template each `pool#NAME.template` of `set` names must render (a key written by
    /// an older version was never rendered when written). A key that does not exist is left
    /// to the state's check, which refuses it naming the keys there are.
    pub(super) async fn check_pool_templates(&self, set: &[(ConfigKey, String)]) -> Result<(), Status> {
        let named = set
            .iter()
            .filter(|(k, _)| k.section.starts_with("pool#") && k.keyword == "template");
        for (k, name) in named {
            let read = |d: &crate::raft::store::SmData| {
                let value = d
                    .state
                    .objects
                    .get(&drbd_templates())
                    .and_then(|o| o.keys.get(name).cloned());
                value.map(|v| (v, desired::sample(&d.state)))
            };
            let found = match self.node.read(read) {
                Some(found) => Some(found),
                // The local state may lag behind the key.
                None => self.node.read_linearizable(read).await?,
            };
            if let Some((value, data)) = found {
                check(format!("{k}={name}: key {name:?} of {DRBD_TEMPLATES}"), value, data).await?;
            }
        }
        Ok(())
    }
}
