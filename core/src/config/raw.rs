//! The file as TOML sees it: every key optional where the format allows, spans kept for errors.

use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: Spanned<String>,
    pub workers: Option<Spanned<u64>>,
    #[serde(default)]
    pub service: RawService,
    #[serde(default)]
    pub tls: RawTls,
    pub auth: RawAuth,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub web: RawWeb,
    #[serde(default)]
    pub recording: RawRecording,
    #[serde(default)]
    pub proxy_protocol: RawProxyProtocol,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub state: RawState,
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
    #[serde(default, rename = "user")]
    pub users: Vec<RawUser>,
    #[serde(default, rename = "role")]
    pub roles: Vec<RawRole>,
    #[serde(default, rename = "oidc")]
    pub oidc: Vec<RawOidc>,
}

/// `[[oidc]]`: an OpenID Connect provider users may sign in with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub id: Spanned<String>,
    pub name: Option<String>,
    pub issuer: Spanned<String>,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub redirect_uri: Spanned<String>,
    pub scopes: Option<Vec<String>>,
    pub user_claim: Option<String>,
    pub groups_claim: Option<String>,
    #[serde(default = "yes")]
    pub namespace: bool,
    pub ca: Option<PathBuf>,
}

/// `[[role]]`: targets by name pattern or by labels, and rights, granted to its members.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    pub name: Spanned<String>,
    /// Target name patterns (`*` any characters, `?` one).
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
    /// Targets whose labels include all of these.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub replay: bool,
    #[serde(default)]
    pub require_mfa: bool,
    /// Single sign-on groups (`provider-id:group`) whose members hold this role.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub session_ttl: Option<Spanned<String>>,
    pub max_file_size: Option<Spanned<u64>>,
    #[serde(default)]
    pub origins: Vec<String>,
    pub rp_id: Option<Spanned<String>>,
    #[serde(default)]
    pub throttle: RawThrottle,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThrottle {
    pub per_user_address: Option<Spanned<u64>>,
    pub per_address: Option<Spanned<u64>>,
    pub window: Option<Spanned<String>>,
    pub max_delay: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecording {
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub required: bool,
    pub retention: Option<Spanned<String>>,
    pub min_free_mb: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyProtocol {
    #[serde(default)]
    pub trusted: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub node: Option<Spanned<String>>,
    pub store: Option<Spanned<String>>,
    pub on_store_down: Option<Spanned<String>>,
    pub heartbeat: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub user: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub users: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Option<Spanned<PathBuf>>,
    pub key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub token_public_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub key: Vec<RawKey>,
    pub token_private_key: Option<Spanned<PathBuf>>,
    pub leeway: Option<Spanned<String>>,
    pub max_token_ttl: Option<Spanned<String>>,
    pub issued_token_ttl: Option<Spanned<String>>,
    pub login_ttl: Option<Spanned<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// `[[auth.key]]`: one more key tokens may be signed with, named by their `kid`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub kid: Spanned<String>,
    pub public_key: PathBuf,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub syslog: bool,
    pub syslog_socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub idle_timeout: Option<Spanned<String>>,
    pub max_lifetime: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub close_timeout: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub buffer_size: Option<Spanned<u64>>,
    pub max_sessions_per_user: Option<Spanned<u64>>,
    #[serde(default)]
    pub end_at_token_expiry: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub max_frame_size: Option<Spanned<u64>>,
    pub max_message_size: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_connections_per_client: Option<Spanned<u64>>,
    pub new_connections_per_second: Option<Spanned<u64>>,
    pub max_unauthenticated: Option<Spanned<u64>>,
    pub early_drop_from: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub protocol: Spanned<String>,
    pub cert_sha256: Option<Spanned<String>>,
    pub cert_ca: Option<Spanned<PathBuf>>,
    pub ssh_user: Option<Spanned<String>>,
    pub ssh_key: Option<Spanned<PathBuf>>,
    pub ssh_agent: Option<Spanned<PathBuf>>,
    pub host_key: Option<Spanned<OneOrMany>>,
    #[serde(default = "yes")]
    pub clipboard: bool,
    pub drives: Option<Spanned<bool>>,
    #[serde(default = "yes")]
    pub native: bool,
    #[serde(default)]
    pub file_transfer: bool,
    #[serde(default)]
    pub record_input: bool,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_lifetime: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: Spanned<String>,
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
    pub password_hash: Option<Spanned<String>>,
    #[serde(default)]
    pub replay: bool,
    #[serde(default)]
    pub roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub require_mfa: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}
