//! TLS to the admin API: the flags (`--tls-ca`, `--tls-cert`, `--tls-key`)
//! and the rustls configuration tonic gets for an `https://` server.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::connection::{exit, Failure};

/// How to reach an `https://` admin API.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsFlags {
    /// PEM CA certificate(s) that signed the admin API's certificate
    /// (default: the system's roots). For an https:// --server.
    #[arg(long, global = true, env = "CHAT_ADMIN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for gateways that require one
    /// (--admin-tls-client-ca). Needs --tls-key.
    #[arg(long, global = true, env = "CHAT_ADMIN_TLS_CLIENT_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "CHAT_ADMIN_TLS_CLIENT_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsFlags {
    /// The TLS configuration for `server`: `None` for an `http://` URL
    /// (where TLS flags are refused, so they are not silently ignored).
    pub(crate) fn client_config(&self, server: &str) -> Result<Option<ClientTlsConfig>, Failure> {
        let usage = |message: String| Failure {
            code: exit::USAGE,
            message,
        };
        let any_flag = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        if !server.starts_with("https://") {
            if any_flag {
                return Err(usage(format!(
                    "--tls-ca, --tls-cert and --tls-key need an https:// --server (got {server:?})"
                )));
            }
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
            None => tls.with_native_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--tls-cert")?,
                    read(key, "--tls-key")?,
                ));
            }
            (None, None) => {}
            _ => return Err(usage("--tls-cert and --tls-key go together".into())),
        }
        Ok(Some(tls))
    }
}

/// A file's bytes, or a usage failure naming the flag.
fn read(path: &Path, flag: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure {
        code: exit::USAGE,
        message: format!("{flag}: reading {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_no_tls_and_refuses_tls_flags() {
        assert!(TlsFlags::default()
            .client_config("http://127.0.0.1:9090")
            .unwrap()
            .is_none());
        let flags = TlsFlags {
            tls_ca: Some("/ca.pem".into()),
            ..TlsFlags::default()
        };
        let failure = flags.client_config("http://127.0.0.1:9090").unwrap_err();
        assert_eq!(failure.code, exit::USAGE);
    }

    #[test]
    fn https_reads_the_named_files() {
        let flags = TlsFlags {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFlags::default()
        };
        let failure = flags.client_config("https://127.0.0.1:9090").unwrap_err();
        assert_eq!(failure.code, exit::USAGE);
        assert!(failure.message.contains("/nonexistent/ca.pem"), "{failure}");
        let half = TlsFlags {
            tls_cert: Some("/c.pem".into()),
            ..TlsFlags::default()
        };
        assert!(half.client_config("https://h:1").is_err());
        assert!(TlsFlags::default()
            .client_config("https://h:1")
            .unwrap()
            .is_some());
    }
}
