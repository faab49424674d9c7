//! Server certificate verifiers for the client side: chain to our root with no
//! host-name check, pinned-by-digest for joining, and accept-and-capture.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::provider;
use crate::pki::{cert_der_to_pem, cert_digest, hex, parse_node_cert, Role};

/// Verifies that a server certificate chains to our root CA and (optionally)
/// carries a given role. The name the client dialled is ignored: nodes are
/// addressed by IP:port and identified by the fields of their certificate.
pub struct NodeServerVerifier {
    roots: Arc<RootCertStore>,
    role: Option<Role>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for NodeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeServerVerifier")
            .field("roots", &self.roots.len())
            .field("role", &self.role)
            .finish()
    }
}

impl NodeServerVerifier {
    /// A verifier trusting `roots`; with `role`, the server's OU must match.
    pub fn new(roots: Arc<RootCertStore>, role: Option<Role>) -> NodeServerVerifier {
        NodeServerVerifier {
            roots,
            role,
            provider: provider(),
        }
    }
}

/// Chain check against `roots` (validity period, signatures, serverAuth EKU)
/// plus the node identity check; no host name.
fn verify_node_chain(
    roots: &RootCertStore,
    role: Option<Role>,
    provider: &CryptoProvider,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), Error> {
    let parsed = ParsedCertificate::try_from(end_entity)?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )?;
    let identity = parse_node_cert(end_entity.as_ref()).map_err(|e| {
        tracing::debug!(error = %e, "server certificate is not a node certificate");
        Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    })?;
    if let Some(role) = role {
        if identity.role != role {
            tracing::debug!(
                node = %identity.node_id,
                role = %identity.role,
                "server certificate does not have the required role {role}"
            );
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
    }
    Ok(())
}

fn tls12_sig(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls13_sig(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        verify_node_chain(
            &self.roots,
            self.role,
            &self.provider,
            end_entity,
            intermediates,
            now,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_sig(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain a server presented in the last handshake that got
/// as far as certificate verification (leaf first).
#[derive(Clone, Default)]
pub struct ChainCapture {
    chain: Arc<Mutex<Option<Vec<CertificateDer<'static>>>>>,
}

impl fmt::Debug for ChainCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.chain().map(|c| c.len());
        f.debug_struct("ChainCapture").field("certs", &len).finish()
    }
}

impl ChainCapture {
    /// The captured chain, leaf first; None before any handshake.
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// PEM of the certificate in the captured chain whose SHA-256 is
    /// `ca_digest_hex` (the join token's digest), if the server presented it.
    pub fn root_matching(&self, ca_digest_hex: &str) -> Option<String> {
        self.chain()?
            .iter()
            .find(|c| hex(&cert_digest(c.as_ref())).eq_ignore_ascii_case(ca_digest_hex.trim()))
            .map(|c| cert_der_to_pem(c.as_ref()))
    }

    fn store(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
    }
}

/// Trusts exactly the root whose SHA-256 is pinned, found among the
/// certificates the server presents; the leaf must chain to it and be a manager.
pub(super) struct PinnedCaVerifier {
    digest: [u8; 32],
    capture: ChainCapture,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedCaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedCaVerifier")
            .field("digest", &hex(&self.digest))
            .finish()
    }
}

impl PinnedCaVerifier {
    pub(super) fn new(digest: [u8; 32], capture: ChainCapture) -> PinnedCaVerifier {
        PinnedCaVerifier {
            digest,
            capture,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(root) = intermediates
            .iter()
            .find(|c| cert_digest(c.as_ref()) == self.digest)
        else {
            return Err(Error::General(
                "the manager did not present the root CA pinned by the join token".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| cert_digest(c.as_ref()) != self.digest)
            .cloned()
            .collect();
        verify_node_chain(
            &roots,
            Some(Role::Manager),
            &self.provider,
            end_entity,
            &others,
            now,
        )?;
        self.capture.store(end_entity, intermediates);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_sig(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any server certificate and records the chain. Handshake signatures
/// are still verified, so the server holds the key of the leaf it showed.
pub(super) struct CaptureAnyVerifier {
    capture: ChainCapture,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for CaptureAnyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptureAnyVerifier")
    }
}

impl CaptureAnyVerifier {
    pub(super) fn new(capture: ChainCapture) -> CaptureAnyVerifier {
        CaptureAnyVerifier {
            capture,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for CaptureAnyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.capture.store(end_entity, intermediates);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_sig(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
