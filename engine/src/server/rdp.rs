//! RDCleanPath: web RDP through the gateway (`/v1/rdp`, also `/jet/rdp` as IronRDP web clients
//! expect). The browser cannot do TCP or the RDP server's TLS itself, so the gateway does the
//! pre-TLS part for it:
//!
//! 1. read one RDCleanPath request (bounded, within the request timeout) from WebSocket messages;
//! 2. authorize its `proxy_auth` token for its `destination`, which must be a configured RDP
//!    target (by name or by its configured address: never an arbitrary host);
//! 3. connect, send the preconnection blob and the client's X.224 Connection Request, read the
//!    X.224 Connection Confirm, and do the TLS handshake with the server as a client;
//! 4. answer with the confirm, the server's certificate chain and address; then relay WebSocket
//!    binary frames to and from that TLS stream.
//!
//! Every failure answers with an RDCleanPath error PDU and is audited.

use super::conn::{connect, drive, session_id, timeout, unix_now, Conn};
use super::socket::Socket;
use super::Tracker;
use crate::audit::{now_rfc3339, SessionRecord};
use crate::config::{Protocol, Target};
use crate::policy::Denial;
use crate::relay::Relay;
use crate::web::session::TICKET_PREFIX;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis_protocols::rdp::{self, CleanPathFailure, Negotiated, MAX_CLEANPATH_REQUEST, MAX_X224_LEN};
use portcullis_protocols::token::Claims;
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use std::time::Instant;

type ServerTls = futures_rustls::client::TlsStream<Socket>;

/// Why an RDCleanPath session did not start: what the client is told, and what the audit says.
struct Refusal {
    failure: CleanPathFailure,
    status: u16,
    reason: String,
    user: Option<String>,
}

impl Refusal {
    fn new(failure: CleanPathFailure, status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            failure,
            status,
            reason: reason.into(),
            user: None,
        }
    }
}

/// A connected, TLS-secured RDP server, ready to relay.
struct Established {
    target: Target,
    user: String,
    token_id: String,
    cookie: Option<String>,
    server: ServerTls,
    response: Vec<u8>,
}

impl Conn<'_> {
    pub(super) async fn rdp(&mut self, accept: Vec<u8>, leftover: Vec<u8>, tracker: &Tracker) {
        let settings = &self.state.policy.config.session;
        let sent = timeout(settings.close_timeout, async {
            self.tls.write_all(&accept).await?;
            self.tls.flush().await
        })
        .await;
        if !matches!(sent, Some(Ok(()))) {
            return;
        }
        let (pdu, after) = match self.read_cleanpath(leftover).await {
            Ok(r) => r,
            Err(refusal) => return self.refuse_rdp(refusal).await,
        };
        let est = match self.establish(&pdu).await {
            Ok(e) => e,
            Err(refusal) => return self.refuse_rdp(refusal).await,
        };
        let Established {
            target,
            user,
            token_id,
            cookie,
            mut server,
            response,
        } = est;
        if self.send_frame(OpCode::Binary, &response).await.is_err() {
            return;
        }

        let session = session_id();
        let started = now_rfc3339();
        tracing::info!(%session, %user, client = %self.client, target = %target.name, cookie = ?cookie, "RDP session started");
        let limits = &self.state.policy.config.limits;
        let ws_limits = ws::Limits {
            max_frame_payload: limits.max_frame_size,
            max_message: limits.max_message_size,
        };
        let mut relay = Relay::new(Role::Server, ws_limits, settings.buffer_size, &after);
        let end = drive(&mut relay, &mut self.tls, &mut server, settings, tracker).await;
        let counters = relay.counters();
        tracing::info!(%session, ended = %end.label(), up = counters.peer_to_raw, down = counters.raw_to_peer, "RDP session ended");
        self.shared.audit.record(&SessionRecord {
            event: "session",
            session,
            user,
            client: self.client.to_string(),
            target: target.name.clone(),
            protocol: Protocol::Rdp.to_string(),
            token_id,
            start: started,
            end: now_rfc3339(),
            bytes_client_to_target: counters.peer_to_raw,
            bytes_target_to_client: counters.raw_to_peer,
            ended: end.label(),
            rdp_cookie: cookie,
            recording: None,
            via: Some("web_rdp"),
        });
    }

    /// Reads WebSocket messages until one whole RDCleanPath PDU is in. Returns it and any bytes
    /// that followed it.
    async fn read_cleanpath(&mut self, leftover: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
        let bad = |reason: String| Refusal::new(CleanPathFailure::Http(400), 400, reason);
        let limit = MAX_CLEANPATH_REQUEST as u64;
        let mut assembler = MessageAssembler::new(
            Role::Server,
            ws::Limits {
                max_frame_payload: limit,
                max_message: limit,
            },
        );
        let (mut start, mut end) = (0, leftover.len());
        let mut buf = leftover;
        buf.resize(buf.len().max(4096), 0);
        let mut pdu = Vec::new();
        let deadline = Instant::now() + self.state.policy.config.session.request_timeout;
        loop {
            while start < end {
                let (used, msg) = assembler.feed(&mut buf[start..end]).map_err(|e| bad(e.to_string()))?;
                start += used;
                match msg {
                    Some(Message::Binary(bytes)) => {
                        pdu.extend_from_slice(&bytes);
                        if let Some(len) =
                            rdp::cleanpath_len(&pdu, MAX_CLEANPATH_REQUEST).map_err(|e| bad(e.to_string()))?
                        {
                            if pdu.len() >= len {
                                return Ok((pdu, buf[start..end].to_vec()));
                            }
                        }
                    }
                    Some(Message::Close { .. }) => return Err(bad("client closed before its request".into())),
                    Some(Message::Text(_)) => return Err(bad("RDCleanPath is binary".into())),
                    Some(Message::Ping(_) | Message::Pong(_)) | None => {}
                }
            }
            start = 0;
            let left = deadline.saturating_duration_since(Instant::now());
            end = match timeout(left, self.tls.read(&mut buf)).await {
                None => {
                    return Err(Refusal::new(
                        CleanPathFailure::Http(408),
                        408,
                        "no RDCleanPath request in time",
                    ))
                }
                Some(Ok(0)) | Some(Err(_)) => return Err(bad("client left before its request".into())),
                Some(Ok(n)) => n,
            };
        }
    }

    async fn establish(&mut self, pdu: &[u8]) -> Result<Established, Refusal> {
        let (req, info) = rdp::parse_cleanpath_request(pdu).map_err(|e| {
            Refusal::new(
                CleanPathFailure::Http(400),
                400,
                format!("bad RDCleanPath request: {e}"),
            )
        })?;
        let policy = &self.state.policy;
        let denied = |status: u16, why: &str| Refusal::new(CleanPathFailure::Http(status), status, why);
        // A signed-in browser's one-time ticket, or a token; either names the target it is for.
        let ticket = req
            .proxy_auth
            .starts_with(TICKET_PREFIX)
            .then(|| self.shared.web.tickets.redeem(&req.proxy_auth));
        let intended = match &ticket {
            Some(Some((_, target))) => Some(target.clone()),
            Some(None) => return Err(denied(401, "invalid or used ticket")),
            None => policy.verifier.verify(&req.proxy_auth, unix_now()).ok().map(|c| c.tgt),
        };
        // The destination names a configured target, or is the configured address of the target
        // the credential is for (several targets may share an address). Never anything else.
        let name = match &intended {
            _ if policy.config.targets.contains_key(&req.destination) => req.destination.clone(),
            Some(t)
                if policy
                    .config
                    .targets
                    .get(t)
                    .is_some_and(|t| t.address == req.destination) =>
            {
                t.clone()
            }
            _ => req.destination.clone(),
        };
        let (claims, target) = match ticket {
            Some(Some((user, ticket_target))) => {
                // The policy may have changed (SIGHUP) since the ticket was issued.
                let still_allowed = policy.config.users.get(&user).is_some_and(|t| t.contains(&name));
                if ticket_target != name || !still_allowed {
                    return Err(denied(403, "ticket is for another target"));
                }
                let target = policy
                    .config
                    .targets
                    .get(&name)
                    .ok_or_else(|| denied(404, "unknown target"))?;
                let claims = Claims {
                    sub: user,
                    tgt: name.clone(),
                    exp: 0,
                    nbf: 0,
                    iat: None,
                    jti: "web-ticket".into(),
                };
                (claims, target)
            }
            _ => policy
                .authorize(Some(&req.proxy_auth), &name, unix_now())
                .map_err(|d: Denial| Refusal::new(CleanPathFailure::Http(d.status()), d.status(), d.reason()))?,
        };
        let target = target.clone();
        let with_user = |mut r: Refusal| {
            r.user = Some(claims.sub.clone());
            r
        };
        if target.protocol != Protocol::Rdp {
            return Err(with_user(Refusal::new(
                CleanPathFailure::Http(403),
                403,
                "not an RDP target",
            )));
        }
        let settings = &policy.config.session;
        let mut tcp = connect(&target, settings.connect_timeout).await.map_err(|e| {
            with_user(Refusal::new(
                CleanPathFailure::Http(502),
                502,
                format!("target unreachable: {e}"),
            ))
        })?;
        let server_addr = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| target.address.clone());

        // Preconnection blob (if any), then the client's Connection Request; read the Confirm.
        let general = |reason: String| with_user(Refusal::new(CleanPathFailure::General, 502, reason));
        let mut first = Vec::new();
        if let Some(pcb) = &req.preconnection_blob {
            first.extend_from_slice(pcb.as_bytes());
        }
        first.extend_from_slice(&req.x224_request);
        let confirm = timeout(settings.connect_timeout, async {
            tcp.write_all(&first).await?;
            let mut cc = vec![0u8; MAX_X224_LEN];
            let mut n = 0;
            loop {
                match rdp::tpkt_len(&cc[..n], MAX_X224_LEN) {
                    Ok(Some(len)) if n >= len => {
                        cc.truncate(len);
                        return Ok(cc);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
                // Read no further than the Confirm: what follows belongs to the TLS handshake.
                let want = rdp::tpkt_len(&cc[..n], MAX_X224_LEN).ok().flatten().unwrap_or(4);
                let got = tcp.read(&mut cc[n..want.max(n + 1).min(MAX_X224_LEN)]).await?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                n += got;
            }
        })
        .await
        .ok_or_else(|| general("no X.224 Connection Confirm in time".into()))?
        .map_err(|e| general(format!("X.224 negotiation failed: {e}")))?;
        match rdp::parse_connection_confirm(&confirm) {
            Ok(Negotiated::Protocol(_)) => {}
            Ok(Negotiated::Failure(code)) => {
                let mut r = Refusal::new(
                    CleanPathFailure::Negotiation(confirm.clone()),
                    502,
                    format!("server refused negotiation: {code}"),
                );
                r.user = Some(claims.sub.clone());
                return Err(r);
            }
            Err(e) => return Err(general(format!("bad X.224 Connection Confirm: {e}"))),
        }

        let host = target
            .address
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&target.address);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|_| general(format!("bad server name {host}")))?;
        let connector = futures_rustls::TlsConnector::from(crate::tls::rdp_client_config());
        let server = match timeout(settings.handshake_timeout, connector.connect(name, Socket::new(tcp))).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let alert = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .and_then(|te| match te {
                        rustls::Error::AlertReceived(a) => Some(u8::from(*a)),
                        _ => None,
                    })
                    .unwrap_or(40);
                return Err(with_user(Refusal::new(
                    CleanPathFailure::TlsAlert(alert),
                    502,
                    format!("TLS with the server failed: {e}"),
                )));
            }
            None => return Err(general("TLS handshake with the server timed out".into())),
        };
        let chain: Vec<Vec<u8>> = server
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        if let Some(pin) = target.cert_sha256 {
            let leaf = chain.first().map(Sha256::digest);
            if leaf.as_deref() != Some(&pin[..]) {
                return Err(with_user(Refusal::new(
                    CleanPathFailure::TlsAlert(42),
                    502,
                    "server certificate does not match the pinned fingerprint",
                )));
            }
        }
        let response = rdp::cleanpath_response(&server_addr, &confirm, &chain)
            .map_err(|e| general(format!("cannot encode the RDCleanPath response: {e}")))?;
        Ok(Established {
            target,
            user: claims.sub,
            token_id: claims.jti,
            cookie: info.cookie,
            server,
            response,
        })
    }

    async fn refuse_rdp(&mut self, refusal: Refusal) {
        self.deny("/v1/rdp", refusal.status, refusal.reason, refusal.user);
        let _ = self
            .send_frame(OpCode::Binary, &rdp::cleanpath_error(&refusal.failure))
            .await;
        self.close_ws(CloseCode::POLICY, "rdcleanpath_error").await;
    }
}
