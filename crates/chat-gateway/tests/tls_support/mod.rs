//! Certificates for the TLS tests, made with rcgen: a CA, server
//! certificates for 127.0.0.1 and localhost, client certificates; and a
//! one-request HTTPS client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chat_client::rustls::pki_types::{CertificateDer, ServerName};
use chat_client::rustls::{ClientConfig, RootCertStore};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A certificate authority made for one test.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

/// A certificate and its key, written to files.
pub(crate) struct Leaf {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Leaf {
    /// `--tls-cert FILE --tls-key FILE`.
    pub(crate) fn gateway_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// Writes the CA certificate to `dir/name.pem`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    /// A server certificate for 127.0.0.1 and localhost, in `dir/name{,-key}.pem`.
    pub(crate) fn server_leaf(&self, dir: &Path, name: &str) -> Leaf {
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        self.server_leaf_at(&leaf);
        leaf
    }

    /// Writes a new server certificate and key over `leaf`'s files (the key
    /// first, then the certificate, each replaced whole by a rename).
    pub(crate) fn server_leaf_at(&self, leaf: &Leaf) {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        self.sign(names, leaf);
    }

    /// A client certificate, in `dir/name{,-key}.pem`.
    pub(crate) fn client_leaf(&self, dir: &Path, name: &str) -> Leaf {
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        self.sign(vec![format!("{name}.client.test")], &leaf);
        leaf
    }

    fn sign(&self, names: Vec<String>, leaf: &Leaf) {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "chat test leaf");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        replace(&leaf.key, &key.serialize_pem());
        replace(&leaf.cert, &cert.pem());
    }

    /// A client configuration trusting this CA only.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert.der().to_vec()))
            .unwrap();
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Writes `path` through a temporary file and a rename, so a reader sees
/// the old contents or the new ones.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `GET path` over HTTPS to 127.0.0.1: the status and the body.
pub(crate) async fn https_get(
    addr: SocketAddr,
    path: &str,
    tls: &Arc<ClientConfig>,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .expect("tls handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server closes without close_notify at times: keep what arrived.
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
