//! Configuration: the TOML file administrators write, validated into typed settings.
//!
//! Every error names the key and the line, so `portcullis config check` is useful in the CI of the
//! people who deploy us. Unknown keys are errors and out-of-range values are refused, never
//! clamped: a typo must not silently weaken policy. Every default and range lives in
//! [`settings`], the one place the code, the README (checked by a test) and the codecs agree on.

mod raw;
pub mod settings;

use raw::{OneOrMany, RawConfig, RawTarget, RawUser};
use settings::{DurationSetting, IntSetting};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The demo configuration `portcullis serve` runs without `--config`. Its token key and the
/// built-in targets' addresses are filled in at start (see the engine's `demo` module).
pub const DEMO: &str = include_str!("demo.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Ssh,
    Rdp,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Rdp => "rdp",
            Protocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination users may be granted. Shared (`Arc`) by every session and grant of a snapshot.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    /// `host:port` as written; resolved at connect time so DNS changes are followed.
    pub address: String,
    pub protocol: Protocol,
    /// RDP only: the SHA-256 of the server's TLS certificate; a mismatch is refused.
    pub cert_sha256: Option<[u8; 32]>,
    /// RDP only: CA certificates (PEM) the server's chain must lead to, for the target's host
    /// name or IP address.
    pub cert_ca: Option<PathBuf>,
    /// Web clients offer copy and paste (terminal, web RDP).
    pub clipboard: bool,
    /// RDP only: clients may redirect local drives (advice to RD Gateway clients).
    pub drives: bool,
    /// Native clients may reach it (the tunnel and the RD Gateway); `false`: the browser only,
    /// where the gateway enforces the target's policy itself.
    pub native: bool,
    /// SSH only: files may be uploaded and downloaded in the browser terminal (SFTP).
    pub file_transfer: bool,
    /// Overrides of `[session]` for every session to this target, whatever the route.
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    /// SSH only: how the browser terminal reaches this target.
    pub ssh: SshSettings,
    /// Free-form `key = value` labels that roles select targets by (`env = "prod"`).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Target {
    pub fn idle_timeout(&self, session: &SessionSettings) -> Duration {
        self.idle_timeout.unwrap_or(session.idle_timeout)
    }

    pub fn max_lifetime(&self, session: &SessionSettings) -> Duration {
        self.max_lifetime.unwrap_or(session.max_lifetime)
    }

    /// The host part of `address` (without brackets), for TLS server names.
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.address);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Browser-terminal settings of an SSH target.
#[derive(Clone, Debug, Default)]
pub struct SshSettings {
    /// Login name the gateway uses; with `key` or `agent`, users never see credentials.
    pub user: Option<String>,
    /// Private key file (OpenSSH format) the gateway logs in with.
    pub key: Option<PathBuf>,
    /// Or an SSH agent socket holding the keys the gateway logs in with.
    pub agent: Option<PathBuf>,
    /// Pinned host keys, `ssh-ed25519 AAAA…` (known_hosts format, host field optional).
    pub host_keys: Vec<String>,
    /// Also record what the user types (passwords typed at prompts!).
    pub record_input: bool,
}

impl SshSettings {
    /// The gateway holds the credentials (users are never asked for any).
    pub fn gateway_credentials(&self) -> bool {
        self.user.is_some() && (self.key.is_some() || self.agent.is_some())
    }
}

/// A user of the policy.
#[derive(Clone, Debug, Default)]
pub struct User {
    /// Names of the targets this user may reach: listed for the user, and granted by roles.
    pub targets: HashSet<String>,
    /// Argon2id PHC string for web sign-in; without it the user can only sign in with a token.
    pub password_hash: Option<String>,
    /// May list and replay session recordings (also through a role).
    pub replay: bool,
    /// The user's roles, by name.
    pub roles: Vec<String>,
    /// Holds admin rights through a role.
    pub admin: bool,
    /// Must sign in with a second factor (for the user or through a role).
    pub require_mfa: bool,
}

impl User {
    /// What holding `role` adds: its targets (among `targets`) and its rights.
    pub fn take_role(&mut self, role: &Role, targets: &HashMap<String, Arc<Target>>) {
        self.targets
            .extend(targets.values().filter(|t| role.grants(t)).map(|t| t.name.clone()));
        self.replay |= role.replay || role.admin;
        self.admin |= role.admin;
        self.require_mfa |= role.require_mfa;
        if !self.roles.contains(&role.name) {
            self.roles.push(role.name.clone());
        }
    }
}

/// `[[role]]`: what its members may reach and do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Target name patterns (`*`, `?`).
    pub targets: Vec<String>,
    /// Targets whose labels include all of these (with `targets`: either selects).
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    pub admin: bool,
    pub replay: bool,
    pub require_mfa: bool,
    /// Single sign-on groups (`provider-id:group`) whose members hold this role.
    pub groups: Vec<String>,
}

/// `[[oidc]]`: an OpenID Connect provider (authorization code flow with PKCE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcProvider {
    /// Letters, digits and `-`: in URLs, and in user names (`id:name`) unless `namespace` is off.
    pub id: String,
    /// Shown on the sign-in page.
    pub name: String,
    /// The issuer URL (`https://`; its discovery document is `/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Where the client secret is (a file, never the config itself).
    pub client_secret_file: PathBuf,
    /// This gateway's callback as registered with the provider (`…/api/oidc/callback`).
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// The ID token claim that names the user.
    pub user_claim: String,
    /// The ID token claim listing the user's groups.
    pub groups_claim: String,
    /// User names are `id:name` (default), so two providers cannot name the same user; off, the
    /// claim is taken as a name of this policy.
    pub namespace: bool,
    /// CA certificates (PEM) the provider's TLS chain must lead to; default: the web PKI.
    pub ca: Option<PathBuf>,
}

impl Role {
    /// Whether the role grants `target`.
    pub fn grants(&self, target: &Target) -> bool {
        self.targets.iter().any(|p| glob(p, &target.name))
            || self
                .labels
                .as_ref()
                .is_some_and(|want| want.iter().all(|(k, v)| target.labels.get(k) == Some(v)))
    }
}

/// `pattern` matches all of `name`: `*` any run of characters, `?` one.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear in practice, and never
    // exponential on hostile patterns (patterns come from the config, names from the config).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Where the state gateways share lives (`[cluster] store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process: one node, nothing else to run.
    Local,
    /// Redis 7 or Valkey at this URL (`redis://` or `rediss://`, user and password in it).
    Redis(String),
}

impl fmt::Debug for StoreKind {
    /// Never prints the password a Redis URL may hold.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreKind::Local => f.write_str("Local"),
            StoreKind::Redis(url) => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
                    _ => url.clone(),
                };
                write!(f, "Redis({shown})")
            }
        }
    }
}

/// What a node does with token tunnels while the store does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreDown {
    /// Fail closed: refuse what needs the store, and report not ready (the balancer drains it).
    Deny,
    /// Keep serving token tunnels on what this node knows; report ready.
    Allow,
}

/// `[cluster]`: this node's name and the store of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    pub node: String,
    pub store: StoreKind,
    pub on_store_down: OnStoreDown,
    /// How often live sessions are refreshed in the fleet store (they expire after three).
    pub heartbeat: Duration,
}

impl ClusterSettings {
    /// How long a live session's record and place last without a refresh.
    pub fn live_ttl(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// `[admin]`: the operators' listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: no admin listener (`listen = "off"`).
    pub listen: Option<SocketAddr>,
    /// Users whose admin tokens are honoured; empty: any token with the `admin` scope.
    pub users: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct WebSettings {
    pub session_ttl: Duration,
    /// Largest file moved in the browser terminal, in bytes.
    pub max_file_size: u64,
    /// Origins allowed besides the gateway's own (`https://<Host>`).
    pub origins: Vec<String>,
    pub throttle: ThrottleSettings,
    /// WebAuthn relying party id (the gateway's domain, as users reach it): with it, users may
    /// enrol passkeys and security keys as a second factor.
    pub rp_id: Option<String>,
}

/// The brake on password guessing (`[web.throttle]`). Attempts are counted before the password
/// is checked and given back when it is right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Attempts for one user from one client address (an IPv6 client by its /64) per window.
    pub per_user_address: u32,
    /// Attempts for any user from one client address per window.
    pub per_address: u32,
    pub window: Duration,
    /// The cap of the delay added per user once attempts for them exceed `per_user_address`
    /// (they come from many addresses): it slows guessing without locking the user out.
    pub max_delay: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct RecordingSettings {
    pub dir: Option<PathBuf>,
    /// Refuse browser SSH sessions whose recording cannot be written.
    pub required: bool,
    /// Recordings older than this are deleted.
    pub retention: Option<Duration>,
    /// Free space (MiB) a recording needs on its disk to start.
    pub min_free_mb: u64,
}

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub close_timeout: Duration,
    pub drain_timeout: Duration,
    pub buffer_size: usize,
    /// Live sessions per user, over every route.
    pub max_sessions_per_user: usize,
    /// A session opened with a token ends when the token expires (`token_expired`).
    pub end_at_token_expiry: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_frame_size: u64,
    pub max_message_size: u64,
    pub connections: ConnectionLimits,
}

/// Connection limits as configured; `None`: derived from the open-files limit at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub new_connections_per_second: u32,
    pub max_unauthenticated: usize,
    pub early_drop_from: usize,
}

/// Connection limits in force, with the derived ones filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// New connections per second per client, and the burst it may spend at once.
    pub rate: f64,
    pub burst: f64,
    pub max_unauthenticated: usize,
    pub early_drop_from: usize,
}

impl ConnectionLimits {
    /// The limits for a process that may hold `capacity` connections (what its descriptors allow):
    /// all of them at most, a quarter of them per client, unless configured.
    pub fn resolve(&self, capacity: usize) -> AdmissionLimits {
        let max_connections = self.max_connections.unwrap_or(capacity).max(1);
        AdmissionLimits {
            max_connections,
            max_connections_per_client: self.max_connections_per_client.unwrap_or((max_connections / 4).max(1)),
            rate: f64::from(self.new_connections_per_second),
            burst: 2.0 * f64::from(self.new_connections_per_second),
            max_unauthenticated: self.max_unauthenticated,
            early_drop_from: self.early_drop_from,
        }
    }
}

impl Limits {
    pub fn head(&self) -> portcullis_protocols::http::HeadLimits {
        portcullis_protocols::http::HeadLimits {
            max_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
        }
    }

    pub fn websocket(&self) -> portcullis_protocols::ws::Limits {
        portcullis_protocols::ws::Limits {
            max_frame_payload: self.max_frame_size,
            max_message: self.max_message_size,
        }
    }
}

/// A public key tokens may be signed with: `token_public_key` (no `kid`) or an `[[auth.key]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey {
    /// The `kid` its tokens carry; `None` for `token_public_key`.
    pub kid: Option<String>,
    /// Ed25519 public key (PEM).
    pub public_key: PathBuf,
    /// The `iss` its tokens must carry (`[auth] issuer` unless the key says).
    pub issuer: Option<String>,
    /// An audience its tokens' `aud` must include (`[auth] audience` unless the key says).
    pub audience: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The keys that verify tokens (at least one, counting the gateway's own signing key).
    pub keys: Vec<TokenKey>,
    /// The gateway's own Ed25519 private key (PEM): with it, the gateway signs short-lived tokens
    /// for users who logged in (`portcullis login`).
    pub token_private_key: Option<PathBuf>,
    /// Lifetime of the access tokens the gateway signs.
    pub issued_token_ttl: Duration,
    /// Lifetime of a `portcullis login`.
    pub login_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Longer-lived tokens are refused.
    pub max_token_ttl: Duration,
    /// The `iss` tokens must carry, when set.
    pub issuer: Option<String>,
    /// An audience tokens' `aud` must include, when set.
    pub audience: Option<String>,
}

impl AuthSettings {
    /// What tokens signed with `key` must be beyond signature and period, for the verifier.
    pub fn expectations(&self, key: &TokenKey) -> portcullis_protocols::token::Expectations {
        portcullis_protocols::token::Expectations {
            issuer: key.issuer.clone(),
            audience: key.audience.clone(),
            max_ttl: Some(self.max_token_ttl.as_secs()),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    /// The unprivileged user the gateway becomes once its ports are bound and its files open.
    pub user: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub auth: AuthSettings,
    pub audit_path: Option<PathBuf>,
    /// Refuse new sessions while audit records cannot be written.
    pub audit_required: bool,
    /// Also send every audit record to this syslog socket (`[audit] syslog`).
    pub audit_syslog: Option<PathBuf>,
    pub session: SessionSettings,
    pub limits: Limits,
    pub targets: HashMap<String, Arc<Target>>,
    pub users: HashMap<String, User>,
    /// `[[role]]`, by name (users hold their effect already; kept for what maps groups to them).
    pub roles: HashMap<String, Role>,
    /// `[[oidc]]` providers, in the order of the file.
    pub oidc: Vec<OidcProvider>,
    pub web: WebSettings,
    pub recording: RecordingSettings,
    /// Balancers whose connections start with a PROXY protocol header (and must): their
    /// connections are accounted to the client the header names.
    pub proxy_trusted: Vec<crate::net::Cidr>,
    pub admin: AdminSettings,
    pub cluster: ClusterSettings,
    /// Where this node keeps what must outlive a restart (`[state] dir`): revocations.
    pub state_dir: Option<PathBuf>,
    /// SHA-256 (hex) of the configuration text: nodes whose values differ run different configs.
    pub source_sha256: String,
}

/// A configuration error with the line it is on (1-based), when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

/// Reading a configuration file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {error}", path.display())]
    Invalid { path: PathBuf, error: ConfigError },
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Source text and base directory of the file being parsed, for errors and relative paths.
struct Ctx<'a> {
    src: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err<T>(&self, span: Option<std::ops::Range<usize>>, key: &str, message: impl Into<String>) -> Result<T> {
        let line = span.map(|s| line_of(self.src, s.start));
        Err(ConfigError {
            line,
            key: key.to_owned(),
            message: message.into(),
        })
    }

    /// A duration key with a default: the default when absent, else a value inside its range.
    fn duration(&self, v: &Option<Spanned<String>>, s: &DurationSetting) -> Result<Duration> {
        match (v, s.default) {
            (Some(v), _) => self.duration_value(v, s),
            (None, Some(default)) => Ok(default),
            (None, None) => self.err(None, s.key, "is required"),
        }
    }

    /// An optional duration key (no default).
    fn optional_duration(&self, v: &Option<Spanned<String>>, s: &DurationSetting) -> Result<Option<Duration>> {
        v.as_ref().map(|v| self.duration_value(v, s)).transpose()
    }

    fn duration_value(&self, v: &Spanned<String>, s: &DurationSetting) -> Result<Duration> {
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if (s.min..=s.max).contains(&d) => Ok(d),
            Ok(_) => self.err(Some(v.span()), s.key, format!("must be between {}", s.range_text())),
            Err(e) => self.err(
                Some(v.span()),
                s.key,
                format!("not a duration ({e}); write e.g. \"30s\", \"20m\""),
            ),
        }
    }

    fn int(&self, v: &Option<Spanned<u64>>, s: &IntSetting) -> Result<u64> {
        match v {
            None => Ok(s.default),
            Some(v) if (s.min..=s.max).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => self.err(
                Some(v.span()),
                s.key,
                format!("must be between {} and {}", s.min, s.max),
            ),
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

fn parse_auth(cx: &Ctx<'_>, raw: &raw::RawAuth) -> Result<AuthSettings> {
    let mut keys = Vec::new();
    if let Some(p) = &raw.token_public_key {
        keys.push(TokenKey {
            kid: None,
            public_key: cx.path(p.get_ref()),
            issuer: raw.issuer.clone(),
            audience: raw.audience.clone(),
        });
    }
    for k in &raw.key {
        let kid = k.kid.get_ref();
        let valid = !kid.is_empty() && kid.len() <= 64 && kid.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return cx.err(
                Some(k.kid.span()),
                "auth.key.kid",
                "expected 1 to 64 visible ASCII characters",
            );
        }
        if keys.iter().any(|o: &TokenKey| o.kid.as_deref() == Some(kid)) {
            return cx.err(Some(k.kid.span()), "auth.key.kid", format!("two keys named {kid:?}"));
        }
        keys.push(TokenKey {
            kid: Some(kid.clone()),
            public_key: cx.path(&k.public_key),
            issuer: k.issuer.clone().or_else(|| raw.issuer.clone()),
            audience: k.audience.clone().or_else(|| raw.audience.clone()),
        });
    }
    let token_private_key = raw.token_private_key.as_ref().map(|p| cx.path(p.get_ref()));
    if keys.is_empty() && token_private_key.is_none() {
        return cx.err(
            None,
            "auth",
            "no token key: set token_public_key, an [[auth.key]] or token_private_key",
        );
    }
    let max_token_ttl = cx.duration(&raw.max_token_ttl, &settings::MAX_TOKEN_TTL)?;
    // Unset, it follows a shorter max_token_ttl; set longer, it is an error.
    let login_ttl = cx.duration(&raw.login_ttl, &settings::LOGIN_TTL)?;
    let login_ttl = if raw.login_ttl.is_none() {
        login_ttl.min(max_token_ttl)
    } else {
        login_ttl
    };
    if login_ttl > max_token_ttl {
        // A login credential is a token: a longer one would be refused by this very gateway.
        return cx.err(
            raw.login_ttl.as_ref().map(Spanned::span),
            "auth.login_ttl",
            "must not exceed max_token_ttl",
        );
    }
    Ok(AuthSettings {
        keys,
        token_private_key,
        issued_token_ttl: cx
            .duration(&raw.issued_token_ttl, &settings::ISSUED_TOKEN_TTL)?
            .min(max_token_ttl),
        login_ttl,
        leeway: cx.duration(&raw.leeway, &settings::LEEWAY)?,
        max_token_ttl,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
    })
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl Config {
    /// Parses and validates `src`. Relative paths are taken from `base` (the config's directory).
    pub fn parse(src: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigError {
            line: e.span().map(|s| line_of(src, s.start)),
            key: "config".into(),
            message: e.message().trim().to_owned(),
        })?;
        let cx = Ctx { src, base };
        let listen = raw.listen.get_ref().parse::<SocketAddr>().or_else(|_| {
            cx.err(
                Some(raw.listen.span()),
                "listen",
                "expected ip:port, e.g. \"0.0.0.0:443\"",
            )
        })?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = cx.int(&raw.workers, &settings::WORKERS.with_default(cores as u64))? as usize;
        let (tls_cert, tls_key) = match (&raw.tls.cert, &raw.tls.key) {
            (Some(c), Some(k)) => (Some(cx.path(c.get_ref())), Some(cx.path(k.get_ref()))),
            (None, None) => (None, None),
            (Some(c), None) => return cx.err(Some(c.span()), "tls.key", "tls.cert is set, so tls.key is required"),
            (None, Some(k)) => return cx.err(Some(k.span()), "tls.cert", "tls.key is set, so tls.cert is required"),
        };
        let auth = parse_auth(&cx, &raw.auth)?;
        let targets = parse_targets(&cx, &raw.targets)?;
        let roles = parse_roles(&cx, &raw.roles)?;
        let users = parse_users(&cx, &raw.users, &targets, &roles)?;
        let oidc = parse_oidc(&cx, &raw.oidc)?;
        let user = match &raw.service.user {
            Some(u) if u.get_ref().is_empty() || u.get_ref().contains(['\0', ':', '/']) => {
                return cx.err(Some(u.span()), "service.user", "expected a user name");
            }
            u => u.as_ref().map(|u| u.get_ref().clone()),
        };
        Ok(Config {
            listen,
            workers,
            user,
            tls_cert,
            tls_key,
            auth,
            audit_path: raw.audit.path.as_deref().map(|p| cx.path(p)),
            audit_required: raw.audit.required,
            audit_syslog: raw.audit.syslog.then(|| {
                raw.audit
                    .syslog_socket
                    .as_deref()
                    .map_or_else(|| PathBuf::from("/dev/log"), |p| cx.path(p))
            }),
            session: parse_session(&cx, &raw.session)?,
            limits: parse_limits(&cx, &raw.limits)?,
            targets,
            users,
            roles,
            oidc,
            web: WebSettings {
                rp_id: match &raw.web.rp_id {
                    Some(r) if r.get_ref().is_empty() || r.get_ref().contains([':', '/', ' ']) => {
                        return cx.err(
                            Some(r.span()),
                            "web.rp_id",
                            "expected a domain name, e.g. \"bastion.example.com\"",
                        );
                    }
                    r => r.as_ref().map(|r| r.get_ref().to_ascii_lowercase()),
                },
                session_ttl: cx.duration(&raw.web.session_ttl, &settings::SESSION_TTL)?,
                max_file_size: cx.int(&raw.web.max_file_size, &settings::MAX_FILE_SIZE)?,
                origins: raw
                    .web
                    .origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
                throttle: ThrottleSettings {
                    per_user_address: cx
                        .int(&raw.web.throttle.per_user_address, &settings::THROTTLE_PER_USER_ADDRESS)?
                        as u32,
                    per_address: cx.int(&raw.web.throttle.per_address, &settings::THROTTLE_PER_ADDRESS)? as u32,
                    window: cx.duration(&raw.web.throttle.window, &settings::THROTTLE_WINDOW)?,
                    max_delay: cx.duration(&raw.web.throttle.max_delay, &settings::THROTTLE_MAX_DELAY)?,
                },
            },
            recording: RecordingSettings {
                dir: raw.recording.dir.as_deref().map(|d| cx.path(d)),
                required: raw.recording.required,
                retention: cx.optional_duration(&raw.recording.retention, &settings::RECORDING_RETENTION)?,
                min_free_mb: cx.int(&raw.recording.min_free_mb, &settings::RECORDING_MIN_FREE_MB)?,
            },
            proxy_trusted: raw
                .proxy_protocol
                .trusted
                .iter()
                .map(|c| {
                    crate::net::Cidr::parse(c.get_ref()).map_or_else(
                        || {
                            cx.err(
                                Some(c.span()),
                                "proxy_protocol.trusted",
                                "expected an address or CIDR block, e.g. \"10.0.0.0/8\"",
                            )
                        },
                        Ok,
                    )
                })
                .collect::<Result<_>>()?,
            admin: parse_admin(&cx, &raw.admin)?,
            cluster: parse_cluster(&cx, &raw.cluster)?,
            state_dir: raw.state.dir.as_deref().map(|d| cx.path(d)),
            source_sha256: {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(src.as_bytes());
                digest.iter().map(|b| format!("{b:02x}")).collect()
            },
        })
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> std::result::Result<Config, LoadError> {
        let src = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&src, base).map_err(|error| LoadError::Invalid {
            path: path.to_owned(),
            error,
        })
    }
}

fn parse_cluster(cx: &Ctx<'_>, c: &raw::RawCluster) -> Result<ClusterSettings> {
    let node = match &c.node {
        Some(n)
            if n.get_ref().is_empty()
                || n.get_ref().len() > 64
                || !n
                    .get_ref()
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) =>
        {
            return cx.err(Some(n.span()), "cluster.node", "letters, digits, - _ . (at most 64)");
        }
        Some(n) => n.get_ref().clone(),
        None => host_name(),
    };
    let store = match &c.store {
        None => StoreKind::Local,
        Some(s) if s.get_ref() == "local" => StoreKind::Local,
        Some(s) if s.get_ref().starts_with("redis://") || s.get_ref().starts_with("rediss://") => {
            StoreKind::Redis(s.get_ref().clone())
        }
        Some(s) => {
            return cx.err(
                Some(s.span()),
                "cluster.store",
                "expected \"local\", \"redis://host:port\" or \"rediss://host:port\"",
            )
        }
    };
    let on_store_down = match c.on_store_down.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("deny", _)) => OnStoreDown::Deny,
        Some(("allow", _)) => OnStoreDown::Allow,
        Some((_, span)) => return cx.err(Some(span), "cluster.on_store_down", "expected \"deny\" or \"allow\""),
    };
    Ok(ClusterSettings {
        node,
        store,
        on_store_down,
        heartbeat: cx.duration(&c.heartbeat, &settings::HEARTBEAT)?,
    })
}

/// This machine's name, the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into())
}

fn parse_admin(cx: &Ctx<'_>, a: &raw::RawAdmin) -> Result<AdminSettings> {
    let listen = match &a.listen {
        None => Some(settings::ADMIN_LISTEN.parse().expect("a valid default")),
        Some(v) if v.get_ref() == "off" => None,
        Some(v) => Some(v.get_ref().parse::<SocketAddr>().or_else(|_| {
            cx.err(
                Some(v.span()),
                "admin.listen",
                "expected ip:port, e.g. \"127.0.0.1:9464\", or \"off\"",
            )
        })?),
    };
    Ok(AdminSettings {
        listen,
        users: a.users.clone(),
    })
}

fn parse_session(cx: &Ctx<'_>, s: &raw::RawSession) -> Result<SessionSettings> {
    use settings as d;
    Ok(SessionSettings {
        idle_timeout: cx.duration(&s.idle_timeout, &d::IDLE_TIMEOUT)?,
        max_lifetime: cx.duration(&s.max_lifetime, &d::MAX_LIFETIME)?,
        ping_interval: cx.duration(&s.ping_interval, &d::PING_INTERVAL)?,
        connect_timeout: cx.duration(&s.connect_timeout, &d::CONNECT_TIMEOUT)?,
        handshake_timeout: cx.duration(&s.handshake_timeout, &d::HANDSHAKE_TIMEOUT)?,
        request_timeout: cx.duration(&s.request_timeout, &d::REQUEST_TIMEOUT)?,
        close_timeout: cx.duration(&s.close_timeout, &d::CLOSE_TIMEOUT)?,
        drain_timeout: cx.duration(&s.drain_timeout, &d::DRAIN_TIMEOUT)?,
        buffer_size: cx.int(&s.buffer_size, &d::BUFFER_SIZE)? as usize,
        max_sessions_per_user: cx.int(&s.max_sessions_per_user, &d::MAX_SESSIONS_PER_USER)? as usize,
        end_at_token_expiry: s.end_at_token_expiry,
    })
}

fn parse_limits(cx: &Ctx<'_>, l: &raw::RawLimits) -> Result<Limits> {
    use settings as d;
    let optional = |v: &Option<Spanned<u64>>, s: &IntSetting| -> Result<Option<usize>> {
        v.as_ref().map(|_| cx.int(v, s).map(|n| n as usize)).transpose()
    };
    let connections = ConnectionLimits {
        max_connections: optional(&l.max_connections, &d::MAX_CONNECTIONS)?,
        max_connections_per_client: optional(&l.max_connections_per_client, &d::MAX_CONNECTIONS_PER_CLIENT)?,
        new_connections_per_second: cx.int(&l.new_connections_per_second, &d::NEW_CONNECTIONS_PER_SECOND)? as u32,
        max_unauthenticated: cx.int(&l.max_unauthenticated, &d::MAX_UNAUTHENTICATED)? as usize,
        early_drop_from: cx.int(&l.early_drop_from, &d::EARLY_DROP_FROM)? as usize,
    };
    if connections.early_drop_from >= connections.max_unauthenticated {
        let span = l
            .early_drop_from
            .as_ref()
            .or(l.max_unauthenticated.as_ref())
            .map(Spanned::span);
        return cx.err(
            span,
            "limits.early_drop_from",
            "must be below limits.max_unauthenticated",
        );
    }
    Ok(Limits {
        max_header_bytes: cx.int(&l.max_header_bytes, &d::MAX_HEADER_BYTES)? as usize,
        max_headers: cx.int(&l.max_headers, &d::MAX_HEADERS)? as usize,
        max_frame_size: cx.int(&l.max_frame_size, &d::MAX_FRAME_SIZE)?,
        max_message_size: cx.int(&l.max_message_size, &d::MAX_MESSAGE_SIZE)?,
        connections,
    })
}

fn parse_targets(cx: &Ctx<'_>, raw: &[RawTarget]) -> Result<HashMap<String, Arc<Target>>> {
    let mut targets = HashMap::new();
    for t in raw {
        let target = parse_target(cx, t)?;
        let name = target.name.clone();
        if targets.insert(name.clone(), Arc::new(target)).is_some() {
            return cx.err(
                Some(t.name.span()),
                "target.name",
                format!("duplicate target \"{name}\""),
            );
        }
    }
    Ok(targets)
}

fn parse_target(cx: &Ctx<'_>, t: &RawTarget) -> Result<Target> {
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
            "expected host:port, e.g. \"10.0.0.4:22\" (an IPv6 address in brackets: \"[2001:db8::4]:22\")",
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
    let cert_ca = match &t.cert_ca {
        Some(ca) if protocol != Protocol::Rdp => {
            return cx.err(Some(ca.span()), "target.cert_ca", "only for rdp targets")
        }
        ca => ca.as_ref().map(|ca| cx.path(ca.get_ref())),
    };
    let drives = match &t.drives {
        Some(d) if protocol != Protocol::Rdp => return cx.err(Some(d.span()), "target.drives", "only for rdp targets"),
        d => d.as_ref().is_none_or(|d| *d.get_ref()),
    };
    Ok(Target {
        name: name.clone(),
        address: t.address.get_ref().clone(),
        protocol,
        cert_sha256,
        cert_ca,
        clipboard: t.clipboard,
        drives,
        native: t.native,
        file_transfer: match protocol {
            Protocol::Ssh => t.file_transfer,
            _ if t.file_transfer => return cx.err(Some(t.name.span()), "target.file_transfer", "only for ssh targets"),
            _ => false,
        },
        idle_timeout: cx.optional_duration(&t.idle_timeout, &settings::TARGET_IDLE_TIMEOUT)?,
        max_lifetime: cx.optional_duration(&t.max_lifetime, &settings::TARGET_MAX_LIFETIME)?,
        ssh: parse_ssh(cx, t, protocol)?,
        labels: t.labels.clone(),
    })
}

fn parse_ssh(cx: &Ctx<'_>, t: &RawTarget, protocol: Protocol) -> Result<SshSettings> {
    let ssh_keys = [
        t.ssh_user.as_ref().map(Spanned::span),
        t.ssh_key.as_ref().map(Spanned::span),
        t.ssh_agent.as_ref().map(Spanned::span),
        t.host_key.as_ref().map(Spanned::span),
    ];
    if protocol != Protocol::Ssh {
        if let Some(span) = ssh_keys.into_iter().flatten().next() {
            return cx.err(
                Some(span),
                "target.ssh_user",
                "ssh_user, ssh_key, ssh_agent and host_key are for ssh targets",
            );
        }
    }
    let host_keys = match t.host_key.as_ref().map(|h| h.get_ref()) {
        None => Vec::new(),
        Some(OneOrMany::One(k)) => vec![k.clone()],
        Some(OneOrMany::Many(ks)) => ks.clone(),
    };
    if let Some(h) = &t.host_key {
        if let Some(bad) = host_keys
            .iter()
            .find(|k| crate::sshkey::parse_host_key_line(k).is_none())
        {
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
    Ok(SshSettings {
        user: t.ssh_user.as_ref().map(|u| u.get_ref().clone()),
        key: t.ssh_key.as_ref().map(|k| cx.path(k.get_ref())),
        agent: t.ssh_agent.as_ref().map(|a| cx.path(a.get_ref())),
        host_keys,
        record_input: t.record_input,
    })
}

fn parse_roles(cx: &Ctx<'_>, raw: &[raw::RawRole]) -> Result<HashMap<String, Role>> {
    let mut roles = HashMap::new();
    for r in raw {
        let name = r.name.get_ref();
        if !valid_name(name) {
            return cx.err(
                Some(r.name.span()),
                "role.name",
                "use letters, digits, '-', '_' and '.' (1-64 chars)",
            );
        }
        if r.labels.as_ref().is_some_and(|l| l.is_empty()) {
            // `all()` of nothing is true: an empty selector would grant every target.
            return cx.err(
                Some(r.name.span()),
                "role.labels",
                "empty labels would select every target",
            );
        }
        let role = Role {
            name: name.clone(),
            targets: r.targets.iter().map(|t| t.get_ref().clone()).collect(),
            labels: r.labels.clone(),
            admin: r.admin,
            replay: r.replay,
            require_mfa: r.require_mfa,
            groups: r.groups.clone(),
        };
        if roles.insert(name.clone(), role).is_some() {
            return cx.err(Some(r.name.span()), "role.name", format!("duplicate role \"{name}\""));
        }
    }
    Ok(roles)
}

fn parse_oidc(cx: &Ctx<'_>, raw: &[raw::RawOidc]) -> Result<Vec<OidcProvider>> {
    let mut providers: Vec<OidcProvider> = Vec::new();
    for p in raw {
        let id = p.id.get_ref();
        let valid = !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return cx.err(Some(p.id.span()), "oidc.id", "use letters, digits and '-' (1-32 chars)");
        }
        if providers.iter().any(|o| &o.id == id) {
            return cx.err(Some(p.id.span()), "oidc.id", format!("duplicate provider \"{id}\""));
        }
        if id.eq_ignore_ascii_case("link") {
            return cx.err(
                Some(p.id.span()),
                "oidc.id",
                "\"link\" is reserved (the guests of shared links)",
            );
        }
        let issuer = p.issuer.get_ref().trim_end_matches('/').to_owned();
        if !issuer.starts_with("https://") {
            return cx.err(Some(p.issuer.span()), "oidc.issuer", "expected an https:// URL");
        }
        if !p.redirect_uri.get_ref().starts_with("https://")
            || !p.redirect_uri.get_ref().ends_with("/api/oidc/callback")
        {
            return cx.err(
                Some(p.redirect_uri.span()),
                "oidc.redirect_uri",
                "expected https://<this gateway>/api/oidc/callback",
            );
        }
        // Mapping provider users onto this policy's users must rest on a claim the provider cannot
        // let a user choose: `sub`, or a verified `email`.
        let claim = p.user_claim.as_deref().unwrap_or("sub");
        if !p.namespace && !matches!(claim, "sub" | "email") {
            return cx.err(
                Some(p.id.span()),
                "oidc.namespace",
                "namespace = false needs user_claim = \"sub\" or \"email\" (a claim users cannot choose)",
            );
        }
        providers.push(OidcProvider {
            id: id.clone(),
            name: p.name.clone().unwrap_or_else(|| id.clone()),
            issuer,
            client_id: p.client_id.clone(),
            client_secret_file: cx.path(&p.client_secret_file),
            redirect_uri: p.redirect_uri.get_ref().clone(),
            scopes: p
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]),
            // `sub` by default: the one claim a provider promises is unique and never reassigned.
            user_claim: p.user_claim.clone().unwrap_or_else(|| "sub".into()),
            groups_claim: p.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            namespace: p.namespace,
            ca: p.ca.as_deref().map(|c| cx.path(c)),
        });
    }
    Ok(providers)
}

fn parse_users(
    cx: &Ctx<'_>,
    raw: &[RawUser],
    targets: &HashMap<String, Arc<Target>>,
    roles: &HashMap<String, Role>,
) -> Result<HashMap<String, User>> {
    let mut users = HashMap::new();
    for u in raw {
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
            if !crate::passwd::is_argon2id(h.get_ref()) {
                return cx.err(
                    Some(h.span()),
                    "user.password_hash",
                    "expected an Argon2id hash from `portcullis passwd`",
                );
            }
        }
        let mut user = User {
            targets: allowed,
            password_hash: u.password_hash.as_ref().map(|h| h.get_ref().clone()),
            replay: u.replay,
            roles: Vec::new(),
            admin: false,
            require_mfa: u.require_mfa,
        };
        for r in &u.roles {
            let Some(role) = roles.get(r.get_ref()) else {
                return cx.err(
                    Some(r.span()),
                    "user.roles",
                    format!("unknown role \"{}\"", r.get_ref()),
                );
            };
            user.take_role(role, targets);
        }
        if users.insert(name.clone(), user).is_some() {
            return cx.err(Some(u.name.span()), "user.name", format!("duplicate user \"{name}\""));
        }
    }
    Ok(users)
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

/// Target and user names: what users type and what appears in paths and audit records.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `host:port`: a name or IPv4 address, or an IPv6 address in brackets (`[2001:db8::4]:22`;
/// unbracketed, `2001:db8::4:22` would be read as a host and port at connect time).
fn valid_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains([':', '[', ']', ' ', '/']),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests;
