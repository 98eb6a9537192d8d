//! The gRPC connection to a gateway's admin API, with the bearer token, and
//! the translation of failures into one clear line and an exit code.

use std::fmt;
use std::time::Duration;

use chat_admin_proto::chat_admin_client::ChatAdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// Exit codes (sysexits.h), documented in the README.
pub(crate) mod exit {
    /// The call was refused for another reason (NOT_FOUND, INVALID_ARGUMENT, ...).
    pub(crate) const FAILED: u8 = 1;
    /// Bad flags: an unusable --server URL or --token.
    pub(crate) const USAGE: u8 = 64;
    /// The admin API could not be reached, or the cluster was unavailable.
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// The token was missing or wrong.
    pub(crate) const NO_PERMISSION: u8 = 77;
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(crate) type AdminClient = ChatAdminClient<InterceptedService<Channel, Bearer>>;

/// A failure as the user sees it: one line, and the process exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Connects to `server` (eagerly, so that an unreachable server is reported
/// as such rather than as a failed call), over TLS when `tls` is given.
pub(crate) async fn connect(
    server: &str,
    token: Option<&str>,
    tls: Option<ClientTlsConfig>,
    timeout: Duration,
) -> Result<AdminClient, Failure> {
    let bearer = match token {
        None => None,
        Some(token) => Some(
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| Failure::new(exit::USAGE, "--token must be printable ASCII"))?,
        ),
    };
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("invalid --server {server:?}: {e} (expected http://HOST:PORT)"),
            )
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("tls for {server}: {}", cause_chain(&e)),
            )
        })?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            exit::UNAVAILABLE,
            format!("cannot reach the admin API at {server}: {} (is a gateway listening there? see --server)", cause_chain(&e)),
        )
    })?;
    Ok(ChatAdminClient::with_interceptor(channel, Bearer(bearer)))
}

/// Turns a refused call into a one-line failure.
pub(crate) fn call_failed(server: &str, status: &Status) -> Failure {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => Failure::new(
            exit::NO_PERMISSION,
            format!("the admin API at {server} refused the token ({message}): pass the gateways' --admin-token with --token-file, --token or CHAT_ADMIN_TOKEN"),
        ),
        Code::Unavailable => Failure::new(exit::UNAVAILABLE, format!("unavailable: {message}")),
        Code::DeadlineExceeded | Code::Cancelled => {
            Failure::new(exit::UNAVAILABLE, format!("no answer from {server} in time ({message})"))
        }
        Code::NotFound => Failure::new(exit::FAILED, format!("not found: {message}")),
        Code::InvalidArgument => Failure::new(exit::FAILED, format!("invalid argument: {message}")),
        code => Failure::new(exit::FAILED, format!("the admin API answered {code:?}: {message}")),
    }
}

/// "a: b: c" from an error and its sources, without repeats.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_mentions_the_token() {
        let failure = call_failed(
            "http://h:1",
            &Status::unauthenticated("invalid admin token"),
        );
        assert_eq!(failure.code, exit::NO_PERMISSION);
        assert!(failure.message.contains("--token"), "{failure}");
        assert!(failure.message.contains("CHAT_ADMIN_TOKEN"), "{failure}");
    }

    #[test]
    fn other_codes_map_to_their_exit_codes() {
        assert_eq!(
            call_failed("s", &Status::not_found("no gateway")).code,
            exit::FAILED
        );
        assert_eq!(
            call_failed("s", &Status::unavailable("redis down")).code,
            exit::UNAVAILABLE
        );
        assert_eq!(
            call_failed("s", &Status::invalid_argument("bad room")).code,
            exit::FAILED
        );
    }

    #[tokio::test]
    async fn a_bad_server_url_is_a_usage_error() {
        let Err(failure) = connect("not a url", None, None, Duration::from_secs(1)).await else {
            panic!("connected")
        };
        assert_eq!(failure.code, exit::USAGE, "{failure}");
    }

    #[tokio::test]
    async fn an_unreachable_server_says_so() {
        // Port 1 on loopback: nothing listens there.
        let Err(failure) = connect("http://127.0.0.1:1", None, None, Duration::from_secs(2)).await
        else {
            panic!("connected")
        };
        assert_eq!(failure.code, exit::UNAVAILABLE);
        assert!(
            failure
                .message
                .starts_with("cannot reach the admin API at http://127.0.0.1:1"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_a_header_is_a_usage_error() {
        let Err(failure) = connect(
            "http://127.0.0.1:1",
            Some("bad\ntoken"),
            None,
            Duration::from_secs(1),
        )
        .await
        else {
            panic!("connected")
        };
        assert_eq!(failure.code, exit::USAGE);
    }
}
