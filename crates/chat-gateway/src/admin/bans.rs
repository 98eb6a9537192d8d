//! Bans on the gateway's side: which identity a session or an operator's
//! request names (the normalised name, or with signed identities the
//! token's `sub`), the check at Hello, and the admin calls `BanUser`,
//! `UnbanUser` and `ListBans`. Recording, listing and the kick everywhere are the bridge's
//! (`chat_bridge::ClusterAdmin::ban`).

use chat_admin_proto::{
    Ban as BanRow, BanUserRequest, BanUserResponse, ListBansResponse, UnbanUserRequest,
    UnbanUserResponse,
};
use chat_bridge::{Ban, Bridge, Member, Result as BridgeResult};
use chat_proto::normalize_username;
use tonic::Status;

use super::bridge_status;
use crate::state::now_ms;

/// The identity key a ban of this session's user is recorded under: the
/// normalised name (anonymous mode) or, with signed identities, the token's
/// `sub` (the session's `Member::key` is set from it).
pub(crate) fn identity_key(member: &Member) -> &str {
    &member.key
}

/// The identity key an operator's request names. Anonymous mode: the same
/// normalisation as a Hello's name claim, so `Ann`, `ANN` and ` ann` are one
/// user. With signed identities (`signed`): the token's `sub` exactly as the
/// gateway keys sessions by it (trimmed of surrounding spaces only).
pub(crate) fn requested_identity(raw: &str, signed: bool) -> Result<String, Status> {
    if signed {
        let sub = raw.trim();
        return match sub.is_empty() {
            true => Err(Status::invalid_argument("invalid user: an empty sub")),
            false => Ok(sub.to_owned()),
        };
    }
    normalize_username(raw)
        .map(|name| name.key)
        .map_err(|e| Status::invalid_argument(format!("invalid username: {e}")))
}

/// The ban that refuses this session's Hello, if one holds.
pub(crate) async fn ban_of(bridge: &dyn Bridge, member: &Member) -> BridgeResult<Option<Ban>> {
    bridge.ban_of(identity_key(member)).await
}

/// `BanUser`: records the ban and kicks the user everywhere.
pub(crate) async fn ban_user(
    bridge: &dyn Bridge,
    request: BanUserRequest,
    signed: bool,
) -> Result<BanUserResponse, Status> {
    let key = requested_identity(&request.username, signed)?;
    let now = now_ms();
    let until_ms = match request.duration_ms {
        0 => None,
        ms => Some(now.checked_add(ms).ok_or_else(|| {
            Status::invalid_argument("duration_ms is too long (use 0 for a ban until lifted)")
        })?),
    };
    let ban = Ban {
        key,
        reason: request.reason,
        by: request.banned_by,
        created_at_ms: now,
        until_ms,
    };
    let kicked = bridge.ban(&ban).await.map_err(bridge_status)?;
    tracing::info!(
        user = %ban.key,
        until_ms = ban.until_ms.unwrap_or(0),
        reason = %ban.reason,
        by = %ban.by,
        sessions = kicked,
        "admin: ban"
    );
    Ok(BanUserResponse {
        sessions_kicked: kicked,
        until_ms: until_ms.unwrap_or(0),
    })
}

/// `UnbanUser`.
pub(crate) async fn unban_user(
    bridge: &dyn Bridge,
    request: UnbanUserRequest,
    signed: bool,
) -> Result<UnbanUserResponse, Status> {
    let key = requested_identity(&request.username, signed)?;
    let was_banned = bridge.unban(&key).await.map_err(bridge_status)?;
    tracing::info!(user = %key, was_banned, "admin: unban");
    Ok(UnbanUserResponse { was_banned })
}

/// `ListBans`.
pub(crate) async fn list_bans(bridge: &dyn Bridge) -> Result<ListBansResponse, Status> {
    let bans = bridge.bans().await.map_err(bridge_status)?;
    Ok(ListBansResponse {
        bans: bans
            .into_iter()
            .map(|ban| BanRow {
                user: ban.key,
                reason: ban.reason,
                banned_by: ban.by,
                banned_at_ms: ban.created_at_ms,
                until_ms: ban.until_ms.unwrap_or(0),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_signed_identities_operators_name_the_sub_as_it_is() {
        assert_eq!(requested_identity(" Alice-7 ", true).unwrap(), "Alice-7");
        assert_eq!(
            requested_identity("  ", true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn operators_name_users_as_hellos_claim_them() {
        assert_eq!(requested_identity("ANN", false).unwrap(), "ann");
        assert_eq!(requested_identity(" Ann ", false).unwrap(), "ann");
        let member = Member {
            session_id: "s-1".into(),
            key: requested_identity("Ann", false).unwrap(),
            username: "Ann".into(),
        };
        assert_eq!(identity_key(&member), "ann");
        assert_eq!(
            requested_identity("", false).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
