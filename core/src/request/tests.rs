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
        Decision::Respond(reply) => reply.status,
        Decision::Tunnel { .. } | Decision::RdCleanPath { .. } | Decision::RdGateway { .. } | Decision::Web { .. } => {
            101
        }
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
            grant,
            accept,
            head_len: n,
        } => {
            assert_eq!(
                (grant.target.name.as_str(), grant.user.as_str(), n),
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
        Decision::RdCleanPath { .. }
    ));
    assert_eq!(status(&decide(b"GET /v1/rdp HTTP/1.1\r\n\r\n", &policy, now)), 400);
    assert_eq!(status(&decide(b"PUT /healthz HTTP/1.1\r\n\r\n", &policy, now)), 405);
    assert_eq!(status(&decide(b"BREW / HTCPCP/1.0\r\n\r\n", &policy, now)), 505);
    match decide(b"POST /api/login HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &policy, now) {
        Decision::Web { route, body_len, .. } => assert_eq!((route, body_len), (WebRoute::Login, 5)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(&decide(
            b"POST /api/login HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
            &policy,
            now
        )),
        413
    );
}

/// Refusals of the policy are audited with the path (never the query, which may hold a token);
/// the web app's unknown paths answer JSON, the others plain text.
#[test]
fn refusals_are_audited_without_the_query() {
    let (policy, key) = policy();
    let now = crate::keys::unix_now();
    let token = crate::keys::issue(key.as_bytes(), "alice", "vm1", std::time::Duration::from_secs(60)).unwrap();
    let req = format!(
        "GET /v1/tunnel/vm2?token={token} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let Decision::Respond(reply) = decide(req.as_bytes(), &policy, now) else {
        panic!("tunnel to an unknown target");
    };
    let denied = reply.denied.unwrap();
    assert_eq!(
        (denied.path.as_str(), denied.reason.as_str()),
        ("/v1/tunnel/vm2", "unknown target")
    );
    let Decision::Respond(reply) = decide(b"GET /api/nope HTTP/1.1\r\n\r\n", &policy, now) else {
        panic!()
    };
    assert!(reply.json && reply.status == 404 && reply.denied.is_none());
    let Decision::Respond(reply) = decide(b"GET /nope HTTP/1.1\r\n\r\n", &policy, now) else {
        panic!()
    };
    assert_eq!((reply.json, reply.body.as_str()), (false, "not found\n"));
}

#[test]
fn logged_paths_are_bounded_in_bytes() {
    let path = format!("/v1/tunnel/{}", "Ԛ".repeat(300));
    let logged = logged_path(&path);
    assert!(logged.len() <= 256 && logged.len() > 254, "{}", logged.len());
    assert_eq!(logged_path("/a\u{7}b"), "/a?b");
}

proptest::proptest! {
    /// The whole request path after TLS never panics, whatever the bytes.
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
