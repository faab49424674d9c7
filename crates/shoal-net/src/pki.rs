//! The cluster's certificate authority and node certificates.
//!
//! `shoal init` makes a [`RootCa`] (ECDSA P-256, CN [`ROOT_CA_CN`], valid for
//! [`ROOT_CA_VALIDITY`]). Every node proves possession of its own key with a
//! certificate signing request (CSR, see [`NodeKeyPair`]); a manager signs it
//! with [`RootCa::sign_csr`], which *ignores* the subject the CSR asks for and
//! writes the node's identity itself, as Docker Swarm does:
//!
//! | field | value |
//! |---|---|
//! | CN | node ID (25 base36 characters) |
//! | OU | role: `swarm-manager` or `swarm-worker` |
//! | O  | cluster ID |
//!
//! [`parse_node_cert`] reads that identity back ([`NodeIdentity`]); peers trust
//! each other by the chain to the root plus these fields, never by host name.
//! [`renewal_instant`] / [`should_renew`] say when a node cert is due for renewal.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Common name of the root CA certificate made by [`RootCa::generate`].
pub const ROOT_CA_CN: &str = "shoal-root-ca";
/// Validity of a new root CA: 20 years.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Default validity of a node certificate (Swarm's default): 90 days.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// OU of a manager node's certificate.
pub const MANAGER_OU: &str = "swarm-manager";
/// OU of a worker node's certificate.
pub const WORKER_OU: &str = "swarm-worker";

/// Certificates start this long before the moment they are issued, so a peer
/// whose clock is a little behind does not see a "not yet valid" certificate.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Longest node ID or cluster ID accepted in a certificate.
const MAX_ID_LEN: usize = 64;

/// Errors of the PKI layer.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PEM or DER input could not be read.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being read ("CA certificate", "CSR", ...).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The CSR's signature does not verify with the key it carries.
    #[error("invalid CSR: its signature does not verify")]
    CsrSignature,
    /// A certificate is valid X.509 but not a shoal node certificate.
    #[error("not a node certificate: {0}")]
    NotNodeCert(String),
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn invalid(what: &'static str, reason: impl ToString) -> PkiError {
    PkiError::Invalid {
        what,
        reason: reason.to_string(),
    }
}

/// A node's role, as written in the OU of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the replicated state and votes in Raft (`swarm-manager`).
    Manager,
    /// Runs tasks only (`swarm-worker`).
    Worker,
}

impl Role {
    /// The OU written in the certificate: `swarm-manager` or `swarm-worker`.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => MANAGER_OU,
            Role::Worker => WORKER_OU,
        }
    }

    /// The role whose OU is `ou`, if any.
    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            MANAGER_OU => Some(Role::Manager),
            WORKER_OU => Some(Role::Worker),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manager" | MANAGER_OU => Ok(Role::Manager),
            "worker" | WORKER_OU => Ok(Role::Worker),
            other => Err(format!(
                "unknown role {other:?} (expected manager or worker)"
            )),
        }
    }
}

/// The identity a node certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node ID (the certificate's CN).
    pub node_id: String,
    /// Role (the certificate's OU).
    pub role: Role,
    /// Cluster ID (the certificate's O).
    pub cluster_id: String,
    /// Start of the certificate's validity.
    pub not_before: SystemTime,
    /// End of the certificate's validity.
    pub not_after: SystemTime,
}

impl NodeIdentity {
    /// When this certificate should be renewed; see [`renewal_instant`].
    pub fn renewal_instant(&self) -> SystemTime {
        renewal_instant(self.not_before, self.not_after)
    }

    /// Whether this certificate is due for renewal at `now`; see [`should_renew`].
    pub fn should_renew(&self, now: SystemTime) -> bool {
        should_renew(self.not_before, self.not_after, now)
    }
}

/// The cluster's root certificate authority, as PEM text.
///
/// Build it with [`RootCa::generate`] or [`RootCa::from_pem`] (which checks the
/// pair); the fields are public so the pair can be stored and reloaded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCa {
    /// The self-signed CA certificate (PEM).
    pub cert_pem: String,
    /// The CA's private key (PKCS#8 PEM). Never log it.
    pub key_pem: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl RootCa {
    /// A new root CA: ECDSA P-256 key, CN [`ROOT_CA_CN`], valid for [`ROOT_CA_VALIDITY`].
    pub fn generate() -> Result<RootCa, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, ROOT_CA_CN);
        params.distinguished_name = dn;
        let (not_before, not_after) = validity_window(SystemTime::now(), ROOT_CA_VALIDITY);
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A root CA from stored PEM text. Checks that the certificate is a CA
    /// certificate and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, PkiError> {
        let der = first_cert_der(cert_pem).map_err(|e| invalid("CA certificate", e))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| invalid("CA certificate", e))?;
        if !cert.is_ca() {
            return Err(invalid(
                "CA certificate",
                "basic constraints do not mark it as a CA",
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid("CA key", e))?;
        if key.subject_public_key_info() != cert.tbs_certificate.subject_pki.raw {
            return Err(invalid("CA key", "it does not match the CA certificate"));
        }
        Ok(RootCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// DER of the CA certificate (empty if `cert_pem` is not valid PEM, which
    /// cannot happen for a `RootCa` built by `generate` or `from_pem`).
    pub fn cert_der(&self) -> Vec<u8> {
        first_cert_der(&self.cert_pem).unwrap_or_default()
    }

    /// SHA-256 of the CA certificate's DER.
    pub fn digest_bytes(&self) -> [u8; 32] {
        cert_digest(&self.cert_der())
    }

    /// SHA-256 of the CA certificate's DER, lowercase hex (64 characters).
    /// This is what a join token pins.
    pub fn digest(&self) -> String {
        hex(&self.digest_bytes())
    }

    /// Signs a node's CSR; returns the node certificate (PEM).
    ///
    /// The CSR only proves possession of the key: its signature is verified,
    /// and its subject and extensions are ignored. CN = `node_id`, OU = the
    /// role's OU, O = `cluster_id`, valid from now (back-dated one hour for
    /// clock skew) for `validity`. SANs: the node ID, the role's OU,
    /// `localhost`, 127.0.0.1 and ::1.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.sign_csr_with_sans(csr_pem, node_id, role, cluster_id, validity, &[])
    }

    /// Like [`RootCa::sign_csr`], adding `extra_sans` (IP addresses or DNS
    /// names, e.g. the node's advertise address) chosen by the signer.
    pub fn sign_csr_with_sans(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
        extra_sans: &[String],
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => PkiError::CsrSignature,
            other => invalid("CSR", other),
        })?;
        let params = node_cert_params(node_id, role, cluster_id, validity, extra_sans)?;
        let issuer = self.issuer()?;
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        Ok(cert.pem())
    }

    /// Makes a key pair and a signed certificate for a node in one step (for
    /// the first manager at `init`, which has nobody to send a CSR to).
    pub fn issue_node_cert(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
        extra_sans: &[String],
    ) -> Result<NodeCert, PkiError> {
        let key = NodeKeyPair::generate()?;
        let csr = key.csr_pem()?;
        let cert_pem =
            self.sign_csr_with_sans(&csr, node_id, role, cluster_id, validity, extra_sans)?;
        Ok(NodeCert {
            cert_pem,
            key_pem: key.key_pem(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| invalid("CA key", e))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| invalid("CA certificate", e))
    }
}

/// A node certificate and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    /// The node certificate (PEM).
    pub cert_pem: String,
    /// The node's private key (PKCS#8 PEM). Never log it.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("identity", &parse_node_cert_pem(&self.cert_pem).ok())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn node_cert_params(
    node_id: &str,
    role: Role,
    cluster_id: &str,
    validity: Duration,
    extra_sans: &[String],
) -> Result<CertificateParams, PkiError> {
    check_id("node ID", node_id)?;
    check_id("cluster ID", cluster_id)?;
    if validity.is_zero() {
        return Err(invalid("validity", "it must be longer than zero"));
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    dn.push(DnType::OrganizationalUnitName, role.ou());
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    let (not_before, not_after) = validity_window(SystemTime::now(), validity);
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a TLS server (managers) and a TLS client.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;

    let mut sans: Vec<SanType> = Vec::new();
    let mut add = |name: &str| -> Result<(), PkiError> {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.to_string()
                    .try_into()
                    .map_err(|e| invalid("subject alternative name", e))?,
            ),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
        Ok(())
    };
    add(node_id)?;
    add(role.ou())?;
    add("localhost")?;
    add("127.0.0.1")?;
    add("::1")?;
    for name in extra_sans {
        add(name.trim_start_matches('[').trim_end_matches(']'))?;
    }
    params.subject_alt_names = sans;
    Ok(params)
}

/// IDs go into a DNS SAN and a DN: lowercase letters, digits, `-` and `_`.
fn check_id(what: &'static str, id: &str) -> Result<(), PkiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid(
            what,
            format!("{id:?} must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            what,
            format!("{id:?} may hold only lowercase letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

/// A node's own private key (ECDSA P-256), which never leaves the node.
pub struct NodeKeyPair {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeyPair(<redacted>)")
    }
}

impl NodeKeyPair {
    /// A new ECDSA P-256 key pair.
    pub fn generate() -> Result<NodeKeyPair, PkiError> {
        Ok(NodeKeyPair {
            key: KeyPair::generate()?,
        })
    }

    /// A key pair from PKCS#8 PEM.
    pub fn from_pem(key_pem: &str) -> Result<NodeKeyPair, PkiError> {
        Ok(NodeKeyPair {
            key: KeyPair::from_pem(key_pem).map_err(|e| invalid("node key", e))?,
        })
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR (PEM) signed with this key. Its subject is a placeholder: the CA
    /// decides the node's identity.
    pub fn csr_pem(&self) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shoal-node");
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }
}

/// The identity in a node certificate given as DER.
///
/// Only reads the certificate; it does not check who signed it (the TLS layer
/// does that). Fails when CN, OU or O is missing or OU is not a known role.
pub fn parse_node_cert(der: &[u8]) -> Result<NodeIdentity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| invalid("certificate", e))?;
    let subject = cert.subject();
    let node_id = single_attr("CN", subject.iter_common_name())?;
    let ou = single_attr("OU", subject.iter_organizational_unit())?;
    let cluster_id = single_attr("O", subject.iter_organization())?;
    let role = Role::from_ou(&ou)
        .ok_or_else(|| PkiError::NotNodeCert(format!("unknown role OU {ou:?}")))?;
    let validity = cert.validity();
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
        not_before: unix_to_system(validity.not_before.timestamp()),
        not_after: unix_to_system(validity.not_after.timestamp()),
    })
}

fn single_attr<'a, 'b: 'a>(
    what: &str,
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
) -> Result<String, PkiError> {
    let attr = attrs
        .next()
        .ok_or_else(|| PkiError::NotNodeCert(format!("the subject has no {what}")))?;
    let value = attr
        .as_str()
        .map_err(|_| PkiError::NotNodeCert(format!("the subject's {what} is not a string")))?;
    if attrs.next().is_some() {
        return Err(PkiError::NotNodeCert(format!(
            "the subject has more than one {what}"
        )));
    }
    Ok(value.to_string())
}

/// The identity in a node certificate given as PEM (the first certificate).
pub fn parse_node_cert_pem(pem: &str) -> Result<NodeIdentity, PkiError> {
    let der = first_cert_der(pem).map_err(|e| invalid("certificate", e))?;
    parse_node_cert(&der)
}

/// When a certificate valid from `not_before` to `not_after` should be
/// renewed: a random point between 50% and 80% of its validity (as Docker
/// Swarm does), so that nodes issued together do not all renew at once.
pub fn renewal_instant(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let fraction = 0.5 + 0.3 * rand::random::<f64>();
    not_before + total.mul_f64(fraction)
}

/// Whether a certificate valid from `not_before` to `not_after` is due for
/// renewal at `now`: true once half (or more) of its validity has elapsed,
/// i.e. less than half remains, and of course once it has expired.
pub fn should_renew(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    now >= not_before + total / 2
}

/// SHA-256 of a certificate's DER.
pub fn cert_digest(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// All certificates in a PEM text, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(invalid("certificate PEM", "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// PEM text of one DER certificate.
pub fn cert_der_to_pem(der: &[u8]) -> String {
    const LINE: usize = 64;
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    Ok(certs_from_pem(pem)?.swap_remove(0).to_vec())
}

fn validity_window(now: SystemTime, validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    (
        OffsetDateTime::from(not_before),
        OffsetDateTime::from(now + validity),
    )
}

/// 20 random bytes with the top bit clear: a positive serial of at most 20 octets.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 20];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "0123456789abcdefghijklmno";
    const CLUSTER: &str = "zyxwvutsrqponmlkjihgfedcb";

    #[test]
    fn root_ca_is_p256_ca_with_name() {
        let ca = RootCa::generate().unwrap();
        let der = ca.cert_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), ROOT_CA_CN);
        // ~20 years of validity.
        let v = cert.validity();
        let years = (v.not_after.timestamp() - v.not_before.timestamp()) / (365 * 24 * 3600);
        assert_eq!(years, 20);
        assert_eq!(
            cert.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        assert_eq!(ca.digest().len(), 64);
        assert_eq!(ca.digest(), hex(&cert_digest(&der)));
    }

    #[test]
    fn from_pem_checks_the_pair() {
        let ca = RootCa::generate().unwrap();
        let again = RootCa::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(again.digest(), ca.digest());
        let other = RootCa::generate().unwrap();
        let err = RootCa::from_pem(&ca.cert_pem, &other.key_pem).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // A node cert is not a CA.
        let node = ca
            .issue_node_cert(NODE, Role::Worker, CLUSTER, DEFAULT_NODE_CERT_VALIDITY, &[])
            .unwrap();
        assert!(RootCa::from_pem(&node.cert_pem, &node.key_pem).is_err());
        assert!(RootCa::from_pem("garbage", &ca.key_pem).is_err());
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn sign_csr_sets_identity_and_ignores_requested_subject() {
        let ca = RootCa::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        // A CSR asking for someone else's identity.
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "some-other-node");
        dn.push(DnType::OrganizationalUnitName, MANAGER_OU);
        dn.push(DnType::OrganizationName, "other-cluster");
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let validity = Duration::from_secs(7 * 24 * 3600);
        let pem = ca
            .sign_csr_with_sans(
                &csr,
                NODE,
                Role::Worker,
                CLUSTER,
                validity,
                &["10.1.2.3".into(), "node1.lan".into()],
            )
            .unwrap();
        let id = parse_node_cert_pem(&pem).unwrap();
        assert_eq!(id.node_id, NODE);
        assert_eq!(id.role, Role::Worker);
        assert_eq!(id.cluster_id, CLUSTER);
        let span = id.not_after.duration_since(id.not_before).unwrap();
        assert_eq!(span, validity + BACKDATE);

        let der = certs_from_pem(&pem).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        // The certificate's key is the CSR's key.
        assert_eq!(
            cert.tbs_certificate.subject_pki.raw,
            key.subject_public_key_info().as_slice()
        );
        // Issued by our CA and signed by it.
        let ca_der = ca.cert_der();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        // SANs: ours, not the CSR's.
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains(NODE)), "{names:?}");
        // x509-parser shows IP addresses as hex octets.
        assert!(names.iter().any(|n| n.contains("0a:01:02:03")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("node1.lan")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("evil")), "{names:?}");
    }

    #[test]
    fn sign_csr_refuses_bad_input() {
        let ca = RootCa::generate().unwrap();
        let csr = NodeKeyPair::generate().unwrap().csr_pem().unwrap();
        let v = DEFAULT_NODE_CERT_VALIDITY;
        assert!(ca.sign_csr("nope", NODE, Role::Worker, CLUSTER, v).is_err());
        assert!(ca.sign_csr(&csr, "", Role::Worker, CLUSTER, v).is_err());
        assert!(ca
            .sign_csr(&csr, "Bad ID", Role::Worker, CLUSTER, v)
            .is_err());
        assert!(ca.sign_csr(&csr, NODE, Role::Worker, "", v).is_err());
        assert!(ca
            .sign_csr(&csr, NODE, Role::Worker, CLUSTER, Duration::ZERO)
            .is_err());

        // A CSR whose signature was tampered with.
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap();
        let mut bytes = der.as_ref().to_vec();
        let at = bytes
            .windows(10)
            .position(|w| w == b"shoal-node")
            .expect("the CSR carries its placeholder CN");
        bytes[at + 9] = b'f';
        let tampered = pem_block("CERTIFICATE REQUEST", &bytes);
        let err = ca
            .sign_csr(&tampered, NODE, Role::Worker, CLUSTER, v)
            .unwrap_err();
        assert!(matches!(err, PkiError::CsrSignature), "{err}");
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        cert_der_to_pem(der).replace("CERTIFICATE", label)
    }

    #[test]
    fn node_key_round_trip_and_manager_role() {
        let ca = RootCa::generate().unwrap();
        let key = NodeKeyPair::generate().unwrap();
        let key2 = NodeKeyPair::from_pem(&key.key_pem()).unwrap();
        assert_eq!(key.key_pem(), key2.key_pem());
        let pem = ca
            .sign_csr(
                &key2.csr_pem().unwrap(),
                NODE,
                Role::Manager,
                CLUSTER,
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let id = parse_node_cert_pem(&pem).unwrap();
        assert_eq!(id.role, Role::Manager);
        // The CA certificate itself is not a node certificate.
        assert!(matches!(
            parse_node_cert(&ca.cert_der()),
            Err(PkiError::NotNodeCert(_))
        ));
    }

    #[test]
    fn pem_der_round_trip() {
        let ca = RootCa::generate().unwrap();
        let der = ca.cert_der();
        let pem = cert_der_to_pem(&der);
        assert_eq!(certs_from_pem(&pem).unwrap()[0].as_ref(), der.as_slice());
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
    }

    #[test]
    fn renewal_timing() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(1000);
        for _ in 0..100 {
            let at = renewal_instant(nb, na);
            assert!(at >= nb + Duration::from_secs(500), "{at:?}");
            assert!(at <= nb + Duration::from_secs(800), "{at:?}");
        }
        assert!(!should_renew(nb, na, nb + Duration::from_secs(100)));
        assert!(!should_renew(nb, na, nb + Duration::from_secs(499)));
        assert!(should_renew(nb, na, nb + Duration::from_secs(500)));
        assert!(should_renew(nb, na, na + Duration::from_secs(5)));
    }

    #[test]
    fn role_names() {
        assert_eq!(Role::Manager.ou(), "swarm-manager");
        assert_eq!(Role::Worker.ou(), "swarm-worker");
        assert_eq!("manager".parse::<Role>().unwrap(), Role::Manager);
        assert_eq!("swarm-worker".parse::<Role>().unwrap(), Role::Worker);
        assert!("boss".parse::<Role>().is_err());
        assert_eq!(Role::Worker.to_string(), "worker");
    }
}
