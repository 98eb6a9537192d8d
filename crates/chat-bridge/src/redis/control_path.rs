//! The control channel's two ends for this gateway: publishing a command
//! (signed with the cluster secret when there is one, see
//! `crate::control_auth`) and taking one in (checked, then passed to the sink
//! or, for a drain's answer, to the waiting request). A dropped command is
//! logged and reported to the sink as `BridgeEvent::ControlRejected`.

use bytes::Bytes;
use chat_proto::rules::now_ms;

use super::control::Control;
use super::{unavailable, Inner};
use crate::{BridgeEvent, Result};

impl Inner {
    /// The payload that carries `control` (signed when there is a secret).
    pub(super) fn sealed(&self, control: &Control) -> String {
        self.control_auth.seal(&control.encode(), now_ms())
    }

    /// Publishes `control` on the control channel.
    pub(super) async fn publish_control(&self, control: &Control) -> Result<()> {
        self.publish_on(self.keys.control(), self.sealed(control))
            .await
            .map_err(unavailable)
    }

    /// Takes in one payload of the control channel.
    pub(super) fn handle_control(&self, payload: &Bytes) {
        let command = match self.control_auth.open(payload, now_ms()) {
            Ok(command) => command,
            Err(rejection) => {
                // The payload is not logged: it may be anyone's bytes.
                tracing::warn!(
                    reason = rejection.as_str(),
                    bytes = payload.len(),
                    "command on the control channel dropped"
                );
                self.sink.deliver(BridgeEvent::ControlRejected(rejection));
                return;
            }
        };
        match Control::decode(command) {
            Some(Control::Drained { reply_to, told }) => {
                self.drains.answer(&reply_to, told);
            }
            Some(control) => {
                tracing::debug!(?control, "control command");
                if let Some(command) =
                    control.for_gateway(&self.config.gateway_id, &self.config.instance)
                {
                    self.sink.deliver(BridgeEvent::Control(command));
                }
            }
            None => tracing::warn!("unknown command on the control channel ignored"),
        }
    }
}
