//! Credentials for the TCP API: join and root tokens signed with the cluster secret, and the
//! node credential nodes use between themselves.
//!
//! A token is `base64url(payload).hex(hmac-sha256(secret, payload))` where the payload is
//! `{"role":..,"exp":unix-seconds,"nonce":..}`. The unix socket needs no credential: its mode
//! (0600) restricts it to root.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cluster secret: 32 random bytes, the same on every member, never replicated in the log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only to join a node to the cluster.
    Join,
    /// Every API call.
    Root,
}

/// Who is calling, as established by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The local unix socket.
    Local,
    /// Another node of the cluster.
    Node,
    /// A valid token of this role.
    Token(Role),
    /// A TCP caller without a valid credential, and why.
    Anonymous(String),
}

#[derive(Serialize, Deserialize)]
struct Payload {
    role: Role,
    exp: u64,
    nonce: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was not signed by this cluster")]
    BadSignature,
    #[error("the token expired {0} s ago")]
    Expired(u64),
}

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Secret {
        let mut b = vec![0u8; 32];
        getrandom::fill(&mut b).expect("system random source");
        Secret(b)
    }

    fn mac(&self, msg: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("hmac takes any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    /// Signs a token for `role`, valid until `exp` (unix seconds).
    pub fn sign(&self, role: Role, exp: u64) -> String {
        let mut n = [0u8; 8];
        getrandom::fill(&mut n).expect("system random source");
        let payload = serde_json::to_vec(&Payload {
            role,
            exp,
            nonce: hex(&n),
        })
        .expect("serialize");
        let body = hex(&payload);
        format!("{body}.{}", hex(&self.mac(body.as_bytes())))
    }

    /// Checks a token's signature and expiry at `now` (unix seconds) and returns its role.
    pub fn verify(&self, token: &str, now: u64) -> Result<Role, TokenError> {
        let (body, sig) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let sig = unhex(sig).ok_or(TokenError::Malformed)?;
        let mut m = HmacSha256::new_from_slice(&self.0).expect("hmac takes any key length");
        m.update(body.as_bytes());
        m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let payload: Payload =
            serde_json::from_slice(&unhex(body).ok_or(TokenError::Malformed)?).map_err(|_| TokenError::Malformed)?;
        if payload.exp <= now {
            return Err(TokenError::Expired(now - payload.exp));
        }
        Ok(payload.role)
    }

    /// The credential nodes present to each other.
    pub fn node_credential(&self) -> String {
        hex(&self.mac(b"omraft node credential v1"))
    }

    /// Checks a node credential in constant time.
    pub fn verify_node_credential(&self, cred: &str) -> bool {
        let Some(sig) = unhex(cred.trim()) else {
            return false;
        };
        let mut m = HmacSha256::new_from_slice(&self.0).expect("hmac takes any key length");
        m.update(b"omraft node credential v1");
        m.verify_slice(&sig).is_ok()
    }

    /// Who presents the `authorization` header value `header` (`Bearer TOKEN` or `Node CRED`).
    pub fn caller(&self, header: Option<&str>, now: u64) -> Caller {
        let Some(h) = header else {
            return Caller::Anonymous("no credential given (use --token or OMCTL_TOKEN)".into());
        };
        if let Some(t) = h.strip_prefix("Bearer ") {
            return match self.verify(t, now) {
                Ok(role) => Caller::Token(role),
                Err(e) => Caller::Anonymous(e.to_string()),
            };
        }
        if let Some(c) = h.strip_prefix("Node ") {
            if self.verify_node_credential(c) {
                return Caller::Node;
            }
            return Caller::Anonymous("the node credential is not this cluster's".into());
        }
        Caller::Anonymous("unknown authorization scheme (expected Bearer or Node)".into())
    }
}

/// Seconds since the Unix epoch, for token expiry (the only wall-clock use of the API).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_refusals() {
        let s = Secret::generate();
        let t = s.sign(Role::Join, 1000);
        assert_eq!(s.verify(&t, 999), Ok(Role::Join));
        assert_eq!(s.verify(&t, 1005), Err(TokenError::Expired(5)));
        assert_eq!(Secret::generate().verify(&t, 999), Err(TokenError::BadSignature));
        assert_eq!(s.verify("garbage", 0), Err(TokenError::Malformed));
        // A tampered payload (role changed) no longer matches its signature.
        let (body, sig) = t.split_once('.').unwrap();
        let forged = String::from_utf8(unhex(body).unwrap()).unwrap().replace("join", "root");
        assert_eq!(
            s.verify(&format!("{}.{sig}", hex(forged.as_bytes())), 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn node_credential_is_per_cluster() {
        let a = Secret::generate();
        assert_eq!(
            a.caller(Some(&format!("Node {}", a.node_credential())), 0),
            Caller::Node
        );
        let b = Secret::generate();
        assert!(matches!(
            b.caller(Some(&format!("Node {}", a.node_credential())), 0),
            Caller::Anonymous(_)
        ));
        assert!(matches!(a.caller(None, 0), Caller::Anonymous(_)));
    }
}
