//! HTTP routes: the web client, the WebSocket upgrade, health, metrics, room
//! list; the security headers every response carries.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::origin::Verdict;
use crate::state::{IpSlot, Shared, SocketSlot};

/// The Content-Security-Policy of every response: scripts, styles, images
/// and connections (the WebSocket included) from this origin only, and no
/// framing.
const CSP: &str = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub(crate) type Body = Full<Bytes>;

/// Routes one request from `client` (the real address behind a PROXY
/// header). `socket` is the connection's slot, kept by a WebSocket for its life.
pub(crate) async fn serve(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: SocketAddr,
    socket: Arc<SocketSlot>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => upgrade(req, shared, client, socket),
        (&Method::GET, "/healthz") => health(&shared),
        (&Method::GET, "/metrics") if shared.config.metrics_allowed(client.ip()) => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(
                &shared.gateway_id,
                shared.bridge.is_available(),
                shared.is_draining(),
            ),
        ),
        (&Method::GET, "/metrics") => {
            // The same answer as for a path that does not exist.
            shared.metrics.metrics_refused.fetch_add(1, Relaxed);
            not_found()
        }
        (&Method::GET, "/api/rooms") => rooms(&shared, client.ip()).await,
        // The page asks for no icon (its CSP would refuse a data: URL):
        // an empty answer keeps browsers from asking again.
        (&Method::GET | &Method::HEAD, "/favicon.ico") => {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=86400"),
            );
            response
        }
        (&Method::GET | &Method::HEAD, _) => static_file(&shared.config.web_root, &path).await,
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    Ok(with_security_headers(response))
}

/// What every response carries, whatever route or error produced it.
fn with_security_headers(mut response: Response<Body>) -> Response<Body> {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // For browsers that predate `frame-ancestors`.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn health(shared: &Shared) -> Response<Body> {
    if shared.is_draining() {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        )
    } else {
        text(StatusCode::OK, "text/plain", "ok\n".into())
    }
}

/// `/api/rooms`: the snapshot, to addresses within their rate.
async fn rooms(shared: &Shared, client: IpAddr) -> Response<Body> {
    if !shared.edge.allow_rooms_api(&shared.config, client) {
        shared.metrics.rooms_api_limited.fetch_add(1, Relaxed);
        let mut response = text(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            r#"{"error":"rate limited"}"#.into(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let snapshot = shared
        .edge
        .rooms
        .get(&*shared.bridge, &shared.metrics)
        .await;
    let mut response = Response::new(Full::new(snapshot.body().clone()));
    *response.status_mut() = snapshot.status();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers the WebSocket handshake and hands the upgraded connection to a session.
fn upgrade(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    socket: Arc<SocketSlot>,
) -> Response<Body> {
    // Before anything is spent on it: a foreign page's socket takes no slot.
    let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
    // HTTP/1.1 names the host in `Host`; a request in absolute form (or HTTP/2) in the URI.
    let host = req
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
    if shared.config.origin.check(origin, host) == Verdict::Refused {
        shared.metrics.origin_rejected.fetch_add(1, Relaxed);
        tracing::debug!(%peer, origin = ?origin.map(String::from_utf8_lossy), "websocket origin refused");
        return text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "origin not allowed\n".into(),
        );
    }
    if shared.is_draining() {
        shared.metrics.connections_refused.fetch_add(1, Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining: reconnect elsewhere\n".into(),
        );
    }
    if shared.conns.lock().len() >= shared.config.max_connections as usize {
        shared.metrics.connections_refused.fetch_add(1, Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many connections\n".into(),
        );
    }
    let Some(ip_slot) = IpSlot::take(&shared, peer.ip()) else {
        shared.metrics.connections_refused.fetch_add(1, Relaxed);
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "too many connections from this address\n".into(),
        );
    };
    let headers = req.headers();
    let is_upgrade = header_has_token(headers.get(header::CONNECTION), "upgrade")
        && header_has_token(headers.get(header::UPGRADE), "websocket");
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade && version_ok)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket upgrade (version 13)\n".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sessions = shared.sessions.clone();
    sessions.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config(shared.config.max_frame_bytes as usize)),
                )
                .await;
                crate::session::run(ws, shared, peer).await;
                drop(ip_slot);
                drop(socket);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    response
}

/// Frames and messages over `max_frame_bytes` (`--max-frame-bytes`, 64 KiB
/// by default) are refused (close 1009). The read buffer
/// is sized for small chat frames so an idle connection stays cheap: it is
/// zero-filled on the first read and so always resident, and it grows for a
/// big frame (1 KiB still holds several client frames per read). Writes
/// collect up to 32 KiB before a syscall, and the session flushes after each
/// batch, so a busy connection writes many frames per syscall while an idle
/// one allocates nothing.
fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
        .read_buffer_size(1024)
        .write_buffer_size(32 * 1024)
        .max_write_buffer_size(4 << 20)
}

fn header_has_token(value: Option<&HeaderValue>, token: &str) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// A file of the web root: no dotfiles, nothing a symlink leads to outside
/// the root, nothing but regular files, and no path in any answer.
async fn static_file(root: &Path, path: &str) -> Response<Body> {
    let relative = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let relative = Path::new(relative);
    if !is_plain_relative(relative) {
        return not_found();
    }
    let Some(file) = resolve_in_root(root, relative).await else {
        if relative == Path::new("index.html") {
            tracing::warn!(web_root = %root.display(), "no index.html in the web root");
            return text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "web client not built: run `npm --prefix web ci && npm --prefix web run build`\n"
                    .into(),
            );
        }
        return not_found();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(relative)),
            );
            response
        }
        Err(_) => not_found(),
    }
}

/// Only plain names, none of them hidden (`.git`, `.env`, `..`).
fn is_plain_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(name) if !name.as_encoded_bytes().starts_with(b".")))
}

/// `root/relative` with every symlink resolved, if that is a regular file
/// still inside the (resolved) root and not hidden there either.
async fn resolve_in_root(root: &Path, relative: &Path) -> Option<PathBuf> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    let inside = file.strip_prefix(&root).ok()?;
    let regular = tokio::fs::metadata(&file).await.ok()?.is_file();
    (regular && is_plain_relative(inside)).then_some(file)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}
