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


def tpkt(x224):
    """A TPKT packet (version 3) around an X.224 TPDU."""
    return bytes([3, 0]) + struct.pack(">H", 4 + len(x224)) + x224


def connection_request(cookie=None, routing_token=None, protocols=3, neg=True):
    """TPKT + X.224 Connection Request: optional mstshash cookie or msts routing token, RDP_NEG_REQ."""
    var = b""
    if cookie is not None:
        var += b"Cookie: mstshash=" + cookie.encode() + b"\r\n"
    if routing_token is not None:
        var += b"Cookie: msts=" + routing_token.encode() + b"\r\n"
    if neg:
        var += struct.pack("<BBHI", 1, 0, 8, protocols)  # TYPE_RDP_NEG_REQ, flags, length 8
    return tpkt(bytes([6 + len(var), 0xE0, 0, 0, 0, 0, 0]) + var)


def connection_confirm(kind=2, value=1):
    """TPKT + X.224 Connection Confirm with RDP_NEG_RSP (kind 2, value = protocol) or
    RDP_NEG_FAILURE (kind 3, value = failure code)."""
    neg = struct.pack("<BBHI", kind, 0, 8, value)
    return tpkt(bytes([6 + len(neg), 0xD0, 0, 0, 0x12, 0x34, 0]) + neg)


def der(tag, content):
    """A DER TLV (definite length, short or long form)."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + content


def der_uint(v):
    body = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
    return der(0x02, b"\x00" + body if body[0] & 0x80 else body)


def cleanpath(fields):
    """An RDCleanPath PDU (version 3390): fields maps context tag number to the encoded inner value,
    each wrapped in its EXPLICIT [n] tag, in tag order."""
    inner = der(0xA0, der_uint(3390)) + b"".join(der(0xA0 | n, v) for n, v in sorted(fields.items()))
    return der(0x30, inner)


def utf8(s):
    return der(0x0C, s.encode())


def cleanpath_request(x224, destination, token, blob=None):
    fields = {2: utf8(destination), 3: utf8(token), 6: der(0x04, x224)}
    if blob is not None:
        fields[5] = utf8(blob)
    return cleanpath(fields)


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

    # rdp_x224: [sel, pdu]; sel 5 = max MAX_X224_LEN, sel | 8 rewrites the TPKT length.
    x224 = {
        "request-alice": connection_request("alice"),
        "request-domain-user": connection_request("ALICE-PC\\alice", protocols=0xB),
        "request-routing-token": connection_request(routing_token="3640205228.15629.0000"),
        "request-bare": connection_request(neg=False),
        "confirm-ssl": connection_confirm(2, 1),
        "confirm-hybrid-required": connection_confirm(3, 5),
        "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    for name, pdu in x224.items():
        write("rdp_x224", name, bytes([5]) + pdu)
    write("rdp_x224", "request-fixup-length", bytes([5 | 8]) + connection_request("bob")[:2] + b"\0\0"
          + connection_request("bob")[4:])
    write("rdp_x224", "request-small-max", bytes([4]) + connection_request("x" * 80))

    # rdp_cleanpath: [sel, bytes]; sel bits 1-3 = 6 picks max MAX_CLEANPATH_REQUEST, bit 0 sends a blob.
    full = 6 << 1
    alice = connection_request("alice")
    cleanpath_pdus = {
        "request": cleanpath_request(alice, "vm1", "eyJ0.eyJz.c2ln"),
        "request-blob": cleanpath_request(alice, "desk:3389", "t", blob="pcb"),
        "response": cleanpath({6: der(0x04, connection_confirm(2, 2)),
                               7: der(0x30, der(0x04, bytes(40)) + der(0x04, b"ca")),
                               9: utf8("10.0.0.4:3389")}),
        "error-http-403": cleanpath({1: der(0x30, der(0xA0, der_uint(1)) + der(0xA1, der_uint(403)))}),
        "error-tls-alert": cleanpath({1: der(0x30, der(0xA0, der_uint(1)) + der(0xA3, der_uint(40)))}),
        "request-bad-x224": cleanpath_request(bytes([3, 0, 0, 8, 1, 2, 3, 4]), "vm1", "t"),
        "request-long-form": cleanpath_request(connection_request("u" * 100), "d" * 60, "t" * 200),
        "http-get": b"GET / HTTP/1.1\r\n",
    }
    for name, pdu in cleanpath_pdus.items():
        write("rdp_cleanpath", name, bytes([full]) + pdu)
    write("rdp_cleanpath", "request-trailing", bytes([full]) + cleanpath_pdus["request"] + b"\0")
    write("rdp_cleanpath", "strings", bytes([full]) + b"vm1\0token\0alice")
    write("rdp_cleanpath", "strings-blob", bytes([full | 1]) + "desk\0t\0ALICE-PC\\álice\0pcb".encode())

    # terminal: [sel, rep, text]; sel picks the built server message (0 Ready, 1 Exit, 2 Error, 3 Error once).
    terminal = {
        "resize": (0, b'{"type":"resize","cols":120,"rows":40}'),
        "close": (4, b'{"type":"close"}'),
        "auth-password": (3, b'{"type":"auth","username":"root","password":"hunter2"}'),
        "auth-key": (1 | 4 | 8, b'{"type":"auth","username":"r\xc3\xa9mi","private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\\n"}'),
        "resize-too-large": (0, b'{"type":"resize","cols":1001,"rows":40}'),
        "ready": (0, b'{"type":"ready","clipboard":false}'),
        "exit-status": (1 | 4, b'{"type":"exit","status":0}'),
        "exit-signal": (1 | 8, b'{"type":"exit","signal":"KILL"}'),
        "error": (2, b'{"type":"error","message":"host key changed \\u00e9\\n"}'),
        "unknown-type": (3, b'{"type":"exec","cmd":"rm -rf /"}'),
    }
    for name, (sel, text) in terminal.items():
        write("terminal", name, bytes([sel, 3]) + text)

    # gateway_request: [sel, request]; sel & 7 = 4 is clock 1800000000, sel >> 3 the cut (32nds).
    # `$0`..`$5` stand for the tokens core_checks.rs signs (0 alice/vm1 good, 1 not hers,
    # 2 unknown user, 3 unknown target, 4 expired, 5 alice/rdp1 good).
    def upgrade(path, extra=b""):
        return (b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
    gateway = {
        "tunnel-bearer": upgrade(b"/v1/tunnel/vm1", b"Authorization: Bearer $0\r\n") + b"\x82\x80abcd",
        "tunnel-query": upgrade(b"/v1/tunnel/rdp1?token=$5"),
        "tunnel-not-hers": upgrade(b"/v1/tunnel/vm2", b"Authorization: Bearer $1\r\n"),
        "tunnel-unknown-user": upgrade(b"/v1/tunnel/vm1", b"Authorization: Bearer $2\r\n"),
        "tunnel-unknown-target": upgrade(b"/v1/tunnel/gone", b"Authorization: Bearer $3\r\n"),
        "tunnel-expired": upgrade(b"/v1/tunnel/vm1", b"Authorization: Bearer $4\r\n"),
        "tunnel-other-target": upgrade(b"/v1/tunnel/rdp1", b"Authorization: Bearer $0\r\n"),
        "tunnel-no-token": upgrade(b"/v1/tunnel/vm1"),
        "rdp-upgrade": upgrade(b"/jet/rdp", b"Origin: https://gw\r\n"),
        "web-login": b"POST /api/login HTTP/1.1\r\nHost: gw\r\nContent-Length: 35\r\n\r\n"
                     b'{"user":"alice","password":"x"}',
        "web-ssh": upgrade(b"/v1/ssh/vm1", b"Cookie: pc_session=abc\r\nOrigin: https://gw\r\n"),
        "healthz": b"GET /healthz HTTP/1.1\r\n\r\n",
        "partial": b"GET /v1/tunnel/vm1 HTTP/1.1\r\nAuthorization: Bearer $0",
        "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    for name, request in gateway.items():
        write("gateway_request", name, bytes([4 | (20 << 3)]) + request)
    write("gateway_request", "tunnel-expired-clock", bytes([7]) + gateway["tunnel-bearer"])
    # The grant check reads lines `destination`, `user`, `bound target` from the same input.
    grants = {
        "grant-web-name": b"vm1\nalice\n",
        "grant-address-bound": b"10.0.0.6:3389\nalice\nrdp2\n",
        "grant-ticket-rdp": b"rdp1\nalice\nrdp1\n",
        "grant-not-hers": b"vm2\nbob\nvm2\n",
        "grant-token-address": b"10.0.0.6:3389\nalice\n",
    }
    for name, text in grants.items():
        write("gateway_request", name, bytes([4]) + text)

    # proxy_header: the start of a connection from a trusted balancer.
    proxy = {
        "v1-tcp4": b"PROXY TCP4 192.0.2.7 198.51.100.1 50412 443\r\n\x16\x03\x01",
        "v1-tcp6": b"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n",
        "v1-unknown": b"PROXY UNKNOWN\r\n",
        "v2-tcp4": b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\xc6\x33\x64\x01\xc4\xec\x01\xbb",
        "v2-tcp6-tlv": b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x29" + bytes(range(32)) + b"\x00\x01\x01\xbb" + b"\x01\x00\x02h2",
        "v2-local": b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",
        "tls": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    for name, data in proxy.items():
        write("proxy_header", name, data)

    # relay: choices of the simulation (portcullis_core::relay::sim::FromBytes), found by search so
    # that the seeds reach every way a session ends, with small and large transfers.
    write("relay", "local-big", bytes.fromhex("da6fe96ff7d0596239cfc048425e41b5a93e033e09a82e4d934678f251ece1bda4f7dbbb2d50a1bb72384733b4a5dd63533e2539c99f6d983503cea4b5b43b98250d4bcf567228d9372aca1852c7f84420bbfb05eceabcad5b5aa0"))
    write("relay", "local-small", bytes.fromhex("02177b5bf2d6ff414fd5f31a911184a919d308cfbdff9ac7c32c681ebc5ab3a95d7f332fbad6ed1ccef9614e6aad2177367ad0fb01436e71f93c8c4d160a481ab8454647dca40f18ba237a64fe5b9f0ba75a343c5e39336097b835aeb312235ba264e18345eaa4650c5cc422da704d43f480556f28026f2a3a2d"))
    write("relay", "peerclosed-big", bytes.fromhex("02bb3e313e84f538ed768a193f15c4a268b9f932651042da1521b093e5bbcc1afe3c9f1cd26255400928da7be1c63cea46ff1d746b08e9a90cedb9ca1a8c476ed6e81f89d51206a0508eb23d0f8a8624eebceddcaaba502e1d7dca2f60b713ba835c618a6a"))
    write("relay", "peerclosed-small", bytes.fromhex("9dc8b29ebafeee9aeb15d1aa5d46cdd2ff55b78c78d3ab2ff636308bb7e7f9cb31a14f2fee64d0cdb9caec3a1164d8adc0c13f4e1109bd958e398f1b1c348a3c993ec32b46a314e8743a07e7dd4dd75369c5e90087199c2f3c7062ab8566a364bded195b"))
    write("relay", "peergone-big", bytes.fromhex("1226c2ba6c9bdd192997ff475a9741063ca8f1d2160c5322861dc41cf445413a5a0f96a2bdc69a507c75c070f3f5d7375d59e4a8f748ed3cf67ec3b1cf"))
    write("relay", "peergone-small", bytes.fromhex("acbface6b49efe6b59454bdfed279bd536b1a2a5973a2b7866cf74da2c7ce04d95646f71597f3f023bf9eb0b0b00072c4d71e29acd2dbfb58ffcb306a7f740e5650bf40e2902425d09c8374fdd2924f2658ebe9e0690"))
    write("relay", "protocol-big", bytes.fromhex("ce474c0ee2d94af18c824c52143df3e1274584e242b3f7d20aeae94aa8c94dc3578a9f3299ecd71aceba"))
    write("relay", "protocol-small", bytes.fromhex("a121976012e86b25203e12bb0fddf5b3841841b1b70d9cff5f5e347b4f4601a1f60711a9e0240ec8f038864ce703af0ea9153de7c857d9cd4befb71ef47f06bd1d9384fc63948debeacd9834d75db56ed5d3b0854cb511459df2"))
    write("relay", "rawclosed-big", bytes.fromhex("4a17f53a059b758700f6a4651d433463545048cfd0cbf332e55e40ea595fb32da26489c05a50be9fe51963b301502a1d44a9f567fb397953e2f31029f78430ac9ce5a6d3aa72bd0e5db437ce34a5d2557acbf8feaf93"))
    write("relay", "rawclosed-small", bytes.fromhex("94ad50f3e947ed7ecafaaef09a16a4348b9c10458d987fda01f59a291e80a9d6aa6a196a241af0cf019b48bbb04dd3ea13"))
    write("relay", "rawerror-big", bytes.fromhex("252dfd90ab9e434c9f870ab6bc30abdc9b9248b63b63865fb1c98ea5b948091f44a2f0dace409b11bb3d114a8b545e4204ecea6dacedb9d85ba2b37224465c85bbd48836572c5e2474b3d03029f7d61bf9ea8cf3bd0c236719c1e1bf4d5b2e4724d6c21ced6a25b96df2730cbf5809b7e1"))
    write("relay", "rawerror-small", bytes.fromhex("578a914162c7f01d982be0031658451ca7370915089af117e8933add0386abc966c8367599ccd0d0a85e2c955eb793c0db4a4d8d19308c0a7746"))


if __name__ == "__main__":
    main()
