#!/usr/bin/env python3
# Seeds of the `chunked` fuzz target (HTTP/1.1 chunked bodies as FreeRDP 2.11 sends RDG_IN_DATA):
#   python3 fuzz/scripts/make_chunked_seeds.py
# Layout: [flags, lo, hi] then the body; flags bits 0-2 pick the chunk limit
# (0, 1, 5, 16, 300, 4096, 64 KiB, unlimited), lo/hi a split point and the round trip's chunk sizes.
import struct, os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "chunked")

def pkt(t, body):
    return struct.pack("<HHI", t, 0, 8 + len(body)) + body

def chunk(data, ext=b""):
    # FreeRDP's rdg_write_chunked: "%X\r\n", the packet, "\r\n".
    return b"%X" % len(data) + ext + b"\r\n" + data + b"\r\n"

HANDSHAKE = pkt(1, struct.pack("<BBHH", 1, 0, 0, 2))
TUNNEL_CREATE = pkt(4, struct.pack("<IHH", 0xD, 1, 0) + struct.pack("<H", 6) + "ab\0".encode("utf-16-le"))
TUNNEL_AUTH = pkt(6, struct.pack("<H", 0) + struct.pack("<H", 6) + "pc\0".encode("utf-16-le"))
CHANNEL_CREATE = pkt(8, struct.pack("<BBHH", 1, 0, 3389, 3) + struct.pack("<H", 4) + "h\0".encode("utf-16-le"))
X224 = b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"
DATA = pkt(0xA, struct.pack("<H", len(X224)) + X224)
KEEPALIVE = pkt(0xD, b"")
LAST = b"0\r\n\r\n"

seeds = {
    # The client side of a session, one packet per chunk; the body never ends.
    "freerdp-tsgu-session": [7, 0x20, 0x00] + [chunk(p) for p in
        (HANDSHAKE, TUNNEL_CREATE, TUNNEL_AUTH, CHANNEL_CREATE, DATA, KEEPALIVE)],
    # A handshake alone, under the 64 KiB limit, cut inside its size line.
    "freerdp-handshake": [6, 0x01, 0x00] + [chunk(HANDSHAKE)],
    # A large chunk: a size of three hex digits, lower case.
    "large-chunk-lower-hex": [4, 0x40, 0x01] + [b"12c\r\n" + bytes(range(256)) + b"x" * 44 + b"\r\n"],
    # Extensions (token, quoted string with an escaped quote and a ';', spaces before ';'), leading zeros.
    "extensions": [7, 0x07, 0x00] + [chunk(HANDSHAKE, b";rdg=1"), chunk(b"hello", b' ; a = "b\\"c;d" ;e'),
        b"0005\t;x\r\nworld\r\n"],
    # The last chunk with trailer fields, then nothing.
    "trailers": [7, 0x10, 0x00] + [chunk(DATA), b"0;end\r\nX-Checksum: 1234\r\nExpires: never\r\n\r\n"],
    # The last chunk alone, and a body ended by it with bytes after it (a pipelined request).
    "last-chunk": [7, 0x00, 0x00] + [LAST],
    "after-end": [7, 0x09, 0x00] + [chunk(KEEPALIVE), LAST, b"GET / HTTP/1.1\r\n"],
    # Refused before its data: a 17-byte chunk under a 16-byte limit.
    "oversize-chunk": [3, 0x05, 0x00] + [chunk(b"0123456789abcdef"), chunk(b"0123456789abcdefg")],
    # Sizes that are not: too many digits, a sign, 0x, trailing space, nothing.
    "size-overflow": [7, 0x03, 0x00] + [b"FFFFFFFFFFFFFFFFF\r\n"],
    "bad-size": [7, 0x02, 0x00] + [chunk(b"ok"), b"0x10\r\n"],
    # Line endings: a bare LF after the size, and data not followed by CRLF.
    "bare-lf": [7, 0x01, 0x00] + [b"3\nabc\r\n"],
    "missing-crlf": [7, 0x04, 0x00] + [b"3\r\nabcd\r\n"],
    # A stream ending inside a chunk's data.
    "partial-tail": [5, 0x11, 0x00] + [chunk(HANDSHAKE), chunk(DATA)[:20]],
}
for name, parts in seeds.items():
    head = bytes(parts[:3])
    body = b"".join(parts[3:])
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(head + body)
print(len(seeds))
