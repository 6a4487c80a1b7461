//! The gRPC services: the `Cluster` API for omctl and any client, and the server side of the
//! Raft transport. Authentication happens here; protobuf types go no further than this module,
//! the Raft transport client and omctl's client calls.

pub mod auth;
mod cluster;
mod local;
mod objects;
mod raft;
mod server;
mod status;

pub use server::{serve, Listeners};

use auth::{Caller, Role};
use tonic::{Request, Status};

/// What a call needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The local socket, a node, or a root token.
    Admin,
    /// Another node of the cluster (or the local socket).
    Node,
    /// A join token (or a node forwarding one it checked).
    Join,
    /// Only the local socket: acts on this daemon itself.
    Local,
}

/// Refuses a call whose caller lacks `access`, with an error that says what is missing.
pub fn authorize<T>(req: &Request<T>, access: Access) -> Result<(), Status> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous("no credential given".into()));
    let ok = match (&caller, access) {
        (Caller::Anonymous(why), _) => return Err(Status::unauthenticated(format!("credential refused: {why}"))),
        (Caller::Local, _) => true,
        (Caller::Node, Access::Admin | Access::Node | Access::Join) => true,
        (Caller::Token(Role::Root), Access::Admin) => true,
        (Caller::Token(Role::Join), Access::Join) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let why = match (caller, access) {
        (_, Access::Local) => "this command acts on the daemon itself: run it on that node's unix socket".to_string(),
        (Caller::Token(Role::Join), _) => "a join token only allows joining a node".to_string(),
        (Caller::Token(Role::Root), Access::Join) => {
            "this is a root token, not a join token: create one with `omctl daemon auth --role join`".to_string()
        }
        (_, Access::Node) => "only cluster nodes may call this".to_string(),
        (c, a) => format!("{c:?} may not make a {a:?} call"),
    };
    Err(Status::permission_denied(why))
}
