//! The gate of the local unix socket. Its mode (0600) already keeps other users out; on top
//! of it, a connection is served only when the kernel's credentials of the peer process show
//! root or the daemon's own user, so a socket whose mode was loosened still trusts no one else.

use std::os::unix::fs::MetadataExt;

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The daemon's effective uid, read without `unsafe`: the owner of `/proc/self`, which the
/// kernel sets to the process's effective uid (to root when the process is not dumpable, a
/// uid the gate lets in anyway).
pub fn effective_uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// Whether a peer running as `peer` may use the local socket of a daemon running as `own`
/// (`None`: unknown, then only root may).
pub fn allowed(peer: u32, own: Option<u32>) -> bool {
    peer == 0 || Some(peer) == own
}

/// The connections of `listener` whose peer runs as root or as the daemon's user. Any other
/// connection is logged (its uid and pid) and dropped: its client sees the connection closed.
/// Accept errors pass through, as the plain listener stream gives them.
pub fn trusted_incoming(listener: UnixListener) -> impl Stream<Item = std::io::Result<UnixStream>> + Send + 'static {
    let own = match effective_uid() {
        Ok(uid) => Some(uid),
        Err(e) => {
            tracing::warn!(
                "local socket: the daemon's uid is unknown (reading /proc/self: {e}): only root may connect"
            );
            None
        }
    };
    UnixListenerStream::new(listener).filter_map(move |conn| {
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => return Some(Err(e)),
        };
        match stream.peer_cred() {
            Ok(cred) if allowed(cred.uid(), own) => Some(Ok(stream)),
            Ok(cred) => {
                let pid = cred.pid().map_or_else(|| "unknown".to_string(), |p| p.to_string());
                let own = own.map_or_else(|| "unknown".to_string(), |u| u.to_string());
                tracing::warn!(
                    "local socket: refused a connection from uid {} (pid {pid}): only root and the daemon's uid {own} may connect",
                    cred.uid()
                );
                None
            }
            Err(e) => {
                tracing::warn!("local socket: refused a connection whose peer credentials are unreadable: {e}");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_own_uid_are_allowed_and_no_one_else() {
        assert!(allowed(0, Some(1000)));
        assert!(allowed(1000, Some(1000)));
        assert!(!allowed(65534, Some(1000)));
        assert!(allowed(0, None));
        assert!(!allowed(1000, None));
    }

    #[test]
    fn the_effective_uid_is_the_owner_of_proc_self() {
        let uid = effective_uid().unwrap();
        let id = std::process::Command::new("id").arg("-u").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), uid.to_string());
    }

    #[tokio::test]
    async fn a_connection_of_the_daemons_own_user_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut incoming = Box::pin(trusted_incoming(UnixListener::bind(&path).unwrap()));
        let _client = UnixStream::connect(&path).await.unwrap();
        let served = incoming.next().await.unwrap().unwrap();
        assert_eq!(served.peer_cred().unwrap().uid(), effective_uid().unwrap());
    }
}
