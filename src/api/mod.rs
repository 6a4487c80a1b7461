//! The gRPC services: the `Cluster` API for omctl and any client, and the server side of the
//! Raft transport. Authentication happens here; protobuf types go no further than this module,
//! the Raft transport client and omctl's client calls.

pub mod auth;
mod cluster;
mod events;
mod local;
mod objects;
mod raft;
mod server;
mod status;
mod templates;

pub use server::{serve, Listeners};
pub use status::{MonPage, MON_PAGE, MON_PAGE_MAX};

use auth::{Caller, Role};
use tonic::{Request, Status};

/// What a call needs from its caller. The README's role table is this mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Membership and cluster configuration: the local socket, a node, or a root token.
    Admin,
    /// Minting tokens: the local socket or a root token, never a node (tokens would outlive
    /// the node's revocation).
    Tokens,
    /// Objects, keys, actions, freeze: also an operator token.
    Operate,
    /// Reading status, listings and configuration: also a viewer token.
    View,
    /// Another node of the cluster (or the local socket).
    Node,
    /// A join token.
    Join,
    /// Only the local socket: acts on this daemon itself.
    Local,
}

/// The caller of a request, as the transport established it.
pub fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous("no credential given".into()))
}

/// Whether `caller` may make a call needing `access`.
pub fn allowed(caller: &Caller, access: Access) -> bool {
    let role = match caller {
        Caller::Anonymous(_) => return false,
        Caller::Local => return true,
        Caller::Node(_) => return matches!(access, Access::Admin | Access::Operate | Access::View | Access::Node),
        Caller::Token(c) => c.role,
        Caller::Client(role) => *role,
    };
    match access {
        Access::Admin | Access::Tokens => role == Role::Root,
        Access::Operate => role >= Role::Operator,
        Access::View => role >= Role::Viewer,
        Access::Join => role == Role::Join,
        Access::Node | Access::Local => false,
    }
}

/// Refuses a call whose caller lacks `access`, with an error that says what is missing.
pub fn authorize<T>(req: &Request<T>, access: Access) -> Result<(), Status> {
    let caller = caller(req);
    if let Caller::Anonymous(why) = &caller {
        return Err(Status::unauthenticated(format!("credential refused: {why}")));
    }
    if allowed(&caller, access) {
        return Ok(());
    }
    let why = match (caller, access) {
        (_, Access::Local) => "this command acts on the daemon itself: run it on that node's unix socket".to_string(),
        (Caller::Token(c), _) if c.role == Role::Join => "a join token only allows joining a node".to_string(),
        (_, Access::Join) => {
            "this call needs a join token: create one with `omctl daemon auth --role join`".to_string()
        }
        (_, Access::Node) => "only cluster nodes may call this".to_string(),
        (Caller::Node(id), Access::Tokens) => format!("node id {id} may not mint tokens"),
        (Caller::Token(c), a) => format!("a {} token does not allow this ({a:?} access needed)", c.role),
        (Caller::Client(role), a) => {
            format!("a {role} client certificate does not allow this ({a:?} access needed)")
        }
        (c, a) => format!("{c:?} may not make a {a:?} call"),
    };
    Err(Status::permission_denied(why))
}

/// The error a caller gets when the state machine refused its command: a code by the kind of
/// refusal (what does not exist, what exists already, bad input, anything else the state
/// forbids now), and the refusal's message, which names the offending part.
pub fn refused(r: &crate::model::Rejection) -> Status {
    use crate::model::objects::ObjectError as O;
    use crate::model::Rejection as R;
    let message = r.to_string();
    match r {
        R::UnknownNode(_) | R::UnknownResource(_) | R::Object(O::NotFound(_)) => Status::not_found(message),
        R::DuplicateNodeName(_) | R::DuplicateAddr(..) | R::Object(O::Exists(_)) => Status::already_exists(message),
        R::BadNodeName(..)
        | R::BadNodeAddr(..)
        | R::BadVolumeGroups(..)
        | R::Config(_)
        | R::BadSshKey(..)
        | R::BadDomain(_)
        | R::Path(_)
        | R::Object(
            O::BadKey(_)
            | O::Keyword { .. }
            | O::Value { .. }
            | O::Reference { .. }
            | O::Missing { .. }
            | O::TooLarge { .. }
            | O::Unreadable { .. },
        ) => Status::invalid_argument(message),
        _ => Status::failed_precondition(message),
    }
}

/// The node id of a node caller, refusing anyone else.
pub fn node_caller<T>(req: &Request<T>) -> Result<crate::model::NodeId, Status> {
    match caller(req) {
        Caller::Node(id) => Ok(id),
        Caller::Anonymous(why) => Err(Status::unauthenticated(format!("credential refused: {why}"))),
        _ => Err(Status::permission_denied("only cluster nodes may call this")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::objects::ObjectError;
    use crate::model::Rejection;
    use tonic::Code;

    #[test]
    fn a_refusal_keeps_its_kind_as_the_error_code_and_its_message() {
        let cases = [
            (
                Rejection::Object(ObjectError::NotFound("demo/svc/x".into())),
                Code::NotFound,
            ),
            (Rejection::DuplicateNodeName("n2".into()), Code::AlreadyExists),
            (
                Rejection::BadNodeName("N2".into(), "lowercase".into()),
                Code::InvalidArgument,
            ),
            (Rejection::NotProvisioned("demo/svc/x".into()), Code::FailedPrecondition),
        ];
        for (r, code) in cases {
            let s = refused(&r);
            assert_eq!((s.code(), s.message()), (code, r.to_string().as_str()), "{r:?}");
        }
        // The whole refusal crosses the wire between nodes (a follower's write through the leader).
        let r = Rejection::NotProvisioned("demo/svc/x".into());
        let back: Rejection = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
