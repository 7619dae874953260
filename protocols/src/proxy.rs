//! The PROXY protocol (HAProxy, versions 1 and 2): the header a load balancer in TCP mode puts
//! in front of a connection to say whose it is. Parsed before TLS, from trusted balancers only
//! (the caller decides which), so that audit records, limits and sign-in throttling see the real
//! client address rather than the balancer's.
//!
//! Bounded: a v1 header is at most 107 bytes (the specification's limit); a v2 header at most
//! `MAX_V2_LEN` (its address block and TLVs; larger ones are refused rather than buffered).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included.
pub const MAX_V1_LEN: usize = 107;
/// Longest v2 header accepted: the 16-byte preamble and up to 1 KiB of addresses and TLVs (what
/// balancers send is far smaller: addresses plus a few TLVs such as ALPN or a unique id).
pub const MAX_V2_LEN: usize = 16 + 1024;

/// Whose connection it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (a health check, v2 LOCAL): the connection's address stands.
    Local,
    /// A connection whose addresses the balancer does not know (v1 UNKNOWN, v2 unspecified
    /// family or a non-IP one): the connection's address stands.
    Unknown,
}

impl ProxyHeader {
    /// The real client address, if the header gives one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local | ProxyHeader::Unknown => None,
        }
    }
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("PROXY protocol header longer than allowed")]
    TooLong,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("unsupported PROXY protocol version or command")]
    Unsupported,
}

/// Parses a PROXY header at the start of `buf`. `Ok(None)`: more bytes are needed (and could
/// still make a header); `Ok(Some((header, len)))`: the header took `len` bytes and what follows
/// is the connection's own data.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    const V1: &[u8] = b"PROXY ";
    let prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..prefix] == V2_SIGNATURE[..prefix] {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let prefix = buf.len().min(V1.len());
    if buf[..prefix] == V1[..prefix] {
        return if buf.len() < V1.len() { Ok(None) } else { parse_v1(buf) };
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    // The line ends at its first LF, which must follow a CR: deciding on the first LF (not the
    // first CR LF) gives a prefix the same answer as the whole.
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1_LEN {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::Malformed("line ends without CR LF"));
    }
    let end = lf - 1;
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader::Unknown,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip = match *family {
                    "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => s.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                ip.map_err(|_| ProxyError::Malformed("bad address"))
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal, no sign or leading zeros (the specification's form).
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyError::Malformed("bad port"));
                }
                s.parse().map_err(|_| ProxyError::Malformed("bad port"))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(ProxyError::Malformed("not PROXY TCP4|TCP6|UNKNOWN with four fields")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(preamble) = buf.get(..16) else {
        return Ok(None);
    };
    let (version, command) = (preamble[12] >> 4, preamble[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyError::Unsupported);
    }
    let len = 16 + usize::from(u16::from_be_bytes([preamble[14], preamble[15]]));
    if len > MAX_V2_LEN {
        return Err(ProxyError::TooLong);
    }
    let Some(block) = buf.get(16..len) else {
        return Ok(None);
    };
    if command == 0 {
        // LOCAL: the balancer speaking for itself; whatever follows is ignored.
        return Ok(Some((ProxyHeader::Local, len)));
    }
    let (family, transport) = (preamble[13] >> 4, preamble[13] & 0x0f);
    let header = match (family, transport) {
        // TCP (STREAM) over IPv4 or IPv6; UDP is not a connection we relay.
        (1, 1) => {
            let a = block
                .get(..12)
                .ok_or(ProxyError::Malformed("short IPv4 address block"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        (2, 1) => {
            let a = block
                .get(..36)
                .ok_or(ProxyError::Malformed("short IPv6 address block"))?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        (1 | 2, _) => return Err(ProxyError::Unsupported),
        // Unspecified or Unix: no IP address to go by.
        _ => ProxyHeader::Unknown,
    };
    Ok(Some((header, len)))
}

/// A v2 PROXY header for a TCP connection from `source` to `destination` (balancers, tests).
/// Both must be of one family.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    let block: Vec<u8> = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            [
                &s.ip().octets()[..],
                &d.ip().octets(),
                &s.port().to_be_bytes(),
                &d.port().to_be_bytes(),
            ]
            .concat()
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            [&v6(s)[..], &v6(d), &s.port().to_be_bytes(), &d.port().to_be_bytes()].concat()
        }
    };
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// A v1 PROXY header for a TCP connection from `source` to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() && destination.is_ipv4() {
        "TCP4"
    } else {
        "TCP6"
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 50412 443\r\n\x16\x03\x01";
        let (header, len) = parse(h).unwrap().unwrap();
        assert_eq!(len, h.len() - 3);
        assert_eq!(header.source(), Some(addr("192.0.2.7:50412")));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(parse(h).unwrap().unwrap().0.source(), Some(addr("[2001:db8::1]:1")));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0, ProxyHeader::Unknown);
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n").unwrap().unwrap().0,
            ProxyHeader::Unknown
        );
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 50412\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 050412 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(&[b'P'; 200]), Err(ProxyError::Missing));
        let long = format!("PROXY {}", "x".repeat(120));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::TooLong));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_headers() {
        let (s, d) = (addr("192.0.2.7:50412"), addr("198.51.100.1:443"));
        let h = encode_v2(s, d);
        assert_eq!(h.len(), 28);
        assert_eq!(
            parse(&h).unwrap(),
            Some((
                ProxyHeader::Proxied {
                    source: s,
                    destination: d
                },
                28
            ))
        );
        let (s6, d6) = (addr("[2001:db8::1]:1"), addr("[2001:db8::2]:443"));
        assert_eq!(parse(&encode_v2(s6, d6)).unwrap().unwrap().0.source(), Some(s6));
        // LOCAL, TLVs after the addresses, unknown families.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&local).unwrap(), Some((ProxyHeader::Local, 16)));
        let mut tlv = encode_v2(s, d);
        tlv[15] += 5;
        tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        assert_eq!(
            parse(&tlv).unwrap().unwrap(),
            (
                ProxyHeader::Proxied {
                    source: s,
                    destination: d
                },
                33
            )
        );
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0x00]);
        assert_eq!(parse(&unix).unwrap().unwrap().0, ProxyHeader::Unknown);
        let mut bad = encode_v2(s, d);
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Err(ProxyError::Unsupported));
        let mut short = encode_v2(s, d);
        short[15] = 4;
        assert!(matches!(parse(&short[..20]), Err(ProxyError::Malformed(_))));
        let mut huge = encode_v2(s, d);
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
    }

    /// Every proper prefix of a header asks for more; the whole parses.
    #[test]
    fn prefixes_need_more() {
        let (s, d) = (addr("192.0.2.7:50412"), addr("198.51.100.1:443"));
        for h in [encode_v1(s, d), encode_v2(s, d)] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Ok(None), "cut {cut}");
            }
            assert_eq!(parse(&h).unwrap().unwrap().1, h.len());
        }
    }
}
