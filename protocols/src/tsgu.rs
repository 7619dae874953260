//! MS-TSGU, the Remote Desktop Gateway's HTTP transport: the binary packets an RDP client (mstsc,
//! FreeRDP's `/g:`) exchanges with the gateway once the HTTP step is over (inside the
//! `RDG_OUT_DATA`/`RDG_IN_DATA` pair or the WebSocket the client upgraded to). The gateway parses
//! what the client sends and encodes its answers; the reverse directions are here too, so tests
//! and the fuzz target can play the client and check round trips.
//!
//! Sans-IO: [`decode_client`] and [`decode_gateway`] take whatever bytes have arrived and answer
//! `Ok(None)` until a whole packet is there, then the packet and how many bytes it took. Packets
//! come from unauthenticated clients (the PAA cookie that authenticates them is inside one), so
//! everything is bounded before it is buffered or parsed: the packet length by [`MAX_PACKET_LEN`],
//! names by [`MAX_NAME_LEN`], resource lists by [`MAX_RESOURCES`]. Parsing is strict: every byte
//! of a packet must belong to a field it announces; unknown fields-present flags are refused.
//!
//! Layouts (all little-endian; every packet starts with the 8-byte header
//! `u16 packetType, u16 reserved, u32 packetLength` whose length includes the header). A
//! "string" is a u16 byte count and that many bytes of UTF-16LE; a "blob" a u16 byte count and
//! the bytes. As FreeRDP 2.11 builds them (`libfreerdp/core/gateway/rdg.c`):
//!
//! | packet | body |
//! | --- | --- |
//! | HANDSHAKE_REQUEST 0x1 | u8 versionMajor (1), u8 versionMinor (0), u16 clientVersion (0), u16 extendedAuth |
//! | HANDSHAKE_RESPONSE 0x2 | u32 errorCode, u8 versionMajor, u8 versionMinor, u16 serverVersion, u16 extendedAuth |
//! | TUNNEL_CREATE 0x4 | u32 capsFlags, u16 fieldsPresent, u16 reserved, [u64 reauthTunnelContext if 0x2], [blob PAACookie if 0x1] |
//! | TUNNEL_RESPONSE 0x5 | u16 serverVersion, u32 statusCode, u16 fieldsPresent, u16 reserved, [u32 tunnelId if 0x1], [u32 capsFlags if 0x2], [string consentMsg if 0x10] |
//! | TUNNEL_AUTH 0x6 | u16 fieldsPresent, string clientName, [blob statementOfHealth if 0x1] |
//! | TUNNEL_AUTH_RESPONSE 0x7 | u32 errorCode, u16 fieldsPresent, u16 reserved, [u32 redirFlags if 0x1], [u32 idleTimeout if 0x2], [blob SoH response if 0x4] |
//! | CHANNEL_CREATE 0x8 | u8 numResources, u8 numAltResources, u16 port, u16 protocol (3), strings resources, strings alternates |
//! | CHANNEL_RESPONSE 0x9 | u32 errorCode, u16 fieldsPresent, u16 reserved, [u32 channelId if 0x1], [u16 udpPort if 0x4], [blob authnCookie if 0x2] |
//! | DATA 0xA | u16 cbDataLen, data (packetLength = 10 + cbDataLen) |
//! | SERVICE_MESSAGE 0xB | string message (gateway to client) |
//! | KEEPALIVE 0xD | nothing |
//! | CLOSE_CHANNEL 0x10, CLOSE_CHANNEL_RESPONSE 0x11 | u32 statusCode |
//!
//! FreeRDP terminates every string it sends with a NUL (it converts with length -1), the PAA
//! cookie too: the cookie is the `/gat:` token as UTF-16LE plus NUL, in a blob, with
//! fieldsPresent 0x1 and extendedAuth PAA (2) in the handshake. Strings decode to `String` with
//! one trailing NUL dropped, and encode with one added, as FreeRDP writes them.

use std::fmt;
use std::ops::BitOr;

/// The packet header: type, reserved, length.
pub const HEADER_LEN: usize = 8;
/// A DATA packet's header and its u16 byte count, before the payload.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 2;
/// Most payload one DATA packet carries (its count is a u16).
pub const MAX_DATA_LEN: usize = u16::MAX as usize;
/// Longest packet accepted or produced. A full DATA packet is 65 545 bytes; the longest control
/// packet within the field limits (a TUNNEL_AUTH with the longest client name and a full
/// statement-of-health blob) is 66 573. 68 KiB covers both, so every packet the decoders accept
/// re-encodes within the limit, and nothing larger is buffered for an unauthenticated client.
pub const MAX_PACKET_LEN: usize = 68 * 1024;
/// Longest client or resource name, in bytes of UTF-16 with its NUL: 511 UTF-16 units, twice a
/// DNS name. FreeRDP sends the local host name and the target host name.
pub const MAX_NAME_LEN: usize = 1024;
/// Most resource names (main and alternate together) in one CHANNEL_CREATE. FreeRDP sends one;
/// a gateway tries them in order, so a long list only multiplies the connection attempts.
pub const MAX_RESOURCES: usize = 16;
/// Longest string in a u16-prefixed field, NUL included.
const MAX_STRING_LEN: usize = u16::MAX as usize;

/// Packet types (`packetType` of the header).
pub mod pkt {
    pub const HANDSHAKE_REQUEST: u16 = 0x1;
    pub const HANDSHAKE_RESPONSE: u16 = 0x2;
    /// Extended authentication (smart card, NTLM) messages: not supported here.
    pub const EXTENDED_AUTH_MSG: u16 = 0x3;
    pub const TUNNEL_CREATE: u16 = 0x4;
    pub const TUNNEL_RESPONSE: u16 = 0x5;
    pub const TUNNEL_AUTH: u16 = 0x6;
    pub const TUNNEL_AUTH_RESPONSE: u16 = 0x7;
    pub const CHANNEL_CREATE: u16 = 0x8;
    pub const CHANNEL_RESPONSE: u16 = 0x9;
    pub const DATA: u16 = 0xA;
    pub const SERVICE_MESSAGE: u16 = 0xB;
    /// Re-authentication: not supported here (a gateway that never advertises the REAUTH
    /// capability never receives it).
    pub const REAUTH_MESSAGE: u16 = 0xC;
    pub const KEEPALIVE: u16 = 0xD;
    pub const CLOSE_CHANNEL: u16 = 0x10;
    pub const CLOSE_CHANNEL_RESPONSE: u16 = 0x11;
}

/// Capability flags (`capsFlags` of TUNNEL_CREATE and TUNNEL_RESPONSE). FreeRDP 2.11 offers
/// `QUAR_SOH | MESSAGING_CONSENT_SIGN | MESSAGING_SERVICE_MSG` (0xD) and only logs what the
/// gateway answers.
pub mod caps {
    pub const QUAR_SOH: u32 = 0x1;
    pub const IDLE_TIMEOUT: u32 = 0x2;
    pub const MESSAGING_CONSENT_SIGN: u32 = 0x4;
    pub const MESSAGING_SERVICE_MSG: u32 = 0x8;
    pub const REAUTH: u32 = 0x10;
    pub const UDP_TRANSPORT: u32 = 0x20;
}

/// Extended authentication methods (`extendedAuth` of the handshake). FreeRDP sends `PAA` when
/// given a `/gat:` access token, otherwise `NONE` (it then authenticated with NTLM over HTTP).
pub mod ext_auth {
    pub const NONE: u16 = 0x0;
    pub const SMART_CARD: u16 = 0x1;
    /// Pluggable authentication: the client proves itself with the PAA cookie of TUNNEL_CREATE.
    pub const PAA: u16 = 0x2;
    pub const SSPI_NTLM: u16 = 0x4;
}

/// Status codes for the error/status fields, as FreeRDP knows them (`tsg.h`, `rpc_fault.c`).
///
/// FreeRDP refuses a handshake, tunnel, tunnel-authorization or channel response only when the
/// code is a failure HRESULT (`FAILED()`: the top bit set, see [`is_failure`](hresult::is_failure));
/// it then stores the code as its last error, logs its name and disconnects. The `0x0000_59xx` codes below are not
/// failures by that test: sent in those responses, FreeRDP carries on as if accepted. In
/// CLOSE_CHANNEL any non-zero code is recorded as the reason of the close.
pub mod hresult {
    pub const S_OK: u32 = 0;
    /// `HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)`. The bare Win32 code 5 is not a failure HRESULT.
    pub const E_ACCESSDENIED: u32 = 0x8007_0005;
    pub const E_PROXY_INTERNALERROR: u32 = 0x8007_59D8;
    /// The resource authorization policy refuses this user the requested resource.
    pub const E_PROXY_RAP_ACCESSDENIED: u32 = 0x8007_59DA;
    pub const E_PROXY_NAP_ACCESSDENIED: u32 = 0x8007_59DB;
    /// The gateway could not reach the requested resource.
    pub const E_PROXY_TS_CONNECTFAILED: u32 = 0x8007_59DD;
    pub const E_PROXY_ALREADYDISCONNECTED: u32 = 0x8007_59DF;
    pub const E_PROXY_CAPABILITYMISMATCH: u32 = 0x8007_59E9;
    pub const E_PROXY_QUARANTINE_ACCESSDENIED: u32 = 0x8007_59ED;
    pub const E_PROXY_NOCERTAVAILABLE: u32 = 0x8007_59EE;
    /// The PAA cookie is not of a form the gateway reads.
    pub const E_PROXY_COOKIE_BADPACKET: u32 = 0x8007_59F7;
    /// The PAA cookie is well-formed but does not authenticate the client (bad, expired).
    pub const E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED: u32 = 0x8007_59F8;
    /// The client offered an extended authentication the gateway does not accept.
    pub const E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD: u32 = 0x8007_59F9;
    /// Not a failure to FreeRDP (see the module's doc).
    pub const E_PROXY_MAXCONNECTIONSREACHED: u32 = 0x0000_59E6;
    /// The same condition as a failure HRESULT (`HRESULT_FROM_WIN32`), which clients act on: the
    /// user holds as many sessions as the gateway allows.
    pub const HR_MAXCONNECTIONSREACHED: u32 = 0x8007_59E6;
    /// Not a failure to FreeRDP (see the module's doc).
    pub const E_PROXY_NOTSUPPORTED: u32 = 0x0000_59E8;
    /// For CLOSE_CHANNEL when the session's time is up.
    pub const E_PROXY_SESSIONTIMEOUT: u32 = 0x0000_59F6;
    pub const E_PROXY_REAUTH_AUTHN_FAILED: u32 = 0x0000_59FA;
    pub const E_PROXY_REAUTH_CAP_FAILED: u32 = 0x0000_59FB;
    pub const E_PROXY_REAUTH_RAP_FAILED: u32 = 0x0000_59FC;
    pub const E_PROXY_SDR_NOT_SUPPORTED_BY_TS: u32 = 0x0000_59FD;
    pub const E_PROXY_REAUTH_NAP_FAILED: u32 = 0x0000_5A00;
    /// For CLOSE_CHANNEL when the gateway ends the connection (an administrator, shutdown).
    pub const E_PROXY_CONNECTIONABORTED: u32 = 0x0000_04D4;

    /// Whether a client treats `code` as a failure (`FAILED(hr)`: the severity bit is set).
    pub const fn is_failure(code: u32) -> bool {
        code & 0x8000_0000 != 0
    }
}

/// `protocol` of CHANNEL_CREATE: RDP, the only one defined (and what FreeRDP sends).
pub const PROTOCOL_RDP: u16 = 3;

// fieldsPresent flags, per packet.
const TUNNEL_CREATE_PAA_COOKIE: u16 = 0x1;
const TUNNEL_CREATE_REAUTH: u16 = 0x2;
const TUNNEL_AUTH_SOH: u16 = 0x1;
const TUNNEL_RESPONSE_TUNNEL_ID: u16 = 0x1;
const TUNNEL_RESPONSE_CAPS: u16 = 0x2;
const TUNNEL_RESPONSE_CONSENT_MSG: u16 = 0x10;
const TUNNEL_AUTH_RESPONSE_REDIR_FLAGS: u16 = 0x1;
const TUNNEL_AUTH_RESPONSE_IDLE_TIMEOUT: u16 = 0x2;
const TUNNEL_AUTH_RESPONSE_SOH_RESPONSE: u16 = 0x4;
const CHANNEL_RESPONSE_CHANNEL_ID: u16 = 0x1;
const CHANNEL_RESPONSE_AUTHN_COOKIE: u16 = 0x2;
const CHANNEL_RESPONSE_UDP_PORT: u16 = 0x4;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsguError {
    /// The header's length cannot even hold the header: the stream is not MS-TSGU (or lost sync).
    #[error("packet length {0} is shorter than the {HEADER_LEN}-byte header")]
    BadLength(u32),
    #[error("packet of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A packet type this direction does not carry or this codec does not support (extended
    /// authentication, re-authentication, unknown types). `length` is the whole packet's, for a
    /// caller that chooses to skip it.
    #[error("packet type {packet_type:#x} not supported in this direction")]
    UnsupportedType { packet_type: u16, length: usize },
    #[error("{0} packet shorter than its fields")]
    Truncated(&'static str),
    #[error("{count} bytes after the fields of a {packet} packet")]
    TrailingBytes { packet: &'static str, count: usize },
    #[error("fields-present flags {flags:#x} of a {packet} packet not supported")]
    UnsupportedFields { packet: &'static str, flags: u16 },
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    FieldTooLong { what: &'static str, len: usize, max: usize },
    #[error("invalid {what}: {reason}")]
    InvalidString { what: &'static str, reason: &'static str },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Packets

/// HANDSHAKE_REQUEST, the client's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeRequest {
    pub version_major: u8,
    pub version_minor: u8,
    /// Always 0 (the specification says so; FreeRDP sends 0).
    pub client_version: u16,
    /// An [`ext_auth`] value: `PAA` when the client will present a PAA cookie.
    pub extended_auth: u16,
}

/// TUNNEL_CREATE: the client asks for a tunnel, with its PAA cookie under PAA authentication.
/// `Debug` shows the cookie's length only: it is a bearer credential, and packets end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelCreate<'a> {
    /// [`caps`] flags the client supports.
    pub capabilities: u32,
    /// The tunnel being re-authenticated (only with the REAUTH capability).
    pub reauth_tunnel_context: Option<u64>,
    /// The PAA cookie as sent: a byte blob to the specification; FreeRDP's is its `/gat:`
    /// token as UTF-16LE with a NUL (see [`TunnelCreate::paa_token`] and [`utf16z`]).
    pub paa_cookie: Option<&'a [u8]>,
}

impl fmt::Debug for TunnelCreate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelCreate")
            .field("capabilities", &self.capabilities)
            .field("reauth_tunnel_context", &self.reauth_tunnel_context)
            .field("paa_cookie", &self.paa_cookie.map(|cookie| Redacted(cookie.len())))
            .finish()
    }
}

/// A secret in `Debug` output: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl TunnelCreate<'_> {
    /// The PAA cookie read as FreeRDP writes it (UTF-16LE, one trailing NUL dropped).
    pub fn paa_token(&self) -> Result<Option<String>, TsguError> {
        self.paa_cookie
            .map(|cookie| decode_utf16(cookie, "PAA cookie", MAX_STRING_LEN))
            .transpose()
    }
}

/// TUNNEL_AUTH: the client asks to be authorized on the tunnel, naming its machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelAuth<'a> {
    /// The client machine's name (FreeRDP: the local host name). Informational: the client
    /// chooses it freely.
    pub client_name: String,
    /// Network Access Protection statement of health (obsolete; FreeRDP never sends one).
    pub statement_of_health: Option<&'a [u8]>,
}

/// CHANNEL_CREATE: the client asks for a channel to a resource (the RDP server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelCreate {
    /// Target names, tried in order (FreeRDP sends one: the `/v:` host). Never empty, no name
    /// empty; at most [`MAX_RESOURCES`] with the alternates.
    pub resources: Vec<String>,
    /// Alternate target names (FreeRDP sends none).
    pub alt_resources: Vec<String>,
    /// The target port (FreeRDP: the `/v:` port, 3389 by default).
    pub port: u16,
    /// The protocol, [`PROTOCOL_RDP`] by the specification; checking it is the caller's.
    pub protocol: u16,
}

/// A packet from the client to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPacket<'a> {
    HandshakeRequest(HandshakeRequest),
    TunnelCreate(TunnelCreate<'a>),
    TunnelAuth(TunnelAuth<'a>),
    ChannelCreate(ChannelCreate),
    /// Bytes of the RDP connection, for the target.
    Data(&'a [u8]),
    /// FreeRDP sends one back for each one the gateway sends.
    Keepalive,
    /// The client closes the channel (FreeRDP 2.11 never does: it just disconnects).
    CloseChannel {
        status: u32,
    },
    /// The client's answer to the gateway's CLOSE_CHANNEL (FreeRDP: status 0).
    CloseChannelResponse {
        status: u32,
    },
}

/// HANDSHAKE_RESPONSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// An [`hresult`] code; a failure ends the connection.
    pub error_code: u32,
    pub version_major: u8,
    pub version_minor: u8,
    pub server_version: u16,
    /// The [`ext_auth`] method the gateway accepts.
    pub extended_auth: u16,
}

impl HandshakeResponse {
    /// Version 1.0, as the client sent.
    pub fn new(error_code: u32, extended_auth: u16) -> Self {
        Self {
            error_code,
            version_major: 1,
            version_minor: 0,
            server_version: 0,
            extended_auth,
        }
    }
}

/// TUNNEL_RESPONSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelResponse {
    pub server_version: u16,
    /// An [`hresult`] code: e.g. `E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED` for a refused PAA
    /// cookie. A failure ends the connection; the optional fields then do not matter.
    pub status: u32,
    pub tunnel_id: Option<u32>,
    /// The [`caps`] the gateway agrees to. FreeRDP 2.11 only logs them; none is required.
    pub capabilities: Option<u32>,
    /// A message the user must accept before going on. FreeRDP's command-line clients ask on
    /// standard input and give up at its end: leave it out for unattended clients.
    pub consent_message: Option<String>,
}

impl TunnelResponse {
    /// Accepts the tunnel, with its id and the capabilities agreed to.
    pub fn accept(tunnel_id: u32, capabilities: u32) -> Self {
        Self {
            server_version: 0,
            status: hresult::S_OK,
            tunnel_id: Some(tunnel_id),
            capabilities: Some(capabilities),
            consent_message: None,
        }
    }

    /// Refuses the tunnel with `status` (a failure [`hresult`]).
    pub fn refuse(status: u32) -> Self {
        Self {
            server_version: 0,
            status,
            tunnel_id: None,
            capabilities: None,
            consent_message: None,
        }
    }
}

/// Which device redirections the client may use, for [`RedirectFlags::from_allowed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceRedirection {
    pub drives: bool,
    pub printers: bool,
    pub ports: bool,
    pub clipboard: bool,
    /// Plug-and-play devices.
    pub pnp: bool,
}

/// `redirFlags` of TUNNEL_AUTH_RESPONSE: the gateway's device-redirection policy.
///
/// Advice to the client, not enforcement: the RDP session is encrypted end to end, so the gateway
/// cannot see or stop redirections. mstsc and FreeRDP 3 apply it; FreeRDP 2.11 does not read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RedirectFlags(pub u32);

impl RedirectFlags {
    /// Every redirection allowed (the other bits are then ignored).
    pub const ENABLE_ALL: Self = Self(0x8000_0000);
    /// Every redirection refused.
    pub const DISABLE_ALL: Self = Self(0x4000_0000);
    pub const DISABLE_DRIVE: Self = Self(0x1);
    pub const DISABLE_PRINTER: Self = Self(0x2);
    pub const DISABLE_PORT: Self = Self(0x4);
    pub const DISABLE_CLIPBOARD: Self = Self(0x8);
    pub const DISABLE_PNP: Self = Self(0x10);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags for a policy: `ENABLE_ALL` when everything is allowed, `DISABLE_ALL` when
    /// nothing is, otherwise one DISABLE bit per refused kind.
    pub fn from_allowed(allowed: DeviceRedirection) -> Self {
        let kinds = [
            (allowed.drives, Self::DISABLE_DRIVE),
            (allowed.printers, Self::DISABLE_PRINTER),
            (allowed.ports, Self::DISABLE_PORT),
            (allowed.clipboard, Self::DISABLE_CLIPBOARD),
            (allowed.pnp, Self::DISABLE_PNP),
        ];
        if kinds.iter().all(|(allowed, _)| *allowed) {
            return Self::ENABLE_ALL;
        }
        if kinds.iter().all(|(allowed, _)| !*allowed) {
            return Self::DISABLE_ALL;
        }
        kinds
            .iter()
            .filter(|(allowed, _)| !*allowed)
            .fold(Self(0), |flags, (_, bit)| flags | *bit)
    }
}

impl BitOr for RedirectFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// TUNNEL_AUTH_RESPONSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelAuthResponse<'a> {
    /// An [`hresult`] code; a failure ends the connection.
    pub error_code: u32,
    pub redirect_flags: Option<RedirectFlags>,
    /// Minutes without input after which the gateway ends the session (0: none). Advice to the
    /// client like the redirection flags; FreeRDP does not use it.
    pub idle_timeout_minutes: Option<u32>,
    /// Answer to a statement of health (obsolete).
    pub soh_response: Option<&'a [u8]>,
}

impl TunnelAuthResponse<'_> {
    /// Authorizes the tunnel, telling the client the redirection policy and idle timeout.
    pub fn accept(redirect_flags: RedirectFlags, idle_timeout_minutes: u32) -> Self {
        Self {
            error_code: hresult::S_OK,
            redirect_flags: Some(redirect_flags),
            idle_timeout_minutes: Some(idle_timeout_minutes),
            soh_response: None,
        }
    }

    /// Refuses authorization with `error_code` (a failure [`hresult`]).
    pub fn refuse(error_code: u32) -> Self {
        Self {
            error_code,
            redirect_flags: None,
            idle_timeout_minutes: None,
            soh_response: None,
        }
    }
}

/// CHANNEL_RESPONSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelResponse<'a> {
    /// An [`hresult`] code: e.g. `E_PROXY_RAP_ACCESSDENIED` for a resource the user may not reach,
    /// `E_PROXY_TS_CONNECTFAILED` when it cannot be reached. A failure ends the connection.
    pub error_code: u32,
    /// Windows clients expect it on success; FreeRDP ignores it.
    pub channel_id: Option<u32>,
    /// UDP side channel (not offered by a gateway without the UDP_TRANSPORT capability).
    pub udp_port: Option<u16>,
    pub authn_cookie: Option<&'a [u8]>,
}

impl ChannelResponse<'_> {
    /// Opens the channel.
    pub fn accept(channel_id: u32) -> Self {
        Self {
            error_code: hresult::S_OK,
            channel_id: Some(channel_id),
            udp_port: None,
            authn_cookie: None,
        }
    }

    /// Refuses the channel with `error_code` (a failure [`hresult`]).
    pub fn refuse(error_code: u32) -> Self {
        Self {
            error_code,
            channel_id: None,
            udp_port: None,
            authn_cookie: None,
        }
    }
}

/// A packet from the gateway to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPacket<'a> {
    HandshakeResponse(HandshakeResponse),
    TunnelResponse(TunnelResponse),
    TunnelAuthResponse(TunnelAuthResponse<'a>),
    ChannelResponse(ChannelResponse<'a>),
    /// Bytes of the RDP connection, from the target.
    Data(&'a [u8]),
    /// A message shown to the user (FreeRDP prints it; only read once the channel is open).
    ServiceMessage(String),
    Keepalive,
    /// The gateway closes the channel; FreeRDP records a non-zero status as the reason and
    /// answers CLOSE_CHANNEL_RESPONSE.
    CloseChannel {
        status: u32,
    },
    CloseChannelResponse {
        status: u32,
    },
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A packet header, checked against the length bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub packet_type: u16,
    /// The whole packet's length, header included: within `HEADER_LEN..=MAX_PACKET_LEN`.
    pub length: usize,
}

/// The header at the start of `buf`, once its 8 bytes are in. A length under the header's own or
/// over [`MAX_PACKET_LEN`] is refused here, before anything is buffered for it.
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, TsguError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut r = Reader::new(header, "header");
    let packet_type = r.u16()?;
    let _reserved = r.u16()?;
    let raw = r.u32()?;
    let length = usize::try_from(raw).unwrap_or(usize::MAX);
    if length < HEADER_LEN {
        return Err(TsguError::BadLength(raw));
    }
    if length > MAX_PACKET_LEN {
        return Err(TsguError::TooLarge {
            len: length,
            max: MAX_PACKET_LEN,
        });
    }
    Ok(Some(Header { packet_type, length }))
}

/// Decodes the client packet at the start of `buf`: `Ok(None)` until it has all arrived,
/// `Ok(Some((packet, consumed)))` once it has (what follows is the next packet's). Errors are
/// decided from the header alone (bad length, unsupported type) or from the whole packet, so
/// feeding the same bytes in any pieces gives the same answers.
pub fn decode_client(buf: &[u8]) -> Result<Option<(ClientPacket<'_>, usize)>, TsguError> {
    let Some(Framed {
        packet_type,
        body,
        length,
    }) = split_packet(buf, is_client_type)?
    else {
        return Ok(None);
    };
    let packet = match packet_type {
        pkt::HANDSHAKE_REQUEST => ClientPacket::HandshakeRequest(parse_handshake_request(body)?),
        pkt::TUNNEL_CREATE => ClientPacket::TunnelCreate(parse_tunnel_create(body)?),
        pkt::TUNNEL_AUTH => ClientPacket::TunnelAuth(parse_tunnel_auth(body)?),
        pkt::CHANNEL_CREATE => ClientPacket::ChannelCreate(parse_channel_create(body)?),
        pkt::DATA => ClientPacket::Data(parse_data(body)?),
        pkt::KEEPALIVE => {
            Reader::new(body, "KEEPALIVE").end()?;
            ClientPacket::Keepalive
        }
        pkt::CLOSE_CHANNEL => ClientPacket::CloseChannel {
            status: parse_close(body, "CLOSE_CHANNEL")?,
        },
        pkt::CLOSE_CHANNEL_RESPONSE => ClientPacket::CloseChannelResponse {
            status: parse_close(body, "CLOSE_CHANNEL_RESPONSE")?,
        },
        _ => return Err(unsupported(packet_type, length)),
    };
    Ok(Some((packet, length)))
}

/// Decodes the gateway packet at the start of `buf`, as [`decode_client`] does client packets.
pub fn decode_gateway(buf: &[u8]) -> Result<Option<(GatewayPacket<'_>, usize)>, TsguError> {
    let Some(Framed {
        packet_type,
        body,
        length,
    }) = split_packet(buf, is_gateway_type)?
    else {
        return Ok(None);
    };
    let packet = match packet_type {
        pkt::HANDSHAKE_RESPONSE => GatewayPacket::HandshakeResponse(parse_handshake_response(body)?),
        pkt::TUNNEL_RESPONSE => GatewayPacket::TunnelResponse(parse_tunnel_response(body)?),
        pkt::TUNNEL_AUTH_RESPONSE => GatewayPacket::TunnelAuthResponse(parse_tunnel_auth_response(body)?),
        pkt::CHANNEL_RESPONSE => GatewayPacket::ChannelResponse(parse_channel_response(body)?),
        pkt::DATA => GatewayPacket::Data(parse_data(body)?),
        pkt::SERVICE_MESSAGE => {
            let mut r = Reader::new(body, "SERVICE_MESSAGE");
            let message = r.string("service message", MAX_STRING_LEN)?;
            r.end()?;
            GatewayPacket::ServiceMessage(message)
        }
        pkt::KEEPALIVE => {
            Reader::new(body, "KEEPALIVE").end()?;
            GatewayPacket::Keepalive
        }
        pkt::CLOSE_CHANNEL => GatewayPacket::CloseChannel {
            status: parse_close(body, "CLOSE_CHANNEL")?,
        },
        pkt::CLOSE_CHANNEL_RESPONSE => GatewayPacket::CloseChannelResponse {
            status: parse_close(body, "CLOSE_CHANNEL_RESPONSE")?,
        },
        _ => return Err(unsupported(packet_type, length)),
    };
    Ok(Some((packet, length)))
}

fn is_client_type(t: u16) -> bool {
    matches!(
        t,
        pkt::HANDSHAKE_REQUEST
            | pkt::TUNNEL_CREATE
            | pkt::TUNNEL_AUTH
            | pkt::CHANNEL_CREATE
            | pkt::DATA
            | pkt::KEEPALIVE
            | pkt::CLOSE_CHANNEL
            | pkt::CLOSE_CHANNEL_RESPONSE
    )
}

fn is_gateway_type(t: u16) -> bool {
    matches!(
        t,
        pkt::HANDSHAKE_RESPONSE
            | pkt::TUNNEL_RESPONSE
            | pkt::TUNNEL_AUTH_RESPONSE
            | pkt::CHANNEL_RESPONSE
            | pkt::DATA
            | pkt::SERVICE_MESSAGE
            | pkt::KEEPALIVE
            | pkt::CLOSE_CHANNEL
            | pkt::CLOSE_CHANNEL_RESPONSE
    )
}

fn unsupported(packet_type: u16, length: usize) -> TsguError {
    TsguError::UnsupportedType { packet_type, length }
}

/// A whole packet cut from the stream: its type, body (after the header) and length.
struct Framed<'a> {
    packet_type: u16,
    body: &'a [u8],
    length: usize,
}

/// The whole packet at the start of `buf`, once it is all there. The type is checked with the
/// header, so an unsupported packet is refused without waiting for its body.
fn split_packet(buf: &[u8], known: fn(u16) -> bool) -> Result<Option<Framed<'_>>, TsguError> {
    let Some(Header { packet_type, length }) = peek_header(buf)? else {
        return Ok(None);
    };
    if !known(packet_type) {
        return Err(unsupported(packet_type, length));
    }
    let Some(body) = buf.get(HEADER_LEN..length) else {
        return Ok(None);
    };
    Ok(Some(Framed {
        packet_type,
        body,
        length,
    }))
}

fn parse_handshake_request(body: &[u8]) -> Result<HandshakeRequest, TsguError> {
    let mut r = Reader::new(body, "HANDSHAKE_REQUEST");
    let request = HandshakeRequest {
        version_major: r.u8()?,
        version_minor: r.u8()?,
        client_version: r.u16()?,
        extended_auth: r.u16()?,
    };
    r.end()?;
    Ok(request)
}

fn parse_tunnel_create(body: &[u8]) -> Result<TunnelCreate<'_>, TsguError> {
    let mut r = Reader::new(body, "TUNNEL_CREATE");
    let capabilities = r.u32()?;
    let fields = r.fields(TUNNEL_CREATE_PAA_COOKIE | TUNNEL_CREATE_REAUTH)?;
    let _reserved = r.u16()?;
    // The specification's order: the re-authenticated tunnel, then the cookie.
    let reauth_tunnel_context = r.optional(fields, TUNNEL_CREATE_REAUTH, Reader::u64)?;
    let paa_cookie = r.optional(fields, TUNNEL_CREATE_PAA_COOKIE, Reader::blob)?;
    r.end()?;
    Ok(TunnelCreate {
        capabilities,
        reauth_tunnel_context,
        paa_cookie,
    })
}

fn parse_tunnel_auth(body: &[u8]) -> Result<TunnelAuth<'_>, TsguError> {
    let mut r = Reader::new(body, "TUNNEL_AUTH");
    let fields = r.fields(TUNNEL_AUTH_SOH)?;
    let client_name = r.string("client name", MAX_NAME_LEN)?;
    let statement_of_health = r.optional(fields, TUNNEL_AUTH_SOH, Reader::blob)?;
    r.end()?;
    Ok(TunnelAuth {
        client_name,
        statement_of_health,
    })
}

fn parse_channel_create(body: &[u8]) -> Result<ChannelCreate, TsguError> {
    let mut r = Reader::new(body, "CHANNEL_CREATE");
    let count = usize::from(r.u8()?);
    let alt_count = usize::from(r.u8()?);
    check_resource_counts(count, alt_count)?;
    let port = r.u16()?;
    let protocol = r.u16()?;
    let mut names = |n: usize| -> Result<Vec<String>, TsguError> {
        (0..n)
            .map(|_| resource_name(r.string("resource name", MAX_NAME_LEN)?))
            .collect()
    };
    let resources = names(count)?;
    let alt_resources = names(alt_count)?;
    r.end()?;
    Ok(ChannelCreate {
        resources,
        alt_resources,
        port,
        protocol,
    })
}

/// At least one resource (a channel to nowhere means nothing), at most [`MAX_RESOURCES`] in all.
fn check_resource_counts(count: usize, alt_count: usize) -> Result<(), TsguError> {
    if count == 0 {
        return Err(TsguError::Malformed("CHANNEL_CREATE names no resource"));
    }
    if count + alt_count > MAX_RESOURCES {
        return Err(TsguError::Malformed("CHANNEL_CREATE names too many resources"));
    }
    Ok(())
}

fn resource_name(name: String) -> Result<String, TsguError> {
    if name.is_empty() {
        return Err(TsguError::InvalidString {
            what: "resource name",
            reason: "empty",
        });
    }
    Ok(name)
}

fn parse_data(body: &[u8]) -> Result<&[u8], TsguError> {
    let mut r = Reader::new(body, "DATA");
    let count = usize::from(r.u16()?);
    if r.rest().len() != count {
        return Err(TsguError::Malformed("DATA byte count disagrees with the packet length"));
    }
    r.take(count)
}

fn parse_close(body: &[u8], packet: &'static str) -> Result<u32, TsguError> {
    let mut r = Reader::new(body, packet);
    let status = r.u32()?;
    r.end()?;
    Ok(status)
}

fn parse_handshake_response(body: &[u8]) -> Result<HandshakeResponse, TsguError> {
    let mut r = Reader::new(body, "HANDSHAKE_RESPONSE");
    let response = HandshakeResponse {
        error_code: r.u32()?,
        version_major: r.u8()?,
        version_minor: r.u8()?,
        server_version: r.u16()?,
        extended_auth: r.u16()?,
    };
    r.end()?;
    Ok(response)
}

fn parse_tunnel_response(body: &[u8]) -> Result<TunnelResponse, TsguError> {
    let mut r = Reader::new(body, "TUNNEL_RESPONSE");
    let server_version = r.u16()?;
    let status = r.u32()?;
    // Not 0x4, the statement-of-health request (a nonce and a server certificate): the
    // specification's nonce is 16 bytes, FreeRDP skips 20. Neither side here sends it.
    let fields = r.fields(TUNNEL_RESPONSE_TUNNEL_ID | TUNNEL_RESPONSE_CAPS | TUNNEL_RESPONSE_CONSENT_MSG)?;
    let _reserved = r.u16()?;
    let tunnel_id = r.optional(fields, TUNNEL_RESPONSE_TUNNEL_ID, Reader::u32)?;
    let capabilities = r.optional(fields, TUNNEL_RESPONSE_CAPS, Reader::u32)?;
    let consent_message = r.optional(fields, TUNNEL_RESPONSE_CONSENT_MSG, |r| {
        r.string("consent message", MAX_STRING_LEN)
    })?;
    r.end()?;
    Ok(TunnelResponse {
        server_version,
        status,
        tunnel_id,
        capabilities,
        consent_message,
    })
}

fn parse_tunnel_auth_response(body: &[u8]) -> Result<TunnelAuthResponse<'_>, TsguError> {
    let mut r = Reader::new(body, "TUNNEL_AUTH_RESPONSE");
    let error_code = r.u32()?;
    let fields = r.fields(
        TUNNEL_AUTH_RESPONSE_REDIR_FLAGS | TUNNEL_AUTH_RESPONSE_IDLE_TIMEOUT | TUNNEL_AUTH_RESPONSE_SOH_RESPONSE,
    )?;
    let _reserved = r.u16()?;
    let redirect_flags = r.optional(fields, TUNNEL_AUTH_RESPONSE_REDIR_FLAGS, |r| r.u32().map(RedirectFlags))?;
    let idle_timeout_minutes = r.optional(fields, TUNNEL_AUTH_RESPONSE_IDLE_TIMEOUT, Reader::u32)?;
    let soh_response = r.optional(fields, TUNNEL_AUTH_RESPONSE_SOH_RESPONSE, Reader::blob)?;
    r.end()?;
    Ok(TunnelAuthResponse {
        error_code,
        redirect_flags,
        idle_timeout_minutes,
        soh_response,
    })
}

fn parse_channel_response(body: &[u8]) -> Result<ChannelResponse<'_>, TsguError> {
    let mut r = Reader::new(body, "CHANNEL_RESPONSE");
    let error_code = r.u32()?;
    let fields = r.fields(CHANNEL_RESPONSE_CHANNEL_ID | CHANNEL_RESPONSE_AUTHN_COOKIE | CHANNEL_RESPONSE_UDP_PORT)?;
    let _reserved = r.u16()?;
    // The specification's order: channel id, UDP port, cookie (not the flags' order).
    let channel_id = r.optional(fields, CHANNEL_RESPONSE_CHANNEL_ID, Reader::u32)?;
    let udp_port = r.optional(fields, CHANNEL_RESPONSE_UDP_PORT, Reader::u16)?;
    let authn_cookie = r.optional(fields, CHANNEL_RESPONSE_AUTHN_COOKIE, Reader::blob)?;
    r.end()?;
    Ok(ChannelResponse {
        error_code,
        channel_id,
        udp_port,
        authn_cookie,
    })
}

/// Reads the fields of one packet body, front to back; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    packet: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], packet: &'static str) -> Self {
        Self { buf, packet }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TsguError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(TsguError::Truncated(self.packet))?;
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TsguError> {
        self.take(N)?.try_into().map_err(|_| TsguError::Truncated(self.packet))
    }

    fn u8(&mut self) -> Result<u8, TsguError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, TsguError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, TsguError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, TsguError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A u16 byte count and that many bytes.
    fn blob(&mut self) -> Result<&'a [u8], TsguError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A u16 byte count and that many bytes of UTF-16LE.
    fn string(&mut self, what: &'static str, max: usize) -> Result<String, TsguError> {
        let bytes = self.blob()?;
        decode_utf16(bytes, what, max)
    }

    /// A fields-present word, refused when it has flags outside `known`.
    fn fields(&mut self, known: u16) -> Result<u16, TsguError> {
        let fields = self.u16()?;
        if fields & !known != 0 {
            return Err(TsguError::UnsupportedFields {
                packet: self.packet,
                flags: fields & !known,
            });
        }
        Ok(fields)
    }

    /// The field read by `read` if `flag` is among `fields`.
    fn optional<T>(
        &mut self,
        fields: u16,
        flag: u16,
        read: impl FnOnce(&mut Self) -> Result<T, TsguError>,
    ) -> Result<Option<T>, TsguError> {
        if fields & flag == 0 {
            return Ok(None);
        }
        read(self).map(Some)
    }

    /// Every byte of the body was a field.
    fn end(self) -> Result<(), TsguError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TsguError::TrailingBytes {
                packet: self.packet,
                count: self.buf.len(),
            })
        }
    }
}

/// UTF-16LE bytes as a `String`, one trailing NUL dropped. Odd lengths, unpaired surrogates and
/// NULs inside are refused (a NUL would cut the name short in C code downstream, so a name could
/// read differently to a check here and to a resolver). `max` bounds the string as it encodes
/// again, NUL included, so whatever decodes re-encodes within the same bound.
fn decode_utf16(bytes: &[u8], what: &'static str, max: usize) -> Result<String, TsguError> {
    let invalid = |reason| TsguError::InvalidString { what, reason };
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(invalid("odd byte length"));
    }
    let mut units: Vec<u16> = pairs.map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
    if units.last() == Some(&0) {
        units.pop();
    }
    let len = units.len().saturating_add(1).saturating_mul(2);
    if len > max {
        return Err(TsguError::FieldTooLong { what, len, max });
    }
    let mut out = String::with_capacity(units.len());
    for c in char::decode_utf16(units) {
        match c {
            Ok('\0') => return Err(invalid("NUL inside")),
            Ok(c) => out.push(c),
            Err(_) => return Err(invalid("unpaired surrogate")),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// `s` as UTF-16LE with a terminating NUL: how FreeRDP writes its strings and its PAA cookie
/// (`TunnelCreate { paa_cookie: Some(&utf16z(token)), .. }` is what `/gat:token` sends).
pub fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect()
}

/// The header and byte count of a DATA packet carrying `payload_len` bytes, for a relay that
/// writes them in front of its payload without copying it.
pub fn data_header(payload_len: usize) -> Result<[u8; DATA_HEADER_LEN], TsguError> {
    let count = u16::try_from(payload_len).map_err(|_| TsguError::FieldTooLong {
        what: "DATA payload",
        len: payload_len,
        max: MAX_DATA_LEN,
    })?;
    // At most 65 545: fits the u32 and MAX_PACKET_LEN.
    let length = DATA_HEADER_LEN as u32 + u32::from(count);
    let mut header = [0u8; DATA_HEADER_LEN];
    let fields = pkt::DATA
        .to_le_bytes()
        .into_iter()
        .chain([0, 0])
        .chain(length.to_le_bytes())
        .chain(count.to_le_bytes());
    for (slot, byte) in header.iter_mut().zip(fields) {
        *slot = byte;
    }
    Ok(header)
}

/// Appends a DATA packet carrying `payload` (at most [`MAX_DATA_LEN`] bytes) to `out`.
pub fn encode_data(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TsguError> {
    out.extend_from_slice(&data_header(payload.len())?);
    out.extend_from_slice(payload);
    Ok(())
}

impl ClientPacket<'_> {
    /// The header's `packetType`.
    pub fn packet_type(&self) -> u16 {
        match self {
            Self::HandshakeRequest(_) => pkt::HANDSHAKE_REQUEST,
            Self::TunnelCreate(_) => pkt::TUNNEL_CREATE,
            Self::TunnelAuth(_) => pkt::TUNNEL_AUTH,
            Self::ChannelCreate(_) => pkt::CHANNEL_CREATE,
            Self::Data(_) => pkt::DATA,
            Self::Keepalive => pkt::KEEPALIVE,
            Self::CloseChannel { .. } => pkt::CLOSE_CHANNEL,
            Self::CloseChannelResponse { .. } => pkt::CLOSE_CHANNEL_RESPONSE,
        }
    }

    /// Appends the packet to `out`, as FreeRDP lays it out. A field over its bound is refused and
    /// `out` is left as it was; whatever is encoded decodes back to the same value.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), TsguError> {
        encode_packet(out, self.packet_type(), |w| match self {
            Self::HandshakeRequest(h) => {
                w.push(h.version_major);
                w.push(h.version_minor);
                put_u16(w, h.client_version);
                put_u16(w, h.extended_auth);
                Ok(())
            }
            Self::TunnelCreate(t) => encode_tunnel_create(w, t),
            Self::TunnelAuth(t) => encode_tunnel_auth(w, t),
            Self::ChannelCreate(c) => encode_channel_create(w, c),
            Self::Data(payload) => put_data(w, payload),
            Self::Keepalive => Ok(()),
            Self::CloseChannel { status } | Self::CloseChannelResponse { status } => {
                put_u32(w, *status);
                Ok(())
            }
        })
    }

    /// The packet as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, TsguError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl GatewayPacket<'_> {
    /// The header's `packetType`.
    pub fn packet_type(&self) -> u16 {
        match self {
            Self::HandshakeResponse(_) => pkt::HANDSHAKE_RESPONSE,
            Self::TunnelResponse(_) => pkt::TUNNEL_RESPONSE,
            Self::TunnelAuthResponse(_) => pkt::TUNNEL_AUTH_RESPONSE,
            Self::ChannelResponse(_) => pkt::CHANNEL_RESPONSE,
            Self::Data(_) => pkt::DATA,
            Self::ServiceMessage(_) => pkt::SERVICE_MESSAGE,
            Self::Keepalive => pkt::KEEPALIVE,
            Self::CloseChannel { .. } => pkt::CLOSE_CHANNEL,
            Self::CloseChannelResponse { .. } => pkt::CLOSE_CHANNEL_RESPONSE,
        }
    }

    /// Appends the packet to `out`. A field over its bound is refused and `out` is left as it
    /// was; whatever is encoded decodes back to the same value.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), TsguError> {
        encode_packet(out, self.packet_type(), |w| match self {
            Self::HandshakeResponse(h) => {
                put_u32(w, h.error_code);
                w.push(h.version_major);
                w.push(h.version_minor);
                put_u16(w, h.server_version);
                put_u16(w, h.extended_auth);
                Ok(())
            }
            Self::TunnelResponse(t) => encode_tunnel_response(w, t),
            Self::TunnelAuthResponse(t) => encode_tunnel_auth_response(w, t),
            Self::ChannelResponse(c) => encode_channel_response(w, c),
            Self::Data(payload) => put_data(w, payload),
            Self::ServiceMessage(message) => put_string(w, message, "service message", MAX_STRING_LEN),
            Self::Keepalive => Ok(()),
            Self::CloseChannel { status } | Self::CloseChannelResponse { status } => {
                put_u32(w, *status);
                Ok(())
            }
        })
    }

    /// The packet as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, TsguError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Writes a header, the body `write` appends, then the length into the header. On an error,
/// `out` is truncated back to where it was.
fn encode_packet(
    out: &mut Vec<u8>,
    packet_type: u16,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), TsguError>,
) -> Result<(), TsguError> {
    let start = out.len();
    put_u16(out, packet_type);
    put_u16(out, 0); // reserved
    put_u32(out, 0); // length, below
    let result = write(out).and_then(|()| {
        let len = out.len() - start;
        let length = u32::try_from(len)
            .ok()
            .filter(|_| len <= MAX_PACKET_LEN)
            .ok_or(TsguError::TooLarge {
                len,
                max: MAX_PACKET_LEN,
            })?;
        if let Some(slot) = out.get_mut(start + 4..start + HEADER_LEN) {
            slot.copy_from_slice(&length.to_le_bytes());
        }
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_tunnel_create(w: &mut Vec<u8>, t: &TunnelCreate<'_>) -> Result<(), TsguError> {
    put_u32(w, t.capabilities);
    let fields = flag(t.paa_cookie.is_some(), TUNNEL_CREATE_PAA_COOKIE)
        | flag(t.reauth_tunnel_context.is_some(), TUNNEL_CREATE_REAUTH);
    put_u16(w, fields);
    put_u16(w, 0); // reserved
    if let Some(context) = t.reauth_tunnel_context {
        w.extend_from_slice(&context.to_le_bytes());
    }
    if let Some(cookie) = t.paa_cookie {
        put_blob(w, cookie, "PAA cookie")?;
    }
    Ok(())
}

fn encode_tunnel_auth(w: &mut Vec<u8>, t: &TunnelAuth<'_>) -> Result<(), TsguError> {
    put_u16(w, flag(t.statement_of_health.is_some(), TUNNEL_AUTH_SOH));
    put_string(w, &t.client_name, "client name", MAX_NAME_LEN)?;
    if let Some(soh) = t.statement_of_health {
        put_blob(w, soh, "statement of health")?;
    }
    Ok(())
}

fn encode_channel_create(w: &mut Vec<u8>, c: &ChannelCreate) -> Result<(), TsguError> {
    check_resource_counts(c.resources.len(), c.alt_resources.len())?;
    // Both fit a u8: MAX_RESOURCES is 16.
    w.push(c.resources.len() as u8);
    w.push(c.alt_resources.len() as u8);
    put_u16(w, c.port);
    put_u16(w, c.protocol);
    for name in c.resources.iter().chain(&c.alt_resources) {
        if name.is_empty() {
            return Err(TsguError::InvalidString {
                what: "resource name",
                reason: "empty",
            });
        }
        put_string(w, name, "resource name", MAX_NAME_LEN)?;
    }
    Ok(())
}

fn encode_tunnel_response(w: &mut Vec<u8>, t: &TunnelResponse) -> Result<(), TsguError> {
    put_u16(w, t.server_version);
    put_u32(w, t.status);
    let fields = flag(t.tunnel_id.is_some(), TUNNEL_RESPONSE_TUNNEL_ID)
        | flag(t.capabilities.is_some(), TUNNEL_RESPONSE_CAPS)
        | flag(t.consent_message.is_some(), TUNNEL_RESPONSE_CONSENT_MSG);
    put_u16(w, fields);
    put_u16(w, 0); // reserved
    if let Some(id) = t.tunnel_id {
        put_u32(w, id);
    }
    if let Some(caps) = t.capabilities {
        put_u32(w, caps);
    }
    if let Some(message) = &t.consent_message {
        put_string(w, message, "consent message", MAX_STRING_LEN)?;
    }
    Ok(())
}

fn encode_tunnel_auth_response(w: &mut Vec<u8>, t: &TunnelAuthResponse<'_>) -> Result<(), TsguError> {
    put_u32(w, t.error_code);
    let fields = flag(t.redirect_flags.is_some(), TUNNEL_AUTH_RESPONSE_REDIR_FLAGS)
        | flag(t.idle_timeout_minutes.is_some(), TUNNEL_AUTH_RESPONSE_IDLE_TIMEOUT)
        | flag(t.soh_response.is_some(), TUNNEL_AUTH_RESPONSE_SOH_RESPONSE);
    put_u16(w, fields);
    put_u16(w, 0); // reserved
    if let Some(flags) = t.redirect_flags {
        put_u32(w, flags.bits());
    }
    if let Some(minutes) = t.idle_timeout_minutes {
        put_u32(w, minutes);
    }
    if let Some(soh) = t.soh_response {
        put_blob(w, soh, "SoH response")?;
    }
    Ok(())
}

fn encode_channel_response(w: &mut Vec<u8>, c: &ChannelResponse<'_>) -> Result<(), TsguError> {
    put_u32(w, c.error_code);
    let fields = flag(c.channel_id.is_some(), CHANNEL_RESPONSE_CHANNEL_ID)
        | flag(c.udp_port.is_some(), CHANNEL_RESPONSE_UDP_PORT)
        | flag(c.authn_cookie.is_some(), CHANNEL_RESPONSE_AUTHN_COOKIE);
    put_u16(w, fields);
    put_u16(w, 0); // reserved
    if let Some(id) = c.channel_id {
        put_u32(w, id);
    }
    if let Some(port) = c.udp_port {
        put_u16(w, port);
    }
    if let Some(cookie) = c.authn_cookie {
        put_blob(w, cookie, "authentication cookie")?;
    }
    Ok(())
}

fn flag(present: bool, bit: u16) -> u16 {
    if present {
        bit
    } else {
        0
    }
}

fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_data(w: &mut Vec<u8>, payload: &[u8]) -> Result<(), TsguError> {
    put_blob(w, payload, "DATA payload")
}

fn put_blob(w: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), TsguError> {
    let len = u16::try_from(bytes.len()).map_err(|_| TsguError::FieldTooLong {
        what,
        len: bytes.len(),
        max: MAX_STRING_LEN,
    })?;
    put_u16(w, len);
    w.extend_from_slice(bytes);
    Ok(())
}

/// A u16 byte count and `s` as UTF-16LE with a NUL, within `max` bytes. A NUL inside `s` is
/// refused: it would not decode back to `s`.
fn put_string(w: &mut Vec<u8>, s: &str, what: &'static str, max: usize) -> Result<(), TsguError> {
    if s.contains('\0') {
        return Err(TsguError::InvalidString {
            what,
            reason: "NUL inside",
        });
    }
    let bytes = utf16z(s);
    if bytes.len() > max {
        return Err(TsguError::FieldTooLong {
            what,
            len: bytes.len(),
            max,
        });
    }
    put_blob(w, &bytes, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packets FreeRDP 2.11 sends for `/g:… /gat:ab /v:h:3389` from a machine named `pc`.
    fn freerdp_packets() -> Vec<Vec<u8>> {
        vec![
            // rdg_send_handshake: version 1.0, client version 0, extended auth PAA.
            vec![1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 2, 0],
            // rdg_send_tunnel_request: caps 0xD, PAA cookie "ab" + NUL as UTF-16LE, length 6.
            vec![
                4, 0, 0, 0, 24, 0, 0, 0, 0x0d, 0, 0, 0, 1, 0, 0, 0, 6, 0, b'a', 0, b'b', 0, 0, 0,
            ],
            // rdg_send_tunnel_authorization: no fields, client name "pc" + NUL.
            vec![6, 0, 0, 0, 18, 0, 0, 0, 0, 0, 6, 0, b'p', 0, b'c', 0, 0, 0],
            // rdg_send_channel_create: 1 resource, 0 alternates, port 3389, protocol 3, "h" + NUL.
            vec![8, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0x3d, 0x0d, 3, 0, 4, 0, b'h', 0, 0, 0],
            // rdg_write_chunked_data_packet: length 10 + n, count n.
            vec![10, 0, 0, 0, 13, 0, 0, 0, 3, 0, b'x', b'y', b'z'],
            // rdg_process_keep_alive_packet's echo.
            vec![13, 0, 0, 0, 8, 0, 0, 0],
            // rdg_process_close_packet's answer.
            vec![0x11, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0],
        ]
    }

    fn client_packets() -> Vec<ClientPacket<'static>> {
        vec![
            ClientPacket::HandshakeRequest(HandshakeRequest {
                version_major: 1,
                version_minor: 0,
                client_version: 0,
                extended_auth: ext_auth::PAA,
            }),
            ClientPacket::TunnelCreate(TunnelCreate {
                capabilities: caps::QUAR_SOH | caps::MESSAGING_CONSENT_SIGN | caps::MESSAGING_SERVICE_MSG,
                reauth_tunnel_context: None,
                paa_cookie: Some(b"a\0b\0\0\0"),
            }),
            ClientPacket::TunnelAuth(TunnelAuth {
                client_name: "pc".into(),
                statement_of_health: None,
            }),
            ClientPacket::ChannelCreate(ChannelCreate {
                resources: vec!["h".into()],
                alt_resources: vec![],
                port: 3389,
                protocol: PROTOCOL_RDP,
            }),
            ClientPacket::Data(b"xyz"),
            ClientPacket::Keepalive,
            ClientPacket::CloseChannelResponse { status: 0 },
        ]
    }

    /// Every client packet kind, with every optional field somewhere.
    fn all_client_packets() -> Vec<ClientPacket<'static>> {
        let mut packets = client_packets();
        packets.extend([
            ClientPacket::HandshakeRequest(HandshakeRequest {
                version_major: 1,
                version_minor: 0,
                client_version: 0,
                extended_auth: ext_auth::NONE,
            }),
            ClientPacket::TunnelCreate(TunnelCreate {
                capabilities: 0,
                reauth_tunnel_context: None,
                paa_cookie: None,
            }),
            ClientPacket::TunnelCreate(TunnelCreate {
                capabilities: caps::REAUTH,
                reauth_tunnel_context: Some(0x0102_0304_0506_0708),
                paa_cookie: Some(b"\xff\x00\x01"),
            }),
            ClientPacket::TunnelAuth(TunnelAuth {
                client_name: String::new(),
                statement_of_health: Some(b"soh"),
            }),
            ClientPacket::ChannelCreate(ChannelCreate {
                resources: vec!["rdp1.example".into(), "héllo-𝄞".into()],
                alt_resources: vec!["10.0.0.1".into()],
                port: 0,
                protocol: 7,
            }),
            ClientPacket::Data(b""),
            ClientPacket::CloseChannel {
                status: hresult::E_PROXY_SESSIONTIMEOUT,
            },
        ]);
        packets
    }

    fn all_gateway_packets() -> Vec<GatewayPacket<'static>> {
        vec![
            GatewayPacket::HandshakeResponse(HandshakeResponse::new(hresult::S_OK, ext_auth::PAA)),
            GatewayPacket::HandshakeResponse(HandshakeResponse::new(
                hresult::E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD,
                ext_auth::NONE,
            )),
            GatewayPacket::TunnelResponse(TunnelResponse::accept(10, caps::IDLE_TIMEOUT)),
            GatewayPacket::TunnelResponse(TunnelResponse::refuse(
                hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            )),
            GatewayPacket::TunnelResponse(TunnelResponse {
                consent_message: Some("Authorized use only.".into()),
                ..TunnelResponse::accept(1, caps::MESSAGING_CONSENT_SIGN)
            }),
            GatewayPacket::TunnelAuthResponse(TunnelAuthResponse::accept(RedirectFlags::DISABLE_ALL, 30)),
            GatewayPacket::TunnelAuthResponse(TunnelAuthResponse::refuse(hresult::E_ACCESSDENIED)),
            GatewayPacket::TunnelAuthResponse(TunnelAuthResponse {
                soh_response: Some(b"ok"),
                ..TunnelAuthResponse::accept(RedirectFlags::DISABLE_CLIPBOARD, 0)
            }),
            GatewayPacket::ChannelResponse(ChannelResponse::accept(1)),
            GatewayPacket::ChannelResponse(ChannelResponse::refuse(hresult::E_PROXY_RAP_ACCESSDENIED)),
            GatewayPacket::ChannelResponse(ChannelResponse {
                udp_port: Some(3391),
                authn_cookie: Some(b"cookie"),
                ..ChannelResponse::accept(2)
            }),
            GatewayPacket::Data(b"server bytes"),
            GatewayPacket::ServiceMessage("The session ends in 5 minutes.".into()),
            GatewayPacket::Keepalive,
            GatewayPacket::CloseChannel {
                status: hresult::E_PROXY_CONNECTIONABORTED,
            },
            GatewayPacket::CloseChannelResponse { status: 0 },
        ]
    }

    #[test]
    fn freerdp_packets_decode_exactly() {
        for (bytes, expected) in freerdp_packets().iter().zip(client_packets()) {
            let (packet, used) = decode_client(bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(packet, expected);
            assert_eq!(&packet.to_vec().unwrap(), bytes, "encodes as FreeRDP does");
        }
        let packets = freerdp_packets();
        let (ClientPacket::TunnelCreate(create), _) = decode_client(&packets[1]).unwrap().unwrap() else {
            panic!("not a tunnel create")
        };
        assert_eq!(create.paa_token(), Ok(Some("ab".into())));
        assert_eq!(create.paa_cookie, Some(&utf16z("ab")[..]));
        let shown = format!("{create:?}");
        assert!(shown.contains("paa_cookie: Some(<6 bytes>)"), "{shown}");
        assert!(!shown.contains("97"), "the cookie stays out of Debug: {shown}");
    }

    #[test]
    fn gateway_answers_have_freerdps_layout() {
        // rdg_process_handshake_response reads 10 bytes: error, 1.0, server version, ext auth.
        let handshake = GatewayPacket::HandshakeResponse(HandshakeResponse::new(0, ext_auth::PAA));
        assert_eq!(
            handshake.to_vec().unwrap(),
            [2, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0]
        );
        // rdg_process_tunnel_response: server version, status, fields, reserved, then tunnel id
        // and caps as flagged.
        let tunnel = GatewayPacket::TunnelResponse(TunnelResponse::accept(10, caps::IDLE_TIMEOUT));
        assert_eq!(
            tunnel.to_vec().unwrap(),
            [5, 0, 0, 0, 26, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0, 0]
        );
        let refused = GatewayPacket::TunnelResponse(TunnelResponse::refuse(
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
        ));
        assert_eq!(
            refused.to_vec().unwrap(),
            [5, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0xf8, 0x59, 0x07, 0x80, 0, 0, 0, 0]
        );
        let auth = GatewayPacket::TunnelAuthResponse(TunnelAuthResponse::accept(
            RedirectFlags::DISABLE_CLIPBOARD | RedirectFlags::DISABLE_DRIVE,
            30,
        ));
        assert_eq!(
            auth.to_vec().unwrap(),
            [7, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 30, 0, 0, 0]
        );
        let channel = GatewayPacket::ChannelResponse(ChannelResponse::accept(1));
        assert_eq!(
            channel.to_vec().unwrap(),
            [9, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
        );
        // rdg_process_close_packet reads the u32 status.
        let close = GatewayPacket::CloseChannel {
            status: hresult::E_PROXY_SESSIONTIMEOUT,
        };
        assert_eq!(close.to_vec().unwrap(), [0x10, 0, 0, 0, 12, 0, 0, 0, 0xf6, 0x59, 0, 0]);
        assert_eq!(GatewayPacket::Keepalive.to_vec().unwrap(), [13, 0, 0, 0, 8, 0, 0, 0]);
        // rdg_read_data_packet reads the header and the count, then the bytes.
        assert_eq!(
            GatewayPacket::Data(b"hi").to_vec().unwrap(),
            [10, 0, 0, 0, 12, 0, 0, 0, 2, 0, b'h', b'i']
        );
        // rdg_process_service_message: one string.
        assert_eq!(
            GatewayPacket::ServiceMessage("m".into()).to_vec().unwrap(),
            [0xb, 0, 0, 0, 14, 0, 0, 0, 4, 0, b'm', 0, 0, 0]
        );
    }

    #[test]
    fn every_packet_round_trips() {
        for packet in all_client_packets() {
            let bytes = packet.to_vec().unwrap();
            assert_eq!(
                decode_client(&bytes),
                Ok(Some((packet.clone(), bytes.len()))),
                "{packet:?}"
            );
        }
        for packet in all_gateway_packets() {
            let bytes = packet.to_vec().unwrap();
            assert_eq!(
                decode_gateway(&bytes),
                Ok(Some((packet.clone(), bytes.len()))),
                "{packet:?}"
            );
        }
    }

    #[test]
    fn directions_are_kept_apart() {
        let handshake = GatewayPacket::HandshakeResponse(HandshakeResponse::new(0, 0))
            .to_vec()
            .unwrap();
        assert_eq!(
            decode_client(&handshake),
            Err(TsguError::UnsupportedType {
                packet_type: pkt::HANDSHAKE_RESPONSE,
                length: 18
            })
        );
        let request = freerdp_packets().remove(0);
        assert!(matches!(
            decode_gateway(&request),
            Err(TsguError::UnsupportedType { packet_type: 1, .. })
        ));
        // Extended authentication and re-authentication are refused from the header alone.
        for t in [pkt::EXTENDED_AUTH_MSG, pkt::REAUTH_MESSAGE, 0, 0xe, 0x12, 0xffff] {
            let header = [t.to_le_bytes()[0], t.to_le_bytes()[1], 0, 0, 0, 1, 0, 0];
            assert_eq!(
                decode_client(&header),
                Err(TsguError::UnsupportedType {
                    packet_type: t,
                    length: 256
                })
            );
        }
        // Packets both sides send decode either way.
        let data = ClientPacket::Data(b"x").to_vec().unwrap();
        assert_eq!(decode_gateway(&data), Ok(Some((GatewayPacket::Data(b"x"), 11))));
    }

    /// Feeds `stream` in pieces cut at `cuts` into a growing buffer, decoding whenever a piece
    /// arrives; returns each packet re-encoded and what was left undecoded.
    fn decode_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buffer = Vec::new();
        let mut packets = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            buffer.extend_from_slice(&stream[from..cut]);
            from = cut;
            while let Some((packet, used)) = decode_client(&buffer).unwrap() {
                packets.push(packet.to_vec().unwrap());
                buffer.drain(..used);
            }
        }
        (packets, buffer)
    }

    #[test]
    fn any_split_of_a_stream_decodes_the_same() {
        let packets: Vec<Vec<u8>> = all_client_packets().iter().map(|p| p.to_vec().unwrap()).collect();
        let mut stream = packets.concat();
        stream.extend_from_slice(&[4, 0, 0]); // the start of one more packet
        let whole = decode_in_pieces(&stream, &[]);
        assert_eq!(whole.0, packets);
        assert_eq!(whole.1, [4, 0, 0]);
        for a in 0..=stream.len() {
            assert_eq!(decode_in_pieces(&stream, &[a]), whole, "cut at {a}");
        }
        for a in (0..=stream.len()).step_by(7) {
            for b in (a..=stream.len()).step_by(5) {
                assert_eq!(decode_in_pieces(&stream, &[a, b]), whole, "cut at {a}, {b}");
            }
        }
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(decode_in_pieces(&stream, &bytewise), whole);
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        for packet in all_client_packets() {
            let bytes = packet.to_vec().unwrap();
            for cut in 0..bytes.len() {
                assert_eq!(decode_client(&bytes[..cut]), Ok(None), "{packet:?} cut at {cut}");
            }
        }
        for packet in all_gateway_packets() {
            let bytes = packet.to_vec().unwrap();
            for cut in 0..bytes.len() {
                assert_eq!(decode_gateway(&bytes[..cut]), Ok(None), "{packet:?} cut at {cut}");
            }
        }
    }

    fn with_length(packet_type: u16, length: u32) -> Vec<u8> {
        let mut header = packet_type.to_le_bytes().to_vec();
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&length.to_le_bytes());
        header
    }

    #[test]
    fn lengths_are_bounded_from_the_header() {
        for length in [0, 1, 7] {
            assert_eq!(
                decode_client(&with_length(pkt::DATA, length)),
                Err(TsguError::BadLength(length))
            );
        }
        let over = MAX_PACKET_LEN as u32 + 1;
        for length in [over, u32::MAX] {
            assert_eq!(
                decode_client(&with_length(pkt::DATA, length)),
                Err(TsguError::TooLarge {
                    len: length as usize,
                    max: MAX_PACKET_LEN
                })
            );
        }
        // The largest allowed length only waits for its bytes.
        assert_eq!(decode_client(&with_length(pkt::DATA, MAX_PACKET_LEN as u32)), Ok(None));
        // A full DATA packet is well within it.
        let full = vec![0x5a; MAX_DATA_LEN];
        let bytes = ClientPacket::Data(&full).to_vec().unwrap();
        assert_eq!(bytes.len(), DATA_HEADER_LEN + MAX_DATA_LEN);
        assert_eq!(
            decode_client(&bytes),
            Ok(Some((ClientPacket::Data(&full), bytes.len())))
        );
        let over = vec![0; MAX_DATA_LEN + 1];
        assert!(matches!(
            ClientPacket::Data(&over).to_vec(),
            Err(TsguError::FieldTooLong { .. })
        ));
        assert!(data_header(MAX_DATA_LEN + 1).is_err());
        let mut out = vec![1, 2];
        assert!(encode_data(&over, &mut out).is_err());
        encode_data(b"ab", &mut out).unwrap();
        assert_eq!(out, [1, 2, 10, 0, 0, 0, 12, 0, 0, 0, 2, 0, b'a', b'b']);
    }

    #[test]
    fn truncated_and_padded_bodies_are_refused() {
        for bytes in freerdp_packets() {
            // The header claims one byte less or more than the fields take.
            for delta in [-1i64, 1] {
                let mut changed = bytes.clone();
                let len = (bytes.len() as i64 + delta) as u32;
                changed[4..8].copy_from_slice(&len.to_le_bytes());
                changed.resize(len as usize, 0);
                if len < HEADER_LEN as u32 {
                    continue;
                }
                let answer = decode_client(&changed);
                assert!(answer.is_err(), "{changed:?} gave {answer:?}");
            }
        }
        // DATA's count must agree with the packet length, whichever way.
        let data = [10, 0, 0, 0, 12, 0, 0, 0, 3, 0, b'a', b'b'];
        assert!(matches!(decode_client(&data), Err(TsguError::Malformed(_))));
        let data = [10, 0, 0, 0, 12, 0, 0, 0, 1, 0, b'a', b'b'];
        assert!(matches!(decode_client(&data), Err(TsguError::Malformed(_))));
        // A string count running past the packet.
        let auth = [6, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0xff, 0xff, b'p', 0];
        assert_eq!(decode_client(&auth), Err(TsguError::Truncated("TUNNEL_AUTH")));
        // Unknown fields-present flags.
        let create = [4, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0];
        assert_eq!(
            decode_client(&create),
            Err(TsguError::UnsupportedFields {
                packet: "TUNNEL_CREATE",
                flags: 0x80
            })
        );
        // The SoH request of a tunnel response (nonce of 16 or 20 bytes?) is not guessed at.
        let response = [5, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
        assert!(matches!(
            decode_gateway(&response),
            Err(TsguError::UnsupportedFields { flags: 4, .. })
        ));
    }

    fn channel_create_with_name(name: &[u8]) -> Vec<u8> {
        let mut body = vec![1, 0, 0x3d, 0x0d, 3, 0];
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        let mut packet = with_length(pkt::CHANNEL_CREATE, (HEADER_LEN + body.len()) as u32);
        packet.extend_from_slice(&body);
        packet
    }

    fn resource(name: &[u8]) -> Result<Vec<String>, TsguError> {
        match decode_client(&channel_create_with_name(name))? {
            Some((ClientPacket::ChannelCreate(c), _)) => Ok(c.resources),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_names_decode_strictly() {
        let units = |s: &[u16]| s.iter().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>();
        // With or without the NUL FreeRDP adds; any script, surrogate pairs included.
        assert_eq!(resource(&utf16z("rdp1")), Ok(vec!["rdp1".into()]));
        assert_eq!(resource(&units(&[0x72, 0x64, 0x70])), Ok(vec!["rdp".into()]));
        assert_eq!(resource(&utf16z("ホスト𝄞")), Ok(vec!["ホスト𝄞".into()]));
        let invalid = |reason| {
            Err(TsguError::InvalidString {
                what: "resource name",
                reason,
            })
        };
        assert_eq!(resource(b"r\0d"), invalid("odd byte length"));
        assert_eq!(resource(&units(&[0x61, 0xd800, 0])), invalid("unpaired surrogate"));
        assert_eq!(resource(&units(&[0xdc00, 0x61])), invalid("unpaired surrogate"));
        assert_eq!(
            resource(&units(&[0xd834, 0xd834, 0xdd1e])),
            invalid("unpaired surrogate")
        );
        assert_eq!(resource(&units(&[0x61, 0, 0x62, 0])), invalid("NUL inside"));
        assert_eq!(resource(&units(&[0, 0])), invalid("NUL inside"));
        assert_eq!(resource(&units(&[0])), invalid("empty"));
        assert_eq!(resource(b""), invalid("empty"));
        // Bounded, NUL included, whether or not the client sent one.
        let longest = "a".repeat(MAX_NAME_LEN / 2 - 1);
        assert_eq!(resource(&utf16z(&longest)), Ok(vec![longest.clone()]));
        let without_nul = units(&vec![0x61; MAX_NAME_LEN / 2]);
        assert!(matches!(resource(&without_nul), Err(TsguError::FieldTooLong { .. })));
        // So is the list.
        let many = ChannelCreate {
            resources: vec!["h".into(); MAX_RESOURCES],
            alt_resources: vec![],
            port: 1,
            protocol: 3,
        };
        let bytes = ClientPacket::ChannelCreate(many.clone()).to_vec().unwrap();
        assert!(decode_client(&bytes).is_ok());
        let too_many = ChannelCreate {
            alt_resources: vec!["h".into()],
            ..many
        };
        assert!(ClientPacket::ChannelCreate(too_many).to_vec().is_err());
        let mut bytes = bytes;
        bytes[9] = 1; // one alternate more than the limit, claimed
        assert!(matches!(decode_client(&bytes), Err(TsguError::Malformed(_))));
        bytes[8] = 0;
        bytes[9] = 0;
        assert!(matches!(decode_client(&bytes), Err(TsguError::Malformed(_))));
    }

    #[test]
    fn encoding_refuses_what_would_not_decode_back() {
        let mut out = vec![7];
        for bad in [
            ClientPacket::TunnelAuth(TunnelAuth {
                client_name: "a\0b".into(),
                statement_of_health: None,
            }),
            ClientPacket::TunnelAuth(TunnelAuth {
                client_name: "a".repeat(MAX_NAME_LEN),
                statement_of_health: None,
            }),
            ClientPacket::ChannelCreate(ChannelCreate {
                resources: vec![String::new()],
                alt_resources: vec![],
                port: 1,
                protocol: 3,
            }),
            ClientPacket::ChannelCreate(ChannelCreate {
                resources: vec![],
                alt_resources: vec![],
                port: 1,
                protocol: 3,
            }),
        ] {
            assert!(bad.encode(&mut out).is_err(), "{bad:?}");
            assert_eq!(out, [7], "nothing left behind");
        }
        let cookie = vec![0; MAX_DATA_LEN + 1];
        let create = ClientPacket::TunnelCreate(TunnelCreate {
            capabilities: 0,
            reauth_tunnel_context: None,
            paa_cookie: Some(&cookie),
        });
        assert!(create.encode(&mut out).is_err());
        let message = GatewayPacket::ServiceMessage("m".repeat(MAX_STRING_LEN / 2));
        assert!(message.encode(&mut out).is_err());
        assert_eq!(out, [7]);
    }

    #[test]
    fn the_largest_fields_fit_the_packet_bound() {
        let name = "n".repeat(MAX_NAME_LEN / 2 - 1);
        let soh = vec![1; MAX_DATA_LEN];
        let auth = ClientPacket::TunnelAuth(TunnelAuth {
            client_name: name,
            statement_of_health: Some(&soh),
        });
        let bytes = auth.to_vec().unwrap();
        assert!(bytes.len() <= MAX_PACKET_LEN);
        assert_eq!(decode_client(&bytes), Ok(Some((auth, bytes.len()))));
        // FreeRDP's longest PAA cookie: 32 767 UTF-16 units, NUL included.
        let cookie = utf16z(&"t".repeat(32_766));
        let create = ClientPacket::TunnelCreate(TunnelCreate {
            capabilities: 0xd,
            reauth_tunnel_context: None,
            paa_cookie: Some(&cookie),
        });
        let bytes = create.to_vec().unwrap();
        assert_eq!(bytes.len(), 16 + 2 + 65_534);
        let (ClientPacket::TunnelCreate(decoded), _) = decode_client(&bytes).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(decoded.paa_token().unwrap().unwrap().len(), 32_766);
    }

    #[test]
    fn redirect_flags_follow_the_policy() {
        let all = DeviceRedirection {
            drives: true,
            printers: true,
            ports: true,
            clipboard: true,
            pnp: true,
        };
        assert_eq!(RedirectFlags::from_allowed(all), RedirectFlags::ENABLE_ALL);
        assert_eq!(
            RedirectFlags::from_allowed(DeviceRedirection::default()),
            RedirectFlags::DISABLE_ALL
        );
        let clipboard_only = RedirectFlags::from_allowed(DeviceRedirection {
            clipboard: true,
            ..DeviceRedirection::default()
        });
        assert_eq!(clipboard_only.bits(), 0x1 | 0x2 | 0x4 | 0x10);
        assert!(clipboard_only.contains(RedirectFlags::DISABLE_DRIVE));
        assert!(!clipboard_only.contains(RedirectFlags::DISABLE_CLIPBOARD));
        let no_drives = RedirectFlags::from_allowed(DeviceRedirection { drives: false, ..all });
        assert_eq!(no_drives, RedirectFlags::DISABLE_DRIVE);
    }

    #[test]
    fn failure_codes_are_what_freerdp_calls_failures() {
        use hresult::*;
        for code in [
            E_ACCESSDENIED,
            E_PROXY_INTERNALERROR,
            E_PROXY_RAP_ACCESSDENIED,
            E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            E_PROXY_COOKIE_BADPACKET,
            E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD,
            E_PROXY_TS_CONNECTFAILED,
        ] {
            assert!(is_failure(code), "{code:#x}");
        }
        for code in [S_OK, E_PROXY_MAXCONNECTIONSREACHED, E_PROXY_NOTSUPPORTED, 5] {
            assert!(!is_failure(code), "{code:#x}");
        }
    }

    #[test]
    fn paa_tokens_decode_like_names() {
        let token = |cookie: &'static [u8]| {
            TunnelCreate {
                capabilities: 0,
                reauth_tunnel_context: None,
                paa_cookie: Some(cookie),
            }
            .paa_token()
        };
        assert_eq!(token(b"e\0y\0J\0\0\0"), Ok(Some("eyJ".into())));
        assert!(token(b"e\0y").is_err());
        assert!(token(b"\x00\xd8").is_err());
        let none = TunnelCreate {
            capabilities: 0,
            reauth_tunnel_context: None,
            paa_cookie: None,
        };
        assert_eq!(none.paa_token(), Ok(None));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// A decoder reduced to the length it consumed.
        type Decode = fn(&[u8]) -> Result<Option<usize>, TsguError>;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let decoders: [Decode; 2] = [
                    |b| decode_client(b).map(|p| p.map(|(_, n)| n)),
                    |b| decode_gateway(b).map(|p| p.map(|(_, n)| n)),
                ];
                for decode in decoders {
                    if let Ok(Some(n)) = decode(&bytes) {
                        prop_assert!((HEADER_LEN..=bytes.len()).contains(&n));
                    }
                }
            }

            #[test]
            fn names_round_trip(name in "[^\\x00]{1,100}", client in "[^\\x00]{0,100}", port: u16) {
                let packets = [
                    ClientPacket::ChannelCreate(ChannelCreate {
                        resources: vec![name.clone()],
                        alt_resources: vec![client.clone()].into_iter().filter(|c| !c.is_empty()).collect(),
                        port,
                        protocol: PROTOCOL_RDP,
                    }),
                    ClientPacket::TunnelAuth(TunnelAuth { client_name: client.clone(), statement_of_health: None }),
                ];
                for packet in packets {
                    let bytes = packet.to_vec().unwrap();
                    prop_assert_eq!(decode_client(&bytes), Ok(Some((packet, bytes.len()))));
                }
            }
        }
    }
}
