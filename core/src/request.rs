//! The request path after TLS, as a pure function: the bytes of a request head in, a decision out.
//! No I/O and no clock, so it is unit-tested and fuzzed as a whole (`fuzz/` target
//! `gateway_request`); the engine's connection only performs what it decides.

use crate::audit::Via;
use crate::policy::{Credential, Destination, Grant, Policy};
use crate::route::{self, Route, Unrouted, WebRoute};
use portcullis_protocols::http::{self, RequestHead};

/// Request bodies of the web API are small JSON objects.
pub const MAX_BODY: usize = 16 * 1024;

/// Longest request path kept for logs and audit records, in bytes.
const MAX_LOGGED_PATH: usize = 256;

/// What to do with the bytes read so far.
#[derive(Debug)]
pub enum Decision {
    /// The head is incomplete and under the limits: read more.
    NeedMore,
    /// Answer and close.
    Respond(Reply),
    /// An authorized tunnel: connect to the grant's target, then send `accept` (the 101 head) and
    /// relay. `head_len` bytes of the buffer were the request; anything after is WebSocket data.
    Tunnel {
        grant: Grant,
        accept: Vec<u8>,
        head_len: usize,
    },
    /// RDCleanPath (web RDP): upgrade first; the credential and destination come inside the first
    /// WebSocket message, so authorization happens in its handler.
    RdCleanPath { accept: Vec<u8>, head_len: usize },
    /// The RD Gateway (`/remoteDesktopGateway/`): the credential and the resource come inside the
    /// tunnel's packets, so authorization happens in its handler (`crate::rdgateway`).
    RdGateway {
        channel: crate::rdgateway::Channel,
        head_len: usize,
    },
    /// The web app: `body_len` bytes of body follow the head.
    Web {
        route: WebRoute<String>,
        head_len: usize,
        body_len: usize,
    },
}

/// A complete answer: status, body, and whether the refusal belongs in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// One line of text, or a JSON object for the web app's paths.
    pub body: String,
    pub json: bool,
    /// Set when the refusal is audited: the path (no query string) and the reason.
    pub denied: Option<Denied>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub path: String,
    pub reason: String,
}

impl Reply {
    pub fn text(status: u16, message: &str) -> Reply {
        Reply {
            status,
            body: format!("{message}\n"),
            json: false,
            denied: None,
        }
    }

    pub fn json_error(status: u16, message: &str) -> Reply {
        Reply {
            status,
            body: json_error_body(message),
            json: true,
            denied: None,
        }
    }

    fn audited(mut self, path: &str, reason: String) -> Reply {
        self.denied = Some(Denied {
            path: logged_path(path),
            reason,
        });
        self
    }
}

/// The web app's error body, `{"error":"…"}`: one shape for every JSON refusal.
pub fn json_error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// `path` as logs show it: printable, and at most `MAX_LOGGED_PATH` bytes (whole characters).
pub fn logged_path(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars().map(|c| if c.is_control() { '?' } else { c }) {
        if out.len() + c.len_utf8() > MAX_LOGGED_PATH {
            break;
        }
        out.push(c);
    }
    out
}

/// Decides on the request head at the start of `buf`, at `now` (Unix seconds).
pub fn decide(buf: &[u8], policy: &Policy, now: u64) -> Decision {
    let head = match http::parse_head(buf, policy.config.limits.head()) {
        Ok(Some(head)) => head,
        Ok(None) => return Decision::NeedMore,
        Err(e) => return Decision::Respond(Reply::text(e.status(), &e.to_string())),
    };
    match route::route(head.method, head.path) {
        Ok(Route::Health) => Decision::Respond(Reply::text(200, "ok")),
        Ok(Route::Tunnel { target }) => tunnel(&head, target, policy, now),
        Ok(Route::RdCleanPath) => match http::websocket_upgrade(&head) {
            Ok(upgrade) => Decision::RdCleanPath {
                accept: http::switching_protocols(upgrade.key, None),
                head_len: head.len,
            },
            Err(e) => refused_upgrade(&head, e),
        },
        Ok(Route::RdGateway) => match crate::rdgateway::channel_of(&head) {
            Ok(channel) => Decision::RdGateway {
                channel,
                head_len: head.len,
            },
            Err(refusal) => {
                let reason = refusal.to_string();
                Decision::Respond(Reply::text(refusal.status(), &reason).audited(head.path, reason))
            }
        },
        Ok(Route::Web(route)) => web(&head, route),
        Err(unrouted) => Decision::Respond(unrouted_reply(unrouted)),
    }
}

/// The answer for a request no route takes.
pub fn unrouted_reply(unrouted: Unrouted) -> Reply {
    let message = match unrouted {
        Unrouted::NotFound { .. } => "not found",
        Unrouted::MethodNotAllowed { .. } => "method not allowed",
    };
    if unrouted.is_web() {
        Reply::json_error(unrouted.status(), message)
    } else {
        Reply::text(unrouted.status(), message)
    }
}

fn refused_upgrade(head: &RequestHead<'_>, e: http::HttpError) -> Decision {
    Decision::Respond(Reply::text(e.status(), &e.to_string()).audited(head.path, e.to_string()))
}

fn tunnel(head: &RequestHead<'_>, target: &str, policy: &Policy, now: u64) -> Decision {
    let upgrade = match http::websocket_upgrade(head) {
        Ok(u) => u,
        Err(e) => return refused_upgrade(head, e),
    };
    let token = head.bearer_token();
    match policy.authorize(
        Credential::Token(token.as_deref()),
        Destination::Name(target),
        Via::Tunnel,
        now,
    ) {
        Ok(grant) => Decision::Tunnel {
            grant,
            accept: http::switching_protocols(upgrade.key, None),
            head_len: head.len,
        },
        Err(denial) => {
            let reason = denial.to_string();
            Decision::Respond(Reply::text(denial.status(), &reason).audited(head.path, reason))
        }
    }
}

fn web(head: &RequestHead<'_>, route: WebRoute<&str>) -> Decision {
    let body_len = match head.header("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(Ok(_)) => return Decision::Respond(Reply::text(413, "request body too large")),
        Some(Err(_)) => return Decision::Respond(Reply::text(400, "bad Content-Length")),
    };
    if head.header("transfer-encoding").is_some() {
        return Decision::Respond(Reply::text(411, "Content-Length required"));
    }
    Decision::Web {
        route: route.map(str::to_owned),
        head_len: head.len,
        body_len,
    }
}

#[cfg(test)]
mod tests;
