//! A node certificate that can be swapped while listeners and channels run.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{provider, TlsError};
use crate::pki::{certs_from_pem, parse_node_cert, NodeIdentity};

/// The node's current certificate and key, used by both the server and the
/// client side. Each TLS handshake reads the current value, so
/// [`ReloadableCert::replace`] (after a renewal) takes effect for every new
/// connection at once; established connections keep their session.
///
/// The chain presented is the node certificate followed by the root CA
/// certificate (a joining node pins the root by digest from that chain).
pub struct ReloadableCert {
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    root_chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// A holder presenting `cert_pem` (the node certificate, leaf first) with
    /// `key_pem` (PKCS#8, SEC1 or PKCS#1 PEM), followed by the certificates of
    /// `root_ca_pem`. Fails if the key does not match the certificate.
    pub fn new(
        root_ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Arc<ReloadableCert>, TlsError> {
        let root_chain = certs_from_pem(root_ca_pem)?;
        let key = certified_key(cert_pem, key_pem, &root_chain)?;
        Ok(Arc::new(ReloadableCert {
            current: RwLock::new(Current { key, root_chain }),
        }))
    }

    /// Replaces the node certificate and key (e.g. after renewal), keeping the
    /// root CA. On error the current certificate stays in use.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let root_chain = self.read().root_chain.clone();
        let key = certified_key(cert_pem, key_pem, &root_chain)?;
        self.write().key = key;
        Ok(())
    }

    /// Replaces the root CA certificate(s) appended to the chain as well as the
    /// node certificate and key.
    pub fn replace_with_root(
        &self,
        root_ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), TlsError> {
        let root_chain = certs_from_pem(root_ca_pem)?;
        let key = certified_key(cert_pem, key_pem, &root_chain)?;
        *self.write() = Current { key, root_chain };
        Ok(())
    }

    /// The certified key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// The identity in the current certificate (None if it is not a node cert).
    pub fn identity(&self) -> Option<NodeIdentity> {
        let key = self.current();
        parse_node_cert(key.cert.first()?.as_ref()).ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // A panic while holding the lock cannot leave `Current` half-written
        // (it is replaced whole), so a poisoned lock is still usable.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    root_chain: &[CertificateDer<'static>],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut chain = certs_from_pem(cert_pem)?;
    for root in root_chain {
        if !chain.contains(root) {
            chain.push(root.clone());
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())?;
    // from_der tolerates keys whose public half it cannot derive; ours can.
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadableCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
