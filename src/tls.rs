//! TLS for both doors (rustls, ring provider): certificate and key from PEM files,
//! optional client-certificate verification (mutual TLS), and reload without a restart.
//!
//! The live `rustls::ServerConfig`s (one per door: they differ in ALPN) sit behind a lock
//! and every accepted connection takes the current one, so a reload affects new
//! connections only and a failed reload leaves the old configuration in force.
//! `incoming` turns a `TcpListener` into a stream of finished handshakes; handshakes run
//! in their own tasks, so a slow or silent peer holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take before the connection is dropped (a plaintext or
/// silent client must not hold a socket forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle client certificates must chain to; `None`: no client certificates asked.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }
}

/// Why the TLS files could not be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which flag's file (`--tls-cert`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("cannot use {cert} with {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's complaint.
        reason: String,
    },
}

/// Which door a configuration is for (they differ in the ALPN protocols offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The HTTP API: HTTP/1.1 (the axum server is built without HTTP/2).
    Http,
}

#[derive(Debug)]
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

/// The live TLS configuration and the files it comes from; cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    current: Arc<RwLock<Arc<Configs>>>,
}

impl TlsReloader {
    /// Loads the files; the error names the one at fault.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let configs = build(&files)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(Arc::new(configs))),
        })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again; on error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(configs);
        Ok(())
    }

    /// The configuration a connection accepted now gets.
    pub fn config(&self, door: Door) -> Arc<ServerConfig> {
        let current = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        match door {
            Door::Grpc => Arc::clone(&current.grpc),
            Door::Http => Arc::clone(&current.http),
        }
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    // Read first so a missing file says so, not "no PEM section".
    let pem = std::fs::read(path).map_err(|e| file_error(what, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("--tls-cert", &files.cert)?;
    let pem = std::fs::read(&files.key).map_err(|e| file_error("--tls-key", &files.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        file_error(
            "--tls-key",
            &files.key,
            format!("no usable PEM private key ({e})"),
        )
    })?;
    let config_error = |reason: String| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("--tls-client-ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("--tls-client-ca", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_error("--tls-client-ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // `with_single_cert` checks that the key belongs to the certificate.
    let mut grpc = builder
        .with_single_cert(certs, key)
        .map_err(|e| config_error(e.to_string()))?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
    })
}

/// A file's identity for change detection: modification time and length.
pub fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Finished TLS handshakes on one listener, with the peer's address.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: std::io::Result<SocketAddr>,
}

/// Accepts on `listener` until `shutdown`, handshaking each connection with the current
/// configuration for `door`. Failed handshakes (a plaintext client, a refused client
/// certificate, a timeout) close that connection and are logged at debug.
pub fn incoming(
    listener: TcpListener,
    tls: TlsReloader,
    door: Door,
    shutdown: CancellationToken,
) -> TlsIncoming {
    let local_addr = listener.local_addr();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // As on the plaintext door: Nagle would delay small frames.
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config(door));
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming { rx, local_addr }
}

impl TlsIncoming {
    /// The next connection; `None` once the listener has stopped.
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.rx.recv().await
    }

    /// The listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.local_addr {
            Ok(addr) => Ok(*addr),
            Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
        }
    }

    /// As a stream of connections, the shape tonic's `serve_with_incoming` takes.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        futures::stream::unfold(self, |mut incoming| async move {
            let (stream, _) = incoming.next().await?;
            Some((Ok(stream), incoming))
        })
    }
}
