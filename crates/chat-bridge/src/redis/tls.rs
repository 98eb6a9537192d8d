//! How the bridge reaches Redis: one server's URL or a Redis Cluster's seed
//! nodes, securely with `rediss://` URLs (TLS with rustls; the server's
//! certificate checked against `--redis-tls-ca` or the system's roots) and
//! AUTH with the URL's `username:password`; errors show the URL without its
//! password.

use std::path::Path;
use std::sync::Arc;

use fred::types::config::{Config, ServerConfig, TlsConnector};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::BridgeError;

/// The fred configuration of a Redis Cluster's seed nodes: `seeds` lists
/// `redis://host:port` (or `rediss://`) URLs separated by commas, all with
/// the same scheme; credentials and TLS come from the first. The rest of
/// the cluster is discovered from whichever seed answers, so a gateway
/// starts while any one of them is up.
pub(super) fn cluster_config(seeds: &str, ca: Option<&Path>) -> Result<Config, BridgeError> {
    let urls: Vec<&str> = seeds
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let Some(first) = urls.first() else {
        return Err(BridgeError::Unavailable(
            "--redis-cluster needs at least one redis://host:port seed".into(),
        ));
    };
    let scheme = |url: &str| url.split_once("://").map(|(scheme, _)| scheme.to_owned());
    let mut config = client_config(first, ca)?;
    let mut hosts = Vec::with_capacity(urls.len());
    for url in &urls {
        if scheme(url) != scheme(first) {
            return Err(BridgeError::Unavailable(format!(
                "--redis-cluster seeds must all be {}:// like the first ({})",
                scheme(first).unwrap_or_default(),
                super::without_password(url)
            )));
        }
        match client_config(url, ca)?.server {
            ServerConfig::Centralized { server } => hosts.push(server),
            _ => {
                return Err(BridgeError::Unavailable(format!(
                    "invalid --redis-cluster seed {}",
                    super::without_password(url)
                )))
            }
        }
    }
    config.server = ServerConfig::Clustered {
        hosts,
        policy: Default::default(),
    };
    Ok(config)
}

/// The fred configuration of `url`: `redis://` or `rediss://`, with the
/// user and password it names (sent with AUTH on every connection). With
/// `ca`, a `rediss://` server's certificate must be signed by it.
pub(super) fn client_config(url: &str, ca: Option<&Path>) -> Result<Config, BridgeError> {
    let invalid = |e: &dyn std::fmt::Display| {
        BridgeError::Unavailable(format!(
            "invalid redis url {}: {e}",
            super::without_password(url)
        ))
    };
    let Some(ca) = ca else {
        // rediss:// without a CA: fred's rustls connector with the system's roots.
        return Config::from_url(url).map_err(|e| invalid(&e));
    };
    // Parsed as plain so that fred does not load the system's roots; the
    // connector is set here instead.
    let Some(rest) = url.strip_prefix("rediss://") else {
        return Err(BridgeError::Unavailable(
            "--redis-tls-ca needs a rediss:// url".into(),
        ));
    };
    let mut config = Config::from_url(&format!("redis://{rest}")).map_err(|e| invalid(&e))?;
    config.tls = Some(TlsConnector::from(rustls_config(ca)?).into());
    Ok(config)
}

/// A rustls client configuration trusting the certificates of `ca` only.
fn rustls_config(ca: &Path) -> Result<ClientConfig, BridgeError> {
    let unusable = |e: &dyn std::fmt::Display| {
        BridgeError::Unavailable(format!("redis tls ca {}: {e}", ca.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| unusable(&e))? {
        roots
            .add(cert.map_err(|e| unusable(&e))?)
            .map_err(|e| unusable(&e))?;
    }
    if roots.is_empty() {
        return Err(unusable(&"no certificate in the file"));
    }
    let provider = Arc::new(provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The crypto provider (the gateway's choice too: ring builds with a C
/// compiler alone).
#[expect(
    deprecated,
    reason = "ring builds with a C compiler alone; its lack of post-quantum key exchange is accepted"
)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_url() {
        let config = client_config("redis://gw:s3cret@127.0.0.1:6379", None).unwrap();
        assert_eq!(config.username.as_deref(), Some("gw"));
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        assert!(config.tls.is_none());
    }

    #[test]
    fn cluster_seeds_are_every_listed_node_with_the_first_ones_credentials() {
        let config = cluster_config(
            "redis://gw:s3cret@127.0.0.1:7001, redis://127.0.0.1:7002,redis://127.0.0.1:7003",
            None,
        )
        .unwrap();
        let ServerConfig::Clustered { hosts, .. } = &config.server else {
            panic!("not clustered: {:?}", config.server);
        };
        let ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
        assert_eq!(ports, [7001, 7002, 7003]);
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        let err =
            cluster_config("redis://127.0.0.1:7001,rediss://127.0.0.1:7002", None).unwrap_err();
        assert!(err.to_string().contains("redis://"), "{err}");
        assert!(cluster_config(" , ", None).is_err());
    }

    #[test]
    fn a_ca_file_needs_rediss_and_a_certificate() {
        let err = client_config("redis://127.0.0.1", Some(Path::new("/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let err = client_config("rediss://127.0.0.1", Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
