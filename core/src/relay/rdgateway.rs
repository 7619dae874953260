//! The RD Gateway's framing (MS-TSGU over WebSocket, `protocols::tsgu`): once a gateway channel is
//! open, the client's RDP bytes arrive as DATA packets inside WebSocket binary messages, and go
//! back the same way. This layer sits on [`WebSocket`] and keeps the relay's contract: payload is
//! handed over in place, never copied.
//!
//! Inbound, the WebSocket layer yields unmasked chunks of message payload, which may cut a packet
//! anywhere. The packet headers (10 bytes at most) are collected across chunks; a DATA packet's
//! payload is handed to the relay as it arrives. A chunk may hold the end of one packet and the
//! start of the next: this layer reports the bytes it used, and takes the rest of the chunk (already
//! unmasked, `carry`) on the next call without decoding it as WebSocket again. KEEPALIVE is
//! answered (through the relay's pong), CLOSE_CHANNEL (or its response) ends the session like a
//! WebSocket Close; any other packet in a channel is a protocol error.
//!
//! Outbound, a DATA header is sealed in front of the payload, and the WebSocket header in front of
//! that: one packet per WebSocket message, as FreeRDP sends and expects them.
//!
//! The HTTP transport ([`RdGateway::plain`]) carries the same packets with no WebSocket around
//! them (its HTTP framing is undone before the relay sees the bytes): packets are decoded straight
//! from the input, and the gateway's keepalives are TSGU KEEPALIVE packets, which the client
//! echoes (taken as the pong, not answered again).

use super::framing::{Control, Framing, Inbound, WebSocket};
use portcullis_protocols::tsgu::{self, pkt};
use portcullis_protocols::ws::{self, CloseCode, ControlPayload, Limits, OpCode, ProtocolError, Role};

/// Where the packet being read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a header into `header[..have]`.
    Header { have: usize },
    /// Inside a DATA packet's payload.
    Data { left: usize },
    /// Collecting a CLOSE_CHANNEL(_RESPONSE) status into `header[8..8 + have]`.
    Status { have: usize },
}

pub struct RdGateway {
    /// `None` for the HTTP transport: packets straight on the stream.
    ws: Option<WebSocket>,
    state: State,
    header: [u8; tsgu::DATA_HEADER_LEN + 2],
    /// Bytes at the start of the next input that the WebSocket layer already decoded (unmasked
    /// payload of the current message) and this layer has not used yet.
    carry: usize,
    /// Bytes the WebSocket layer consumed after that payload: reported used once `carry` is.
    tail: usize,
    /// The last ping to answer was a KEEPALIVE (answered with one), not a WebSocket ping.
    keepalive_due: bool,
    /// The client closed the channel: our Close answers with CLOSE_CHANNEL_RESPONSE.
    peer_closed: bool,
    /// (HTTP transport) we sent a KEEPALIVE as our ping: the client's echo is its pong.
    keepalive_sent: bool,
}

fn malformed(_: tsgu::TsguError) -> ProtocolError {
    ProtocolError::Tunnel("malformed RD Gateway packet")
}

impl RdGateway {
    /// The gateway's side of an open channel (`limits`: the WebSocket layer's).
    pub fn new(limits: Limits) -> Self {
        RdGateway {
            ws: Some(WebSocket::new(Role::Server, limits, 0)),
            ..Self::plain()
        }
    }

    /// The gateway's side of an open channel of the HTTP transport (packets with no WebSocket).
    pub fn plain() -> Self {
        RdGateway {
            ws: None,
            state: State::Header { have: 0 },
            header: [0; tsgu::DATA_HEADER_LEN + 2],
            carry: 0,
            tail: 0,
            keepalive_due: false,
            peer_closed: false,
            keepalive_sent: false,
        }
    }

    /// Uses packet bytes from `input` (unmasked payload); at most one event.
    fn packets(&mut self, input: &[u8]) -> Result<(usize, Option<Inbound>), ProtocolError> {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match self.state {
                State::Header { have } => {
                    // The type tells whether two more header bytes (a DATA count) follow.
                    let want = if have >= 2 && u16::from_le_bytes([self.header[0], self.header[1]]) == pkt::DATA {
                        tsgu::DATA_HEADER_LEN
                    } else {
                        tsgu::HEADER_LEN
                    };
                    let take = (want - have).min(rest.len());
                    self.header[have..have + take].copy_from_slice(&rest[..take]);
                    used += take;
                    let have = have + take;
                    self.state = State::Header { have };
                    if have < want || (have == tsgu::HEADER_LEN && want == tsgu::HEADER_LEN && self.is_data()) {
                        continue;
                    }
                    if let Some(event) = self.header_done()? {
                        return Ok((used, Some(event)));
                    }
                }
                State::Data { left } => {
                    let take = left.min(rest.len());
                    self.state = if take == left {
                        State::Header { have: 0 }
                    } else {
                        State::Data { left: left - take }
                    };
                    return Ok((used + take, Some(Inbound::Data(used..used + take))));
                }
                State::Status { have } => {
                    let take = (4 - have).min(rest.len());
                    self.header[8 + have..8 + have + take].copy_from_slice(&rest[..take]);
                    used += take;
                    if have + take < 4 {
                        self.state = State::Status { have: have + take };
                        continue;
                    }
                    self.state = State::Header { have: 0 };
                    self.peer_closed = true;
                    return Ok((used, Some(Inbound::Close(None))));
                }
            }
        }
        Ok((used, None))
    }

    fn is_data(&self) -> bool {
        u16::from_le_bytes([self.header[0], self.header[1]]) == pkt::DATA
    }

    /// A whole header is in: what it starts.
    fn header_done(&mut self) -> Result<Option<Inbound>, ProtocolError> {
        let header = tsgu::peek_header(&self.header[..tsgu::HEADER_LEN])
            .map_err(malformed)?
            .ok_or(ProtocolError::Tunnel("truncated RD Gateway header"))?;
        let len = header.length as usize;
        match header.packet_type {
            pkt::DATA => {
                let count = usize::from(u16::from_le_bytes([self.header[8], self.header[9]]));
                if len != tsgu::DATA_HEADER_LEN + count {
                    return Err(ProtocolError::Tunnel("RD Gateway DATA length and count disagree"));
                }
                self.state = if count == 0 {
                    State::Header { have: 0 }
                } else {
                    State::Data { left: count }
                };
                Ok(None)
            }
            pkt::KEEPALIVE if len == tsgu::HEADER_LEN => {
                self.state = State::Header { have: 0 };
                if std::mem::take(&mut self.keepalive_sent) {
                    return Ok(Some(Inbound::Pong));
                }
                self.keepalive_due = true;
                Ok(Some(Inbound::Ping(ControlPayload::empty())))
            }
            pkt::CLOSE_CHANNEL | pkt::CLOSE_CHANNEL_RESPONSE if len == tsgu::HEADER_LEN + 4 => {
                self.state = State::Status { have: 0 };
                Ok(None)
            }
            _ => Err(ProtocolError::Tunnel("unexpected RD Gateway packet in an open channel")),
        }
    }

    /// One TSGU packet, as a WebSocket binary message unless the transport is plain.
    fn packet_frame(&self, out: &mut Vec<u8>, packet: &tsgu::GatewayPacket<'_>) {
        let mut body = Vec::with_capacity(16);
        // Our own packets always encode (fixed, small fields).
        if self.ws.is_none() {
            let _ = packet.encode(out);
        } else if packet.encode(&mut body).is_ok() {
            let mut header = [0u8; ws::MAX_HEADER_LEN];
            let n = ws::encode_header(&mut header, true, OpCode::Binary, body.len() as u64, None);
            out.extend_from_slice(&header[..n]);
            out.extend_from_slice(&body);
        }
    }
}

impl Framing for RdGateway {
    const MAX_HEADER: usize = ws::MAX_HEADER_LEN + tsgu::DATA_HEADER_LEN;

    fn decode(&mut self, input: &mut [u8]) -> Result<(usize, Option<Inbound>), ProtocolError> {
        if self.carry > 0 {
            let carry = self.carry.min(input.len());
            let (used, event) = self.packets(&input[..carry])?;
            self.carry = carry - used;
            let tail = if self.carry == 0 {
                std::mem::take(&mut self.tail)
            } else {
                0
            };
            return Ok((used + tail, event));
        }
        let Some(ws) = self.ws.as_mut() else {
            return self.packets(input);
        };
        let (consumed, event) = ws.decode(input)?;
        match event {
            Some(Inbound::Data(range)) => {
                let (used, event) = self.packets(&input[range.clone()])?;
                let event = event.map(|e| match e {
                    Inbound::Data(r) => Inbound::Data(range.start + r.start..range.start + r.end),
                    other => other,
                });
                if used == range.len() {
                    return Ok((consumed, event));
                }
                // What this call did not use of the chunk waits for the next calls.
                self.carry = range.len() - used;
                self.tail = consumed - range.end;
                Ok((range.start + used, event))
            }
            Some(Inbound::Text) => Err(ProtocolError::Tunnel("RD Gateway packets travel in binary messages")),
            other => Ok((consumed, other)),
        }
    }

    fn seal(&mut self, buf: &mut [u8], at: usize, len: usize) -> usize {
        let start = at - tsgu::DATA_HEADER_LEN;
        // `payload_cap` keeps `len` within a DATA packet's u16 count.
        if let Ok(header) = tsgu::data_header(len) {
            buf[start..at].copy_from_slice(&header);
        }
        match self.ws.as_mut() {
            Some(ws) => ws.seal(buf, start, len + tsgu::DATA_HEADER_LEN),
            None => start,
        }
    }

    fn control(&mut self, out: &mut Vec<u8>, control: Control<'_>) {
        match control {
            Control::Pong(_) if self.keepalive_due => {
                self.keepalive_due = false;
                self.packet_frame(out, &tsgu::GatewayPacket::Keepalive);
            }
            Control::Ping(_) if self.ws.is_none() => {
                self.keepalive_sent = true;
                self.packet_frame(out, &tsgu::GatewayPacket::Keepalive);
            }
            Control::Close(code, reason) => {
                let status = if code == CloseCode::NORMAL {
                    0
                } else {
                    tsgu::hresult::E_ACCESSDENIED
                };
                let packet = if self.peer_closed {
                    tsgu::GatewayPacket::CloseChannelResponse { status }
                } else {
                    tsgu::GatewayPacket::CloseChannel { status }
                };
                self.packet_frame(out, &packet);
                if let Some(ws) = self.ws.as_mut() {
                    ws.control(out, Control::Close(code, reason));
                }
            }
            other => {
                if let Some(ws) = self.ws.as_mut() {
                    ws.control(out, other);
                }
            }
        }
    }

    fn payload_cap(&self, area: usize) -> usize {
        let area = match &self.ws {
            Some(ws) => ws.payload_cap(area),
            None => area,
        };
        area.saturating_sub(tsgu::DATA_HEADER_LEN).clamp(1, tsgu::MAX_DATA_LEN)
    }
}

#[cfg(test)]
mod tests;
