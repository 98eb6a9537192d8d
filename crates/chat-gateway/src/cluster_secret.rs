//! `--cluster-secret-file`: the secret that signs the commands gateways send
//! each other on the control path (kick, ban, drain, the close of a resumed
//! session), flattened into [`Config`](crate::Config). The file is read at
//! start; its contents are never logged and never on the command line.
//!
//! Without it a gateway in a cluster still runs, with an unauthenticated
//! control path and a warning at start (so that existing set-ups keep
//! working); the README says to set it everywhere.

use std::path::PathBuf;

use chat_bridge::ClusterSecret;
use clap::Args;

/// The control path's flags.
#[derive(Debug, Clone, Args)]
pub struct ControlPathArgs {
    /// File holding the secret shared by every gateway of the cluster
    /// (at least 16 bytes; trailing whitespace is ignored; e.g.
    /// `openssl rand -hex 32 > FILE`). Commands between gateways are
    /// signed with it (HMAC-SHA256) and unsigned, badly signed, stale or
    /// replayed ones are dropped. Without it the control path is
    /// unauthenticated (a warning at start).
    #[arg(long, env = "CHAT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

impl ControlPathArgs {
    /// The secret, read from its file; `None` without the flag.
    pub fn secret(&self) -> Result<Option<ClusterSecret>, String> {
        self.cluster_secret_file
            .as_deref()
            .map(|path| {
                ClusterSecret::from_file(path).map_err(|e| format!("--cluster-secret-file: {e}"))
            })
            .transpose()
    }
}
