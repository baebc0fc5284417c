//! TLS termination: a certificate and key loaded from PEM files, swapped in place when the
//! files change, offered with ALPN `h2` and `http/1.1`.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    /// rustls refused the key.
    #[error("{path}: unusable private key: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The certificate a TLS listener serves, replaceable while connections are open.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the certificate chain and key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let key = certified_key(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// The files this store reads, to watch for changes.
    pub fn files(&self) -> [&Path; 2] {
        [&self.cert_file, &self.key_file]
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// An acceptor serving this store's certificate with ALPN `h2` and `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(read(cert_file)?.as_slice()))
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_owned()));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(read(key_file)?.as_slice()))
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(key_file.to_owned()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| TlsError::Key {
        path: key_file.to_owned(),
        source,
    })?;
    Ok(CertifiedKey::new(certs, signing_key))
}
