//! TLS: the gateway's HTTPS/WSS listener (`--tls-cert`/`--tls-key`) and the
//! admin gRPC API's (`--admin-tls-*`). rustls only, with the ring provider.
//!
//! The listener's certificate sits behind a resolver whose key pair is
//! swapped on SIGHUP: a connection keeps the keys it negotiated, only new
//! handshakes see the new certificate, and a reload that fails (a missing
//! file, a key that does not match) keeps the old one and logs an error.
//! A reload also forgets the sessions clients could resume: a resumed session
//! skips the certificate, so it would stretch the old one's life.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// The TLS flags of the gateway (part of [`Config`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFlags {
    /// PEM certificate chain (leaf first): serve HTTPS and WSS instead of
    /// plain HTTP. Reloaded with the key on SIGHUP. Needs --tls-key.
    #[arg(long, env = "CHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain of the admin gRPC API: serve it over TLS
    /// (`https://`). Needs --admin-tls-key.
    #[arg(long, env = "CHAT_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of --admin-tls-cert.
    #[arg(long, env = "CHAT_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): the admin API requires a client certificate
    /// signed by one of them. Only with --admin-tls-cert.
    #[arg(long, env = "CHAT_ADMIN_TLS_CLIENT_CA")]
    pub admin_tls_client_ca: Option<PathBuf>,

    /// PEM CA certificate(s) that signed the Redis server's certificate, for
    /// a `rediss://` --redis URL (default: the system's roots).
    #[arg(long, env = "CHAT_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// Refuses a certificate without its key (and the reverse), and a client
    /// CA without an admin certificate.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let pairs = [
            (
                self.tls_cert.is_some(),
                self.tls_key.is_some(),
                "--tls-cert",
                "--tls-key",
            ),
            (
                self.admin_tls_cert.is_some(),
                self.admin_tls_key.is_some(),
                "--admin-tls-cert",
                "--admin-tls-key",
            ),
        ];
        for (cert, key, cert_flag, key_flag) in pairs {
            if cert != key {
                return Err(format!("{cert_flag} and {key_flag} go together"));
            }
        }
        if self.admin_tls_client_ca.is_some() && self.admin_tls_cert.is_none() {
            return Err("--admin-tls-client-ca needs --admin-tls-cert and --admin-tls-key".into());
        }
        Ok(())
    }
}

/// The gateway listener's TLS: the acceptor every connection goes through,
/// and where its certificate comes from.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    /// The acceptor's certificate, swapped by [`Tls::reload`].
    resolver: Arc<Reloadable>,
    /// The acceptor's resumable sessions, emptied by [`Tls::reload`].
    sessions: Arc<Sessions>,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Loads `cert` (a PEM chain, leaf first) and `key` (a PEM private key).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let provider = Arc::new(provider());
        let resolver = Arc::new(Reloadable {
            current: RwLock::new(Arc::new(certified_key(cert, key, &provider)?)),
        });
        let sessions = Arc::new(Sessions::new());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // Only HTTP/1.1 is served (the WebSocket upgrade needs it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = sessions.clone();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            sessions,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the certificate and key files again; on success new handshakes
    /// use them, on failure the current ones stay.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.cert, &self.key, &provider())?;
        *self.resolver.current.write() = Arc::new(fresh);
        *self.sessions.cache.write() = ServerSessionMemoryCache::new(SESSIONS);
        Ok(())
    }
}

/// Reloads `tls` on every SIGHUP until `stop` is cancelled.
pub(crate) async fn reload_on_sighup(tls: Arc<Tls>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP: the tls certificate will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hangup.recv() => if got.is_none() { return },
        }
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.cert.display(), "SIGHUP: tls certificate reloaded")
            }
            Err(e) => {
                tracing::error!("SIGHUP: tls certificate not reloaded, the old one stays: {e}");
            }
        }
    }
}

/// The certificate every handshake gets; the lock is held only to clone an
/// `Arc` (a plain `RwLock`: no await, readers on every handshake).
struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reloadable")
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// Sessions kept for resumption (rustls' default).
const SESSIONS: usize = 256;

/// rustls' session cache, replaced by an empty one on reload (a plain
/// `RwLock`: held to clone an `Arc` or to call into the cache, no await).
#[derive(Debug)]
struct Sessions {
    cache: RwLock<Arc<dyn StoresServerSessions>>,
}

impl Sessions {
    fn new() -> Self {
        Self {
            cache: RwLock::new(ServerSessionMemoryCache::new(SESSIONS)),
        }
    }

    fn current(&self) -> Arc<dyn StoresServerSessions> {
        self.cache.read().clone()
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.current().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// The crypto provider of every TLS config here, named explicitly rather
/// than left to a process-wide default.
#[expect(
    deprecated,
    reason = "ring builds with a C compiler alone; its lack of post-quantum key exchange is accepted"
)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        format!(
            "the key {} does not fit the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the certificates {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The admin API's TLS, when `--admin-tls-cert` is set: its identity and,
/// with `--admin-tls-client-ca`, a client certificate required and checked.
pub(crate) fn admin_tls(
    config: &Config,
) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let flags = &config.tls;
    let (Some(cert), Some(key)) = (&flags.admin_tls_cert, &flags.admin_tls_key) else {
        return Ok(None);
    };
    // Checked here too, so that a bad file is named rather than reported by tonic.
    certified_key(cert, key, &provider())?;
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &flags.admin_tls_client_ca {
        read_certs(ca)?;
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Loads every TLS file the configuration names, so that a missing or bad
/// one is reported before anything starts (the binary exits 64).
pub fn check_tls_files(config: &Config) -> Result<(), String> {
    if let (Some(cert), Some(key)) = (&config.tls.tls_cert, &config.tls.tls_key) {
        Tls::load(cert, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    }
    admin_tls(config).map_err(|e| format!("--admin-tls-cert/--admin-tls-key: {e}"))?;
    if let Some(ca) = &config.tls.redis_tls_ca {
        let rediss = config
            .redis
            .as_deref()
            .or(config.redis_cluster.as_deref())
            .is_some_and(|url| url.trim_start().starts_with("rediss://"));
        if !rediss {
            return Err(
                "--redis-tls-ca needs a rediss:// --redis url (or --redis-cluster seeds)".into(),
            );
        }
        read_certs(ca).map_err(|e| format!("--redis-tls-ca: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let err = Tls::load(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .err()
        .unwrap();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_certs(&empty).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
    }
}
