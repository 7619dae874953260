//! Every tunable of the configuration: its key, its default and the range it must be in. The one
//! place defaults are written down; the README's configuration example is checked against it.

use portcullis_protocols::{http, ws};
use std::time::Duration;

/// A duration key.
#[derive(Clone, Copy, Debug)]
pub struct DurationSetting {
    pub key: &'static str,
    /// `None` for an optional setting (absent means: no such limit).
    pub default: Option<Duration>,
    pub min: Duration,
    pub max: Duration,
}

impl DurationSetting {
    pub fn range_text(&self) -> String {
        format!(
            "{} and {}",
            humantime::format_duration(self.min),
            humantime::format_duration(self.max)
        )
    }
}

/// An integer key.
#[derive(Clone, Copy, Debug)]
pub struct IntSetting {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

impl IntSetting {
    /// The same range with a default known only at run time (the number of cores).
    pub fn with_default(self, default: u64) -> IntSetting {
        IntSetting {
            default: default.clamp(self.min, self.max),
            ..self
        }
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

const fn duration(key: &'static str, default: Duration, min: Duration, max: Duration) -> DurationSetting {
    DurationSetting {
        key,
        default: Some(default),
        min,
        max,
    }
}

const fn int(key: &'static str, default: u64, min: u64, max: u64) -> IntSetting {
    IntSetting { key, default, min, max }
}

pub const WORKERS: IntSetting = int("workers", 1, 1, 1024);
pub const LEEWAY: DurationSetting = duration("auth.leeway", secs(60), secs(0), secs(10 * MINUTE));
/// Tokens that live longer (from `iat`, else `nbf`, to `exp`) are refused: a mistaken issuer
/// cannot hand out credentials for a century.
pub const MAX_TOKEN_TTL: DurationSetting = duration("auth.max_token_ttl", secs(DAY), secs(MINUTE), secs(30 * DAY));
/// Access tokens the gateway signs itself (for `portcullis login` users): short, capped by
/// `max_token_ttl`.
pub const ISSUED_TOKEN_TTL: DurationSetting =
    duration("auth.issued_token_ttl", secs(5 * MINUTE), secs(MINUTE), secs(DAY));
/// How long a `portcullis login` stays valid before the user logs in again.
pub const LOGIN_TTL: DurationSetting = duration("auth.login_ttl", secs(12 * HOUR), secs(5 * MINUTE), secs(30 * DAY));

pub const IDLE_TIMEOUT: DurationSetting = duration("session.idle_timeout", secs(20 * MINUTE), secs(1), secs(7 * DAY));
/// No session lives longer, however busy (a target may set its own).
pub const MAX_LIFETIME: DurationSetting = duration("session.max_lifetime", secs(8 * HOUR), secs(1), secs(30 * DAY));
/// Per-target overrides: optional, in the ranges of the `[session]` keys they override.
pub const TARGET_IDLE_TIMEOUT: DurationSetting = DurationSetting {
    default: None,
    key: "target.idle_timeout",
    ..IDLE_TIMEOUT
};
pub const TARGET_MAX_LIFETIME: DurationSetting = DurationSetting {
    default: None,
    key: "target.max_lifetime",
    ..MAX_LIFETIME
};
pub const PING_INTERVAL: DurationSetting = duration("session.ping_interval", secs(30), millis(100), secs(HOUR));
pub const CONNECT_TIMEOUT: DurationSetting =
    duration("session.connect_timeout", secs(5), millis(100), secs(5 * MINUTE));
pub const HANDSHAKE_TIMEOUT: DurationSetting =
    duration("session.handshake_timeout", secs(10), millis(100), secs(5 * MINUTE));
pub const REQUEST_TIMEOUT: DurationSetting =
    duration("session.request_timeout", secs(10), millis(100), secs(5 * MINUTE));
pub const CLOSE_TIMEOUT: DurationSetting = duration("session.close_timeout", secs(5), millis(100), secs(5 * MINUTE));
pub const DRAIN_TIMEOUT: DurationSetting = duration("session.drain_timeout", secs(30), millis(100), secs(DAY));
/// Held only while data flows. Eight TLS records per read and per `sendmsg` (the relay's most,
/// `relay::MAX_SLOTS`) and client reads of up to 256 KiB: fewer wakeups and syscalls per byte,
/// 13 % less gateway CPU per relayed byte than 64 KiB (benches/README.md). A client can keep a
/// buffer lent by leaving a TLS record unfinished: at most 2 × this per session, after its token
/// was accepted (sessions per user are capped).
pub const BUFFER_SIZE: IntSetting = int("session.buffer_size", 256 * 1024, 1024, 1 << 20);
/// Live sessions one user may hold at once, over every route (one token opened 300 tunnels in
/// the adversarial review); the next is refused with 429.
pub const MAX_SESSIONS_PER_USER: IntSetting = int("session.max_sessions_per_user", 100, 1, 1_000_000);

/// Where the admin listener (health, readiness, metrics, admin API) listens unless configured:
/// loopback, never the public port. `"off"` turns it off.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9464";

pub const MAX_HEADER_BYTES: IntSetting = int(
    "limits.max_header_bytes",
    http::DEFAULT_MAX_HEAD_BYTES as u64,
    512,
    64 * 1024,
);
pub const MAX_HEADERS: IntSetting = int("limits.max_headers", http::DEFAULT_MAX_HEADERS as u64, 8, 128);
/// RFC 6455 control frames carry 125 bytes; data frames may not be held to less.
pub const MAX_FRAME_SIZE: IntSetting = int("limits.max_frame_size", ws::DEFAULT_MAX_FRAME_PAYLOAD, 125, 64 << 20);
pub const MAX_MESSAGE_SIZE: IntSetting = int("limits.max_message_size", ws::DEFAULT_MAX_MESSAGE, 125, 1 << 30);

/// Connection limits (`[limits]`); the two caps without a default are derived from the open-files
/// limit at start (see `AdmissionLimits::resolve`).
pub const MAX_CONNECTIONS: IntSetting = int("limits.max_connections", 0, 16, 10_000_000);
pub const MAX_CONNECTIONS_PER_CLIENT: IntSetting = int("limits.max_connections_per_client", 0, 1, 10_000_000);
pub const NEW_CONNECTIONS_PER_SECOND: IntSetting = int("limits.new_connections_per_second", 50, 1, 1_000_000);
pub const MAX_UNAUTHENTICATED: IntSetting = int("limits.max_unauthenticated", 2048, 16, 10_000_000);
pub const EARLY_DROP_FROM: IntSetting = int("limits.early_drop_from", 512, 1, 10_000_000);

/// Recordings older than this are deleted (absent: kept until someone deletes them).
pub const RECORDING_RETENTION: DurationSetting = DurationSetting {
    key: "recording.retention",
    default: None,
    min: secs(HOUR),
    // humantime years (365.25 days), so that the range reads "10years".
    max: secs(10 * 31_557_600),
};
/// A recording starts only with this much room on its disk: a full disk means no recording, so
/// `required` refuses the session (and the audit log, often on the same disk, keeps room).
/// Largest file moved in the browser terminal (upload or download), in bytes.
pub const MAX_FILE_SIZE: IntSetting = int("web.max_file_size", 64 << 20, 1024, 4 << 30);
pub const RECORDING_MIN_FREE_MB: IntSetting = int("recording.min_free_mb", 64, 0, 1 << 30);

/// How often a node refreshes its live sessions in the fleet store; a node silent for three
/// intervals is gone, and its sessions leave the fleet's list and their users' places.
pub const HEARTBEAT: DurationSetting = duration("cluster.heartbeat", secs(5), secs(1), secs(MINUTE));

pub const SESSION_TTL: DurationSetting = duration("web.session_ttl", secs(HOUR), secs(1), secs(30 * DAY));

/// The brake on password guessing (`[web.throttle]`): attempts per user and client address, and
/// per client address, within a window; a delay per user when attempts come from many addresses.
pub const THROTTLE_PER_USER_ADDRESS: IntSetting = int("web.throttle.per_user_address", 5, 1, 1000);
pub const THROTTLE_PER_ADDRESS: IntSetting = int("web.throttle.per_address", 20, 1, 1_000_000);
pub const THROTTLE_WINDOW: DurationSetting = duration("web.throttle.window", secs(15 * MINUTE), secs(1), secs(DAY));
pub const THROTTLE_MAX_DELAY: DurationSetting = duration("web.throttle.max_delay", secs(5), secs(0), secs(MINUTE));

/// Every duration setting, for documentation checks.
pub const DURATIONS: &[DurationSetting] = &[
    LEEWAY,
    MAX_TOKEN_TTL,
    ISSUED_TOKEN_TTL,
    LOGIN_TTL,
    IDLE_TIMEOUT,
    MAX_LIFETIME,
    PING_INTERVAL,
    CONNECT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    REQUEST_TIMEOUT,
    CLOSE_TIMEOUT,
    DRAIN_TIMEOUT,
    SESSION_TTL,
    THROTTLE_WINDOW,
    THROTTLE_MAX_DELAY,
    RECORDING_RETENTION,
    HEARTBEAT,
];

/// Every integer setting but `workers` (whose default is the number of cores).
pub const INTEGERS: &[IntSetting] = &[
    BUFFER_SIZE,
    MAX_SESSIONS_PER_USER,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    NEW_CONNECTIONS_PER_SECOND,
    MAX_UNAUTHENTICATED,
    EARLY_DROP_FROM,
    THROTTLE_PER_USER_ADDRESS,
    THROTTLE_PER_ADDRESS,
    RECORDING_MIN_FREE_MB,
    MAX_FILE_SIZE,
];

/// Integer settings whose default is derived at start (shown in the README without a value).
pub const DERIVED: &[IntSetting] = &[MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT];
