//! Where sessions go: the parsed URL, the resolved address, TLS, the request head (path template,
//! token, extra headers) and the source addresses to spread connections over.
//!
//! A `tcp://HOST:PORT` URL is the direct path: raw TCP straight to the target, without TLS,
//! WebSocket framing or token, as the reference the gateway and the bridges are compared with.

use crate::cli::ConnArgs;
use crate::peers::{self, Peer, SessionRequest};
use crate::rdgateway;
use anyhow::{anyhow, bail, Context};
use futures_rustls::TlsConnector;
use portcullis::tls::{client_config, ServerTrust};
use portcullis_protocols::http;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// `ws://`, `wss://` or `tcp://` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// `tcp://`: raw bytes straight to the target (no TLS, no WebSocket, no token).
    pub raw: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl Url {
    pub fn parse(url: &str) -> anyhow::Result<Url> {
        let (tls, raw, rest) = if let Some(r) = url.strip_prefix("wss://") {
            (true, false, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (false, false, r)
        } else if let Some(r) = url.strip_prefix("tcp://") {
            (false, true, r)
        } else {
            bail!("URL must start with wss://, ws:// or tcp:// (got {url:?})");
        };
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        if authority.contains(['?', '#', '@']) || prefix.contains(['?', '#']) {
            bail!("URL must be SCHEME://HOST[:PORT][/PREFIX] without query, fragment or user (got {url:?})");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("bad IPv6 address in {url:?}"))?;
            match after {
                "" => (h.to_owned(), None),
                a => (
                    h.to_owned(),
                    Some(a.strip_prefix(':').ok_or_else(|| anyhow!("bad port in {url:?}"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            bail!("no host in {url:?}");
        }
        if raw && (port.is_none() || !prefix.trim_matches('/').is_empty()) {
            bail!("a direct-path URL is tcp://HOST:PORT, with a port and without a path (got {url:?})");
        }
        let port = match port {
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| anyhow!("bad port in {url:?}"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Url {
            tls,
            raw,
            host,
            port,
            prefix: if prefix == "/" { String::new() } else { prefix },
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Expands `{target}` and `{token}` in the path template. Returns the path and whether the token
/// went into it (then no `Authorization` header is sent).
pub fn render_path(
    prefix: &str,
    template: &str,
    target: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(String, bool)> {
    if !template.starts_with('/') {
        bail!("--path must start with '/' (got {template:?})");
    }
    let mut path = format!("{prefix}{template}");
    if path.contains("{target}") {
        let t = target.ok_or_else(|| anyhow!("--path {template:?} uses {{target}}: give --target NAME"))?;
        path = path.replace("{target}", t);
    }
    let mut token_in_path = false;
    if path.contains("{token}") {
        let t = token.ok_or_else(|| anyhow!("--path {template:?} uses {{token}}, but --no-auth sends no token"))?;
        path = path.replace("{token}", t);
        token_in_path = true;
    }
    if let Some(bad) = path.chars().find(|c| c.is_whitespace() || c.is_control()) {
        bail!("--path contains a character that cannot go into a request line: {bad:?}");
    }
    Ok((path, token_in_path))
}

/// The parts of an upgrade request that are the same for every session of a run.
struct RequestParts {
    path: String,
    host: String,
    bearer: Option<String>,
    headers: Vec<(String, String)>,
    /// `RDG_OUT_DATA` instead of `GET` (the RD Gateway's WebSocket transport).
    rd_gateway: bool,
}

impl RequestParts {
    /// The request with this key; a peer's `session` replaces the path and adds its headers.
    fn encode(&self, key: &str, session: Option<&SessionRequest>) -> Result<Vec<u8>, http::HttpError> {
        let mut headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Some(s) = session {
            headers.extend(s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let head = http::UpgradeRequest {
            path: session.map_or(&self.path, |s| &s.path),
            host: &self.host,
            key,
            bearer: self.bearer.as_deref(),
            user_agent: concat!("portcullis-loadgen/", env!("CARGO_PKG_VERSION")),
            headers: &headers,
        }
        .encode()?;
        Ok(match self.rd_gateway {
            // The same upgrade request with the RD Gateway's method, as FreeRDP sends it.
            true => [b"RDG_OUT_DATA".as_slice(), head.strip_prefix(b"GET").unwrap_or(&head)].concat(),
            false => head,
        })
    }
}

/// Everything needed to open a session, shared by all sessions of a run.
pub struct Endpoint {
    pub url: Url,
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// What every session's upgrade request carries (its key differs).
    head: RequestParts,
    /// The path with any token replaced by `…`, for reports.
    pub display_path: String,
    /// Source addresses to bind to, round robin; empty: let the kernel choose.
    pub sources: Vec<IpAddr>,
    pub open_timeout: Duration,
    /// `--rd-gateway`: the channel every session opens after the upgrade.
    pub rd_gateway: Option<rdgateway::Channel>,
    /// A peer whose request changes with every session (`--devolutions-key`, `--wstunnel-dst`).
    pub peer: Option<Peer>,
}

impl Endpoint {
    /// Validates the connection arguments, mints a token if asked, resolves the host once.
    /// `default_sources` is used when --source-addrs is absent (loopback URLs only).
    pub async fn from_args(args: &ConnArgs, default_sources: u32) -> anyhow::Result<Endpoint> {
        let url = Url::parse(&args.url)?;
        check_conn_args(args, &url)?;
        let peer = match (&args.devolutions_key, &args.devolutions_dst, &args.wstunnel_dst) {
            _ if url.raw => None,
            (Some(key), Some(dst), _) => {
                let pem =
                    std::fs::read(key).with_context(|| format!("cannot read --devolutions-key {}", key.display()))?;
                let minter = peers::Devolutions::new(&pem, dst, args.token_ttl.into())
                    .with_context(|| format!("--devolutions-key {}", key.display()))?;
                Some(Peer::Devolutions(minter))
            }
            (Some(_), None, _) => bail!("--devolutions-key needs --devolutions-dst"),
            (None, _, Some(dst)) => Some(Peer::Wstunnel(peers::Wstunnel::new(dst)?)),
            (None, _, None) => None,
        };
        let token = match (&args.token, &args.token_key, args.no_auth) {
            _ if url.raw || peer.is_some() => None,
            (Some(t), _, _) => {
                if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control()) {
                    bail!("--token is empty or contains whitespace");
                }
                Some(t.clone())
            }
            (None, Some(key), _) => {
                let pem = std::fs::read(key).with_context(|| format!("cannot read --token-key {}", key.display()))?;
                let user = args
                    .user
                    .as_deref()
                    .ok_or_else(|| anyhow!("--token-key needs --user"))?;
                let target = args
                    .target
                    .as_deref()
                    .ok_or_else(|| anyhow!("--token-key needs --target"))?;
                let ttl: Duration = args.token_ttl.into();
                let token = portcullis_core::keys::issue(&pem, user, target, ttl)
                    .with_context(|| format!("cannot mint a token with {}", key.display()))?;
                Some(token)
            }
            (None, None, true) => None,
            (None, None, false) => bail!("give --token, --token-key with --user, or --no-auth"),
        };
        let (path, token_in_path) = if url.raw {
            (String::new(), false)
        } else if let Some(peer) = &peer {
            (peer.display_path(&url.prefix), false)
        } else if args.rd_gateway {
            // The token goes in the PAA cookie, never in the path or a header.
            (format!("{}{}", url.prefix, rdgateway::PATH), false)
        } else {
            render_path(&url.prefix, &args.path, args.target.as_deref(), token.as_deref())?
        };
        let display_path = match &token {
            Some(t) if token_in_path => path.replace(t.as_str(), "…"),
            _ => path.clone(),
        };

        let rd_gateway = match (&token, &args.target) {
            (Some(token), Some(target)) if args.rd_gateway => Some(rdgateway::Channel::new(token, target)),
            _ if args.rd_gateway => bail!("--rd-gateway needs a token and --target"),
            _ => None,
        };
        let bearer = token.filter(|_| !token_in_path && !args.rd_gateway);
        let mut headers = Vec::new();
        if args.rd_gateway {
            headers.push(("RDG-Auth-Scheme".to_owned(), "PAA".to_owned()));
        }
        for h in &args.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("--header {h:?} must look like `Name: value`"))?;
            let name = name.trim();
            if !http::is_token(name) || value.contains(['\r', '\n']) {
                bail!("--header {h:?} is not a valid HTTP header");
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let head = RequestParts {
            path,
            host: url.authority(),
            bearer,
            headers,
            rd_gateway: args.rd_gateway,
        };
        // Checked once here, so that every session's request encodes (tcp:// sends none); a peer's
        // with one session's request made now (its key signs, its fields encode).
        if !url.raw {
            let sample = match &peer {
                Some(p) => Some(p.session_request(&url.prefix)?),
                None => None,
            };
            head.encode("dGhlIHNhbXBsZSBub25jZQ==", sample.as_ref())
                .map_err(|e| anyhow!("cannot build the upgrade request: {e}"))?;
        }

        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .with_context(|| format!("cannot resolve {}", url.host))?
            .next()
            .ok_or_else(|| anyhow!("{} has no address", url.host))?;

        let tls = if url.tls {
            let trust = match (&args.ca, args.insecure) {
                (Some(ca), _) => ServerTrust::CaFile(ca),
                (None, true) => ServerTrust::Insecure,
                (None, false) => ServerTrust::WebPki,
            };
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| anyhow!("{:?} is not a valid server name", url.host))?;
            let mut config = client_config(trust)?;
            if args.no_tls_resume {
                let mut c = (*config).clone();
                c.resumption = rustls::client::Resumption::disabled();
                config = std::sync::Arc::new(c);
            }
            Some((TlsConnector::from(config), name))
        } else {
            None
        };

        let sources = match args.source_addrs {
            Some(n) => {
                if !addr.ip().is_loopback() || !addr.is_ipv4() {
                    bail!(
                        "--source-addrs needs an IPv4 loopback URL (127.x.y.z), not {}",
                        addr.ip()
                    );
                }
                loopback_sources(n)
            }
            None if addr.ip().is_loopback() && addr.is_ipv4() && default_sources > 1 => {
                loopback_sources(default_sources)
            }
            None => Vec::new(),
        };

        Ok(Endpoint {
            url,
            addr,
            tls,
            head,
            display_path,
            sources,
            open_timeout: args.open_timeout.into(),
            rd_gateway,
            peer,
        })
    }

    /// What a peer's session sends that differs per session (its token, ids), made before the
    /// session connects; None without a peer.
    pub fn session_request(&self) -> anyhow::Result<Option<SessionRequest>> {
        match &self.peer {
            Some(p) if !self.url.raw => p.session_request(&self.url.prefix).map(Some),
            _ => Ok(None),
        }
    }

    /// The whole upgrade request with this Sec-WebSocket-Key (and a peer's per-session part).
    pub fn request_head(&self, key: &str, session: Option<&SessionRequest>) -> Vec<u8> {
        // `from_args` encoded it once with a placeholder key (and a sample of the peer's part);
        // keys are base64 and the peer's parts are made alike, so this encodes too.
        self.head
            .encode(key, session)
            .expect("the upgrade request was checked at start")
    }

    /// Source address for session number `i`.
    pub fn source(&self, i: u64) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[(i % self.sources.len() as u64) as usize])
        }
    }

    /// For reports: `wss://host:port/path` (token hidden), or `tcp://host:port`.
    pub fn describe(&self) -> String {
        format!(
            "{}://{}{}",
            match (self.url.raw, self.url.tls) {
                (true, _) => "tcp",
                (false, true) => "wss",
                (false, false) => "ws",
            },
            self.url.authority(),
            self.display_path
        )
    }
}

/// Cross-argument checks clap cannot express. The binary reports these as usage errors (exit
/// status 2) before the run; `Endpoint::from_args` repeats them for library callers.
pub fn check_conn_args(args: &ConnArgs, url: &Url) -> anyhow::Result<()> {
    if url.raw {
        let mut bad = Vec::new();
        if args.token.is_some() {
            bad.push("--token");
        }
        if args.token_key.is_some() {
            bad.push("--token-key");
        }
        if args.insecure {
            bad.push("--insecure");
        }
        if args.ca.is_some() {
            bad.push("--ca");
        }
        if !args.headers.is_empty() {
            bad.push("--header");
        }
        if args.no_tls_resume {
            bad.push("--no-tls-resume");
        }
        if args.rd_gateway {
            bad.push("--rd-gateway");
        }
        if args.devolutions_key.is_some() {
            bad.push("--devolutions-key");
        }
        if args.wstunnel_dst.is_some() {
            bad.push("--wstunnel-dst");
        }
        if !bad.is_empty() {
            bail!(
                "tcp:// is the direct path (raw TCP to the target: no TLS, WebSocket or token), so {} cannot apply",
                bad.join(", ")
            );
        }
        return Ok(());
    }
    if !url.tls && (args.insecure || args.ca.is_some() || args.no_tls_resume) {
        bail!("--insecure, --ca and --no-tls-resume apply to wss:// URLs only");
    }
    if args.token.is_none()
        && args.token_key.is_none()
        && !args.no_auth
        && args.devolutions_key.is_none()
        && args.wstunnel_dst.is_none()
    {
        bail!("give --token, --token-key with --user, or --no-auth (ws:// and wss:// URLs need one of them; or a peer's --devolutions-key or --wstunnel-dst)");
    }
    if args.rd_gateway && (args.no_auth || args.target.is_none()) {
        bail!("--rd-gateway needs a token (--token, or --token-key with --user: it is the PAA cookie) and --target (the resource the channel names)");
    }
    Ok(())
}

/// 127.0.0.1, 127.0.0.2, ... (n addresses, all on the loopback network 127/8).
pub fn loopback_sources(n: u32) -> Vec<IpAddr> {
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    (0..n.min(0x00ff_fffe))
        .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("wss://127.0.0.1:8443").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.prefix.as_str()),
            (true, "127.0.0.1", 8443, "")
        );
        assert!(!u.raw);
        let u = Url::parse("tcp://127.0.0.1:9000").unwrap();
        assert_eq!((u.tls, u.raw, u.port, u.prefix.as_str()), (false, true, 9000, ""));
        assert!(Url::parse("tcp://127.0.0.1:9000/").unwrap().raw);
        let u = Url::parse("ws://localhost/gw/").unwrap();
        assert_eq!((u.tls, u.port, u.prefix.as_str()), (false, 80, "/gw"));
        let u = Url::parse("wss://[::1]:9000/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("::1", 9000, ""));
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(Url::parse("wss://[::1]").unwrap().port, 443);
        for bad in [
            "http://x",
            "x:80",
            "ws://",
            "ws://:80",
            "ws://x:0",
            "ws://x:port",
            "ws://x/?a=b",
            "ws://u@x",
            "ws://[::1",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:9000/path",
            "udp://127.0.0.1:9000",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            render_path("", "/v1/tunnel/{target}", Some("echo"), Some("t")).unwrap(),
            ("/v1/tunnel/echo".to_string(), false)
        );
        assert_eq!(
            render_path("/gw", "/x?token={token}", None, Some("abc")).unwrap(),
            ("/gw/x?token=abc".to_string(), true)
        );
        assert_eq!(render_path("", "/", None, None).unwrap(), ("/".to_string(), false));
        let e = render_path("", "/v1/tunnel/{target}", None, None).unwrap_err();
        assert!(e.to_string().contains("--target"), "{e}");
        assert!(render_path("", "/?t={token}", None, None).is_err());
        assert!(render_path("", "relative", None, None).is_err());
        assert!(render_path("", "/a b", None, None).is_err());
    }

    #[test]
    fn sources() {
        let s = loopback_sources(300);
        assert_eq!(s[0].to_string(), "127.0.0.1");
        assert_eq!(s[1].to_string(), "127.0.0.2");
        assert_eq!(s[299].to_string(), "127.0.1.44");
    }
}
