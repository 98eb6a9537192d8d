//! HTTP routes: the web client, the WebSocket upgrade, health, metrics, room list.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path};
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

use crate::state::{IpSlot, Shared};

pub type Body = Full<Bytes>;

/// Routes one request.
pub async fn serve(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => upgrade(req, shared, peer),
        (&Method::GET, "/healthz") => health(&shared),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(
                &shared.gateway_id,
                shared.bridge.is_available(),
                shared.is_draining(),
            ),
        ),
        (&Method::GET, "/api/rooms") => rooms(&shared).await,
        (&Method::GET | &Method::HEAD, _) => static_file(&shared.config.web_root, &path).await,
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    Ok(response)
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

#[derive(serde::Serialize)]
struct RoomsBody {
    rooms: Vec<RoomEntry>,
}

#[derive(serde::Serialize)]
struct RoomEntry {
    name: String,
    members: u32,
}

async fn rooms(shared: &Shared) -> Response<Body> {
    match shared.bridge.rooms().await {
        Ok(rooms) => {
            let body = RoomsBody {
                rooms: rooms
                    .into_iter()
                    .map(|r| RoomEntry {
                        name: r.name,
                        members: r.member_count,
                    })
                    .collect(),
            };
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&body).unwrap_or_default(),
            )
        }
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// Answers the WebSocket handshake and hands the upgraded connection to a session.
fn upgrade(mut req: Request<Incoming>, shared: Arc<Shared>, peer: SocketAddr) -> Response<Body> {
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
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                crate::session::run(ws, shared, peer).await;
                drop(ip_slot);
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

/// Frames and messages over 1 MiB are refused (close 1009). The read buffer
/// is sized for small chat frames so an idle connection stays cheap: it is
/// zero-filled on the first read and so always resident, and it grows for a
/// big frame (1 KiB still holds several client frames per read). Writes
/// collect up to 32 KiB before a syscall, and the session flushes after each
/// batch, so a busy connection writes many frames per syscall while an idle
/// one allocates nothing.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(chat_proto::MAX_FRAME_BYTES))
        .max_frame_size(Some(chat_proto::MAX_FRAME_BYTES))
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

async fn static_file(root: &Path, path: &str) -> Response<Body> {
    let relative = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let relative = Path::new(relative);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    let full = root.join(relative);
    match tokio::fs::read(&full).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&full)));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'"),
            );
            response
        }
        Err(_) if relative == Path::new("index.html") => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("web client not built: run `npm --prefix web ci && npm --prefix web run build` (looked in {})\n", root.display()),
        ),
        Err(_) => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
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
