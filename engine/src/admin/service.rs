//! What the admin API and the web app's Sessions page both do, in one place: list the live
//! sessions of the fleet and end one. Async, so a relaying core can await it (the web app) and
//! the admin listener's threads can block on it.

use crate::server::registry::{LiveSession, Stop};
use crate::server::Shared;
use portcullis_core::audit::EndReason;
use serde_json::{json, Value};

fn session_json(s: &LiveSession, node: &str) -> Value {
    let (up, down) = s.bytes();
    json!({
        "id": s.id,
        "node": node,
        "user": s.user,
        "target": s.target,
        "protocol": s.protocol.as_str(),
        "via": s.via.as_str(),
        "client": s.client.to_string(),
        "start": s.start,
        "seconds": s.started.elapsed().as_secs(),
        "token_id": s.token_id,
        "bytes_client_to_target": up,
        "bytes_target_to_client": down,
        "ending": s.stopped_by().map(|stop| stop.reason.as_str()),
    })
}

/// Every live session: this node's from its registry (fresher byte counts), and in a fleet every
/// other node's from the store, oldest first. The second value says why the list is this node's
/// only (the store did not answer).
pub async fn live_sessions(shared: &Shared) -> (Vec<Value>, Option<String>) {
    let node = shared.state.load().policy.config.cluster.node.clone();
    let local = shared.registry.list();
    let mut list: Vec<_> = local.iter().map(|s| session_json(s, &node)).collect();
    let Some(fleet) = &shared.web.fleet else {
        return (list, None);
    };
    match fleet.list_live().await {
        Ok(records) => {
            for r in records.iter().filter(|r| !local.iter().any(|s| s.id == r.id)) {
                list.push(json!({
                    "id": r.id,
                    "node": r.node,
                    "user": r.user,
                    "target": r.target,
                    "protocol": r.protocol,
                    "via": r.via,
                    "client": r.client,
                    "start": r.start,
                    "token_id": r.token_id,
                    "bytes_client_to_target": r.bytes_client_to_target,
                    "bytes_target_to_client": r.bytes_target_to_client,
                }));
            }
            list.sort_by(|a, b| a["start"].as_str().cmp(&b["start"].as_str()));
            (list, None)
        }
        Err(e) => (list, Some(format!("this node only: {e}"))),
    }
}

/// Why a session was not ended.
#[derive(Debug)]
pub struct NotEnded {
    pub status: u16,
    pub message: String,
}

/// Ends live session `id` (`by`: the administrator): here when it is this node's, else by telling
/// its node through the fleet store. `Ok`: it is being ended.
pub async fn terminate(shared: &Shared, id: &str, by: &str) -> Result<(), NotEnded> {
    let not = |status, message: &str| NotEnded {
        status,
        message: message.to_owned(),
    };
    let Some(session) = shared.registry.get(id) else {
        // Another node's, perhaps: its owner ends it when told.
        let Some(fleet) = &shared.web.fleet else {
            return Err(not(404, "no live session with this id"));
        };
        let notice = crate::store::TerminateNotice {
            v: 0,
            id: id.to_owned(),
            by: by.to_owned(),
        };
        return match fleet.publish_terminate(notice).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not(404, "no live session with this id")),
            Err(e) => Err(not(503, &format!("the state store does not answer: {e}"))),
        };
    };
    let stop = Stop {
        reason: EndReason::Terminated,
        by: by.to_owned(),
    };
    if !session.stop(stop) {
        return Err(not(409, "the session is already being ended"));
    }
    Ok(())
}
