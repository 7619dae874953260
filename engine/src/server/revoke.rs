//! Revoking a user or a token: the one path the admin API (`POST /v1/revocations`) and a
//! `portcullis logout` (its login credential) both take. Applied on this node at once (live
//! sessions it opened end), kept durably (`[state] dir`), and announced to the fleet.

use super::registry::Stop;
use super::Shared;
use crate::store::{RevocationNotice, RevokedKind};
use portcullis_core::audit::EndReason;
use portcullis_core::revocation::Revocation;

/// A revocation that did not reach everywhere it must.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("too many revocations")]
    TooMany,
    /// Applied here, but a restart of this node would forget it.
    #[error("revoked until this node restarts only: the state database could not be written ({0})")]
    NotDurable(String),
    /// Applied here, but the other nodes did not hear of it.
    #[error("revoked on this node only: the state store did not take it ({0})")]
    NotShared(String),
}

/// Revokes, ends the live sessions it covers on this node (`by` says who), records it durably
/// and announces it to the fleet. Returns how many sessions it ended.
pub async fn revoke(shared: &Shared, revocation: Revocation, by: &str, now: u64) -> Result<usize, RevokeError> {
    if shared.revocations.revoke(revocation.clone(), now).is_err() {
        return Err(RevokeError::TooMany);
    }
    let stop = Stop {
        reason: EndReason::Revoked,
        by: by.to_owned(),
    };
    let (ended, kind, subject, until) = match &revocation {
        Revocation::User { name, until } => (
            shared.registry.stop_where(|s| &s.user == name, &stop),
            RevokedKind::User,
            name.clone(),
            *until,
        ),
        Revocation::Token { id, until } => (
            shared.registry.stop_where(
                |s| s.token_id.as_deref() == Some(id.as_str()) || s.login_id.as_deref() == Some(id.as_str()),
                &stop,
            ),
            RevokedKind::Token,
            id.clone(),
            *until,
        ),
    };
    let notice = RevocationNotice {
        v: 0,
        kind,
        subject,
        until,
        by: by.to_owned(),
    };
    // Durable on this node (a restart keeps it) when `[state] dir` is set: an fsynced write, on
    // the files pool (never on a core).
    if let Some(state) = shared.local_state.clone() {
        let record = notice.clone();
        let written = match shared.pools.files.run(move || state.put_revocation(&record)) {
            Ok(job) => job
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        written.map_err(RevokeError::NotDurable)?;
    }
    // In a fleet, every node hears of it (and a node that is away loads it when it is back).
    if let Some(fleet) = &shared.web.fleet {
        fleet
            .publish_revocation(notice)
            .await
            .map_err(|e| RevokeError::NotShared(e.to_string()))?;
    }
    Ok(ended)
}
