//! RDP framing the gateway reads before any TLS with the RDP server: the TPKT-framed X.224
//! Connection Request/Confirm (via ironrdp-pdu) and the RDCleanPath PDU web clients send first
//! (via ironrdp-rdcleanpath). Everything is bounded before it is parsed: these bytes come from
//! unauthenticated clients. [`channels`]: the static virtual channels of the client's MCS Connect
//! Initial, which the gateway filters by the target's policy in web RDP.

pub mod channels;

use ironrdp_pdu::nego::{ConnectionConfirm, ConnectionRequest, NegoRequestData};
use ironrdp_pdu::x224::X224;
use ironrdp_rdcleanpath::{DetectionResult, RDCleanPathPdu, VERSION_1};

/// X.224 Connection Request/Confirm PDUs are a few dozen bytes; nothing legitimate nears this.
pub const MAX_X224_LEN: usize = 4096;
/// An RDCleanPath request carries a token, a destination, a preconnection blob and the X.224
/// request: a few KiB at most.
pub const MAX_CLEANPATH_REQUEST: usize = 16 * 1024;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RdpError {
    #[error("not a TPKT packet")]
    NotTpkt,
    #[error("PDU of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("not an RDCleanPath PDU")]
    NotCleanPath,
    #[error("RDCleanPath request is missing {0}")]
    MissingField(&'static str),
    #[error("bytes after the RDCleanPath request")]
    TrailingBytes,
}

/// Total length of the TPKT packet at the start of `buf`; `Ok(None)` until its header is in.
pub fn tpkt_len(buf: &[u8], max: usize) -> Result<Option<usize>, RdpError> {
    let Some(header) = buf.get(..4) else { return Ok(None) };
    if header[0] != 3 {
        return Err(RdpError::NotTpkt);
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if len < 7 {
        return Err(RdpError::Malformed(format!("TPKT length {len}")));
    }
    if len > max {
        return Err(RdpError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// What the gateway logs and checks of a client's X.224 Connection Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRequestInfo {
    /// `Cookie: mstshash=…`, usually the user name the client was given.
    pub cookie: Option<String>,
    /// `Cookie: msts=…` load-balancer routing token.
    pub routing_token: Option<String>,
    /// Requested security protocols (PROTOCOL_SSL = 1, PROTOCOL_HYBRID = 2, …).
    pub requested_protocols: u32,
}

/// Parses one whole TPKT + X.224 Connection Request.
pub fn parse_connection_request(pdu: &[u8]) -> Result<ConnectionRequestInfo, RdpError> {
    check_whole_tpkt(pdu)?;
    let X224(req) =
        ironrdp_core::decode::<X224<ConnectionRequest>>(pdu).map_err(|e| RdpError::Malformed(e.to_string()))?;
    let (cookie, routing_token) = match req.nego_data {
        Some(NegoRequestData::Cookie(c)) => (Some(c.0), None),
        Some(NegoRequestData::RoutingToken(t)) => (None, Some(t.0)),
        None => (None, None),
    };
    Ok(ConnectionRequestInfo {
        cookie,
        routing_token,
        requested_protocols: req.protocol.bits(),
    })
}

/// The server's answer to the Connection Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// The selected security protocol.
    Protocol(u32),
    /// RDP_NEG_FAILURE with its code (e.g. 5 = HYBRID_REQUIRED_BY_SERVER).
    Failure(String),
}

/// Parses one whole TPKT + X.224 Connection Confirm.
pub fn parse_connection_confirm(pdu: &[u8]) -> Result<Negotiated, RdpError> {
    check_whole_tpkt(pdu)?;
    let X224(cc) =
        ironrdp_core::decode::<X224<ConnectionConfirm>>(pdu).map_err(|e| RdpError::Malformed(e.to_string()))?;
    Ok(match cc {
        ConnectionConfirm::Response { protocol, .. } => Negotiated::Protocol(protocol.bits()),
        ConnectionConfirm::Failure { code } => Negotiated::Failure(format!("{code:?}")),
    })
}

fn check_whole_tpkt(pdu: &[u8]) -> Result<(), RdpError> {
    match tpkt_len(pdu, MAX_X224_LEN)? {
        Some(len) if len == pdu.len() => Ok(()),
        Some(len) => Err(RdpError::Malformed(format!("TPKT says {len} bytes, got {}", pdu.len()))),
        None => Err(RdpError::Malformed("truncated TPKT header".into())),
    }
}

/// The client's RDCleanPath request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanPathRequest {
    /// The target the client asks for (the gateway maps it to a configured RDP target).
    pub destination: String,
    /// The authorization token.
    pub proxy_auth: String,
    pub preconnection_blob: Option<String>,
    /// The client's TPKT + X.224 Connection Request, to forward to the server.
    pub x224_request: Vec<u8>,
}

/// Length of the RDCleanPath PDU at the start of `buf` from its DER header alone, before the
/// whole PDU has arrived. `Ok(None)` means more bytes are needed.
pub fn cleanpath_len(buf: &[u8], max: usize) -> Result<Option<usize>, RdpError> {
    // The PDU is a DER SEQUENCE; `detect` alone accepts other tags while it waits for bytes.
    match buf.first() {
        None => return Ok(None),
        Some(0x30) => {}
        Some(_) => return Err(RdpError::NotCleanPath),
    }
    match RDCleanPathPdu::detect(buf) {
        DetectionResult::Detected { total_length, .. } if total_length > max => {
            Err(RdpError::TooLarge { len: total_length, max })
        }
        DetectionResult::Detected { total_length, .. } => Ok(Some(total_length)),
        // A huge buffer that still does not parse is not an RDCleanPath PDU at all.
        DetectionResult::NotEnoughBytes if buf.len() > max => Err(RdpError::TooLarge { len: buf.len(), max }),
        DetectionResult::NotEnoughBytes => Ok(None),
        DetectionResult::Failed => Err(RdpError::NotCleanPath),
    }
}

/// Parses exactly one RDCleanPath request PDU (no trailing bytes), and the X.224 request inside.
pub fn parse_cleanpath_request(buf: &[u8]) -> Result<(CleanPathRequest, ConnectionRequestInfo), RdpError> {
    let len = cleanpath_len(buf, MAX_CLEANPATH_REQUEST)?.ok_or(RdpError::Malformed("truncated".into()))?;
    if len != buf.len() {
        return Err(if len < buf.len() {
            RdpError::TrailingBytes
        } else {
            RdpError::Malformed("truncated".into())
        });
    }
    let pdu = RDCleanPathPdu::from_der(buf).map_err(|e| RdpError::Malformed(e.to_string()))?;
    if pdu.version != VERSION_1 {
        return Err(RdpError::NotCleanPath);
    }
    if pdu.error.is_some() || pdu.server_cert_chain.is_some() || pdu.server_addr.is_some() {
        return Err(RdpError::Malformed("a response where a request was expected".into()));
    }
    let destination = pdu.destination.ok_or(RdpError::MissingField("destination"))?;
    let proxy_auth = pdu.proxy_auth.ok_or(RdpError::MissingField("proxy_auth"))?;
    let x224_request = pdu
        .x224_connection_pdu
        .ok_or(RdpError::MissingField("x224_connection_pdu"))?
        .as_bytes()
        .to_vec();
    let info = parse_connection_request(&x224_request)?;
    Ok((
        CleanPathRequest {
            destination,
            proxy_auth,
            preconnection_blob: pdu.preconnection_blob,
            x224_request,
        },
        info,
    ))
}

/// Encodes a request, as a web client would send it (for tests and load generators).
pub fn cleanpath_request(
    x224_request: &[u8],
    destination: &str,
    proxy_auth: &str,
    preconnection_blob: Option<&str>,
) -> Result<Vec<u8>, RdpError> {
    RDCleanPathPdu::new_request(
        x224_request.to_vec(),
        destination.to_owned(),
        proxy_auth.to_owned(),
        preconnection_blob.map(str::to_owned),
    )
    .and_then(|p| p.to_der())
    .map_err(|e| RdpError::Malformed(e.to_string()))
}

/// The longest `mstshash` cookie an X.224 Connection Request with a negotiation block can carry:
/// the TPDU length indicator is one byte and 255 is reserved.
pub const MAX_COOKIE_LEN: usize = 221;

/// A Connection Request as an RDP client sends it: `Cookie: mstshash=user`, asking for TLS and
/// CredSSP. Empty when `user` cannot be carried: longer than [`MAX_COOKIE_LEN`], or holding a
/// CR LF (which ends the cookie).
pub fn connection_request(user: &str) -> Vec<u8> {
    use ironrdp_pdu::nego::{RequestFlags, SecurityProtocol};
    if user.len() > MAX_COOKIE_LEN || user.contains("\r\n") {
        return Vec::new();
    }
    let req = ConnectionRequest {
        nego_data: Some(NegoRequestData::cookie(user.to_owned())),
        flags: RequestFlags::empty(),
        protocol: SecurityProtocol::SSL | SecurityProtocol::HYBRID,
        correlation_info: None,
    };
    ironrdp_core::encode_vec(&X224(req)).unwrap_or_default()
}

/// What a client learns from the gateway's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanPathAnswer {
    Response {
        x224_confirm: Vec<u8>,
        chain: Vec<Vec<u8>>,
        server_addr: String,
    },
    /// The error PDU: general code, HTTP status, TLS alert.
    Error {
        code: u16,
        http_status: Option<u16>,
        tls_alert: Option<u8>,
    },
}

/// Decodes the gateway's answer (client side).
pub fn parse_cleanpath_answer(buf: &[u8]) -> Result<CleanPathAnswer, RdpError> {
    let pdu = RDCleanPathPdu::from_der(buf).map_err(|e| RdpError::Malformed(e.to_string()))?;
    if let Some(err) = pdu.error {
        return Ok(CleanPathAnswer::Error {
            code: err.error_code,
            http_status: err.http_status_code,
            tls_alert: err.tls_alert_code,
        });
    }
    Ok(CleanPathAnswer::Response {
        x224_confirm: pdu
            .x224_connection_pdu
            .ok_or(RdpError::MissingField("x224_connection_pdu"))?
            .as_bytes()
            .to_vec(),
        chain: pdu
            .server_cert_chain
            .unwrap_or_default()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect(),
        server_addr: pdu.server_addr.ok_or(RdpError::MissingField("server_addr"))?,
    })
}

/// The gateway's success answer: the server's X.224 confirm, its certificate chain (for the
/// browser to verify) and the address it connected to.
pub fn cleanpath_response(server_addr: &str, x224_confirm: &[u8], chain: &[Vec<u8>]) -> Result<Vec<u8>, RdpError> {
    let pdu = RDCleanPathPdu::new_response(server_addr.to_owned(), x224_confirm.to_vec(), chain.iter().cloned())
        .map_err(|e| RdpError::Malformed(e.to_string()))?;
    pdu.to_der().map_err(|e| RdpError::Malformed(e.to_string()))
}

/// Why an RDCleanPath session could not start, as the client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanPathFailure {
    General,
    /// Authorization failures and the like, as an HTTP status (401, 403, 404, 502).
    Http(u16),
    /// The server refused the negotiation; its X.224 answer is passed on.
    Negotiation(Vec<u8>),
    /// TLS with the server failed with this alert.
    TlsAlert(u8),
}

pub fn cleanpath_error(failure: &CleanPathFailure) -> Vec<u8> {
    let pdu = match failure {
        CleanPathFailure::General => RDCleanPathPdu::new_general_error(),
        CleanPathFailure::Http(status) => RDCleanPathPdu::new_http_error(*status),
        CleanPathFailure::Negotiation(x224) => {
            RDCleanPathPdu::new_negotiation_error(x224.clone()).unwrap_or_else(|_| RDCleanPathPdu::new_general_error())
        }
        CleanPathFailure::TlsAlert(alert) => RDCleanPathPdu::new_tls_error(*alert),
    };
    // Encoding our own well-formed PDU cannot fail; an empty answer would still close cleanly.
    pdu.to_der().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::nego::{ResponseFlags, SecurityProtocol};

    #[test]
    fn x224_request_and_confirm() {
        let cr = connection_request("alice");
        assert_eq!(tpkt_len(&cr[..3], MAX_X224_LEN), Ok(None));
        assert_eq!(tpkt_len(&cr, MAX_X224_LEN), Ok(Some(cr.len())));
        let info = parse_connection_request(&cr).unwrap();
        assert_eq!(info.cookie.as_deref(), Some("alice"));
        assert_eq!(info.requested_protocols, 3);
        let cc = ironrdp_core::encode_vec(&X224(ConnectionConfirm::Response {
            flags: ResponseFlags::empty(),
            protocol: SecurityProtocol::SSL,
        }))
        .unwrap();
        assert_eq!(parse_connection_confirm(&cc), Ok(Negotiated::Protocol(1)));
        assert!(parse_connection_request(&cc).is_err());
        assert!(parse_connection_confirm(&cr).is_err());
    }

    #[test]
    fn cookie_length_limit() {
        let longest = "x".repeat(MAX_COOKIE_LEN);
        assert_eq!(
            parse_connection_request(&connection_request(&longest))
                .unwrap()
                .cookie
                .as_deref(),
            Some(&*longest)
        );
        assert!(connection_request(&"x".repeat(MAX_COOKIE_LEN + 1)).is_empty());
        assert!(connection_request("a\r\nb").is_empty());
    }

    #[test]
    fn tpkt_bounds() {
        assert_eq!(tpkt_len(b"\x16\x03\x01\x00", 4096), Err(RdpError::NotTpkt));
        assert_eq!(
            tpkt_len(&[3, 0, 0xff, 0xff], 4096),
            Err(RdpError::TooLarge { len: 65535, max: 4096 })
        );
        assert!(matches!(tpkt_len(&[3, 0, 0, 2], 4096), Err(RdpError::Malformed(_))));
        let mut cr = connection_request("x");
        cr.push(0);
        assert!(parse_connection_request(&cr).is_err());
    }

    fn request_pdu(x224: Vec<u8>) -> Vec<u8> {
        RDCleanPathPdu::new_request(x224, "vm1".into(), "token".into(), None)
            .unwrap()
            .to_der()
            .unwrap()
    }

    #[test]
    fn cleanpath_request_round_trip_and_detection() {
        let der = request_pdu(connection_request("bob"));
        for cut in 0..der.len() {
            // Detection never claims a length the bytes so far contradict, and never errs on a prefix.
            match cleanpath_len(&der[..cut], MAX_CLEANPATH_REQUEST) {
                Ok(None) | Ok(Some(_)) => {}
                Err(e) => panic!("prefix of {cut} bytes: {e}"),
            }
        }
        assert_eq!(cleanpath_len(&der, MAX_CLEANPATH_REQUEST), Ok(Some(der.len())));
        let (req, info) = parse_cleanpath_request(&der).unwrap();
        assert_eq!((req.destination.as_str(), req.proxy_auth.as_str()), ("vm1", "token"));
        assert_eq!(info.cookie.as_deref(), Some("bob"));
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(parse_cleanpath_request(&trailing), Err(RdpError::TrailingBytes));
        assert!(parse_cleanpath_request(&der[..der.len() - 1]).is_err());
        assert_eq!(
            cleanpath_len(&der, 16),
            Err(RdpError::TooLarge {
                len: der.len(),
                max: 16
            })
        );
        assert_eq!(
            cleanpath_len(b"GET / HTTP/1.1\r\n", MAX_CLEANPATH_REQUEST),
            Err(RdpError::NotCleanPath)
        );
    }

    #[test]
    fn cleanpath_rejects_bad_requests() {
        // X.224 inside is garbage.
        assert!(parse_cleanpath_request(&request_pdu(vec![3, 0, 0, 8, 1, 2, 3, 4])).is_err());
        // A response is not a request.
        let resp = cleanpath_response("10.0.0.4:3389", &connection_request("x"), &[vec![1, 2, 3]]).unwrap();
        assert!(parse_cleanpath_request(&resp).is_err());
        // Wrong version.
        let mut pdu = RDCleanPathPdu::new_request(connection_request("x"), "vm1".into(), "t".into(), None).unwrap();
        pdu.version = 1;
        assert!(parse_cleanpath_request(&pdu.to_der().unwrap()).is_err());
    }

    #[test]
    fn error_pdus_decode_to_their_codes() {
        for (failure, check) in [
            (CleanPathFailure::Http(403), Some(403u16)),
            (CleanPathFailure::General, None),
            (CleanPathFailure::TlsAlert(40), None),
        ] {
            let der = cleanpath_error(&failure);
            let pdu = RDCleanPathPdu::from_der(&der).unwrap();
            let err = pdu.error.expect("error field");
            assert_eq!(err.http_status_code, check);
            if let CleanPathFailure::TlsAlert(a) = failure {
                assert_eq!(err.tls_alert_code, Some(a));
            }
        }
    }
}
