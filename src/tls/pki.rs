//! Node identities: the cluster's certificate authority, each node's key pair and the
//! certificates the authority issues.
//!
//! - Every node makes its own ECDSA P-256 key pair (`tls/node.key`, mode 0600) the first time
//!   it starts; the private key never leaves the node.
//! - The node that founds a cluster makes the cluster CA (`tls/ca.key`, 0600) and a token
//!   signing key (`tls/signing.key`, Ed25519, 0600). Both stay in that node's data directory,
//!   never in the log: that node is the cluster's *authority*, and admissions and token
//!   minting are forwarded to it.
//! - A joining node sends its public key and a proof of possession (its signature over the
//!   join token's nonce and its name). The authority issues a certificate whose subject is the
//!   node's name, with the SAN `id-N.node.omraft` naming its node id, the host of each
//!   advertised address, both server and client authentication.
//! - A peer's identity is read from its certificate (the `id-N.node.omraft` SAN) once the TLS
//!   handshake verified the chain to the CA; a certificate is named by the SHA-256 of its DER
//!   (its fingerprint), which is what revocation lists.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::model::NodeId;

/// The DNS-name suffix of the SAN that carries a node id.
const ID_SUFFIX: &str = ".node.omraft";
/// The DNS-name suffix of the SAN that carries a client certificate's role.
const ROLE_SUFFIX: &str = ".client.omraft";
/// What a client's proof of possession signs beside its name.
pub const CLIENT_PROOF: &str = "client certificate";

/// Why a key or certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Bad(String, String),
}

fn bad(what: impl Into<String>, why: impl ToString) -> PkiError {
    PkiError::Bad(what.into(), why.to_string())
}

/// SHA-256 of a DER certificate, lowercase hex: how certificates are named and revoked.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The one DNS name of `der` of the form `PREFIX LABEL SUFFIX`, as LABEL; `None` if there is
/// none, or more than one (ours never have that). Call it only on a verified certificate.
fn san_label(der: &[u8], prefix: &str, suffix: &str) -> Option<String> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let mut labels = cert
        .valid_dns_names()
        .filter_map(|n| Some(n.strip_prefix(prefix)?.strip_suffix(suffix)?.to_string()));
    let label = labels.next()?;
    labels.next().is_none().then_some(label)
}

/// The node id a certificate names, from its `id-N.node.omraft` SAN; `None` if it names none
/// (a client certificate, or not one of ours). Call it only on a verified certificate.
pub fn node_id_of(der: &[u8]) -> Option<NodeId> {
    san_label(der, "id-", ID_SUFFIX)?.parse().ok()
}

/// The role a client certificate names, from its `role-R.client.omraft` SAN; `None` for any
/// other certificate. Call it only on a verified certificate.
pub fn client_role_of(der: &[u8]) -> Option<String> {
    san_label(der, "role-", ROLE_SUFFIX)
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let rest = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .ok_or_else(|| bad("certificate", "no PEM certificate found"))?;
    use base64::Engine as _;
    let body: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| bad("certificate", e))
}

/// A DER certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Writes `data` to `path` atomically, with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::files::write_atomic(path, data, mode).map_err(|e| PkiError::Io(path.to_path_buf(), e))
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io(path.to_path_buf(), e)),
    }
}

/// A node's own key pair.
pub struct NodeKey(KeyPair);

impl NodeKey {
    /// The key in `path`, made (and saved, mode 0600) if there is none.
    pub fn load_or_make(path: &Path) -> Result<NodeKey, PkiError> {
        if let Some(pem) = read(path)? {
            let pem = String::from_utf8(pem).map_err(|e| bad(path.display().to_string(), e))?;
            let key = KeyPair::from_pem(&pem).map_err(|e| bad(path.display().to_string(), e))?;
            return Ok(NodeKey(key));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| bad("generating a key", e))?;
        write_file(path, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(NodeKey(key))
    }

    /// A key from its PEM text.
    pub fn from_pem(pem: &str) -> Result<NodeKey, PkiError> {
        Ok(NodeKey(KeyPair::from_pem(pem).map_err(|e| bad("key", e))?))
    }

    /// The private key as PEM (PKCS#8).
    pub fn pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// A fresh key that is not saved (a client certificate's, tests).
    pub fn generate() -> NodeKey {
        NodeKey(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key"))
    }

    /// The public key (the uncompressed P-256 point).
    pub fn public(&self) -> Vec<u8> {
        self.0.public_key_raw().to_vec()
    }

    /// PKCS#8 DER of the private key, for rustls.
    pub fn pkcs8(&self) -> Vec<u8> {
        self.0.serialize_der()
    }

    /// The proof that the holder of this key asks to join as `name` with the token nonce
    /// `nonce`: a signature over both.
    pub fn prove(&self, nonce: &str, name: &str) -> Vec<u8> {
        use rcgen::SigningKey as _;
        self.0
            .sign(&proof_message(nonce, name))
            .expect("signing with a P-256 key")
    }
}

fn proof_message(nonce: &str, name: &str) -> Vec<u8> {
    format!("omraft join v1\n{nonce}\n{name}").into_bytes()
}

/// Checks a proof of possession made by `NodeKey::prove`.
pub fn verify_proof(public: &[u8], nonce: &str, name: &str, proof: &[u8]) -> Result<(), PkiError> {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, public)
        .verify(&proof_message(nonce, name), proof)
        .map_err(|_| bad("join request", "the proof of possession does not match the public key"))
}

/// A public key given by a joining node, for the CA to certify.
struct ForeignKey(Vec<u8>);

impl PublicKeyData for ForeignKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// What a certificate says about the node it is for.
pub struct Subject<'a> {
    pub id: NodeId,
    pub name: &'a str,
    /// `HOST:PORT` addresses peers and clients reach the node at.
    pub addrs: &'a [String],
}

/// The cluster's certificate authority and token signing key, as the authority node holds
/// them.
pub struct Authority {
    ca: KeyPair,
    ca_der: Vec<u8>,
    signing: Ed25519KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority(ca {})", fingerprint(&self.ca_der))
    }
}

/// The files of an authority in a node's TLS directory.
pub const CA_KEY: &str = "ca.key";
pub const SIGNING_KEY: &str = "signing.key";
pub const CA_CERT: &str = "ca.crt";
pub const NODE_KEY: &str = "node.key";
pub const NODE_CERT: &str = "node.crt";

impl Authority {
    /// A new CA (valid 20 years) and signing key, and the signing key's PKCS#8 (to save).
    fn generate() -> Result<(Authority, Vec<u8>), PkiError> {
        let ca = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| bad("generating the CA key", e))?;
        let mut params = ca_params();
        params.serial_number = Some(random_serial());
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(this_year() + 20, 1, 1);
        let cert = params
            .self_signed(&ca)
            .map_err(|e| bad("making the CA certificate", e))?;
        let (signing, pkcs8) = new_signing_key();
        let a = Authority {
            ca,
            ca_der: cert.der().to_vec(),
            signing,
        };
        Ok((a, pkcs8))
    }

    /// A CA and signing key kept in memory only (tests).
    pub fn ephemeral() -> Authority {
        Authority::generate().expect("generating a CA").0
    }

    /// TLS for a node `id` with a fresh key, certified by this CA (tests).
    pub fn test_tls(&self, id: NodeId) -> crate::tls::Tls {
        let key = NodeKey::generate();
        let name = format!("n{id}");
        let cert = self
            .issue(
                &key.public(),
                &Subject {
                    id,
                    name: &name,
                    addrs: &["127.0.0.1:1".to_string()],
                },
            )
            .expect("issuing a certificate");
        let identity = crate::tls::Identity { cert, key: key.pkcs8() };
        crate::tls::Tls::new(self.ca_der.clone(), &identity).expect("TLS configuration")
    }

    /// The authority saved in `dir`, if this node holds one.
    pub fn load(dir: &Path) -> Result<Option<Authority>, PkiError> {
        let (Some(key), Some(cert), Some(signing)) = (
            read(&dir.join(CA_KEY))?,
            read(&dir.join(CA_CERT))?,
            read(&dir.join(SIGNING_KEY))?,
        ) else {
            return Ok(None);
        };
        let named = |f: &str| dir.join(f).display().to_string();
        let key = String::from_utf8(key).map_err(|e| bad(named(CA_KEY), e))?;
        let cert = String::from_utf8(cert).map_err(|e| bad(named(CA_CERT), e))?;
        Ok(Some(Authority {
            ca: KeyPair::from_pem(&key).map_err(|e| bad(named(CA_KEY), e))?,
            ca_der: pem_to_der(&cert).map_err(|e| bad(named(CA_CERT), e))?,
            signing: Ed25519KeyPair::from_pkcs8(&signing).map_err(|e| bad(named(SIGNING_KEY), e))?,
        }))
    }

    /// A new CA and signing key, saved in `dir` (keys mode 0600).
    pub fn create(dir: &Path) -> Result<Authority, PkiError> {
        let (a, signing_pkcs8) = Authority::generate()?;
        write_file(&dir.join(CA_KEY), a.ca.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join(SIGNING_KEY), &signing_pkcs8, 0o600)?;
        write_file(&dir.join(CA_CERT), der_to_pem(&a.ca_der).as_bytes(), 0o644)?;
        Ok(a)
    }

    /// Replaces the signing key with a new one (saved in `dir`); returns its public key.
    pub fn rotate_signing_key(&mut self, dir: &Path) -> Result<Vec<u8>, PkiError> {
        let (signing, pkcs8) = new_signing_key();
        write_file(&dir.join(SIGNING_KEY), &pkcs8, 0o600)?;
        self.signing = signing;
        Ok(self.signing_public())
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The public half of the token signing key.
    pub fn signing_public(&self) -> Vec<u8> {
        self.signing.public_key().as_ref().to_vec()
    }

    /// Signs a token payload.
    pub fn sign_token(&self, msg: &[u8]) -> Vec<u8> {
        self.signing.sign(msg).as_ref().to_vec()
    }

    /// Signs `params` (subject and names set) for `public`, a P-256 public key given by the
    /// requester: a fresh serial, a signature-only key usage.
    fn certify(&self, mut params: CertificateParams, public: &[u8], what: &str) -> Result<Vec<u8>, PkiError> {
        if public.len() != 65 || public[0] != 4 {
            return Err(bad(what, "the public key is not an uncompressed P-256 point"));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let issuer = Issuer::new(ca_params(), &self.ca);
        let cert = params
            .signed_by(&ForeignKey(public.to_vec()), &issuer)
            .map_err(|e| bad(what, e))?;
        Ok(cert.der().to_vec())
    }

    /// Issues a client certificate for `public` (a P-256 key), named `name`, with `role`,
    /// valid from yesterday until `days` days after today (UTC).
    pub fn issue_client(&self, public: &[u8], name: &str, role: &str, days: u64) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, format!("omctl {role}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            format!("role-{role}{ROLE_SUFFIX}")
                .try_into()
                .map_err(|e| bad("certificate name", e))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let today = today();
        let (y, m, d) = civil_from_days(today - 1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_from_days(today + days as i64);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        self.certify(params, public, "client certificate request")
    }

    /// Issues a certificate (valid 10 years) for `public`, the P-256 public key of `subject`.
    pub fn issue(&self, public: &[u8], subject: &Subject<'_>) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.name);
        dn.push(DnType::OrganizationalUnitName, format!("node id {}", subject.id));
        params.distinguished_name = dn;
        let mut sans = vec![SanType::DnsName(
            format!("id-{}{ID_SUFFIX}", subject.id)
                .try_into()
                .map_err(|e| bad("certificate name", e))?,
        )];
        for addr in subject.addrs {
            let host = host_of(addr);
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.to_string()
                        .try_into()
                        .map_err(|e| bad(format!("address {addr}"), e))?,
                ),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(this_year() + 10, 1, 1);
        self.certify(params, public, "join request")
    }
}

/// The CA's subject and key usages: fixed, so the issuer side of the CA can be rebuilt from
/// its key alone (issued certificates name the CA by this subject; trust rests on its key).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "omraft cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("system random source");
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// Days since 1970-01-01 (UTC).
fn today() -> i64 {
    (unix_now() / 86_400) as i64
}

/// The current year (UTC).
fn this_year() -> i32 {
    civil_from_days(today()).0
}

/// A fresh Ed25519 token signing key, and its PKCS#8 (to save).
fn new_signing_key() -> (Ed25519KeyPair, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("system random source")
        .as_ref()
        .to_vec();
    (Ed25519KeyPair::from_pkcs8(&pkcs8).expect("a fresh Ed25519 key"), pkcs8)
}

/// Checks a token signature made by `Authority::sign_token` with the key whose public half is
/// `public`.
pub fn verify_token_signature(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

/// Seconds since the Unix epoch (token and certificate times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn certificates_name_a_node_or_a_client_role_never_both() {
        let a = Authority::ephemeral();
        let key = NodeKey::generate();
        let addrs = ["10.0.0.1:1215".to_string(), "n1.example:1215".to_string()];
        let node = a
            .issue(
                &key.public(),
                &Subject {
                    id: 7,
                    name: "n1",
                    addrs: &addrs,
                },
            )
            .unwrap();
        assert_eq!((node_id_of(&node), client_role_of(&node)), (Some(7), None));
        let client = a.issue_client(&key.public(), "alice", "operator", 30).unwrap();
        assert_eq!(
            (node_id_of(&client), client_role_of(&client).as_deref()),
            (None, Some("operator"))
        );
        assert!(a
            .issue(
                &[4; 10],
                &Subject {
                    id: 1,
                    name: "n1",
                    addrs: &[]
                }
            )
            .is_err());
        let proof = key.prove("nonce", "n2");
        verify_proof(&key.public(), "nonce", "n2", &proof).unwrap();
        assert!(verify_proof(&key.public(), "nonce", "n3", &proof).is_err());
        assert!(verify_proof(&NodeKey::generate().public(), "nonce", "n2", &proof).is_err());
    }
}
