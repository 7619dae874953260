//! Configuration: the TOML file administrators write, validated into typed settings.
//!
//! Every error names the key and the line, so `portcullis config check` is useful in CI of the
//! people who deploy us. Unknown keys are errors: a typo must not silently weaken policy.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The demo configuration `portcullis serve` runs without `--config`. Its token key and the
/// `echo` target's port are filled in at start (see `demo.rs`).
pub const DEMO: &str = include_str!("demo.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<String>,
    workers: Option<usize>,
    #[serde(default)]
    tls: RawTls,
    auth: RawAuth,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    recording: RawRecording,
    #[serde(default, rename = "target")]
    targets: Vec<RawTarget>,
    #[serde(default, rename = "user")]
    users: Vec<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    session_ttl: Option<Spanned<String>>,
    #[serde(default)]
    origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    dir: Option<PathBuf>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    token_public_key: Spanned<PathBuf>,
    leeway: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    idle_timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
    ping_interval: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    close_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    buffer_size: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_frame_size: Option<u64>,
    max_message_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Spanned<String>,
    address: Spanned<String>,
    protocol: Spanned<String>,
    cert_sha256: Option<Spanned<String>>,
    ssh_user: Option<String>,
    ssh_key: Option<Spanned<PathBuf>>,
    ssh_agent: Option<Spanned<PathBuf>>,
    host_key: Option<Spanned<OneOrMany>>,
    #[serde(default = "yes")]
    clipboard: bool,
    #[serde(default)]
    record_input: bool,
    idle_timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    password_hash: Option<Spanned<String>>,
    #[serde(default)]
    replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    Rdp,
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Ssh => "ssh",
            Protocol::Rdp => "rdp",
            Protocol::Tcp => "tcp",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    /// `host:port` as written; resolved at connect time so DNS changes are followed.
    pub address: String,
    pub protocol: Protocol,
    /// RDP only: the SHA-256 of the server's TLS certificate; a mismatch is refused.
    pub cert_sha256: Option<[u8; 32]>,
    /// SSH only: how the browser terminal reaches this target.
    pub ssh: SshSettings,
}

/// Browser-terminal settings of an SSH target.
#[derive(Clone, Debug, Default)]
pub struct SshSettings {
    /// Login name the gateway uses; with `key`, users never see credentials.
    pub user: Option<String>,
    /// Private key file (OpenSSH format) the gateway logs in with.
    pub key: Option<PathBuf>,
    /// Or an SSH agent socket holding the keys the gateway logs in with.
    pub agent: Option<PathBuf>,
    /// Pinned host keys, `ssh-ed25519 AAAA…` (known_hosts format, host field optional).
    pub host_keys: Vec<String>,
    pub clipboard: bool,
    pub record_input: bool,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
}

/// A user's sign-in settings for the web app.
#[derive(Clone, Debug, Default)]
pub struct Account {
    /// Argon2id PHC string; without it the user can only sign in with a token.
    pub password_hash: Option<String>,
    /// May list and replay session recordings.
    pub replay: bool,
}

#[derive(Clone, Debug)]
pub struct WebSettings {
    pub session_ttl: Duration,
    /// Origins allowed besides the gateway's own (`https://<Host>`).
    pub origins: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RecordingSettings {
    pub dir: Option<PathBuf>,
    /// Refuse browser SSH sessions whose recording cannot be written.
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub close_timeout: Duration,
    pub drain_timeout: Duration,
    pub buffer_size: usize,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_frame_size: u64,
    pub max_message_size: u64,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_public_key: PathBuf,
    pub token_leeway: Duration,
    pub audit_path: Option<PathBuf>,
    pub session: SessionSettings,
    pub limits: Limits,
    pub targets: HashMap<String, Target>,
    /// User name → names of the targets that user may reach.
    pub users: HashMap<String, HashSet<String>>,
    pub accounts: HashMap<String, Account>,
    pub web: WebSettings,
    pub recording: RecordingSettings,
}

/// A configuration error with the line it is on (1-based), when known.
#[derive(Debug)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

struct Ctx<'a> {
    src: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        let line = span.map(|s| self.src[..s.start.min(self.src.len())].matches('\n').count() + 1);
        Err(ConfigError {
            line,
            key: key.to_owned(),
            message: message.into(),
        })
    }

    fn duration(&self, v: &Option<Spanned<String>>, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => self.err(Some(s.span()), key, "must be greater than zero"),
                Err(e) => self.err(
                    Some(s.span()),
                    key,
                    format!("not a duration ({e}); write e.g. \"30s\", \"20m\""),
                ),
            },
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }
}

impl Config {
    /// Parses and validates `src`. Relative paths are taken from `base` (the config's directory).
    pub fn parse(src: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let line = e
                .span()
                .map(|s| src[..s.start.min(src.len())].matches('\n').count() + 1);
            ConfigError {
                line,
                key: "config".into(),
                message: e.message().trim().to_owned(),
            }
        })?;
        let cx = Ctx { src, base };

        let listen = match raw.listen.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                return cx.err(
                    Some(raw.listen.span()),
                    "listen",
                    "expected ip:port, e.g. \"0.0.0.0:443\"",
                )
            }
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = raw.workers.unwrap_or(cores);
        if workers == 0 || workers > 1024 {
            return cx.err(None, "workers", "must be between 1 and 1024");
        }
        let (tls_cert, tls_key) = match (&raw.tls.cert, &raw.tls.key) {
            (Some(c), Some(k)) => (Some(cx.path(c.get_ref())), Some(cx.path(k.get_ref()))),
            (None, None) => (None, None),
            (Some(c), None) => return cx.err(Some(c.span()), "tls.key", "tls.cert is set, so tls.key is required"),
            (None, Some(k)) => return cx.err(Some(k.span()), "tls.cert", "tls.key is set, so tls.cert is required"),
        };
        let s = &raw.session;
        let buffer_size = match &s.buffer_size {
            // Four TLS records per read: the records of one frame leave in one `sendmsg`.
            None => 64 * 1024,
            Some(b) if (1024..=1 << 20).contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                return cx.err(
                    Some(b.span()),
                    "session.buffer_size",
                    "must be between 1024 and 1048576",
                )
            }
        };
        let session = SessionSettings {
            idle_timeout: cx.duration(&s.idle_timeout, "session.idle_timeout", Duration::from_secs(20 * 60))?,
            max_lifetime: match &s.max_lifetime {
                None => None,
                some => Some(cx.duration(some, "session.max_lifetime", Duration::ZERO)?),
            },
            ping_interval: cx.duration(&s.ping_interval, "session.ping_interval", Duration::from_secs(30))?,
            connect_timeout: cx.duration(&s.connect_timeout, "session.connect_timeout", Duration::from_secs(5))?,
            handshake_timeout: cx.duration(
                &s.handshake_timeout,
                "session.handshake_timeout",
                Duration::from_secs(10),
            )?,
            request_timeout: cx.duration(&s.request_timeout, "session.request_timeout", Duration::from_secs(10))?,
            close_timeout: cx.duration(&s.close_timeout, "session.close_timeout", Duration::from_secs(5))?,
            drain_timeout: cx.duration(&s.drain_timeout, "session.drain_timeout", Duration::from_secs(30))?,
            buffer_size,
        };
        let l = &raw.limits;
        let limits = Limits {
            max_header_bytes: l.max_header_bytes.unwrap_or(8 * 1024).clamp(512, 64 * 1024),
            max_headers: l.max_headers.unwrap_or(32).clamp(8, 128),
            max_frame_size: l.max_frame_size.unwrap_or(1 << 20).clamp(125, 64 << 20),
            max_message_size: l.max_message_size.unwrap_or(16 << 20).clamp(125, 1 << 30),
        };

        let mut targets = HashMap::new();
        for t in &raw.targets {
            let name = t.name.get_ref();
            if !valid_name(name) {
                return cx.err(
                    Some(t.name.span()),
                    "target.name",
                    "use letters, digits, '-', '_' and '.' (1-64 chars)",
                );
            }
            let protocol = match t.protocol.get_ref().as_str() {
                "ssh" => Protocol::Ssh,
                "rdp" => Protocol::Rdp,
                "tcp" => Protocol::Tcp,
                other => {
                    return cx.err(
                        Some(t.protocol.span()),
                        "target.protocol",
                        format!("\"{other}\" is not one of ssh, rdp, tcp"),
                    )
                }
            };
            if !valid_address(t.address.get_ref()) {
                return cx.err(
                    Some(t.address.span()),
                    "target.address",
                    "expected host:port, e.g. \"10.0.0.4:22\"",
                );
            }
            let cert_sha256 = match &t.cert_sha256 {
                None => None,
                Some(fp) if protocol != Protocol::Rdp => {
                    return cx.err(Some(fp.span()), "target.cert_sha256", "only for rdp targets")
                }
                Some(fp) => match parse_fingerprint(fp.get_ref()) {
                    Some(f) => Some(f),
                    None => {
                        return cx.err(
                            Some(fp.span()),
                            "target.cert_sha256",
                            "expected 32 hex bytes, e.g. \"AB:CD:…\"",
                        )
                    }
                },
            };
            if protocol != Protocol::Ssh && (t.ssh_user.is_some() || t.ssh_key.is_some() || t.host_key.is_some()) {
                return cx.err(
                    Some(t.name.span()),
                    "target.ssh_user",
                    "ssh_user, ssh_key and host_key are for ssh targets",
                );
            }
            let host_keys = match t.host_key.as_ref().map(|h| h.get_ref()) {
                None => Vec::new(),
                Some(OneOrMany::One(k)) => vec![k.clone()],
                Some(OneOrMany::Many(ks)) => ks.clone(),
            };
            if let Some(h) = &t.host_key {
                if let Some(bad) = host_keys.iter().find(|k| crate::web::ssh::parse_host_key(k).is_none()) {
                    return cx.err(
                        Some(h.span()),
                        "target.host_key",
                        format!("not an SSH public key: {bad:?}"),
                    );
                }
            }
            if let (Some(k), None) = (t.ssh_key.as_ref().or(t.ssh_agent.as_ref()), &t.ssh_user) {
                return cx.err(Some(k.span()), "target.ssh_user", "ssh_key and ssh_agent need ssh_user");
            }
            if let (Some(_), Some(a)) = (&t.ssh_key, &t.ssh_agent) {
                return cx.err(
                    Some(a.span()),
                    "target.ssh_agent",
                    "give ssh_key or ssh_agent, not both",
                );
            }
            let ssh = SshSettings {
                user: t.ssh_user.clone(),
                key: t.ssh_key.as_ref().map(|k| cx.path(k.get_ref())),
                agent: t.ssh_agent.as_ref().map(|a| cx.path(a.get_ref())),
                host_keys,
                clipboard: t.clipboard,
                record_input: t.record_input,
                idle_timeout: match &t.idle_timeout {
                    None => None,
                    some => Some(cx.duration(some, "target.idle_timeout", Duration::ZERO)?),
                },
                max_lifetime: match &t.max_lifetime {
                    None => None,
                    some => Some(cx.duration(some, "target.max_lifetime", Duration::ZERO)?),
                },
            };
            let target = Target {
                name: name.clone(),
                address: t.address.get_ref().clone(),
                protocol,
                cert_sha256,
                ssh,
            };
            if targets.insert(name.clone(), target).is_some() {
                return cx.err(
                    Some(t.name.span()),
                    "target.name",
                    format!("duplicate target \"{name}\""),
                );
            }
        }
        let mut users = HashMap::new();
        let mut accounts = HashMap::new();
        for u in &raw.users {
            let name = u.name.get_ref();
            if !valid_name(name) {
                return cx.err(
                    Some(u.name.span()),
                    "user.name",
                    "use letters, digits, '-', '_' and '.' (1-64 chars)",
                );
            }
            let mut allowed = HashSet::new();
            for t in &u.targets {
                if !targets.contains_key(t.get_ref()) {
                    return cx.err(
                        Some(t.span()),
                        "user.targets",
                        format!("unknown target \"{}\"", t.get_ref()),
                    );
                }
                allowed.insert(t.get_ref().clone());
            }
            if let Some(h) = &u.password_hash {
                if argon2::PasswordHash::new(h.get_ref())
                    .map(|p| p.algorithm.as_str() != "argon2id")
                    .unwrap_or(true)
                {
                    return cx.err(
                        Some(h.span()),
                        "user.password_hash",
                        "expected an Argon2id hash from `portcullis passwd`",
                    );
                }
            }
            accounts.insert(
                name.clone(),
                Account {
                    password_hash: u.password_hash.as_ref().map(|h| h.get_ref().clone()),
                    replay: u.replay,
                },
            );
            if users.insert(name.clone(), allowed).is_some() {
                return cx.err(Some(u.name.span()), "user.name", format!("duplicate user \"{name}\""));
            }
        }

        Ok(Config {
            listen,
            workers,
            tls_cert,
            tls_key,
            token_public_key: cx.path(raw.auth.token_public_key.get_ref()),
            token_leeway: match &raw.auth.leeway {
                None => Duration::from_secs(60),
                Some(l) => match humantime::parse_duration(l.get_ref()) {
                    Ok(d) if d <= Duration::from_secs(600) => d,
                    _ => return cx.err(Some(l.span()), "auth.leeway", "expected a duration up to 10m"),
                },
            },
            audit_path: raw.audit.path.as_deref().map(|p| cx.path(p)),
            session,
            limits,
            targets,
            users,
            accounts,
            web: WebSettings {
                session_ttl: cx.duration(&raw.web.session_ttl, "web.session_ttl", Duration::from_secs(3600))?,
                origins: raw
                    .web
                    .origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
            },
            recording: RecordingSettings {
                dir: raw.recording.dir.as_deref().map(|d| cx.path(d)),
                required: raw.recording.required,
            },
        })
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let src = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&src, base).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// `AB:CD:…` or plain hex, 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn valid_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8443"
workers = 2
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
token_public_key = "token.pub"
[audit]
path = "/var/log/portcullis/audit.jsonl"
[session]
idle_timeout = "5m"
max_lifetime = "8h"
[[target]]
name = "vm1"
address = "10.0.0.4:22"
protocol = "ssh"
[[user]]
name = "alice"
targets = ["vm1"]
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(GOOD, Path::new("/etc/portcullis")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/etc/portcullis/cert.pem")));
        assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.session.max_lifetime, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(c.targets["vm1"].protocol, Protocol::Ssh);
        assert!(c.users["alice"].contains("vm1"));
    }

    #[test]
    fn the_demo_config_parses() {
        Config::parse(DEMO, Path::new(".")).unwrap();
    }

    fn error_of(src: &str) -> String {
        Config::parse(src, Path::new(".")).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = error_of(&GOOD.replace("targets = [\"vm1\"]", "targets = [\"vm2\"]"));
        assert_eq!(e, "line 20: user.targets: unknown target \"vm2\"");
        let e = error_of(&GOOD.replace("protocol = \"ssh\"", "protocol = \"telnet\""));
        assert!(e.starts_with("line 17: target.protocol:"), "{e}");
        let e = error_of(&GOOD.replace("idle_timeout = \"5m\"", "idle_timeout = \"soon\""));
        assert!(e.starts_with("line 12: session.idle_timeout:"), "{e}");
        let e = error_of(&GOOD.replace("workers = 2", "workers = 2\nwrokers = 3"));
        assert!(e.contains("line 4") && e.contains("wrokers"), "{e}");
        let e = error_of(&GOOD.replace("10.0.0.4:22", "10.0.0.4"));
        assert!(e.starts_with("line 16: target.address"), "{e}");
        let e = error_of(&GOOD.replace("key = \"key.pem\"", ""));
        assert!(e.contains("tls.key"), "{e}");
        let e = error_of(&format!(
            "{GOOD}\n[[target]]\nname = \"vm1\"\naddress = \"h:1\"\nprotocol = \"tcp\"\n"
        ));
        assert!(e.contains("duplicate target"), "{e}");
    }
}
