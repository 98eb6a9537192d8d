//! The operator API: `chat.admin.v1.ChatAdmin` over gRPC (tonic) on its own
//! listener (`--admin-listen`), next to the standard health service and
//! server reflection so that generic tools (`grpcurl`, probes) work.
//!
//! Answers describe the whole cluster: every call goes to the bridge, which
//! reads the shared state (Redis) or is the whole state (embedded). Commands
//! for other gateways (kick, ban, drain) travel through the bridge's control
//! path, signed with the cluster secret. Bans are `bans.rs`.
//!
//! With `--admin-token`, every call (ChatAdmin, health and reflection alike)
//! must carry `authorization: Bearer <token>`, else UNAUTHENTICATED.
//!
//! With `--admin-tls-cert` it is served over TLS, and with
//! `--admin-tls-client-ca` only to clients with a certificate that CA signed
//! (see `tls`).

pub(crate) mod bans;

use std::sync::Arc;

use chat_admin_proto::chat_admin_server::{ChatAdmin, ChatAdminServer};
use chat_admin_proto::{
    BanUserRequest, BanUserResponse, DrainGatewayRequest, DrainGatewayResponse, Gateway,
    KickUserRequest, KickUserResponse, ListGatewaysRequest, ListGatewaysResponse, ListRoomsRequest,
    ListRoomsResponse, ListUsersRequest, ListUsersResponse, Room, SendSystemMessageRequest,
    SendSystemMessageResponse, User,
};
use chat_admin_proto::{ListBansRequest, ListBansResponse, UnbanUserRequest, UnbanUserResponse};
use chat_bridge::{BridgeError, NewMessage};
use chat_proto::{check_text, normalize_room, normalize_username};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::config::AdminToken;
use crate::state::Shared;

/// Serves the admin API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let tls = crate::tls::admin_tls(&shared.config).map_err(anyhow::Error::msg)?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ChatAdminServer<AdminService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chat_admin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chat_admin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let auth = BearerAuth {
        token: shared.config.admin_token.clone().map(Arc::new),
    };
    let admin = ChatAdminServer::with_interceptor(AdminService { shared }, auth.clone());
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    tracing::info!(%addr, "admin api serving");
    server
        .add_service(InterceptedService::new(health, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth))
        .add_service(admin)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
struct BearerAuth {
    token: Option<Arc<AdminToken>>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_str().as_bytes()) => {
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated("invalid admin token")),
            None => Err(Status::unauthenticated(
                "missing admin token: send authorization: Bearer <token>",
            )),
        }
    }
}

/// Compares without an early exit on the first differing byte, so the time
/// taken does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The `ChatAdmin` implementation: validation here, answers from the bridge.
struct AdminService {
    shared: Arc<Shared>,
}

pub(crate) fn bridge_status(e: BridgeError) -> Status {
    match e {
        BridgeError::Unavailable(_) => Status::unavailable(e.to_string()),
        BridgeError::Corrupt(_) | BridgeError::GatewayIdInUse { .. } => {
            tracing::error!(error = %e, "admin request failed");
            Status::internal(e.to_string())
        }
    }
}

/// A room name from a request, normalised; `None` when empty.
fn optional_room(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    normalize_room(raw)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("invalid room: {e}")))
}

#[tonic::async_trait]
impl ChatAdmin for AdminService {
    async fn list_rooms(
        &self,
        _request: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsResponse>, Status> {
        let rooms = self
            .shared
            .bridge
            .room_overview()
            .await
            .map_err(bridge_status)?;
        let rooms = rooms
            .into_iter()
            .map(|r| Room {
                name: r.name,
                member_count: r.member_count,
                last_message_id: r
                    .last_message_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                last_message_at_ms: r.last_message_at_ms,
            })
            .collect();
        Ok(Response::new(ListRoomsResponse { rooms }))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let room = optional_room(&request.get_ref().room)?;
        let users = self
            .shared
            .bridge
            .users(room.as_deref())
            .await
            .map_err(bridge_status)?;
        let users = users
            .into_iter()
            .map(|u| User {
                username: u.username,
                rooms: u.rooms,
                gateway_ids: u.gateway_ids,
                connections: u.connections,
            })
            .collect();
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn list_gateways(
        &self,
        _request: Request<ListGatewaysRequest>,
    ) -> Result<Response<ListGatewaysResponse>, Status> {
        let gateways = self.shared.bridge.gateways().await.map_err(bridge_status)?;
        let gateways = gateways
            .into_iter()
            .map(|g| Gateway {
                id: g.id,
                address: g.address,
                connections: g.connections,
                started_at_ms: g.started_at_ms,
                last_heartbeat_ms: g.last_heartbeat_ms,
                draining: g.draining,
            })
            .collect();
        Ok(Response::new(ListGatewaysResponse { gateways }))
    }

    async fn kick_user(
        &self,
        request: Request<KickUserRequest>,
    ) -> Result<Response<KickUserResponse>, Status> {
        let request = request.into_inner();
        let name = normalize_username(&request.username)
            .map_err(|e| Status::invalid_argument(format!("invalid username: {e}")))?;
        let room = optional_room(&request.room)?;
        let kicked = self
            .shared
            .bridge
            .kick(&name.key, room.as_deref(), &request.reason)
            .await
            .map_err(bridge_status)?;
        tracing::info!(
            user = %name.key,
            room = room.as_deref().unwrap_or(""),
            reason = %request.reason,
            sessions = kicked,
            "admin: kick"
        );
        Ok(Response::new(KickUserResponse {
            sessions_kicked: kicked,
        }))
    }

    async fn send_system_message(
        &self,
        request: Request<SendSystemMessageRequest>,
    ) -> Result<Response<SendSystemMessageResponse>, Status> {
        let request = request.into_inner();
        let room = normalize_room(&request.room)
            .map_err(|e| Status::invalid_argument(format!("invalid room: {e}")))?;
        check_text(&request.text, self.shared.limits.max_text_bytes as usize)
            .map_err(|e| Status::invalid_argument(format!("invalid text: {e}")))?;
        let accepted = self
            .shared
            .bridge
            .publish(NewMessage {
                room: room.clone(),
                sender_key: String::new(),
                username: String::new(),
                text: request.text,
                client_msg_id: String::new(),
                system: true,
            })
            .await
            .map_err(bridge_status)?;
        tracing::info!(room, id = %accepted.id, "admin: system message");
        Ok(Response::new(SendSystemMessageResponse {
            id: accepted.id.to_string(),
        }))
    }

    async fn drain_gateway(
        &self,
        request: Request<DrainGatewayRequest>,
    ) -> Result<Response<DrainGatewayResponse>, Status> {
        let id = request.into_inner().gateway_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("gateway_id is required"));
        }
        match self
            .shared
            .bridge
            .drain_gateway(&id)
            .await
            .map_err(bridge_status)?
        {
            Some(connections) => {
                tracing::info!(gateway = %id, connections, "admin: drain");
                Ok(Response::new(DrainGatewayResponse { connections }))
            }
            None => Err(Status::not_found(format!("no live gateway with id {id:?}"))),
        }
    }

    async fn ban_user(
        &self,
        request: Request<BanUserRequest>,
    ) -> Result<Response<BanUserResponse>, Status> {
        let bridge = self.shared.bridge.as_ref();
        bans::ban_user(bridge, request.into_inner(), self.shared.auth.is_some())
            .await
            .map(Response::new)
    }

    async fn unban_user(
        &self,
        request: Request<UnbanUserRequest>,
    ) -> Result<Response<UnbanUserResponse>, Status> {
        let bridge = self.shared.bridge.as_ref();
        bans::unban_user(bridge, request.into_inner(), self.shared.auth.is_some())
            .await
            .map(Response::new)
    }

    async fn list_bans(
        &self,
        _request: Request<ListBansRequest>,
    ) -> Result<Response<ListBansResponse>, Status> {
        bans::list_bans(self.shared.bridge.as_ref())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>) -> BearerAuth {
        BearerAuth {
            token: token.map(|t| Arc::new(t.parse().unwrap())),
        }
    }

    fn request(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        request
    }

    #[test]
    fn without_a_token_every_call_passes() {
        assert!(auth(None).call(request(None)).is_ok());
        assert!(auth(None).call(request(Some("Bearer anything"))).is_ok());
    }

    #[test]
    fn with_a_token_only_the_right_bearer_passes() {
        let mut auth = auth(Some("s3cret"));
        assert!(auth.call(request(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = auth.call(request(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn empty_room_means_none_and_bad_rooms_are_invalid() {
        assert_eq!(optional_room("").unwrap(), None);
        assert_eq!(optional_room("lobby").unwrap().as_deref(), Some("lobby"));
        assert_eq!(
            optional_room(" lobby").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
