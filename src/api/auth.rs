//! Who is calling: nodes by their certificate, clients by a token, the local socket by its
//! peer's uid.
//!
//! A token is `base64url(claims).base64url(ed25519 signature)`. The claims say the role, when
//! it was minted and until when it is valid, a random nonce, which signing key generation
//! signed it, the cluster CA's fingerprint and, for a join token, the node name it is bound
//! to. The signing key is the authority node's; every node checks tokens with its public half
//! from the replicated state, and only the current generation's signature counts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Trust};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only to join one node to the cluster, once.
    Join,
    /// Read: mon, status, listings, configuration without secret values.
    Viewer,
    /// Objects, keys, switch, freeze; no membership, tokens or cluster configuration.
    Operator,
    /// Every API call.
    Root,
}

impl Role {
    /// The role named `name` (as `Display` writes it).
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Join, Role::Viewer, Role::Operator, Role::Root]
            .into_iter()
            .find(|r| r.to_string() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Join => "join",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Root => "root",
        })
    }
}

/// The longest a token may be valid, checked when it is verified (not only when minted).
pub const MAX_LIFETIME_SECS: u64 = 30 * 86400;
/// How far in the future a token's minting time may be (clock skew between nodes).
const SKEW_SECS: u64 = 300;

/// Who is calling, as established by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The local unix socket (root or the daemon's own user).
    Local,
    /// A node of the cluster, by its certificate.
    Node(NodeId),
    /// A valid token.
    Token(Claims),
    /// A client certificate of this role (not a join), verified in the TLS handshake.
    Client(Role),
    /// A caller without a valid credential, and why.
    Anonymous(String),
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub role: Role,
    /// Minted at (unix seconds).
    pub iat: u64,
    /// Valid until (unix seconds).
    pub exp: u64,
    pub nonce: String,
    /// The signing key generation that signed it.
    pub generation: u64,
    /// The fingerprint of the cluster CA: a joining node checks the server against it.
    pub ca: String,
    /// A join token bound to this node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was not signed by this cluster")]
    BadSignature,
    #[error("the token was signed with a signing key rotated since (generation {0}, now {1})")]
    Rotated(u64, u64),
    #[error("the token expired {0} s ago")]
    Expired(u64),
    #[error("the token claims a lifetime of {0} s, more than the {MAX_LIFETIME_SECS} s allowed")]
    TooLong(u64),
    #[error("the token was minted in the future")]
    NotYetValid,
    #[error("the cluster has no signing key yet")]
    NoTrust,
}

impl Claims {
    /// New claims for `role`, valid `secs` from `now`.
    pub fn new(role: Role, now: u64, secs: u64, trust: &Trust, node: Option<String>) -> Claims {
        let mut n = [0u8; 16];
        getrandom::fill(&mut n).expect("system random source");
        Claims {
            role,
            iat: now,
            exp: now + secs,
            nonce: crate::tls::pki::hex(&n),
            generation: trust.generation,
            ca: crate::tls::pki::fingerprint(&trust.ca),
            node,
        }
    }

    /// The signed token, with `sign` (the authority's signing key).
    pub fn sign(&self, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let body = B64.encode(serde_json::to_vec(self).expect("serialize claims"));
        let sig = sign(body.as_bytes());
        format!("{body}.{}", B64.encode(sig))
    }

    /// The claims of `token`, unverified: what a joining node reads to find the CA to trust.
    pub fn peek(token: &str) -> Result<Claims, TokenError> {
        let (body, _) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let bytes = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    }

    /// Checks `token` against the cluster's current signing key at `now` (unix seconds).
    pub fn verify(token: &str, trust: Option<&Trust>, now: u64) -> Result<Claims, TokenError> {
        let trust = trust.ok_or(TokenError::NoTrust)?;
        let (body, sig) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        if !crate::tls::pki::verify_token_signature(&trust.signing_key, body.as_bytes(), &sig) {
            return Err(TokenError::BadSignature);
        }
        let claims = Claims::peek(token)?;
        if claims.generation != trust.generation {
            return Err(TokenError::Rotated(claims.generation, trust.generation));
        }
        if claims.exp <= now {
            return Err(TokenError::Expired(now - claims.exp));
        }
        if claims.iat > now.saturating_add(SKEW_SECS) {
            return Err(TokenError::NotYetValid);
        }
        let life = claims.exp.saturating_sub(claims.iat);
        if life > MAX_LIFETIME_SECS {
            return Err(TokenError::TooLong(life));
        }
        Ok(claims)
    }
}

/// Who presents the `authorization` header value `header` (`Bearer TOKEN`) over a connection
/// whose client certificate named node `node`, or the client role `client` (verified in the
/// TLS handshake).
pub fn caller(
    header: Option<&str>,
    node: Option<NodeId>,
    client: Option<&str>,
    trust: Option<&Trust>,
    now: u64,
) -> Caller {
    if let Some(h) = header {
        let Some(t) = h.strip_prefix("Bearer ") else {
            return Caller::Anonymous("unknown authorization scheme (expected Bearer)".into());
        };
        return match Claims::verify(t, trust, now) {
            Ok(claims) => Caller::Token(claims),
            Err(e) => Caller::Anonymous(e.to_string()),
        };
    }
    match (node, client) {
        (Some(id), _) => Caller::Node(id),
        (None, Some(name)) => match Role::parse(name) {
            Some(role) if role != Role::Join => Caller::Client(role),
            _ => Caller::Anonymous(format!("a client certificate of unknown role {name:?}")),
        },
        (None, None) => Caller::Anonymous("no credential given (use --token or --cert)".into()),
    }
}

/// Seconds since the Unix epoch, for token times (the only wall-clock use of the API).
pub use crate::tls::pki::unix_now;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::Authority;

    fn trust(a: &Authority, generation: u64) -> Trust {
        Trust {
            ca: a.ca_der().to_vec(),
            signing_key: a.signing_public(),
            generation,
            ..Trust::default()
        }
    }

    #[test]
    fn tokens_are_checked_for_signature_generation_expiry_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Authority::create(dir.path()).unwrap();
        let t = trust(&a, 1);
        let token = Claims::new(Role::Join, 1000, 60, &t, Some("n2".into())).sign(|m| a.sign_token(m));
        let c = Claims::verify(&token, Some(&t), 1010).unwrap();
        assert_eq!((c.role, c.node.as_deref()), (Role::Join, Some("n2")));
        assert_eq!(c.ca, crate::tls::pki::fingerprint(a.ca_der()));
        assert_eq!(Claims::verify(&token, Some(&t), 1065), Err(TokenError::Expired(5)));
        assert_eq!(Claims::verify("garbage", Some(&t), 0), Err(TokenError::Malformed));
        assert_eq!(Claims::verify(&token, None, 1010), Err(TokenError::NoTrust));

        // Claims changed after signing (role raised, lifetime stretched): the signature fails.
        let (body, sig) = token.split_once('.').unwrap();
        let mut forged = Claims::peek(&token).unwrap();
        forged.role = Role::Root;
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert_ne!(body, forged.split_once('.').unwrap().0);
        assert_eq!(Claims::verify(&forged, Some(&t), 1010), Err(TokenError::BadSignature));

        // Signed by the right key but claiming more than the cap: refused when verified.
        let long = Claims::new(Role::Root, 1000, MAX_LIFETIME_SECS + 1, &t, None).sign(|m| a.sign_token(m));
        assert_eq!(
            Claims::verify(&long, Some(&t), 1010),
            Err(TokenError::TooLong(MAX_LIFETIME_SECS + 1))
        );

        // A rotation: tokens of the old generation stop working.
        let public = a.rotate_signing_key(dir.path()).unwrap();
        let t2 = Trust {
            signing_key: public,
            generation: 2,
            ..t.clone()
        };
        assert_eq!(Claims::verify(&token, Some(&t2), 1010), Err(TokenError::BadSignature));
        let after = Claims::new(Role::Root, 1000, 60, &t2, None).sign(|m| a.sign_token(m));
        assert!(Claims::verify(&after, Some(&t2), 1010).is_ok());
        let stale = Claims {
            generation: 1,
            ..Claims::peek(&after).unwrap()
        }
        .sign(|m| a.sign_token(m));
        assert_eq!(Claims::verify(&stale, Some(&t2), 1010), Err(TokenError::Rotated(1, 2)));
    }

    #[test]
    fn a_certificate_names_a_node_unless_a_token_is_given() {
        assert_eq!(caller(None, Some(3), None, None, 0), Caller::Node(3));
        assert_eq!(
            caller(None, None, Some("viewer"), None, 0),
            Caller::Client(Role::Viewer)
        );
        assert!(matches!(
            caller(None, None, Some("join"), None, 0),
            Caller::Anonymous(_)
        ));
        assert!(matches!(caller(None, None, None, None, 0), Caller::Anonymous(_)));
        assert!(matches!(
            caller(Some("Node abc"), Some(3), None, None, 0),
            Caller::Anonymous(_)
        ));
    }
}
