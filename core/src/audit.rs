//! The audit model: what the gateway records about every session and every refusal, as typed
//! values. The engine writes these records (`engine/src/audit.rs`); their JSON form is the
//! documented interface that SIEMs and scripts read, so field names and values are stable.

use crate::config::Protocol;
use serde::Serialize;
use std::fmt;

/// Declares `EndReason` with its audit names and the list of every variant in one place, so a
/// new variant cannot be left out of `ALL` (and so out of the README check).
macro_rules! end_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// How a session ended. Serialized `snake_case` in the audit record's `ended` field;
        /// whatever varies (an error message, an exit status) goes into `detail`, never into the
        /// value itself.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum EndReason {
            $($(#[$doc])* $variant,)*
        }

        impl EndReason {
            /// Every variant, for documentation checks.
            pub const ALL: &'static [EndReason] = &[$(EndReason::$variant,)*];

            /// The audit value, also the reason text of the WebSocket Close sent for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EndReason::$variant => $name,)*
                }
            }
        }
    };
}

end_reasons! {
    /// The client closed (WebSocket Close handshake, or the browser's close message).
    ClientClosed => "client_closed",
    /// The target closed first (EOF), and the close handshake with the client completed.
    TargetClosed => "target_closed",
    /// The client vanished without closing.
    ClientDisconnected => "client_disconnected",
    /// No payload either way for the idle timeout.
    IdleTimeout => "idle_timeout",
    /// The session reached its maximum lifetime.
    MaxLifetime => "max_lifetime",
    /// The client answered no ping.
    PingTimeout => "ping_timeout",
    /// The gateway stopped (drain deadline passed).
    GatewayShutdown => "gateway_shutdown",
    /// A closing session did not finish its close in time (`detail`: how it was ending).
    CloseTimeout => "close_timeout",
    /// The client broke the WebSocket protocol (`detail`: how).
    ProtocolError => "protocol_error",
    /// Reading from or writing to the client failed (`detail`: the error).
    ClientError => "client_error",
    /// Reading from or writing to the target failed, or the target refused (`detail`).
    TargetError => "target_error",
    /// The client sent a text frame into a binary tunnel.
    TextFrameRefused => "text_frame_refused",
    /// Browser terminal: the remote command exited (`detail`: its status).
    ExitStatus => "exit_status",
    /// Browser terminal: the remote command was killed (`detail`: the signal).
    ExitSignal => "exit_signal",
    /// A reload took the session's access away (`detail`: what changed): Close 1008.
    PolicyRevoked => "policy_revoked",
    /// The token that opened the session expired (`[session] end_at_token_expiry`): Close 1008.
    TokenExpired => "token_expired",
    /// The gateway failed inside this connection (a bug, caught and counted; `detail`: what).
    InternalError => "internal_error",
    /// `[recording] required` and the recording could not start (a full disk, a write error):
    /// the session was refused before it reached the target.
    RecordingUnavailable => "recording_unavailable",
    /// An administrator ended the session (`portcullis admin terminate`); `terminated_by` says who.
    Terminated => "terminated",
    /// An administrator revoked the session's user or token (`revoke-user`, `revoke-token`).
    Revoked => "revoked",
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session's end: the reason and what varies about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub reason: EndReason,
    pub detail: Option<String>,
}

impl Ending {
    pub fn new(reason: EndReason) -> Ending {
        Ending { reason, detail: None }
    }

    pub fn with_detail(reason: EndReason, detail: impl Into<String>) -> Ending {
        Ending {
            reason,
            detail: Some(detail.into()),
        }
    }
}

impl From<EndReason> for Ending {
    fn from(reason: EndReason) -> Ending {
        Ending::new(reason)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{}: {d}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// The route a session came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Via {
    /// `/v1/tunnel/{target}`: a native client's WebSocket tunnel.
    Tunnel,
    /// `/v1/ssh/{target}`: the browser terminal (the gateway is the SSH client).
    WebTerminal,
    /// `/v1/rdp`: RDCleanPath for the browser's RDP client.
    WebRdp,
    /// `/remoteDesktopGateway/`: a native RDP client (mstsc, FreeRDP) through the RD Gateway
    /// protocol.
    RdGateway,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Tunnel => "tunnel",
            Via::WebTerminal => "web_terminal",
            Via::WebRdp => "web_rdp",
            Via::RdGateway => "rd_gateway",
        }
    }

    /// Tunnels are the default route: their records carry no `via`.
    fn is_tunnel(v: &Via) -> bool {
        *v == Via::Tunnel
    }
}

/// One line of the audit log, tagged by `event`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditRecord {
    Session(SessionRecord),
    Denied(DenialRecord),
    Admin(AdminRecord),
    Identity(IdentityRecord),
    File(FileRecord),
}

/// A file moved in the browser terminal (SFTP), or a transfer refused or failed.
#[derive(Debug, Serialize)]
pub struct FileRecord {
    pub time: String,
    pub session: String,
    pub user: String,
    pub target: String,
    pub client: String,
    /// `upload` (to the target) or `download`.
    pub direction: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hex SHA-256 of the file's bytes, when it moved whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `ok`, `refused` (the policy or the size limit) or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What happened to a user's identity: device logins and the tokens the gateway signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentityAction {
    /// `portcullis login` asked for a code (no user yet).
    DeviceRequested,
    /// A signed-in user approved a device login in the web app.
    DeviceApproved,
    /// A signed-in user refused one.
    DeviceDenied,
    /// The CLI received its login credential.
    LoginIssued,
    /// `portcullis logout`: the credential is revoked.
    LoginRevoked,
    /// The gateway signed an access token for a logged-in user.
    TokenIssued,
    /// A web sign-in succeeded (`method`: password, password+totp, password+recovery_code, token).
    SignedIn,
    /// A web sign-in failed (`reason`).
    SignInFailed,
    /// A user enrolled a second factor.
    FactorEnrolled,
    /// A shared link was opened (`user`: `link:<id>`, `target`); refused ones are
    /// `sign_in_failed` with `method: link`.
    LinkUsed,
}

/// One identity event.
#[derive(Debug, Serialize)]
pub struct IdentityRecord {
    pub time: String,
    pub action: IdentityAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub client: String,
    /// The access token's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The `jti` of the token or credential issued or revoked (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Lifetime of what was issued, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// How the user signed in (or enrolled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an administrator did through the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdminAction {
    /// Only refused scrapes are recorded.
    ReadMetrics,
    ListSessions,
    Terminate,
    RevokeUser,
    RevokeToken,
    /// A user's enrolled second factors removed (a lost phone), so they can enrol again.
    ResetFactors,
    /// The audit log searched from the web app (`detail`: the query).
    SearchAudit,
    /// A shared link made (`subject`: its id; `detail`: target, validity, single use).
    CreateLink,
    /// A shared link revoked (its live sessions end).
    RevokeLink,
    /// An administrator started watching a live terminal session (`subject`: its id).
    WatchSession,
}

/// One admin API request that changed something or read sessions, granted or refused.
#[derive(Debug, Serialize)]
pub struct AdminRecord {
    pub time: String,
    /// The admin token's user; absent when the request was refused before it was known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    pub client: String,
    pub action: AdminAction,
    /// The session id, user name or token id acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A revocation's end (RFC 3339); absent: for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// HTTP status of the answer: 2xx done, else refused or failed.
    pub status: u16,
    /// Live sessions the action ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_ended: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A session that was granted and has ended.
#[derive(Debug, Serialize)]
pub struct SessionRecord {
    pub session: String,
    pub user: String,
    pub client: String,
    pub target: String,
    pub protocol: Protocol,
    /// The `jti` of the token that opened it; absent for sign-in sessions of the web app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
    pub bytes_client_to_target: u64,
    pub bytes_target_to_client: u64,
    pub ended: EndReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// RDP: the `Cookie: mstshash=` (user name) the client's X.224 request presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdp_cookie: Option<String>,
    /// RDP: static virtual channels the client asked for that the target's policy refused, and
    /// the gateway removed (web RDP: `cliprdr` for `clipboard = false`, `rdpdr` for `drives = false`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels_removed: Vec<String>,
    /// The session's recording file, when it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    #[serde(skip_serializing_if = "Via::is_tunnel")]
    pub via: Via,
    /// The administrator who terminated or revoked the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated_by: Option<String>,
}

/// A request the gateway refused.
#[derive(Debug, Serialize)]
pub struct DenialRecord {
    pub time: String,
    pub client: String,
    /// The request path, without its query string (which may hold a token).
    pub path: String,
    pub status: u16,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Current time in RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// RFC 3339 (UTC, milliseconds), without a date-time crate.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_305_599)),
            "2026-11-21T23:59:59.000Z"
        );
    }

    /// The serialized value is `as_str()`, and the README documents every one of them.
    #[test]
    fn every_end_reason_is_documented() {
        let readme = include_str!("../../README.md");
        let documented = &readme[readme.find("`ended` is one of").expect("README lists `ended` values")..];
        let documented = &documented[..documented.find("\n\n").unwrap()];
        for reason in EndReason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
            assert!(
                documented.contains(&format!("`{}`", reason.as_str())),
                "README does not list `ended` value {reason}"
            );
        }
    }

    #[test]
    fn records_are_tagged_by_event() {
        let rec = AuditRecord::Session(SessionRecord {
            session: "s".into(),
            user: "alice".into(),
            client: "192.0.2.1:5000".into(),
            target: "vm1".into(),
            protocol: Protocol::Ssh,
            token_id: Some("t".into()),
            start: "a".into(),
            end: "b".into(),
            bytes_client_to_target: 1,
            bytes_target_to_client: 2,
            ended: EndReason::TargetError,
            detail: Some("connection reset".into()),
            rdp_cookie: None,
            channels_removed: Vec::new(),
            recording: None,
            via: Via::Tunnel,
            terminated_by: None,
        });
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["event"], "session");
        assert_eq!(v["ended"], "target_error");
        assert_eq!(v["detail"], "connection reset");
        assert_eq!(v["protocol"], "ssh");
        assert!(v.get("via").is_none(), "tunnels carry no via");
        assert!(v.get("channels_removed").is_none(), "only when channels were removed");
        let denied = AuditRecord::Denied(DenialRecord {
            time: "t".into(),
            client: "c".into(),
            path: "/v1/tunnel/x".into(),
            status: 403,
            reason: "no".into(),
            user: None,
        });
        assert_eq!(serde_json::to_value(&denied).unwrap()["event"], "denied");
    }
}
