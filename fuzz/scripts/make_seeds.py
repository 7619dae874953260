#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/seed-* (small valid inputs in each target's layout,
see fuzz/checks.rs). Deterministic: re-running rewrites the same files. Only files named seed-* are
kept by git; libFuzzer's own corpus additions next to them are ignored."""

import os
import struct

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER, CLIENT = 0, 1  # decoder role: a server receives masked frames, a client unmasked ones
BIG_LIMITS = (7 << 1) | (7 << 4)  # frame limit 64 KiB, message limit 1 MiB (checks.rs small_limits)
RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 section 5.7


def mask(payload, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(fin, opcode, payload, key=None):
    """One RFC 6455 frame; masked when key is given."""
    out = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if key else 0
    n = len(payload)
    if n <= 125:
        out.append(bit | n)
    elif n <= 0xFFFF:
        out.append(bit | 126)
        out += struct.pack(">H", n)
    else:
        out.append(bit | 127)
        out += struct.pack(">Q", n)
    if key:
        out += key
        payload = mask(payload, key)
    return bytes(out + payload)


def close(code, reason, key=None):
    return frame(True, 0x8, struct.pack(">H", code) + reason.encode(), key)


def keys():
    """Distinct masking keys for successive frames."""
    i = 0
    while True:
        i += 1
        yield struct.pack("<I", (0x9E3779B9 * i) & 0xFFFFFFFF)


def streams():
    """(name, role, wire) examples shared by the three WebSocket stream targets."""
    k = keys()
    yield "rfc-unmasked-hello", CLIENT, bytes([0x81, 0x05]) + b"Hello"
    yield "rfc-masked-hello", SERVER, bytes([0x81, 0x85]) + RFC_KEY + mask(b"Hello", RFC_KEY)
    yield "rfc-fragmented", CLIENT, bytes([0x01, 0x03]) + b"Hel" + bytes([0x80, 0x02]) + b"lo"
    yield "fragmented-masked-with-ping", SERVER, (
        frame(False, 0x1, "héllo ".encode(), next(k))
        + frame(True, 0x9, b"ping", next(k))
        + frame(False, 0x0, "wörld ".encode(), next(k))
        + frame(True, 0x0, "€𝄞".encode(), next(k))
    )
    yield "rfc-ping", CLIENT, bytes([0x89, 0x05]) + b"Hello"
    yield "rfc-masked-pong", SERVER, frame(True, 0xA, b"Hello", RFC_KEY)
    yield "close-with-reason", SERVER, frame(True, 0x2, b"\x00\x01\x02", next(k)) + close(1000, "bye", next(k))
    yield "close-empty-then-junk", CLIENT, frame(True, 0x8, b"") + b"ignored after close"
    yield "binary-256", CLIENT, frame(True, 0x2, bytes(range(256)))
    yield "binary-len64-partial", CLIENT, bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]) + b"0123456789abcdef"
    yield "empty-frames", SERVER, (
        frame(False, 0x1, b"", next(k)) + frame(True, 0x0, b"", next(k)) + frame(True, 0x9, b"", next(k))
    )
    yield "invalid-utf8", CLIENT, frame(True, 0x1, b"ok \xed\xa0\x80")
    yield "unmasked-to-server", SERVER, frame(True, 0x1, b"nope")


def write(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    for name, role, wire in streams():
        split = struct.pack("<H", min(3, len(wire)))
        write("ws_decoder", name, bytes([BIG_LIMITS | role]) + split + wire)
        write("ws_assembler", name, bytes([BIG_LIMITS | role, 2]) + wire)
        write("ws_roundtrip", name, bytes([role]) + bytes([0xA5, 0x5A, 0x0F, 0xF0]) + wire)
    # Small limits: frame limit 5 (index 2), message limit 16 (index 2).
    small = (2 << 1) | (2 << 4)
    write("ws_decoder", "frame-too-large", bytes([small | CLIENT, 1, 0]) + frame(True, 0x2, b"sixsix"))
    write("ws_assembler", "message-too-large", bytes([small | CLIENT, 0]) + b"".join(
        frame(i == 3, 0x2 if i == 0 else 0x0, b"abcde") for i in range(4)))

    rfc_request = (
        b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = 7 | (6 << 3)  # max_bytes 8192, max_headers 32
    http = {
        "rfc6455-handshake": rfc_request,
        "tunnel-query-token": (
            b"GET /v1/tunnel/vm1?token=a%2Eb+c&x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        "bearer-header": b"GET /v1/health HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer  h.t.s \r\n\r\ntrailing body",
        "rfc6455-response": (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        ),
        "response-401": (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 15\r\n"
            b"Connection: close\r\nWWW-Authenticate: Bearer\r\n\r\ntoken required\n"
        ),
        "partial-head": b"GET /chat HTTP/1.1\r\nHost: ser",
        "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    for name, text in http.items():
        write("http_head", name, bytes([head, 0xFF, 0xFF]) + text)
    write("http_head", "rfc6455-handshake-small-limits", bytes([4 | (2 << 3), 40, 0]) + rfc_request)

    # Signed with the RFC 8032 test 1 key (the token unit tests' key pair) by TokenIssuer:
    # sub alice, tgt vm1, exp 1800000900, nbf/iat 1799999990, jti j1. Ed25519 is deterministic.
    valid = (
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9."
        "eyJzdWIiOiJhbGljZSIsInRndCI6InZtMSIsImV4cCI6MTgwMDAwMDkwMCwibmJmIjoxNzk5OTk5OTkwLCJpYXQiOjE3OTk5OTk5OTAsImp0aSI6ImoxIn0."
        "T4SyNntZPOw_zjAYRs3q_pEU63T9qR6DGUtbj8P-nvauIvpv3MIKkDNdvdSUeXrLpJWkKdGkOR5VuFNgSin9AA"
    )
    payload = valid.split(".")[1]
    tokens = {
        "valid-now": (3, valid),  # clock index 3 = 1800000000: accepted
        "valid-expired": (6, valid),  # 1800000930 = exp + leeway: expired
        "valid-not-yet": (1, valid),  # 1799999000: not valid yet
        "alg-none": (3, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + "."),
        "alg-hs256": (3, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + payload + ".c2ln"),
        "shape-only": (3, "a.b.c"),
    }
    for name, (now, text) in tokens.items():
        write("token", name, bytes([now]) + text.encode())

    write("ws_mask", "rfc-hello", RFC_KEY + bytes([0, 0, 2, 0]) + b"Hello")
    write("ws_mask", "unaligned-100", bytes([1, 2, 3, 4, 2, 3, 37, 0]) + bytes(range(100)))


if __name__ == "__main__":
    main()
