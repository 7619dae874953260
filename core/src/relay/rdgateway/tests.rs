use super::*;
use portcullis_protocols::tsgu::{ClientPacket, GatewayPacket};

/// A client's WebSocket binary message (masked) carrying `payload`.
fn message(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; ws::MAX_HEADER_LEN];
    let n = ws::encode_header(&mut header, true, OpCode::Binary, payload.len() as u64, Some(key));
    let mut body = payload.to_vec();
    ws::apply_mask(&mut body, key, 0);
    [&header[..n], &body[..]].concat()
}

fn packets(list: &[ClientPacket<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in list {
        p.encode(&mut out).unwrap();
    }
    out
}

/// Feeds `stream` as the relay does (reads of `step` bytes, `decode` until the bytes are used),
/// returns the data delivered and the other events.
fn run(stream: &[u8], step: usize) -> Result<(Vec<u8>, Vec<String>), ProtocolError> {
    run_with(RdGateway::new(Limits::default()), stream, step)
}

fn run_with(mut framing: RdGateway, stream: &[u8], step: usize) -> Result<(Vec<u8>, Vec<String>), ProtocolError> {
    let mut buf = stream.to_vec();
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let (mut pos, mut end) = (0, 0);
    while end < buf.len() {
        end = (end + step).min(buf.len());
        while pos < end {
            let (used, event) = framing.decode(&mut buf[pos..end])?;
            assert!(used > 0 || event.is_some(), "no progress at {pos}");
            match event {
                Some(Inbound::Data(r)) => data.extend_from_slice(&buf[pos + r.start..pos + r.end]),
                Some(Inbound::Ping(_)) => events.push("keepalive".to_owned()),
                Some(Inbound::Close(_)) => events.push("close".to_owned()),
                Some(other) => events.push(format!("{other:?}")),
                None => {}
            }
            pos += used;
        }
    }
    Ok((data, events))
}

#[test]
fn data_packets_reach_the_relay_in_place_whatever_the_cuts() {
    let a: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let b = b"second packet".to_vec();
    // One message with two packets, one packet alone, one message ending a keepalive.
    let stream = [
        message(
            &packets(&[ClientPacket::Data(&a[..1000]), ClientPacket::Data(&a[1000..])]),
            [1, 2, 3, 4],
        ),
        message(&packets(&[ClientPacket::Data(&b)]), [9, 8, 7, 6]),
        message(
            &packets(&[ClientPacket::Keepalive, ClientPacket::Data(b"")]),
            [5, 5, 5, 5],
        ),
        message(&packets(&[ClientPacket::CloseChannel { status: 0 }]), [0, 1, 0, 1]),
    ]
    .concat();
    let want: Vec<u8> = [a.clone(), b.clone()].concat();
    for step in [1, 2, 3, 7, 10, 64, 1000, stream.len()] {
        let (data, events) = run(&stream, step).unwrap();
        assert_eq!(data, want, "read size {step}");
        assert_eq!(events, ["keepalive", "close"], "read size {step}");
    }
}

#[test]
fn handshake_packets_in_an_open_channel_are_refused() {
    let stream = message(
        &packets(&[ClientPacket::HandshakeRequest(
            portcullis_protocols::tsgu::HandshakeRequest {
                version_major: 1,
                version_minor: 0,
                client_version: 0,
                extended_auth: 2,
            },
        )]),
        [1, 1, 1, 1],
    );
    assert!(matches!(run(&stream, 4), Err(ProtocolError::Tunnel(_))));
    // A DATA count that disagrees with its packet length.
    let mut bad = packets(&[ClientPacket::Data(b"abc")]);
    bad[8] = 5;
    assert!(matches!(
        run(&message(&bad, [2, 2, 2, 2]), 3),
        Err(ProtocolError::Tunnel(_))
    ));
}

#[test]
fn sealed_payload_is_one_data_packet_in_one_message() {
    let mut framing = RdGateway::new(Limits::default());
    let payload = b"from the RDP server".to_vec();
    let at = RdGateway::MAX_HEADER;
    let mut buf = vec![0u8; at + payload.len()];
    buf[at..].copy_from_slice(&payload);
    let start = framing.seal(&mut buf, at, payload.len());
    let frame = &buf[start..];
    // The client's view: a server frame (unmasked), one binary message, one DATA packet.
    let hlen = ws::header_len((frame.len() - 2) as u64, false);
    let body = &frame[hlen..];
    let (packet, used) = portcullis_protocols::tsgu::decode_gateway(body).unwrap().unwrap();
    assert_eq!((packet, used), (GatewayPacket::Data(&payload), body.len()));
    assert!(framing.payload_cap(1 << 20) <= tsgu::MAX_DATA_LEN);
}

#[test]
fn keepalives_are_answered_and_closes_acknowledged() {
    let mut framing = RdGateway::new(Limits::default());
    let mut buf = message(&packets(&[ClientPacket::Keepalive]), [3, 3, 3, 3]);
    let (_, event) = framing.decode(&mut buf).unwrap();
    assert!(matches!(event, Some(Inbound::Ping(_))));
    let mut out = Vec::new();
    framing.control(&mut out, Control::Pong(&[]));
    assert_eq!(&out[2..], &packets_gateway(&GatewayPacket::Keepalive)[..]);
    // After the client's CLOSE_CHANNEL, our close is its response, then a WebSocket Close.
    let mut buf = message(&packets(&[ClientPacket::CloseChannel { status: 0 }]), [4, 4, 4, 4]);
    let (_, event) = framing.decode(&mut buf).unwrap();
    assert!(matches!(event, Some(Inbound::Close(None))));
    let mut out = Vec::new();
    framing.control(&mut out, Control::Close(CloseCode::NORMAL, ""));
    let response = packets_gateway(&GatewayPacket::CloseChannelResponse { status: 0 });
    assert_eq!(&out[2..2 + response.len()], &response[..]);
    assert_eq!(out[2 + response.len()] & 0x0f, 0x8, "then a WebSocket Close");
}

fn packets_gateway(p: &GatewayPacket<'_>) -> Vec<u8> {
    p.to_vec().unwrap()
}

/// The relay itself over this framing: a client's packets, read in small pieces, reach the raw
/// side as the RDP byte stream; the raw side's bytes reach the client as DATA packets.
#[test]
fn the_relay_carries_rdp_bytes_both_ways() {
    let mut relay = crate::relay::Relay::new(RdGateway::new(Limits::default()), 16 * 1024);
    let sent: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    let stream: Vec<u8> = sent
        .chunks(5000)
        .enumerate()
        .map(|(i, c)| message(&packets(&[ClientPacket::Data(c)]), [i as u8, 1, 2, 3]))
        .collect::<Vec<_>>()
        .concat();
    let mut at = 0;
    let mut delivered = Vec::new();
    while delivered.len() < sent.len() {
        if let Some(buf) = relay.peer_recv_buf() {
            let n = buf.len().min(777).min(stream.len() - at);
            buf[..n].copy_from_slice(&stream[at..at + n]);
            at += n;
            relay.peer_received(n);
        }
        relay.peer_recv_blocked();
        while let Some(out) = relay.raw_transmit() {
            let n = out.len();
            delivered.extend_from_slice(out);
            relay.raw_sent(n);
        }
        assert!(at < stream.len() || delivered.len() <= sent.len(), "more than sent");
        if at == stream.len() && relay.raw_transmit().is_none() && delivered.len() < sent.len() {
            panic!("stuck after {} of {} bytes", delivered.len(), sent.len());
        }
    }
    assert_eq!(delivered, sent);

    // The server's answer.
    let answer = b"server bytes".to_vec();
    let buf = relay.raw_recv_buf().expect("room for the server");
    buf[..answer.len()].copy_from_slice(&answer);
    relay.raw_received(answer.len());
    let out = relay.peer_transmit().expect("a frame for the client").to_vec();
    let hlen = ws::header_len((out.len() - 2) as u64, false);
    let (packet, _) = portcullis_protocols::tsgu::decode_gateway(&out[hlen..])
        .unwrap()
        .unwrap();
    assert_eq!(packet, GatewayPacket::Data(&answer));
}

/// The HTTP transport: the same packets with no WebSocket, at every read size; our keepalive's
/// echo is a pong (not answered again); a client's own keepalive is answered; payload is sealed
/// with its DATA header only.
#[test]
fn plain_transport_carries_packets_without_websocket() {
    let a: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let stream = packets(&[
        ClientPacket::Data(&a[..100]),
        ClientPacket::Keepalive,
        ClientPacket::Data(&a[100..]),
        ClientPacket::CloseChannel { status: 0 },
    ]);
    for step in [1, 2, 3, 7, 10, 11, 64, 1000, stream.len()] {
        let (data, events) = run_with(RdGateway::plain(), &stream, step).unwrap();
        assert_eq!(data, a, "step {step}");
        assert_eq!(events, ["keepalive", "close"], "step {step}");
    }
    let mut framing = RdGateway::plain();
    let mut ping = Vec::new();
    framing.control(&mut ping, Control::Ping(b""));
    assert_eq!(ping, packets_gateway(&GatewayPacket::Keepalive));
    let mut echo = packets(&[ClientPacket::Keepalive]);
    assert_eq!(framing.decode(&mut echo).unwrap(), (8, Some(Inbound::Pong)));
    let mut again = packets(&[ClientPacket::Keepalive]);
    assert_eq!(
        framing.decode(&mut again).unwrap(),
        (8, Some(Inbound::Ping(ControlPayload::empty())))
    );
    let mut pong = Vec::new();
    framing.control(&mut pong, Control::Pong(b""));
    assert_eq!(pong, packets_gateway(&GatewayPacket::Keepalive));
    let payload = b"rdp bytes";
    let mut buf = vec![0u8; RdGateway::MAX_HEADER + payload.len()];
    buf[RdGateway::MAX_HEADER..].copy_from_slice(payload);
    let start = framing.seal(&mut buf, RdGateway::MAX_HEADER, payload.len());
    assert_eq!(&buf[start..], &packets_gateway(&GatewayPacket::Data(payload))[..]);
    let mut close = Vec::new();
    framing.control(&mut close, Control::Close(CloseCode::NORMAL, "bye"));
    assert_eq!(close, packets_gateway(&GatewayPacket::CloseChannel { status: 0 }));
    assert_eq!(framing.payload_cap(100), 90);
    assert_eq!(framing.payload_cap(1 << 20), tsgu::MAX_DATA_LEN);
}
