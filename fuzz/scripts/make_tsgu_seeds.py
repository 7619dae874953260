#!/usr/bin/env python3
# Seeds of the `tsgu` fuzz target (MS-TSGU packets as FreeRDP 2.11 and a gateway send them):
#   python3 fuzz/scripts/make_tsgu_seeds.py
import struct, os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "tsgu")

def pkt(t, body):
    return struct.pack("<HHI", t, 0, 8 + len(body)) + body

def u16z(s):
    return (s + "\0").encode("utf-16-le")

def string(s):
    b = u16z(s)
    return struct.pack("<H", len(b)) + b

def blob(b):
    return struct.pack("<H", len(b)) + b

def handshake(ext):
    return pkt(1, struct.pack("<BBHH", 1, 0, 0, ext))

def tunnel_create(cookie=None, reauth=None, caps=0xD):
    fields = (1 if cookie is not None else 0) | (2 if reauth is not None else 0)
    body = struct.pack("<IHH", caps, fields, 0)
    if reauth is not None:
        body += struct.pack("<Q", reauth)
    if cookie is not None:
        body += blob(cookie)
    return pkt(4, body)

def tunnel_auth(name, soh=None):
    body = struct.pack("<H", 1 if soh is not None else 0) + string(name)
    if soh is not None:
        body += blob(soh)
    return pkt(6, body)

def channel_create(names, alts=(), port=3389, proto=3):
    body = struct.pack("<BBHH", len(names), len(alts), port, proto)
    for n in list(names) + list(alts):
        body += string(n)
    return pkt(8, body)

def data(b):
    return pkt(0xA, struct.pack("<H", len(b)) + b)

def close(t, status):
    return pkt(t, struct.pack("<I", status))

KEEPALIVE = pkt(0xD, b"")

def handshake_response(err, ext):
    return pkt(2, struct.pack("<IBBHH", err, 1, 0, 0, ext))

def tunnel_response(status, tid=None, caps=None, consent=None):
    fields = (1 if tid is not None else 0) | (2 if caps is not None else 0) | (0x10 if consent is not None else 0)
    body = struct.pack("<HIHH", 0, status, fields, 0)
    if tid is not None: body += struct.pack("<I", tid)
    if caps is not None: body += struct.pack("<I", caps)
    if consent is not None: body += string(consent)
    return pkt(5, body)

def tunnel_auth_response(err, redir=None, idle=None, soh=None):
    fields = (1 if redir is not None else 0) | (2 if idle is not None else 0) | (4 if soh is not None else 0)
    body = struct.pack("<IHH", err, fields, 0)
    if redir is not None: body += struct.pack("<I", redir)
    if idle is not None: body += struct.pack("<I", idle)
    if soh is not None: body += blob(soh)
    return pkt(7, body)

def channel_response(err, cid=None, udp=None, cookie=None):
    fields = (1 if cid is not None else 0) | (4 if udp is not None else 0) | (2 if cookie is not None else 0)
    body = struct.pack("<IHH", err, fields, 0)
    if cid is not None: body += struct.pack("<I", cid)
    if udp is not None: body += struct.pack("<H", udp)
    if cookie is not None: body += blob(cookie)
    return pkt(9, body)

def service_message(m):
    return pkt(0xB, string(m))

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSIsInRndCI6InJkcDEifQ.c2ln"
seeds = {
    # FreeRDP 2.11 with /gat: — the whole client side of a session.
    "freerdp-paa-session": [0x10, 0x00] + [
        handshake(2), tunnel_create(u16z(TOKEN)), tunnel_auth("workstation"),
        channel_create(["rdp1.example"]), data(b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"),
        KEEPALIVE, close(0x11, 0)],
    # Without a token: extended auth NONE, no cookie.
    "freerdp-ntlm-session": [0x03, 0x00] + [
        handshake(0), tunnel_create(None), tunnel_auth("pc"), channel_create(["10.0.0.5"], port=3390), data(b"hello")],
    # The optional fields FreeRDP does not send.
    "client-optional-fields": [0x40, 0x00] + [
        tunnel_create(b"\x01\x02\x03", reauth=0x1122334455667788, caps=0x1F),
        tunnel_auth("héllo-𝄞", soh=b"statement"),
        channel_create(["a", "b.example"], alts=["c"], port=0, proto=7),
        close(0x10, 0x59F6), data(b"")],
    # The gateway's answers to a session, then data, a service message, keepalive and close.
    "gateway-session": [0x25, 0x01] + [
        handshake_response(0, 2), tunnel_response(0, 10, 2), tunnel_auth_response(0, 0x40000000, 30),
        channel_response(0, 1), data(b"\x03\x00\x00\x13"), service_message("The session ends in 5 minutes."),
        KEEPALIVE, close(0x10, 0x4D4), close(0x11, 0)],
    # Refusals with E_PROXY codes, and the optional fields.
    "gateway-refusals": [0x08, 0x00] + [
        handshake_response(0x800759F9, 0), tunnel_response(0x800759F8),
        tunnel_response(0, 1, 4, consent="Authorized use only."),
        tunnel_auth_response(0x80070005), tunnel_auth_response(0, 0x9, 0, soh=b"ok"),
        channel_response(0x800759DA), channel_response(0, 2, 3391, b"cookie")],
    # A stream ending inside a packet.
    "partial-tail": [0x05, 0x00] + [handshake(2), data(b"abcdef"), data(b"0123456789")[:9]],
    # Not supported: extended auth message, then garbage lengths.
    "unsupported-type": [0x00, 0x00] + [pkt(3, struct.pack("<IH", 0, 0)), handshake(2)],
    "bad-length": [0x00, 0x00] + [struct.pack("<HHI", 0xA, 0, 4), b"\x00" * 8],
    "over-limit": [0x00, 0x00] + [struct.pack("<HHI", 0xA, 0, 68 * 1024 + 1)],
    # Broken strings: odd length, unpaired surrogate, NUL inside.
    "bad-strings": [0x00, 0x00] + [pkt(8, struct.pack("<BBHH", 1, 0, 3389, 3) + struct.pack("<H", 3) + b"a\x00b")],
    "bad-surrogate": [0x00, 0x00] + [pkt(6, struct.pack("<HH", 0, 4) + b"\x00\xd8a\x00")],
    # DATA whose count disagrees with the packet length.
    "data-count-mismatch": [0x00, 0x00] + [pkt(0xA, struct.pack("<H", 5) + b"abc")],
}
for name, parts in seeds.items():
    head = bytes(parts[:2])
    body = b"".join(parts[2:])
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(head + body)
print(len(seeds))
