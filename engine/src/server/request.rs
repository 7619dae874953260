//! The request path after TLS, as a pure function: bytes of a request head in, a decision out.
//! No I/O and no clock, so it is unit-tested and fuzzed as a whole (`fuzz/` target
//! `gateway_request`); `conn.rs` only performs what it decides.

use crate::config::Target;
use crate::policy::Policy;
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::token::Claims;

/// What to do with the bytes read so far.
#[derive(Debug)]
pub enum Decision {
    /// The head is incomplete and under the limits: read more.
    NeedMore,
    /// Answer with `status` and close. `denied` is set when the refusal belongs in the audit log.
    Respond {
        status: u16,
        body: String,
        denied: Option<String>,
    },
    /// Authorized tunnel: connect to `target`, then send `accept` (the 101 head) and relay.
    /// `head_len` bytes of the buffer were the request; anything after is WebSocket data.
    Tunnel {
        target: Box<Target>,
        claims: Claims,
        accept: Vec<u8>,
        head_len: usize,
    },
    /// The web app (pages, API, terminal): `body_len` bytes of body follow the head.
    Web { head_len: usize, body_len: usize },
    /// RDCleanPath (web RDP): upgrade first; the token and destination come inside the first
    /// WebSocket message, so authorization happens in `rdp.rs`.
    RdpUpgrade { accept: Vec<u8>, head_len: usize },
}

fn respond(status: u16, body: impl Into<String>) -> Decision {
    Decision::Respond {
        status,
        body: body.into(),
        denied: None,
    }
}

/// Decides on the request head at the start of `buf`, at `now` (Unix seconds).
pub fn decide(buf: &[u8], policy: &Policy, now: u64) -> Decision {
    let limits = &policy.config.limits;
    let head_limits = HeadLimits {
        max_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    let head = match http::parse_head(buf, head_limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Decision::NeedMore,
        Err(e) => return respond(e.status(), format!("{e}\n")),
    };
    if head.path == "/healthz" {
        return if head.method == "GET" {
            respond(200, "ok\n")
        } else {
            respond(405, "method not allowed\n")
        };
    }
    if crate::web::api::is_web_path(head.path) {
        let body_len = match head.header("content-length").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) if n <= crate::web::api::MAX_BODY => n,
            Some(Ok(_)) => return respond(413, "request body too large\n"),
            Some(Err(_)) => return respond(400, "bad Content-Length\n"),
        };
        if head.header("transfer-encoding").is_some() {
            return respond(411, "Content-Length required\n");
        }
        return Decision::Web {
            head_len: head.len,
            body_len,
        };
    }
    if head.path == "/v1/rdp" || head.path == "/jet/rdp" {
        return match http::websocket_upgrade(&head) {
            Ok(upgrade) => Decision::RdpUpgrade {
                accept: http::switching_protocols(upgrade.key, None),
                head_len: head.len,
            },
            Err(e) => Decision::Respond {
                status: e.status(),
                body: format!("{e}\n"),
                denied: Some(e.to_string()),
            },
        };
    }
    let target = match head.path.strip_prefix("/v1/tunnel/") {
        Some(t) if !t.is_empty() && !t.contains('/') => t,
        _ => return respond(404, "not found\n"),
    };
    let upgrade = match http::websocket_upgrade(&head) {
        Ok(u) => u,
        Err(e) => {
            return Decision::Respond {
                status: e.status(),
                body: format!("{e}\n"),
                denied: Some(e.to_string()),
            }
        }
    };
    let token = head.bearer_token();
    match policy.authorize(token.as_deref(), target, now) {
        Ok((claims, target)) => Decision::Tunnel {
            target: Box::new(target.clone()),
            claims,
            accept: http::switching_protocols(upgrade.key, None),
            head_len: head.len,
        },
        Err(denial) => {
            let reason = denial.reason();
            Decision::Respond {
                status: denial.status(),
                body: format!("{reason}\n"),
                denied: Some(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> (Policy, String) {
        crate::policy::test_policy(
            "[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n[[user]]\nname = \"alice\"\ntargets = [\"vm1\"]\n",
        )
    }

    fn request(path: &str, token: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .into_bytes()
    }

    fn status(d: &Decision) -> u16 {
        match d {
            Decision::Respond { status, .. } => *status,
            Decision::Tunnel { .. } | Decision::RdpUpgrade { .. } | Decision::Web { .. } => 101,
            Decision::NeedMore => 0,
        }
    }

    #[test]
    fn decisions() {
        let (policy, key) = policy();
        let now = crate::keys::unix_now();
        let token = crate::keys::issue(key.as_bytes(), "alice", "vm1", std::time::Duration::from_secs(60)).unwrap();
        let mut req = request("/v1/tunnel/vm1", &token);
        let head_len = req.len();
        req.extend_from_slice(b"\x82\x80abcd");
        match decide(&req, &policy, now) {
            Decision::Tunnel {
                target,
                claims,
                accept,
                head_len: n,
            } => {
                assert_eq!(
                    (target.name.as_str(), claims.sub.as_str(), n),
                    ("vm1", "alice", head_len)
                );
                assert!(accept.starts_with(b"HTTP/1.1 101"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status(&decide(&req[..head_len - 1], &policy, now)), 0);
        assert_eq!(
            status(&decide(&request("/v1/tunnel/vm1", &token), &policy, now + 3600)),
            401
        );
        assert_eq!(status(&decide(&request("/v1/tunnel/vm2", &token), &policy, now)), 404);
        assert_eq!(status(&decide(&request("/v1/tunnel/", &token), &policy, now)), 404);
        assert_eq!(status(&decide(&request("/v1/tunnel/vm1/x", &token), &policy, now)), 404);
        assert_eq!(status(&decide(b"GET /healthz HTTP/1.1\r\n\r\n", &policy, now)), 200);
        assert!(matches!(
            decide(&request("/jet/rdp", ""), &policy, now),
            Decision::RdpUpgrade { .. }
        ));
        assert_eq!(status(&decide(b"GET /v1/rdp HTTP/1.1\r\n\r\n", &policy, now)), 400);
        assert_eq!(status(&decide(b"PUT /healthz HTTP/1.1\r\n\r\n", &policy, now)), 405);
        assert_eq!(status(&decide(b"BREW / HTCPCP/1.0\r\n\r\n", &policy, now)), 505);
    }

    proptest::proptest! {
        /// The whole request path after TLS never panics and always decides within its limits,
        /// whatever the bytes (a cargo-fuzz target for it is pending: it needs the engine crate).
        #[test]
        fn any_bytes_get_a_decision(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let (policy, _) = policy();
            let _ = decide(&bytes, &policy, 1_800_000_000);
        }

        /// Mutating a valid upgrade request byte by byte never panics, and never yields a tunnel
        /// for a request that lost its token.
        #[test]
        fn mutated_requests(at in 0usize..400, byte in proptest::num::u8::ANY, cut in 0usize..400) {
            let (policy, key) = policy();
            let now = crate::keys::unix_now();
            let token = crate::keys::issue(key.as_bytes(), "alice", "vm1", std::time::Duration::from_secs(60)).unwrap();
            let mut req = request("/v1/tunnel/vm1", &token);
            if at < req.len() {
                req[at] = byte;
            }
            let _ = decide(&req, &policy, now);
            let cut = cut.min(req.len());
            let _ = decide(&req[..cut], &policy, now);
            let no_token = String::from_utf8_lossy(&request("/v1/tunnel/vm1", "")).replace("Authorization: Bearer \r\n", "");
            let tunnel = matches!(decide(no_token.as_bytes(), &policy, now), Decision::Tunnel { .. });
            proptest::prop_assert!(!tunnel);
        }
    }
}
