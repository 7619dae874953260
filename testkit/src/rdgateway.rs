//! A protocol-level RD Gateway client (MS-TSGU) for tests that need what FreeRDP cannot do: send
//! malformed packets at a chosen step, stall, carry exact bytes to an echo target, open many
//! HTTP-transport pairs. It speaks both transports as FreeRDP 2.11 does: `RDG_OUT_DATA` upgraded
//! to a WebSocket (one packet per binary message), or the `RDG_OUT_DATA` / `RDG_IN_DATA` pair
//! (a 10-byte seed, then packets; chunked packets the other way after a first request with no
//! body). Packets are built and read with the product's own `tsgu` codec.

use crate::client::ClientTls;
use crate::client::{read_to_close, tls_connect, Endpoint, WsClient, KEY};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis_protocols::chunked::encode_chunk;
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::tsgu::{
    self, ext_auth, ChannelCreate, ClientPacket, GatewayPacket, HandshakeRequest, TunnelAuth, TunnelCreate,
};
use portcullis_protocols::ws::Message;
use std::time::Duration;

const PATH: &str = "/remoteDesktopGateway/";

/// A fresh `RDG-Connection-Id`.
pub fn connection_id() -> String {
    let hex = crate::process::random_string(32).to_ascii_uppercase();
    let hex: String = hex
        .chars()
        .map(|c| if c.is_ascii_hexdigit() { c } else { 'A' })
        .collect();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The request head FreeRDP sends, with `extra` header lines (each ending in CRLF).
pub fn request(method: &str, id: &str, websocket: bool, extra: &str) -> Vec<u8> {
    let upgrade = match websocket {
        true => format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-Websocket-Version: 13\r\nSec-Websocket-Key: {KEY}\r\n"
        ),
        false => "Connection: Keep-Alive\r\n".into(),
    };
    format!(
        "{method} {PATH} HTTP/1.1\r\nHost: gateway\r\nAccept: */*\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\
         User-Agent: MS-RDGateway/1.0\r\n{upgrade}RDG-Connection-Id: {id}\r\n{extra}"
    )
    .into_bytes()
}

/// How the client carries its packets.
pub enum Link {
    WebSocket(Box<WsClient>),
    /// The HTTP transport: the OUT connection (after its seed) and the IN connection (after its
    /// second, chunked request head).
    Pair {
        out: Box<ClientTls>,
        inn: Box<ClientTls>,
        buf: Vec<u8>,
    },
}

/// A gateway packet as received (owned bytes; decode with [`tsgu::decode_gateway`]).
pub struct Received(pub Vec<u8>);

impl Received {
    pub fn packet(&self) -> GatewayPacket<'_> {
        match tsgu::decode_gateway(&self.0) {
            Ok(Some((p, n))) if n == self.0.len() => p,
            other => panic!("not one gateway packet: {other:?}"),
        }
    }
}

pub struct RdgClient {
    pub link: Link,
}

impl RdgClient {
    /// `RDG_OUT_DATA` upgraded to a WebSocket, `RDG-Auth-Scheme: PAA`. `Err`: the whole answer.
    pub async fn websocket(ep: &impl Endpoint) -> Result<RdgClient, Vec<u8>> {
        let head = [
            request("RDG_OUT_DATA", &connection_id(), true, "RDG-Auth-Scheme: PAA\r\n"),
            b"\r\n".to_vec(),
        ]
        .concat();
        let ws = WsClient::upgrade_raw(ep, &head).await?;
        Ok(RdgClient {
            link: Link::WebSocket(Box::new(ws)),
        })
    }

    /// The HTTP transport's pair with connection id `id`, as FreeRDP opens it. `Err`: the answer
    /// to whichever request was refused.
    pub async fn pair(ep: &impl Endpoint, id: &str) -> Result<RdgClient, Vec<u8>> {
        let paa = "RDG-Auth-Scheme: PAA\r\n";
        let mut out = tls_connect(ep).await;
        send(
            &mut out,
            &[
                request("RDG_OUT_DATA", id, false, paa),
                b"Content-Length: 0\r\n\r\n".to_vec(),
            ]
            .concat(),
        )
        .await;
        let (status, rest) = read_head(&mut out).await?;
        assert_eq!(status, 200);
        // The seed: 10 bytes.
        let mut buf = rest;
        while buf.len() < 10 {
            buf.extend(read_some(&mut out).await.ok_or_else(Vec::new)?);
        }
        buf.drain(..10);
        let mut inn = tls_connect(ep).await;
        send(
            &mut inn,
            &[
                request("RDG_IN_DATA", id, false, paa),
                b"Content-Length: 0\r\n\r\n".to_vec(),
            ]
            .concat(),
        )
        .await;
        let (status, _) = read_head(&mut inn).await?;
        assert_eq!(status, 200);
        send(
            &mut inn,
            &[
                request("RDG_IN_DATA", id, false, paa),
                b"Transfer-Encoding: chunked\r\n\r\n".to_vec(),
            ]
            .concat(),
        )
        .await;
        Ok(RdgClient {
            link: Link::Pair {
                out: Box::new(out),
                inn: Box::new(inn),
                buf,
            },
        })
    }

    /// Sends bytes as one packet's worth: a binary message, or one chunk.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::WebSocket(ws) => ws.send_binary(bytes).await,
            Link::Pair { inn, .. } => {
                let mut chunk = Vec::new();
                encode_chunk(bytes, &mut chunk);
                send(inn, &chunk).await;
            }
        }
    }

    pub async fn send(&mut self, packet: &ClientPacket<'_>) {
        let mut bytes = Vec::new();
        packet.encode(&mut bytes).expect("a packet that encodes");
        self.send_bytes(&bytes).await
    }

    /// The next gateway packet, or `None` when the connection ends (or `limit` passes).
    pub async fn recv(&mut self, limit: Duration) -> Option<Received> {
        match &mut self.link {
            Link::WebSocket(ws) => loop {
                match ws.recv(limit).await? {
                    Message::Binary(b) => return Some(Received(b)),
                    Message::Close { .. } => return None,
                    _ => continue,
                }
            },
            Link::Pair { out, buf, .. } => loop {
                if let Ok(Some(header)) = tsgu::peek_header(buf) {
                    if buf.len() >= header.length {
                        return Some(Received(buf.drain(..header.length).collect()));
                    }
                }
                let more = tokio::time::timeout(limit, read_some(out)).await.ok().flatten()?;
                buf.extend(more);
            },
        }
    }

    /// Handshake, tunnel create with `token` (UTF-16LE as FreeRDP sends it), tunnel auth, and a
    /// channel to `resource`:`port`. `Err`: the error code of the first refusal (0 when the
    /// gateway just closed).
    pub async fn open_channel(&mut self, token: Option<&str>, resource: &str, port: u16) -> Result<(), u32> {
        let limit = Duration::from_secs(10);
        self.send(&handshake()).await;
        match self.recv(limit).await.as_ref().map(Received::packet) {
            Some(GatewayPacket::HandshakeResponse(r)) if r.error_code == 0 => {}
            Some(GatewayPacket::HandshakeResponse(r)) => return Err(r.error_code),
            other => panic!("expected a handshake response, got {other:?}"),
        }
        let cookie = token.map(tsgu::utf16z);
        self.send(&tunnel_create(cookie.as_deref())).await;
        match self.recv(limit).await.as_ref().map(Received::packet) {
            Some(GatewayPacket::TunnelResponse(r)) if r.status == 0 => {}
            Some(GatewayPacket::TunnelResponse(r)) => return Err(r.status),
            None => return Err(0),
            other => panic!("expected a tunnel response, got {other:?}"),
        }
        self.send(&tunnel_auth()).await;
        match self.recv(limit).await.as_ref().map(Received::packet) {
            Some(GatewayPacket::TunnelAuthResponse(r)) if r.error_code == 0 => {}
            Some(GatewayPacket::TunnelAuthResponse(r)) => return Err(r.error_code),
            other => panic!("expected a tunnel auth response, got {other:?}"),
        }
        self.send(&channel_create(resource, port)).await;
        match self.recv(Duration::from_secs(20)).await.as_ref().map(Received::packet) {
            Some(GatewayPacket::ChannelResponse(r)) if r.error_code == 0 => Ok(()),
            Some(GatewayPacket::ChannelResponse(r)) => Err(r.error_code),
            None => Err(0),
            other => panic!("expected a channel response, got {other:?}"),
        }
    }

    /// Sends `payload` as DATA and expects it back as DATA (through an echo target).
    pub async fn echoes(&mut self, payload: &[u8]) {
        self.send(&ClientPacket::Data(payload)).await;
        let mut back = Vec::new();
        while back.len() < payload.len() {
            let received = self.recv(Duration::from_secs(10)).await.expect("the echo");
            match received.packet() {
                GatewayPacket::Data(d) => back.extend_from_slice(d),
                GatewayPacket::Keepalive => {}
                other => panic!("expected DATA, got {other:?}"),
            }
        }
        assert_eq!(back, payload);
    }

    /// True when the gateway ends the connection within `limit` (whatever it sends first).
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async { while self.recv(limit).await.is_some() {} })
            .await
            .is_ok()
    }
}

pub fn handshake() -> ClientPacket<'static> {
    ClientPacket::HandshakeRequest(HandshakeRequest {
        version_major: 1,
        version_minor: 0,
        client_version: 0,
        extended_auth: ext_auth::PAA,
    })
}

pub fn tunnel_create(cookie: Option<&[u8]>) -> ClientPacket<'_> {
    ClientPacket::TunnelCreate(TunnelCreate {
        capabilities: tsgu::caps::IDLE_TIMEOUT | tsgu::caps::MESSAGING_CONSENT_SIGN,
        reauth_tunnel_context: None,
        paa_cookie: cookie,
    })
}

pub fn tunnel_auth() -> ClientPacket<'static> {
    ClientPacket::TunnelAuth(TunnelAuth {
        client_name: "TESTKIT".into(),
        statement_of_health: None,
    })
}

pub fn channel_create(resource: &str, port: u16) -> ClientPacket<'static> {
    ClientPacket::ChannelCreate(ChannelCreate {
        resources: vec![resource.into()],
        alt_resources: vec![],
        port,
        protocol: tsgu::PROTOCOL_RDP,
    })
}

async fn send(tls: &mut ClientTls, bytes: &[u8]) {
    tls.write_all(bytes).await.expect("write");
    tls.flush().await.expect("flush");
}

async fn read_some(tls: &mut ClientTls) -> Option<Vec<u8>> {
    let mut chunk = vec![0u8; 16 * 1024];
    match tls.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            chunk.truncate(n);
            Some(chunk)
        }
        _ => None,
    }
}

/// Reads a response head; returns its status and what followed it. `Err`: everything read when
/// the status is not 200.
async fn read_head(tls: &mut ClientTls) -> Result<(u16, Vec<u8>), Vec<u8>> {
    let mut answer = Vec::new();
    loop {
        let more = tokio::time::timeout(Duration::from_secs(10), read_some(tls))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| answer.clone())?;
        answer.extend(more);
        if let Some(head) = http::parse_response_head(&answer, HeadLimits::default()).expect("a valid response head") {
            if head.status != 200 {
                answer.extend(read_to_close(tls, Duration::from_secs(5)).await);
                return Err(answer);
            }
            return Ok((head.status, answer.split_off(head.len)));
        }
    }
}
