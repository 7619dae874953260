//! The RD Gateway's request and control phase (MS-TSGU, HTTP transport), as pure functions of
//! what the client sent: no I/O and no clock (time is passed in), so every step and every refusal
//! is unit-tested; the engine's handler (`engine/src/server/handlers/rdgateway.rs`) carries the
//! packets and does what the steps say.
//!
//! A client (mstsc, FreeRDP's `/g:`) reaches `/remoteDesktopGateway/` with one of:
//! - `RDG_OUT_DATA` with a WebSocket upgrade: the whole tunnel in one WebSocket, one packet per
//!   binary message ([`Channel::WebSocket`]);
//! - the HTTP transport's pair: `RDG_OUT_DATA` (gateway to client: `200`, a 10-byte seed, then
//!   packets) and `RDG_IN_DATA` (client to gateway: a first request with no body, `200`, then the
//!   same request again with a chunked body of packets), joined by their `RDG-Connection-Id`.
//!
//! Either way the packets then go: handshake (extended authentication PAA: the only one offered;
//! no NTLM or Kerberos), tunnel create carrying the PAA cookie (a Portcullis access token, checked
//! at once), tunnel authorize, channel create naming the resource. The channel is authorized by
//! [`Policy::authorize`] like every other route (`Via::RdGateway`): the resource must be a
//! configured RDP target, by name or by the configured address of the target the token is for;
//! never an arbitrary host. Every refusal answers with the protocol's error code in the packet the
//! client waits for, and carries the reason and status the audit log records.

use crate::audit::Via;
use crate::policy::{Credential, Denial, Destination, Grant, Policy};
use portcullis_protocols::http::{self, RequestHead};
use portcullis_protocols::tsgu::{
    caps, ext_auth, hresult, ChannelResponse, ClientPacket, DeviceRedirection, GatewayPacket, HandshakeResponse,
    RedirectFlags, TunnelAuthResponse, TunnelResponse,
};

/// Longest `RDG-Connection-Id` accepted (clients send a braced GUID, 38 characters).
pub const MAX_CONNECTION_ID: usize = 64;

/// How the client carries the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `RDG_OUT_DATA` upgraded to a WebSocket: `accept` is the 101 answer.
    WebSocket { accept: Vec<u8> },
    /// `RDG_OUT_DATA` without an upgrade: the gateway-to-client half of the HTTP transport.
    Out { connection_id: String },
    /// `RDG_IN_DATA`: the client-to-gateway half. `chunked`: this request's body is the packet
    /// stream already (FreeRDP first sends the request with no body, waits for `200`, then sends
    /// it again with a chunked body).
    In { connection_id: String, chunked: bool },
}

/// Why an RD Gateway request was refused before any packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    #[error("RD Gateway requests are RDG_OUT_DATA or RDG_IN_DATA")]
    Method,
    /// No `RDG-Auth-Scheme: PAA`: the client wants NTLM or Kerberos on the gateway, which is not
    /// offered.
    #[error("the RD Gateway needs a gateway access token (RDG-Auth-Scheme: PAA); NTLM and Kerberos are not offered")]
    NotPaa,
    #[error("{0}")]
    Upgrade(http::HttpError),
    #[error("RDG_IN_DATA is not upgraded to a WebSocket")]
    InUpgrade,
    #[error("missing or invalid RDG-Connection-Id")]
    ConnectionId,
}

impl RequestRefusal {
    pub fn status(&self) -> u16 {
        match self {
            RequestRefusal::Method => 405,
            RequestRefusal::NotPaa => 401,
            RequestRefusal::Upgrade(e) => e.status(),
            RequestRefusal::InUpgrade | RequestRefusal::ConnectionId => 400,
        }
    }
}

/// Which channel an RD Gateway request opens.
pub fn channel_of(head: &RequestHead<'_>) -> Result<Channel, RequestRefusal> {
    let out = match head.method {
        "RDG_OUT_DATA" => true,
        "RDG_IN_DATA" => false,
        _ => return Err(RequestRefusal::Method),
    };
    if !head
        .header("rdg-auth-scheme")
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("PAA"))
    {
        return Err(RequestRefusal::NotPaa);
    }
    if head.has_token("upgrade", "websocket") {
        if !out {
            return Err(RequestRefusal::InUpgrade);
        }
        let upgrade = http::upgrade_headers(head).map_err(RequestRefusal::Upgrade)?;
        return Ok(Channel::WebSocket {
            accept: http::switching_protocols(upgrade.key, None),
        });
    }
    let connection_id = head
        .header("rdg-connection-id")
        .map(str::trim)
        .filter(|id| is_connection_id(id))
        .ok_or(RequestRefusal::ConnectionId)?
        .to_owned();
    Ok(match out {
        true => Channel::Out { connection_id },
        false => Channel::In {
            connection_id,
            chunked: is_chunked(head),
        },
    })
}

/// Whether the request's body is chunked (the last transfer coding).
pub fn is_chunked(head: &RequestHead<'_>) -> bool {
    head.header("transfer-encoding")
        .and_then(|te| te.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// A GUID as clients send it (`{…}` of hex digits and dashes), bounded.
fn is_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONNECTION_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'-' | b'{' | b'}'))
}

/// Why a tunnel was refused during its control phase: what the audit log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP-like status the audit log uses for refusals (401, 403, 404, 400, 502).
    pub status: u16,
    pub reason: String,
    /// The user, once a token said who.
    pub user: Option<String>,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            user: None,
        }
    }
}

/// What the handler does after a client packet.
#[derive(Debug)]
pub enum Next {
    /// Send the packet and read the next one.
    Reply(GatewayPacket<'static>),
    /// Send the packet (if any), then end the connection: refused.
    Refuse(Option<GatewayPacket<'static>>, Refusal),
    /// The channel is granted: take the user's session place, connect to the target, then answer
    /// with [`Handshake::channel_opened`] or [`Handshake::channel_failed`].
    Connect(Box<Grant>),
}

/// Where the control phase is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    Handshaken,
    TunnelCreated,
    Authorized,
    Connecting,
    Open,
    Over,
}

/// The gateway's side of one tunnel's control phase.
pub struct Handshake {
    phase: Phase,
    tunnel_id: u32,
    idle_minutes: u32,
    /// The PAA cookie, once checked; used again to authorize the channel.
    token: Option<String>,
    /// The target the token is for: its policy sets the redirection flags.
    target: Option<std::sync::Arc<crate::config::Target>>,
    user: Option<String>,
    client_name: Option<String>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("phase", &self.phase)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The capabilities the gateway agrees to: an idle timeout is announced; no consent message (a
/// command-line client would block on it), no service messages, no re-authentication, no UDP.
const GATEWAY_CAPS: u32 = caps::IDLE_TIMEOUT;

impl Handshake {
    /// `tunnel_id` names the tunnel to the client; `idle_minutes` is announced as its idle timeout
    /// (advice: the session clock enforces it).
    pub fn new(tunnel_id: u32, idle_minutes: u32) -> Self {
        Handshake {
            phase: Phase::Start,
            tunnel_id,
            idle_minutes,
            token: None,
            target: None,
            user: None,
            client_name: None,
        }
    }

    /// The user the checked token names, once it is checked.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The name the client gave for itself in TUNNEL_AUTH (its machine name).
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// True once the channel is open: what follows is DATA for the relay.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    fn refuse(&mut self, packet: Option<GatewayPacket<'static>>, status: u16, reason: impl Into<String>) -> Next {
        self.phase = Phase::Over;
        let mut refusal = Refusal::new(status, reason);
        refusal.user = self.user.clone();
        Next::Refuse(packet, refusal)
    }

    /// The next step after `packet`, under `policy` at `now` (Unix seconds).
    pub fn on_packet(&mut self, packet: ClientPacket<'_>, policy: &Policy, now: u64) -> Next {
        match (self.phase, packet) {
            (Phase::Start, ClientPacket::HandshakeRequest(h)) => {
                if h.version_major != 1 {
                    let reply = HandshakeResponse::new(hresult::E_PROXY_CAPABILITYMISMATCH, ext_auth::NONE);
                    let reason = format!("unsupported RD Gateway protocol version {}", h.version_major);
                    return self.refuse(Some(GatewayPacket::HandshakeResponse(reply)), 400, reason);
                }
                if h.extended_auth & ext_auth::PAA == 0 {
                    let reply =
                        HandshakeResponse::new(hresult::E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD, ext_auth::NONE);
                    let reason = "the client offers no gateway access token (PAA)";
                    return self.refuse(Some(GatewayPacket::HandshakeResponse(reply)), 401, reason);
                }
                self.phase = Phase::Handshaken;
                Next::Reply(GatewayPacket::HandshakeResponse(HandshakeResponse::new(
                    hresult::S_OK,
                    ext_auth::PAA,
                )))
            }
            (Phase::Handshaken, ClientPacket::TunnelCreate(create)) => {
                let refused = |status| Some(GatewayPacket::TunnelResponse(TunnelResponse::refuse(status)));
                let token = match create.paa_token() {
                    Ok(Some(t)) if !t.is_empty() => t,
                    Ok(_) => {
                        let code = hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED;
                        return self.refuse(refused(code), 401, Denial::MissingToken.to_string());
                    }
                    Err(e) => {
                        let reason = format!("bad PAA cookie: {e}");
                        return self.refuse(refused(hresult::E_PROXY_COOKIE_BADPACKET), 400, reason);
                    }
                };
                match policy.sign_in_token(&token, now) {
                    Ok(claims) => {
                        self.target = policy.config.targets.get(&claims.tgt).cloned();
                        self.user = Some(claims.sub);
                        self.token = Some(token);
                    }
                    Err(denial) => {
                        let code = hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED;
                        return self.refuse(refused(code), denial.status(), denial.to_string());
                    }
                }
                self.phase = Phase::TunnelCreated;
                Next::Reply(GatewayPacket::TunnelResponse(TunnelResponse::accept(
                    self.tunnel_id,
                    GATEWAY_CAPS,
                )))
            }
            (Phase::TunnelCreated, ClientPacket::TunnelAuth(auth)) => {
                self.client_name = Some(auth.client_name);
                self.phase = Phase::Authorized;
                // The target's policy as advice: the session is encrypted end to end, so the
                // gateway cannot enforce it (mstsc and FreeRDP 3 follow it; `native = false`
                // keeps a target off this path when it must be enforced).
                let flags = self
                    .target
                    .as_ref()
                    .map_or(RedirectFlags::ENABLE_ALL, |t| redirect_flags(t));
                Next::Reply(GatewayPacket::TunnelAuthResponse(TunnelAuthResponse::accept(
                    flags,
                    self.idle_minutes,
                )))
            }
            (Phase::Authorized, ClientPacket::ChannelCreate(create)) => {
                let refused = |code| Some(GatewayPacket::ChannelResponse(ChannelResponse::refuse(code)));
                let Some(resource) = create.resources.first() else {
                    return self.refuse(refused(hresult::E_PROXY_RAP_ACCESSDENIED), 400, "no resource named");
                };
                let token = self.token.clone().unwrap_or_default();
                let destination = destination(policy, resource, create.port);
                let credential = Credential::Token(Some(&token));
                match policy.authorize(
                    credential,
                    Destination::NameOrAddress(&destination),
                    Via::RdGateway,
                    now,
                ) {
                    Ok(grant) => {
                        self.phase = Phase::Connecting;
                        Next::Connect(Box::new(grant))
                    }
                    Err(denial) => {
                        let reason = format!("{denial} (resource {destination})");
                        self.refuse(refused(hresult::E_PROXY_RAP_ACCESSDENIED), denial.status(), reason)
                    }
                }
            }
            // The client may answer a keepalive at any time.
            (phase, ClientPacket::Keepalive) if !matches!(phase, Phase::Start | Phase::Over) => {
                Next::Reply(GatewayPacket::Keepalive)
            }
            (phase, packet) => {
                let reason = format!("unexpected {} in phase {phase:?}", packet_name(&packet));
                self.refuse(None, 400, reason)
            }
        }
    }

    /// The target is connected: the answer that opens the channel.
    pub fn channel_opened(&mut self, channel_id: u32) -> GatewayPacket<'static> {
        self.phase = Phase::Open;
        GatewayPacket::ChannelResponse(ChannelResponse::accept(channel_id))
    }

    /// The channel cannot open after all (`code`: `E_PROXY_TS_CONNECTFAILED` when the target is
    /// unreachable, `E_PROXY_MAXCONNECTIONSREACHED` at the session cap, …).
    pub fn channel_failed(&mut self, code: u32) -> GatewayPacket<'static> {
        self.phase = Phase::Over;
        GatewayPacket::ChannelResponse(ChannelResponse::refuse(code))
    }
}

/// The device redirections a target's policy allows, as TUNNEL_AUTH_RESPONSE flags.
pub fn redirect_flags(target: &crate::config::Target) -> RedirectFlags {
    RedirectFlags::from_allowed(DeviceRedirection {
        drives: target.drives,
        printers: true,
        ports: true,
        clipboard: target.clipboard,
        pnp: true,
    })
}

/// What the policy is asked for: the resource itself when a target has that name, else
/// `host:port` (matched against the configured address of the target the token is for).
fn destination(policy: &Policy, resource: &str, port: u16) -> String {
    if policy.config.targets.contains_key(resource) {
        return resource.to_owned();
    }
    match resource.contains(':') {
        true => format!("[{resource}]:{port}"),
        false => format!("{resource}:{port}"),
    }
}

fn packet_name(packet: &ClientPacket<'_>) -> &'static str {
    match packet {
        ClientPacket::HandshakeRequest(_) => "HANDSHAKE_REQUEST",
        ClientPacket::TunnelCreate(_) => "TUNNEL_CREATE",
        ClientPacket::TunnelAuth(_) => "TUNNEL_AUTH",
        ClientPacket::ChannelCreate(_) => "CHANNEL_CREATE",
        ClientPacket::Data(_) => "DATA",
        ClientPacket::Keepalive => "KEEPALIVE",
        ClientPacket::CloseChannel { .. } => "CLOSE_CHANNEL",
        ClientPacket::CloseChannelResponse { .. } => "CLOSE_CHANNEL_RESPONSE",
    }
}

#[cfg(test)]
mod tests;
