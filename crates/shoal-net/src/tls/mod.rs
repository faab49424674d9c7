//! Mutual TLS between shoal nodes (rustls, ring provider).
//!
//! Trust model: every node certificate is signed by the cluster's root CA and
//! carries the node's identity (CN node ID, OU role, O cluster ID; see
//! [`crate::pki`]). Nodes are addressed by `IP:port`, so **no host name is
//! checked**: a peer is trusted when its certificate chains to our root, and
//! the client additionally requires the server to be a manager
//! (OU `swarm-manager`).
//!
//! * [`server_config`]: presents the node cert (followed by the root CA
//!   certificate, so a joining node can pin the root by the token digest);
//!   client certificates are optional (a joining node has none yet) but one
//!   that is presented must chain to our root, or the handshake fails.
//!   Serve it with [`TlsIncoming`], whose connections tell tonic each peer's
//!   [`PeerInfo`].
//! * [`client_config`]: verifies the server chains to our root and is a
//!   manager; presents the node cert if given. Dial with [`connect_channel`].
//! * Joining: [`pinned_client_config`] trusts exactly the root CA whose SHA-256
//!   the join token carries, found in the chain the manager presents, and
//!   captures that chain so the joiner can keep the root
//!   ([`ChainCapture::root_matching`]). The secret is sent only over such a
//!   verified connection. [`bootstrap_client_config`] accepts any server (it
//!   only captures the chain) for a "fetch the root CA, compare its digest"
//!   step done by the caller.
//! * Rotation: [`ReloadableCert`] is the certificate source of both configs
//!   built by [`server_config_with_cert`] / [`client_config_with_cert`]; call
//!   [`ReloadableCert::replace`] after a renewal and new handshakes use the new
//!   certificate without restarting listeners or channels.

mod connector;
mod incoming;
mod reload;
mod verify;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use connector::{
    connect_channel, connect_channel_with_keepalive, endpoint, TlsConnector, CONNECT_TIMEOUT,
    SERVER_NAME,
};
pub use incoming::{PeerInfo, TlsConn, TlsIncoming, HANDSHAKE_TIMEOUT};
pub use reload::ReloadableCert;
pub use verify::{ChainCapture, NodeServerVerifier};

use crate::pki::{certs_from_pem, PkiError, Role};

/// ALPN protocol offered and accepted: HTTP/2, which gRPC runs on.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol of the Raft replication stream ([`crate::frame`]), served
/// beside gRPC on the same port ([`TlsIncoming::with_side_door`]).
pub const ALPN_RAFT: &[u8] = b"shoal-raft/1";

/// `config` offering only the ALPN protocol `alpn` instead of `h2`.
pub fn with_alpn(config: &ClientConfig, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut c = config.clone();
    c.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(c)
}

/// Errors building TLS configurations or channels.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key could not be read.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The private key could not be read.
    #[error("invalid private key: {0}")]
    Key(String),
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. no usable root).
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A join token's CA digest is not 64 hex characters.
    #[error("invalid CA digest {0:?}: expected 64 hex characters")]
    Digest(String),
    /// An address could not be made into an endpoint URI.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The crypto provider used everywhere: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding every certificate of `root_ca_pem`.
pub fn root_store(root_ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(root_ca_pem)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// Server configuration for a node: presents `node_cert_pem` (plus the root),
/// accepts clients without a certificate, and refuses at the handshake any
/// client certificate that does not chain to `root_ca_pem`. ALPN `h2`.
pub fn server_config(
    root_ca_pem: &str,
    node_cert_pem: &str,
    node_key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = ReloadableCert::new(root_ca_pem, node_cert_pem, node_key_pem)?;
    server_config_with_cert(root_ca_pem, cert)
}

/// Like [`server_config`], with the certificate taken from `cert` at each
/// handshake (so [`ReloadableCert::replace`] takes effect for new connections).
pub fn server_config_with_cert(
    root_ca_pem: &str,
    cert: Arc<ReloadableCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(root_ca_pem)?, provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_RAFT.to_vec()];
    // No session resumption: a resumed session would carry the identity of the
    // certificate from its first handshake, hiding a renewal or role change.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client configuration for talking to managers: the server must chain to
/// `root_ca_pem` and have OU `swarm-manager`; its host name is not checked.
/// With `identity = Some((cert_pem, key_pem))` the node presents its cert.
pub fn client_config(
    root_ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let cert = match identity {
        Some((cert_pem, key_pem)) => Some(ReloadableCert::new(root_ca_pem, cert_pem, key_pem)?),
        None => None,
    };
    client_config_with_cert(root_ca_pem, cert)
}

/// Like [`client_config`], with the client certificate (if any) taken from
/// `cert` at each handshake.
pub fn client_config_with_cert(
    root_ca_pem: &str,
    cert: Option<Arc<ReloadableCert>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = NodeServerVerifier::new(root_store(root_ca_pem)?, Some(Role::Manager));
    Ok(build_client_config(provider, Arc::new(verifier), cert))
}

/// Client configuration for node-to-node calls to any node (manager or
/// worker): the server must chain to `root_ca_pem`; its role is not checked.
pub fn peer_client_config(
    root_ca_pem: &str,
    cert: Option<Arc<ReloadableCert>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = NodeServerVerifier::new(root_store(root_ca_pem)?, None);
    Ok(build_client_config(provider(), Arc::new(verifier), cert))
}

/// Client configuration for a joining node's first contact: trusts only a
/// server whose presented chain contains the root CA with SHA-256
/// `ca_digest_hex` (from the join token), whose leaf chains to that root and
/// is a manager. The returned [`ChainCapture`] holds the chain of the last
/// successful handshake; [`ChainCapture::root_matching`] gives the root's PEM.
pub fn pinned_client_config(
    ca_digest_hex: &str,
) -> Result<(Arc<ClientConfig>, ChainCapture), TlsError> {
    let digest = parse_digest(ca_digest_hex)?;
    let capture = ChainCapture::default();
    let verifier = verify::PinnedCaVerifier::new(digest, capture.clone());
    Ok((
        build_client_config(provider(), Arc::new(verifier), None),
        capture,
    ))
}

/// Client configuration that accepts **any** server certificate (the server
/// must still prove it holds the key of the certificate it shows) and captures
/// the presented chain. Only for fetching the root CA before the caller checks
/// its digest against the join token; never send a secret over it.
pub fn bootstrap_client_config() -> (Arc<ClientConfig>, ChainCapture) {
    let capture = ChainCapture::default();
    let verifier = verify::CaptureAnyVerifier::new(capture.clone());
    (
        build_client_config(provider(), Arc::new(verifier), None),
        capture,
    )
}

fn build_client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    cert: Option<Arc<ReloadableCert>>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every handshake verifies the server afresh (see server_config_with_cert).
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn parse_digest(hex_digest: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::Digest(hex_digest.to_string());
    let s = hex_digest.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Server configuration for the Docker API on TCP (`--docker-tcp` with
/// `--docker-tlscert/--docker-tlskey`): presents the given certificate; with
/// `client_ca_pem` (`--docker-tlscacert`, Docker's `--tlsverify`) every
/// client must present a certificate that chains to it. HTTP/1.1.
pub fn docker_api_server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let provider = provider();
    let chain = certs_from_pem(cert_pem)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(root_store(ca)?, provider).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parsing() {
        let hex = "00ff".repeat(16);
        let d = parse_digest(&hex).unwrap();
        assert_eq!(d[0], 0);
        assert_eq!(d[1], 0xff);
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest(&"zz".repeat(32)).is_err());
    }
}
