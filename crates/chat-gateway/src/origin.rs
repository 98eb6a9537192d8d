//! The `Origin` check of WebSocket upgrades: which web pages may open a chat
//! socket from their visitors' browsers. A browser always sends the page's
//! origin with an upgrade and lets any page connect anywhere, so without this
//! check any site could chat in its visitors' names (cross-site WebSocket
//! hijacking). Native clients send no `Origin`.

use std::fmt;
use std::str::FromStr;

use clap::Args;
use http::uri::{Authority, Scheme, Uri};

/// The flags of the check (flattened into [`crate::Config`]).
#[derive(Debug, Clone, Default, Args)]
pub struct OriginConfig {
    /// Web origin (`https://chat.example.com`, scheme://host[:port]) whose
    /// pages may open a WebSocket; repeat the flag or separate with commas.
    /// `*` allows every origin. Without this flag only pages of the
    /// request's own host (its `Host` header) may, which is where the
    /// gateway serves its web client; with it, only the listed origins.
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allowed_origins: Vec<AllowedOrigin>,

    /// Refuse (403) WebSocket upgrades without an `Origin` header too; by
    /// default they are let through, since native clients send none.
    #[arg(long, env = "CHAT_REQUIRE_ORIGIN")]
    pub require_origin: bool,
}

/// One `--allowed-origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: every origin.
    Any,
    /// One origin, normalised.
    Exact(Origin),
}

impl FromStr for AllowedOrigin {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "*" => Ok(Self::Any),
            other => Origin::parse(other).map(Self::Exact).ok_or_else(|| {
                format!("{other:?} is not an origin like https://chat.example.com[:port] or *")
            }),
        }
    }
}

/// A web origin: scheme (http or https), host (lowercase) and port (the
/// scheme's default when none is written), so `https://A.example` and
/// `https://a.example:443` are the same origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    secure: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` as a browser sends it in `Origin`
    /// (no path, no user, no query); `None` for anything else, `null` included.
    fn parse(raw: &str) -> Option<Self> {
        let uri: Uri = raw.parse().ok()?;
        let secure = match uri.scheme()? {
            s if *s == Scheme::HTTPS => true,
            s if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        // `Uri` accepts a trailing `/`; an origin has no path at all.
        let whole = format!("{}://{}", uri.scheme_str()?, authority.as_str());
        if !raw.eq_ignore_ascii_case(&whole) || authority.as_str().contains('@') {
            return None;
        }
        Some(Self {
            secure,
            host: authority.host().to_ascii_lowercase(),
            port: port_of(authority, if secure { 443 } else { 80 })?,
        })
    }

    /// Whether this origin names the host a request was sent to (its `Host`
    /// header, `host[:port]`, the port defaulting to this origin's scheme's).
    fn is_host(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        let default = if self.secure { 443 } else { 80 };
        !authority.as_str().contains('@')
            && authority.host().eq_ignore_ascii_case(&self.host)
            && port_of(&authority, default) == Some(self.port)
    }
}

/// The port an authority names, `default` when it names none; `None` when
/// what follows the host is not `:` and a port number (`Authority` itself
/// reads `:99999` as no port at all).
fn port_of(authority: &Authority, default: u16) -> Option<u16> {
    match authority.as_str().strip_prefix(authority.host())? {
        "" => Some(default),
        rest => rest.strip_prefix(':')?.parse().ok(),
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// What the check decided about one upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Refused (403): the origin is not allowed, malformed, or missing under
    /// `--require-origin`.
    Refused,
}

impl OriginConfig {
    /// Checks an upgrade's `Origin` header (`None` when it has none) against
    /// the allowed origins, or against its `Host` header by default.
    pub(crate) fn check(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> Verdict {
        let Some(origin) = origin else {
            return if self.require_origin {
                Verdict::Refused
            } else {
                Verdict::Allowed
            };
        };
        if self.allowed_origins.contains(&AllowedOrigin::Any) {
            return Verdict::Allowed;
        }
        let Some(origin) = std::str::from_utf8(origin).ok().and_then(Origin::parse) else {
            return Verdict::Refused;
        };
        let allowed = if self.allowed_origins.is_empty() {
            host.and_then(|h| std::str::from_utf8(h).ok())
                .is_some_and(|h| origin.is_host(h))
        } else {
            self.allowed_origins
                .iter()
                .any(|a| matches!(a, AllowedOrigin::Exact(o) if *o == origin))
        };
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Allowed, Refused};

    fn config(allowed: &[&str], require_origin: bool) -> OriginConfig {
        OriginConfig {
            allowed_origins: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            require_origin,
        }
    }

    fn check(config: &OriginConfig, origin: Option<&str>, host: Option<&str>) -> Verdict {
        config.check(origin.map(str::as_bytes), host.map(str::as_bytes))
    }

    #[test]
    fn by_default_only_the_requests_own_host_is_allowed() {
        let c = config(&[], false);
        let host = Some("chat.example.com:8080");
        assert_eq!(
            check(&c, Some("http://chat.example.com:8080"), host),
            Allowed
        );
        assert_eq!(
            check(&c, Some("https://CHAT.example.com:8080"), host),
            Allowed
        );
        assert_eq!(check(&c, Some("https://evil.example"), host), Refused);
        assert_eq!(
            check(&c, Some("http://chat.example.com:8081"), host),
            Refused
        );
        assert_eq!(check(&c, Some("http://chat.example.com"), host), Refused);
        // The port of a Host without one is the origin's scheme's default.
        assert_eq!(
            check(
                &c,
                Some("https://chat.example.com"),
                Some("chat.example.com")
            ),
            Allowed
        );
        assert_eq!(
            check(
                &c,
                Some("http://chat.example.com"),
                Some("chat.example.com")
            ),
            Allowed
        );
        assert_eq!(
            check(
                &c,
                Some("http://chat.example.com"),
                Some("chat.example.com:80")
            ),
            Allowed
        );
        assert_eq!(
            check(
                &c,
                Some("https://chat.example.com:8443"),
                Some("chat.example.com")
            ),
            Refused
        );
        assert_eq!(
            check(&c, Some("http://[::1]:8080"), Some("[::1]:8080")),
            Allowed
        );
        assert_eq!(
            check(&c, Some("http://127.0.0.1:8080"), Some("[::1]:8080")),
            Refused
        );
        // No Host to compare with: nothing matches.
        assert_eq!(check(&c, Some("http://chat.example.com"), None), Refused);
        // A Host that is no authority at all.
        assert_eq!(check(&c, Some("http://a"), Some("a b")), Refused);
        assert_eq!(check(&c, Some("http://a"), Some("u@a")), Refused);
    }

    #[test]
    fn a_list_replaces_the_default() {
        let c = config(
            &["https://chat.example.com", "http://localhost:5173"],
            false,
        );
        let host = Some("gateway.internal:8080");
        assert_eq!(check(&c, Some("https://chat.example.com"), host), Allowed);
        assert_eq!(
            check(&c, Some("https://chat.example.com:443"), host),
            Allowed
        );
        assert_eq!(check(&c, Some("http://localhost:5173"), host), Allowed);
        assert_eq!(check(&c, Some("http://chat.example.com"), host), Refused);
        assert_eq!(
            check(&c, Some("http://gateway.internal:8080"), host),
            Refused
        );
    }

    #[test]
    fn a_star_allows_every_origin_but_only_when_given() {
        let c = config(&["*"], false);
        assert_eq!(
            check(&c, Some("https://anything.example"), Some("x")),
            Allowed
        );
        assert_eq!(check(&c, Some("null"), Some("x")), Allowed);
        assert_eq!(check(&config(&[], false), Some("null"), Some("x")), Refused);
    }

    #[test]
    fn a_missing_origin_is_allowed_unless_required() {
        assert_eq!(check(&config(&[], false), None, Some("h")), Allowed);
        assert_eq!(check(&config(&[], true), None, Some("h")), Refused);
        assert_eq!(check(&config(&["*"], true), None, Some("h")), Refused);
        assert_eq!(
            check(&config(&[], true), Some("http://h"), Some("h")),
            Allowed
        );
    }

    #[test]
    fn malformed_origins_are_refused_and_cannot_be_configured() {
        let c = config(&[], false);
        for bad in [
            "null",
            "",
            "chat.example.com",
            "ftp://chat.example.com",
            "http://chat.example.com/",
            "http://chat.example.com/path",
            "http://user@chat.example.com",
            "http://chat.example.com?x",
            "http://chat.example.com:99999",
        ] {
            assert_eq!(
                check(&c, Some(bad), Some("chat.example.com")),
                Refused,
                "{bad:?}"
            );
            assert!(bad.parse::<AllowedOrigin>().is_err(), "{bad:?}");
        }
        assert_eq!(c.check(Some(b"http://\xff"), Some(b"x")), Refused);
        assert_eq!(
            "https://A.example".parse::<AllowedOrigin>().unwrap(),
            AllowedOrigin::Exact(Origin::parse("https://a.example:443").unwrap())
        );
    }
}
