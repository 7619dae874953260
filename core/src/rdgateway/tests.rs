use super::*;
use crate::policy::test_policy;
use portcullis_protocols::tsgu::{self, ChannelCreate, HandshakeRequest, TunnelAuth, TunnelCreate, PROTOCOL_RDP};
use std::time::Duration;

const POLICY: &str = "[[target]]\nname = \"desk\"\naddress = \"10.0.0.6:3389\"\nprotocol = \"rdp\"\n\
[[target]]\nname = \"locked\"\naddress = \"10.0.0.8:3389\"\nprotocol = \"rdp\"\nclipboard = false\ndrives = false\n\
[[target]]\nname = \"noclip\"\naddress = \"10.0.0.9:3389\"\nprotocol = \"rdp\"\nclipboard = false\n\
[[target]]\nname = \"webonly\"\naddress = \"10.0.0.10:3389\"\nprotocol = \"rdp\"\nnative = false\n\
[[target]]\nname = \"desk2\"\naddress = \"10.0.0.7:3389\"\nprotocol = \"rdp\"\n\
[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n\
[[user]]\nname = \"alice\"\ntargets = [\"desk\", \"vm1\", \"locked\", \"noclip\", \"webonly\"]\n";

fn now() -> u64 {
    crate::keys::unix_now()
}

fn token(key: &str, user: &str, target: &str) -> String {
    crate::keys::issue(key.as_bytes(), user, target, Duration::from_secs(60)).unwrap()
}

fn handshake(extended_auth: u16) -> ClientPacket<'static> {
    ClientPacket::HandshakeRequest(HandshakeRequest {
        version_major: 1,
        version_minor: 0,
        client_version: 0,
        extended_auth,
    })
}

fn create(cookie: Option<&[u8]>) -> ClientPacket<'_> {
    ClientPacket::TunnelCreate(TunnelCreate {
        capabilities: caps::IDLE_TIMEOUT | caps::MESSAGING_CONSENT_SIGN,
        reauth_tunnel_context: None,
        paa_cookie: cookie,
    })
}

fn auth() -> ClientPacket<'static> {
    ClientPacket::TunnelAuth(TunnelAuth {
        client_name: "WORKSTATION".into(),
        statement_of_health: None,
    })
}

fn channel(resource: &str, port: u16) -> ClientPacket<'static> {
    ClientPacket::ChannelCreate(ChannelCreate {
        resources: vec![resource.into()],
        alt_resources: vec![],
        port,
        protocol: PROTOCOL_RDP,
    })
}

fn reply(next: Next) -> GatewayPacket<'static> {
    match next {
        Next::Reply(p) => p,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn refused(next: Next) -> (Option<GatewayPacket<'static>>, Refusal) {
    match next {
        Next::Refuse(p, r) => (p, r),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Runs the phase up to the channel request with `cookie`; returns the machine.
fn up_to_channel(policy: &Policy, cookie: &[u8]) -> Handshake {
    let mut hs = Handshake::new(7, 30);
    let r = reply(hs.on_packet(handshake(ext_auth::PAA), policy, now()));
    assert_eq!(
        r,
        GatewayPacket::HandshakeResponse(HandshakeResponse::new(hresult::S_OK, ext_auth::PAA))
    );
    let r = reply(hs.on_packet(create(Some(cookie)), policy, now()));
    assert_eq!(
        r,
        GatewayPacket::TunnelResponse(TunnelResponse::accept(7, caps::IDLE_TIMEOUT))
    );
    let r = reply(hs.on_packet(auth(), policy, now()));
    assert_eq!(
        r,
        GatewayPacket::TunnelAuthResponse(TunnelAuthResponse::accept(RedirectFlags::ENABLE_ALL, 30))
    );
    assert_eq!(hs.client_name(), Some("WORKSTATION"));
    hs
}

#[test]
fn a_token_for_the_target_opens_a_channel_by_name_or_by_its_address() {
    let (policy, key) = test_policy(POLICY);
    let cookie = tsgu::utf16z(&token(&key, "alice", "desk"));
    for (resource, port) in [("desk", 3389), ("desk", 1), ("10.0.0.6", 3389)] {
        let mut hs = up_to_channel(&policy, &cookie);
        assert_eq!(hs.user(), Some("alice"));
        let Next::Connect(grant) = hs.on_packet(channel(resource, port), &policy, now()) else {
            panic!("{resource}:{port} refused")
        };
        assert_eq!((grant.user.as_str(), grant.target.name.as_str()), ("alice", "desk"));
        assert_eq!(grant.via, Via::RdGateway);
        assert!(!hs.is_open());
        assert_eq!(
            hs.channel_opened(3),
            GatewayPacket::ChannelResponse(ChannelResponse::accept(3))
        );
        assert!(hs.is_open());
    }
}

#[test]
fn channels_to_anything_else_are_refused_with_the_resource_code() {
    let (policy, key) = test_policy(POLICY);
    let desk = tsgu::utf16z(&token(&key, "alice", "desk"));
    let vm1 = tsgu::utf16z(&token(&key, "alice", "vm1"));
    let desk2 = tsgu::utf16z(&token(&key, "alice", "desk2"));
    let cases: [(&[u8], &str, u16, u16); 6] = [
        // Another address, even on the same host; a host that is not configured at all.
        (&desk, "10.0.0.6", 3390, 404),
        (&desk, "127.0.0.1", 22, 404),
        (&desk, "attacker.example", 3389, 404),
        // A configured target the token is not for.
        (&desk, "desk2", 3389, 403),
        // Not an RDP target.
        (&vm1, "vm1", 22, 400),
        // Not the user's.
        (&desk2, "desk2", 3389, 403),
    ];
    for (cookie, resource, port, status) in cases {
        let mut hs = up_to_channel(&policy, cookie);
        let (packet, refusal) = refused(hs.on_packet(channel(resource, port), &policy, now()));
        assert_eq!(
            packet,
            Some(GatewayPacket::ChannelResponse(ChannelResponse::refuse(
                hresult::E_PROXY_RAP_ACCESSDENIED
            ))),
            "{resource}"
        );
        assert_eq!(refusal.status, status, "{resource}: {refusal:?}");
        assert_eq!(refusal.user.as_deref(), Some("alice"));
        assert!(refusal.reason.contains(resource), "{refusal:?}");
        // Over: nothing more is accepted.
        assert!(matches!(
            hs.on_packet(ClientPacket::Keepalive, &policy, now()),
            Next::Refuse(None, _)
        ));
    }
}

#[test]
fn missing_bad_and_foreign_tokens_are_refused_at_tunnel_create() {
    let (policy, key) = test_policy(POLICY);
    let (other_key, _) = crate::keys::generate().unwrap();
    let foreign = tsgu::utf16z(&token(&other_key, "alice", "desk"));
    let mallory = tsgu::utf16z(&token(&key, "mallory", "desk"));
    let garbage = tsgu::utf16z("not a token");
    let cases: [(Option<&[u8]>, u32, u16); 5] = [
        (None, hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED, 401),
        (Some(&[0, 0]), hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED, 401),
        (
            Some(&garbage),
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            401,
        ),
        (
            Some(&foreign),
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            401,
        ),
        (
            Some(&mallory),
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            403,
        ),
    ];
    for (cookie, code, status) in cases {
        let mut hs = Handshake::new(1, 0);
        reply(hs.on_packet(handshake(ext_auth::PAA), &policy, now()));
        let (packet, refusal) = refused(hs.on_packet(create(cookie), &policy, now()));
        assert_eq!(
            packet,
            Some(GatewayPacket::TunnelResponse(TunnelResponse::refuse(code)))
        );
        assert_eq!(refusal.status, status, "{refusal:?}");
        assert_eq!(hs.user(), None);
    }
    // An odd-length cookie is not UTF-16.
    let mut hs = Handshake::new(1, 0);
    reply(hs.on_packet(handshake(ext_auth::PAA), &policy, now()));
    let (packet, refusal) = refused(hs.on_packet(create(Some(&[0x41, 0, 0x42])), &policy, now()));
    assert_eq!(
        packet,
        Some(GatewayPacket::TunnelResponse(TunnelResponse::refuse(
            hresult::E_PROXY_COOKIE_BADPACKET
        )))
    );
    assert_eq!(refusal.status, 400);
}

#[test]
fn a_client_without_paa_or_of_another_version_is_refused_at_the_handshake() {
    let (policy, _) = test_policy(POLICY);
    let mut hs = Handshake::new(1, 0);
    let (packet, refusal) = refused(hs.on_packet(handshake(ext_auth::SSPI_NTLM), &policy, now()));
    assert_eq!(
        packet,
        Some(GatewayPacket::HandshakeResponse(HandshakeResponse::new(
            hresult::E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD,
            ext_auth::NONE
        )))
    );
    assert_eq!(refusal.status, 401);
    let mut hs = Handshake::new(1, 0);
    let v2 = ClientPacket::HandshakeRequest(HandshakeRequest {
        version_major: 2,
        version_minor: 0,
        client_version: 0,
        extended_auth: ext_auth::PAA,
    });
    let (packet, _) = refused(hs.on_packet(v2, &policy, now()));
    assert!(
        matches!(packet, Some(GatewayPacket::HandshakeResponse(r)) if r.error_code == hresult::E_PROXY_CAPABILITYMISMATCH)
    );
}

#[test]
fn packets_out_of_order_end_the_tunnel() {
    let (policy, key) = test_policy(POLICY);
    let cookie = tsgu::utf16z(&token(&key, "alice", "desk"));
    // Each step skipped in turn, and data before the channel is open.
    let orders: Vec<Vec<ClientPacket<'_>>> = vec![
        vec![create(Some(&cookie))],
        vec![auth()],
        vec![ClientPacket::Data(b"x")],
        vec![handshake(ext_auth::PAA), auth()],
        vec![handshake(ext_auth::PAA), channel("desk", 3389)],
        vec![handshake(ext_auth::PAA), handshake(ext_auth::PAA)],
        vec![handshake(ext_auth::PAA), create(Some(&cookie)), channel("desk", 3389)],
        vec![
            handshake(ext_auth::PAA),
            create(Some(&cookie)),
            auth(),
            ClientPacket::Data(b"x"),
        ],
    ];
    for packets in orders {
        let mut hs = Handshake::new(1, 0);
        let n = packets.len();
        let mut last = None;
        for p in packets {
            last = Some(hs.on_packet(p, &policy, now()));
        }
        let (packet, refusal) = refused(last.unwrap());
        assert_eq!(packet, None, "after {n} packets");
        assert_eq!(refusal.status, 400);
        assert!(refusal.reason.starts_with("unexpected"), "{refusal:?}");
    }
}

#[test]
fn keepalives_are_answered_once_the_handshake_is_done() {
    let (policy, key) = test_policy(POLICY);
    let cookie = tsgu::utf16z(&token(&key, "alice", "desk"));
    let mut hs = up_to_channel(&policy, &cookie);
    assert_eq!(
        reply(hs.on_packet(ClientPacket::Keepalive, &policy, now())),
        GatewayPacket::Keepalive
    );
    assert!(matches!(
        hs.on_packet(channel("desk", 3389), &policy, now()),
        Next::Connect(_)
    ));
    assert_eq!(
        hs.channel_failed(hresult::E_PROXY_TS_CONNECTFAILED),
        GatewayPacket::ChannelResponse(ChannelResponse::refuse(hresult::E_PROXY_TS_CONNECTFAILED))
    );
    assert!(!hs.is_open());
}

fn head(raw: &str) -> RequestHead<'_> {
    http::parse_head(raw.as_bytes(), http::HeadLimits::default())
        .unwrap()
        .unwrap()
}

#[test]
fn requests_choose_their_channel() {
    const WS: &str = "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-Websocket-Version: 13\r\nSec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nRDG-Connection-Id: {A1B2C3D4-0000-1111-2222-333344445555}\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n";
    let Channel::WebSocket { accept } = channel_of(&head(WS)).unwrap() else {
        panic!()
    };
    assert!(String::from_utf8(accept).unwrap().starts_with("HTTP/1.1 101"));
    // FreeRDP 2.11's key: 15 characters from '@' to '_', not base64 of 16 bytes.
    let freerdp = WS.replace("dGhlIHNhbXBsZSBub25jZQ==", "M\\OVH_]MMHOL\\M@");
    let Channel::WebSocket { accept } = channel_of(&head(&freerdp)).unwrap() else {
        panic!()
    };
    let expected = http::switching_protocols("M\\OVH_]MMHOL\\M@", None);
    assert_eq!(accept, expected);
    let out = "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nRDG-Connection-Id: {A1B2C3D4-0000-1111-2222-333344445555}\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        channel_of(&head(out)).unwrap(),
        Channel::Out {
            connection_id: "{A1B2C3D4-0000-1111-2222-333344445555}".into()
        }
    );
    let inn = out.replace("RDG_OUT_DATA", "RDG_IN_DATA");
    assert!(matches!(
        channel_of(&head(&inn)).unwrap(),
        Channel::In { chunked: false, .. }
    ));
    let chunked = inn.replace("Content-Length: 0", "Transfer-Encoding: chunked");
    assert!(matches!(
        channel_of(&head(&chunked)).unwrap(),
        Channel::In { chunked: true, .. }
    ));
    let refusal = |raw: &str| channel_of(&head(raw)).unwrap_err();
    assert_eq!(refusal(&out.replace("RDG_OUT_DATA", "GET")), RequestRefusal::Method);
    assert_eq!(
        refusal(&out.replace("RDG-Auth-Scheme: PAA\r\n", "")),
        RequestRefusal::NotPaa
    );
    assert_eq!(refusal(&out.replace("PAA", "NTLM")), RequestRefusal::NotPaa);
    assert_eq!(
        refusal(&WS.replace("RDG_OUT_DATA", "RDG_IN_DATA")),
        RequestRefusal::InUpgrade
    );
    assert_eq!(
        refusal(&out.replace("{A1B2C3D4-0000-1111-2222-333344445555}", "../../etc")),
        RequestRefusal::ConnectionId
    );
    assert_eq!(
        refusal(&out.replace("RDG-Connection-Id: {A1B2C3D4-0000-1111-2222-333344445555}\r\n", "")),
        RequestRefusal::ConnectionId
    );
    assert_eq!(RequestRefusal::NotPaa.status(), 401);
    assert!(matches!(
        refusal(&WS.replace("Sec-Websocket-Version: 13", "Sec-Websocket-Version: 8")),
        RequestRefusal::Upgrade(_)
    ));
}

/// TUNNEL_AUTH_RESPONSE tells the client what the token's target allows (advice); a target kept
/// to the browser (`native = false`) is refused at channel create.
#[test]
fn redirection_flags_follow_the_tokens_target_and_browser_only_targets_are_refused() {
    let (policy, key) = test_policy(POLICY);
    for (target, flags) in [
        (
            "locked",
            RedirectFlags::DISABLE_DRIVE | RedirectFlags::DISABLE_CLIPBOARD,
        ),
        ("noclip", RedirectFlags::DISABLE_CLIPBOARD),
        ("desk", RedirectFlags::ENABLE_ALL),
    ] {
        let cookie = tsgu::utf16z(&token(&key, "alice", target));
        let mut hs = Handshake::new(1, 0);
        reply(hs.on_packet(handshake(ext_auth::PAA), &policy, now()));
        reply(hs.on_packet(create(Some(&cookie)), &policy, now()));
        let GatewayPacket::TunnelAuthResponse(r) = reply(hs.on_packet(auth(), &policy, now())) else {
            panic!()
        };
        assert_eq!(r.redirect_flags, Some(flags), "{target}");
    }
    let cookie = tsgu::utf16z(&token(&key, "alice", "webonly"));
    let mut hs = Handshake::new(1, 0);
    reply(hs.on_packet(handshake(ext_auth::PAA), &policy, now()));
    reply(hs.on_packet(create(Some(&cookie)), &policy, now()));
    reply(hs.on_packet(auth(), &policy, now()));
    let (_, refusal) = refused(hs.on_packet(channel("webonly", 3389), &policy, now()));
    assert_eq!(refusal.status, 403);
    assert!(refusal.reason.contains("browser only"), "{refusal:?}");
}
