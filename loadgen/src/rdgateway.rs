//! The RD Gateway path (`--rd-gateway`): sessions reach the target through the gateway's RD
//! Gateway (MS-TSGU over WebSocket, `/remoteDesktopGateway/`) as an RDP client with a gateway
//! access token does (FreeRDP's `/g: /gat:`), instead of the tunnel route.
//!
//! Opening: `RDG_OUT_DATA` upgraded to a WebSocket with `RDG-Auth-Scheme: PAA` (the request head is
//! `Endpoint`'s), then the control phase ([`open_channel`]): handshake, tunnel create with the
//! token as the PAA cookie (UTF-16LE and a NUL, as FreeRDP sends it), tunnel authorize, channel
//! create naming `--target`. Then every payload travels as DATA packets, one per masked binary
//! message (`WsConn` wraps them: [`frame_data`]), and [`Unpacker`] takes the DATA payload out of the
//! gateway's messages. Packets are built and read with the product's codec
//! (`portcullis_protocols::tsgu`).

use crate::ws::{Input, WsConn};
use portcullis_protocols::tsgu::{
    self, caps, ext_auth, hresult, pkt, ChannelCreate, ClientPacket, GatewayPacket, HandshakeRequest, TunnelAuth,
    TunnelCreate, DATA_HEADER_LEN, HEADER_LEN, MAX_DATA_LEN,
};
use portcullis_protocols::ws::{self, OpCode, MAX_HEADER_LEN};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::task::Poll;

/// The RD Gateway's request path (after the URL's prefix).
pub const PATH: &str = "/remoteDesktopGateway/";

/// The port CHANNEL_CREATE names (FreeRDP: the `/v:` port). The gateway ignores it when the
/// resource is a target's name.
const RDP_PORT: u16 = 3389;

/// What a session's channel is opened with, the same for every session of a run.
#[derive(Clone)]
pub struct Channel {
    /// The PAA cookie: the token as UTF-16LE with a NUL.
    pub cookie: Vec<u8>,
    /// The resource CHANNEL_CREATE names (the target's name).
    pub resource: String,
}

impl Channel {
    pub fn new(token: &str, resource: &str) -> Channel {
        Channel {
            cookie: tsgu::utf16z(token),
            resource: resource.to_owned(),
        }
    }
}

/// Appends `payload` to `out` as DATA packets of at most [`MAX_DATA_LEN`] bytes, each in one
/// masked binary WebSocket frame (`mask` gives each frame's key). Masking is applied in place.
pub fn frame_data(out: &mut Vec<u8>, payload: &[u8], mut mask: impl FnMut() -> [u8; 4]) {
    for chunk in payload.chunks(MAX_DATA_LEN) {
        let key = mask();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = ws::encode_header(
            &mut hdr,
            true,
            OpCode::Binary,
            (DATA_HEADER_LEN + chunk.len()) as u64,
            Some(key),
        );
        out.extend_from_slice(&hdr[..n]);
        let start = out.len();
        // Chunks fit the u16 count.
        out.extend_from_slice(&tsgu::data_header(chunk.len()).expect("a chunk of at most MAX_DATA_LEN"));
        out.extend_from_slice(chunk);
        ws::apply_mask(&mut out[start..], key, 0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a header into `header[..have]`.
    Header { have: usize },
    /// Inside a DATA packet's payload.
    Data { left: usize },
    /// Collecting a whole other packet (header included) into `packet`, `length` bytes.
    Packet { length: usize },
}

/// Takes TSGU packets out of the payload of the gateway's binary messages, in whatever pieces
/// they arrive (a packet may span messages, a message hold several). DATA payload is handed on
/// in place; other packets are collected whole. While the channel is opening, those are queued for
/// the control phase and DATA is kept for later; once it is open, KEEPALIVE, SERVICE_MESSAGE and
/// CLOSE_CHANNEL(_RESPONSE) are passed over (the gateway ends the WebSocket after its
/// CLOSE_CHANNEL) and anything else is an error.
pub struct Unpacker {
    state: State,
    header: [u8; DATA_HEADER_LEN],
    packet: Vec<u8>,
    open: bool,
    /// Whole control packets received while opening.
    control: VecDeque<Vec<u8>>,
    /// DATA payload received while opening, handed on by the first `poll_input` after.
    pub(crate) early: Vec<u8>,
}

impl Default for Unpacker {
    fn default() -> Self {
        Unpacker {
            state: State::Header { have: 0 },
            header: [0; DATA_HEADER_LEN],
            packet: Vec::new(),
            open: false,
            control: VecDeque::new(),
            early: Vec::new(),
        }
    }
}

fn bad(message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad RD Gateway packet from the server: {message}"),
    )
}

impl Unpacker {
    /// The channel is open: DATA is the session's from now on.
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub(crate) fn set_open(&mut self) {
        self.open = true;
        self.control.clear();
    }

    fn packet_type(&self) -> u16 {
        u16::from_le_bytes([self.header[0], self.header[1]])
    }

    /// Uses all of `input` (message payload); DATA payload goes to `on_data` (or, while opening,
    /// to `early`).
    pub fn feed(&mut self, mut input: &[u8], on_data: &mut impl FnMut(&[u8])) -> io::Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Header { have } => {
                    let is_data = have >= 2 && self.packet_type() == pkt::DATA;
                    let want = if is_data { DATA_HEADER_LEN } else { HEADER_LEN };
                    let take = (want - have).min(input.len());
                    self.header[have..have + take].copy_from_slice(&input[..take]);
                    input = &input[take..];
                    let have = have + take;
                    self.state = State::Header { have };
                    if have < HEADER_LEN || (self.packet_type() == pkt::DATA && have < DATA_HEADER_LEN) {
                        continue;
                    }
                    self.header_done()?;
                    if self.state == (State::Packet { length: HEADER_LEN }) {
                        self.packet_done()?;
                    }
                }
                State::Data { left } => {
                    let take = left.min(input.len());
                    if self.open {
                        on_data(&input[..take]);
                    } else {
                        self.early.extend_from_slice(&input[..take]);
                    }
                    input = &input[take..];
                    self.state = match left - take {
                        0 => State::Header { have: 0 },
                        left => State::Data { left },
                    };
                }
                State::Packet { length } => {
                    let take = (length - self.packet.len()).min(input.len());
                    self.packet.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.packet.len() == length {
                        self.packet_done()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole header is in `header`.
    fn header_done(&mut self) -> io::Result<()> {
        let header = tsgu::peek_header(&self.header[..HEADER_LEN])
            .map_err(bad)?
            .ok_or_else(|| bad("truncated header"))?;
        if header.packet_type == pkt::DATA {
            let count = usize::from(u16::from_le_bytes([self.header[8], self.header[9]]));
            if header.length != DATA_HEADER_LEN + count {
                return Err(bad("DATA length and count disagree"));
            }
            self.state = match count {
                0 => State::Header { have: 0 },
                left => State::Data { left },
            };
        } else {
            self.packet.clear();
            self.packet.extend_from_slice(&self.header[..HEADER_LEN]);
            self.state = State::Packet { length: header.length };
        }
        Ok(())
    }

    /// A whole non-DATA packet is in `packet`.
    fn packet_done(&mut self) -> io::Result<()> {
        self.state = State::Header { have: 0 };
        let packet_type = match tsgu::decode_gateway(&self.packet).map_err(bad)? {
            Some((p, n)) if n == self.packet.len() => p.packet_type(),
            _ => return Err(bad("packet shorter than its header says")),
        };
        if !self.open {
            self.control.push_back(std::mem::take(&mut self.packet));
            return Ok(());
        }
        match packet_type {
            pkt::KEEPALIVE | pkt::SERVICE_MESSAGE | pkt::CLOSE_CHANNEL | pkt::CLOSE_CHANNEL_RESPONSE => Ok(()),
            other => Err(bad(format_args!("packet type {other:#x} in an open channel"))),
        }
    }

    /// The next control packet received while opening.
    pub fn next_control(&mut self) -> Option<Vec<u8>> {
        self.control.pop_front()
    }
}

/// The control phase on a freshly upgraded `RDG_OUT_DATA` WebSocket: handshake, tunnel create
/// (PAA cookie), tunnel authorize, channel create. Afterwards `conn` carries DATA packets.
/// `Err`: which step failed and why (the gateway's error code when it refused).
pub async fn open_channel(conn: &mut WsConn, channel: &Channel) -> Result<(), String> {
    conn.start_rd_gateway();
    let handshake = ClientPacket::HandshakeRequest(HandshakeRequest {
        version_major: 1,
        version_minor: 0,
        client_version: 0,
        extended_auth: ext_auth::PAA,
    });
    let answer = exchange(conn, &handshake, "handshake").await?;
    match decode(&answer, "handshake")? {
        GatewayPacket::HandshakeResponse(r) => refused("handshake", r.error_code)?,
        other => return Err(unexpected("handshake", &other)),
    }
    // What FreeRDP 2.11 offers.
    let create = ClientPacket::TunnelCreate(TunnelCreate {
        capabilities: caps::QUAR_SOH | caps::MESSAGING_CONSENT_SIGN | caps::MESSAGING_SERVICE_MSG,
        reauth_tunnel_context: None,
        paa_cookie: Some(&channel.cookie),
    });
    let answer = exchange(conn, &create, "tunnel create").await?;
    match decode(&answer, "tunnel create")? {
        GatewayPacket::TunnelResponse(r) => refused("tunnel create", r.status)?,
        other => return Err(unexpected("tunnel create", &other)),
    }
    let auth = ClientPacket::TunnelAuth(TunnelAuth {
        client_name: "PORTCULLIS-LOADGEN".into(),
        statement_of_health: None,
    });
    let answer = exchange(conn, &auth, "tunnel authorize").await?;
    match decode(&answer, "tunnel authorize")? {
        GatewayPacket::TunnelAuthResponse(r) => refused("tunnel authorize", r.error_code)?,
        other => return Err(unexpected("tunnel authorize", &other)),
    }
    let create = ClientPacket::ChannelCreate(ChannelCreate {
        resources: vec![channel.resource.clone()],
        alt_resources: vec![],
        port: RDP_PORT,
        protocol: tsgu::PROTOCOL_RDP,
    });
    let answer = exchange(conn, &create, "channel create").await?;
    match decode(&answer, "channel create")? {
        GatewayPacket::ChannelResponse(r) => refused("channel create", r.error_code)?,
        other => return Err(unexpected("channel create", &other)),
    }
    conn.rd_gateway_open();
    Ok(())
}

/// Sends `packet` (one binary message) and waits for the gateway's next packet other than a
/// service message or keepalive; its bytes.
async fn exchange(conn: &mut WsConn, packet: &ClientPacket<'_>, step: &str) -> Result<Vec<u8>, String> {
    let bytes = packet.to_vec().map_err(|e| format!("{step}: cannot encode: {e}"))?;
    conn.queue_message(&bytes);
    loop {
        let answer = next_packet(conn).await.map_err(|e| format!("{step}: {e}"))?;
        match decode(&answer, step)? {
            GatewayPacket::ServiceMessage(_) | GatewayPacket::Keepalive => continue,
            _ => return Ok(answer),
        }
    }
}

/// A whole packet the unpacker collected (it checked that it decodes).
fn decode<'a>(bytes: &'a [u8], step: &str) -> Result<GatewayPacket<'a>, String> {
    match tsgu::decode_gateway(bytes) {
        Ok(Some((p, _))) => Ok(p),
        other => Err(format!("{step}: bad answer: {other:?}")),
    }
}

/// Writes what is queued and reads until a whole control packet is in.
async fn next_packet(conn: &mut WsConn) -> io::Result<Vec<u8>> {
    poll_fn(|cx| loop {
        if conn.has_output() {
            if let Poll::Ready(Err(e)) = conn.poll_output(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if let Some(p) = conn.rd_gateway_packet() {
            return Poll::Ready(Ok(p));
        }
        match conn.poll_input(cx, |_| {}) {
            Poll::Ready(Ok(Input::Progress)) => continue,
            // A refusal comes with the end of the connection, maybe in the same read.
            Poll::Ready(Ok(Input::Closed(_) | Input::Eof)) => {
                return Poll::Ready(
                    conn.rd_gateway_packet()
                        .ok_or_else(|| io::Error::other("the gateway closed the connection")),
                )
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

fn refused(step: &str, code: u32) -> Result<(), String> {
    if !hresult::is_failure(code) {
        return Ok(());
    }
    let why = match code {
        hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED => " (the token was refused)",
        hresult::E_PROXY_COOKIE_BADPACKET => " (the PAA cookie was not read)",
        hresult::E_PROXY_RAP_ACCESSDENIED => " (the target is not allowed: an `rdp` target the token is for)",
        hresult::E_PROXY_TS_CONNECTFAILED => " (the gateway could not reach the target)",
        hresult::HR_MAXCONNECTIONSREACHED => " (too many sessions)",
        _ => "",
    };
    Err(format!("{step} refused with {code:#010x}{why}"))
}

fn unexpected(step: &str, packet: &GatewayPacket<'_>) -> String {
    format!("{step}: unexpected answer {:#x}", packet.packet_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a client frame stream back into message payloads, as the gateway does.
    fn messages(frames: &[u8]) -> Vec<Vec<u8>> {
        use portcullis_protocols::ws::{Decoder, Event, Limits, Role};
        let limits = Limits {
            max_frame_payload: 1 << 20,
            max_message: 1 << 20,
        };
        let mut decoder = Decoder::new(Role::Server, limits);
        let (mut buf, mut at) = (frames.to_vec(), 0);
        let (mut out, mut message) = (Vec::new(), Vec::new());
        while at < buf.len() {
            let d = decoder.decode(&mut buf[at..]).unwrap();
            if let Some(Event::Data { range, fin, .. }) = d.event {
                message.extend_from_slice(&buf[at + range.start..at + range.end]);
                if fin {
                    out.push(std::mem::take(&mut message));
                }
            }
            at += d.consumed;
        }
        out
    }

    #[test]
    fn data_is_framed_one_packet_per_message() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        frame_data(&mut out, &payload, || [1, 2, 3, 4]);
        let msgs = messages(&out);
        assert_eq!(msgs.len(), 2);
        let mut back = Vec::new();
        for m in &msgs {
            match tsgu::decode_client(m) {
                Ok(Some((ClientPacket::Data(d), n))) if n == m.len() => back.extend_from_slice(d),
                other => panic!("not one DATA packet: {other:?}"),
            }
        }
        assert_eq!(msgs[0].len(), DATA_HEADER_LEN + MAX_DATA_LEN);
        assert_eq!(back, payload);
    }

    #[test]
    fn unpacker_takes_data_from_any_pieces() {
        let mut stream = Vec::new();
        GatewayPacket::ChannelResponse(tsgu::ChannelResponse::accept(1))
            .encode(&mut stream)
            .unwrap();
        let head = stream.len();
        tsgu::encode_data(b"early", &mut stream).unwrap();
        GatewayPacket::Keepalive.encode(&mut stream).unwrap();
        tsgu::encode_data(&[7u8; 3000], &mut stream).unwrap();
        tsgu::encode_data(b"", &mut stream).unwrap();
        GatewayPacket::CloseChannel { status: 0 }.encode(&mut stream).unwrap();
        for piece in [1, 3, 9, 10, 11, 700, stream.len()] {
            let mut u = Unpacker::default();
            let mut got = Vec::new();
            let mut fed = 0;
            for chunk in stream.chunks(piece) {
                u.feed(chunk, &mut |d: &[u8]| got.extend_from_slice(d)).unwrap();
                fed += chunk.len();
                if fed >= head && !u.is_open() {
                    // The control phase takes its answer, then the channel is open.
                    if let Some(p) = u.next_control() {
                        assert!(matches!(
                            tsgu::decode_gateway(&p),
                            Ok(Some((GatewayPacket::ChannelResponse(_), _)))
                        ));
                        u.set_open();
                    }
                }
            }
            assert!(u.is_open(), "piece {piece}");
            let mut all = std::mem::take(&mut u.early);
            all.extend_from_slice(&got);
            let mut want = b"early".to_vec();
            want.extend_from_slice(&[7u8; 3000]);
            assert_eq!(all, want, "piece {piece}");
        }
    }

    #[test]
    fn unpacker_refuses_what_an_open_channel_cannot_carry() {
        let mut u = Unpacker::default();
        u.set_open();
        let mut p = Vec::new();
        GatewayPacket::HandshakeResponse(tsgu::HandshakeResponse::new(0, ext_auth::PAA))
            .encode(&mut p)
            .unwrap();
        assert!(u.feed(&p, &mut |_: &[u8]| {}).is_err());
        let mut u = Unpacker::default();
        // DATA whose length disagrees with its count.
        let mut d = tsgu::data_header(4).unwrap().to_vec();
        d[4] = 13;
        assert!(u.feed(&d, &mut |_: &[u8]| {}).is_err());
        assert!(refused("x", hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED)
            .unwrap_err()
            .contains("token"));
        assert!(refused("x", 0).is_ok());
    }
}
