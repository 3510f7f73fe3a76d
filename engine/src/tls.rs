//! HTTPS for the servers Phoenix runs (`phoenix serve --tls-cert/--tls-key`, the `http`
//! source's `tls_cert`/`tls_key`): rustls over tokio-rustls, both already in the tree through
//! the AWS SDK and kube, with the aws-lc-rs provider those link.

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake; a stalled one is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS {what} {path} holds no PEM {expected}")]
    Pem { what: &'static str, path: String, expected: &'static str },
    #[error("the TLS certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, as the servers speak nothing else.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.display().to_string(), source })
    };
    let cert_pem = read("certificate", cert)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::Pem { what: "certificate", path: cert.display().to_string(), expected: "CERTIFICATE" });
    }
    let key_pem = read("key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        what: "key",
        path: key.display().to_string(),
        expected: "PRIVATE KEY",
    })?;
    // Explicitly aws-lc-rs: ring is linked too (through elasticsearch's reqwest), so rustls has
    // no process-wide default to fall back on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate a [`TlsListener`] presents, replaceable while it listens: the next version
/// of a flow that takes an `http` source's socket over brings its own (a renewed certificate is
/// picked up by replacing the flow). Each handshake uses the one current when it starts.
#[derive(Debug, Clone)]
pub struct Certificate(Arc<Mutex<Arc<rustls::ServerConfig>>>);

impl Certificate {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Certificate {
        Certificate(Arc::new(Mutex::new(config)))
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// A TCP listener whose connections are TLS: an [`axum::serve`] listener. Handshakes run in
/// their own tasks, so a slow client holds up no one else; a failed one is logged at debug
/// and dropped. Dropping the listener stops accepting (and closes the port).
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, certificate: Certificate) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off as axum does.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (certificate.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task holds the sender until it is aborted, which only `drop` does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
