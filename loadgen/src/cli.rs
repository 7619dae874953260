//! Command-line arguments (clap derive). Cross-argument checks that clap cannot express live in
//! `endpoint::Endpoint::from_args` and the scenarios, and fail with one clear line.

use clap::builder::TypedValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis-loadgen",
    version,
    about = "Load generator for Portcullis and other WebSocket-to-TCP bridges (websockify, websocat)",
    after_help = "Start a target first (`portcullis-loadgen target --listen 127.0.0.1:9000 --mode echo`), point the \
                  gateway's target at it, then run a scenario. See loadgen/README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sessions stream bulk data through the tunnel for a while; reports MB/s each way.
    Throughput(ThroughputArgs),
    /// Sessions send small messages to an echo target at a fixed total rate (open loop); reports
    /// round-trip percentiles.
    Latency(LatencyArgs),
    /// Opens and closes sessions as fast as it can; reports sessions per second and the latency of
    /// each step (TCP, TLS, upgrade, optional echo probe, close).
    Connect(ConnectArgs),
    /// Opens and holds many sessions; reports how many it held and the gateway's memory per session.
    Idle(IdleArgs),
    /// Whole SSH sessions through the tunnel (russh client to a real SSH server): handshake, key
    /// authentication, one command; reports sessions per second and the latency of each step.
    Ssh(SshArgs),
    /// A TCP target for the tunnels: echo, sink (discard) or source (endless data).
    Target(TargetArgs),
    /// The crypto floor: AES-128-GCM (ring) seal and open of TLS-sized records on one thread;
    /// reports nanoseconds per byte each way, the least any TLS relay pays per byte relayed.
    CryptoFloor(CryptoFloorArgs),
}

impl Cli {
    /// Cross-argument checks of the connection arguments, as a usage error (exit status 2).
    pub fn check(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory;
        let conn = match &self.command {
            Command::Throughput(a) => &a.conn,
            Command::Latency(a) => &a.conn,
            Command::Connect(a) => &a.conn,
            Command::Idle(a) => &a.conn,
            Command::Ssh(a) => &a.conn,
            Command::Target(_) | Command::CryptoFloor(_) => return Ok(()),
        };
        // A URL that does not parse is reported by the run itself, with the URL.
        let Ok(url) = crate::endpoint::Url::parse(&conn.url) else {
            return Ok(());
        };
        crate::endpoint::check_conn_args(conn, &url)
            .map_err(|e| Cli::command().error(clap::error::ErrorKind::ArgumentConflict, e))
    }
}

impl Command {
    /// Tokio worker threads the command asks for.
    pub fn workers(&self) -> usize {
        match self {
            Command::Throughput(a) => a.run.workers,
            Command::Latency(a) => a.run.workers,
            Command::Connect(a) => a.run.workers,
            Command::Idle(a) => a.run.workers,
            Command::Ssh(a) => a.run.workers,
            Command::Target(a) => a.workers,
            Command::CryptoFloor(_) => 1,
        }
    }

    pub fn run_args(&self) -> Option<&RunArgs> {
        match self {
            Command::Throughput(a) => Some(&a.run),
            Command::Latency(a) => Some(&a.run),
            Command::Connect(a) => Some(&a.run),
            Command::Idle(a) => Some(&a.run),
            Command::Ssh(a) => Some(&a.run),
            Command::Target(_) | Command::CryptoFloor(_) => None,
        }
    }
}

/// Where the sessions go and how they authenticate. One of --token, --token-key, --no-auth,
/// --devolutions-key, --wstunnel-dst is needed for ws:// and wss:// URLs, none for tcp:// (checked
/// by `endpoint::check_conn_args`).
#[derive(Args, Debug, Clone)]
#[command(group = ArgGroup::new("auth").multiple(false).args(["token", "token_key", "no_auth", "devolutions_key", "wstunnel_dst"]))]
pub struct ConnArgs {
    /// Gateway or bridge: wss://HOST[:PORT][/PREFIX] (TLS) or ws://HOST[:PORT][/PREFIX] (plain);
    /// or tcp://HOST:PORT, the direct path: raw TCP straight to the target (no TLS, WebSocket or
    /// token), the reference to compare gateways and bridges with.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Target name: fills `{target}` in --path and the `tgt` claim of minted tokens.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Request path template, appended to the URL's prefix. Placeholders: {target}, {token}
    /// (a token in the path is sent only there, e.g. `/?token={token}`).
    #[arg(long, value_name = "TEMPLATE", default_value = "/v1/tunnel/{target}")]
    pub path: String,

    /// Bearer token sent with every session.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Mint tokens with this Ed25519 private key (PEM); needs --user and --target.
    #[arg(long, value_name = "PEM_FILE", requires_all = ["user", "target"])]
    pub token_key: Option<PathBuf>,

    /// User (`sub` claim) of minted tokens.
    #[arg(long, value_name = "NAME", requires = "token_key")]
    pub user: Option<String>,

    /// Lifetime of minted tokens.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub token_ttl: humantime::Duration,

    /// Send no token (plain WebSocket-to-TCP bridges such as websockify or websocat).
    #[arg(long)]
    pub no_auth: bool,

    /// Go through the gateway's RD Gateway (MS-TSGU over WebSocket) instead of the tunnel route:
    /// `RDG_OUT_DATA <PREFIX>/remoteDesktopGateway/` upgraded to a WebSocket, the token as the PAA
    /// cookie, a channel to --target (an `rdp` target); then every write is DATA packets, one per
    /// binary message, and DATA comes back the same way.
    #[arg(long, conflicts_with = "path")]
    pub rd_gateway: bool,

    /// Devolutions Gateway peer: every session gets a fresh association token signed (RS256) with
    /// this RSA private key (the gateway's provisioner key, PEM: PKCS#8 or PKCS#1), with the claims
    /// `tokengen sign forward --dst-hst DST` writes, and goes to
    /// `<PREFIX>/jet/fwd/tcp/<jet-aid>?token=<token>` (each token is accepted once). Needs
    /// --devolutions-dst; the token's lifetime is --token-ttl.
    #[arg(long, value_name = "PEM_FILE", requires = "devolutions_dst", conflicts_with_all = ["path", "rd_gateway"])]
    pub devolutions_key: Option<PathBuf>,

    /// Devolutions Gateway peer: the target the gateway forwards to (`dst_hst` claim), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", requires = "devolutions_key")]
    pub devolutions_dst: Option<String>,

    /// wstunnel peer: open each session as `wstunnel client -L tcp://…:HOST:PORT` does, the
    /// destination as a JWT in `Sec-WebSocket-Protocol: v1, authorization.bearer.<JWT>` (a fresh
    /// tunnel id per session), on `<PREFIX>/events` (`/v1/events` without a prefix). The server's
    /// `--restrict-to` must allow HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["path", "rd_gateway"])]
    pub wstunnel_dst: Option<String>,

    /// Extra request header, `Name: value` (repeatable), e.g. `Sec-WebSocket-Protocol: binary`.
    #[arg(long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// wss:// only: accept any server certificate (self-signed test gateways).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,

    /// wss:// only: trust only the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PEM_FILE")]
    pub ca: Option<PathBuf>,

    /// wss:// only: no TLS session resumption, so every session makes a full handshake (as separate
    /// `portcullis connect` processes do). By default sessions of a run resume earlier ones when the
    /// server issues tickets.
    #[arg(long)]
    pub no_tls_resume: bool,

    /// Spread sessions over this many loopback source addresses 127.0.0.1, 127.0.0.2, ... so that
    /// ephemeral ports do not run out (loopback URLs only).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_000))]
    pub source_addrs: Option<u32>,

    /// Timeout for each step of opening a session (TCP, TLS, upgrade).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub open_timeout: humantime::Duration,
}

/// How the run itself behaves and reports.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Tokio worker threads for the load generator (leave the other cores to the gateway).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub workers: usize,

    /// Write the results as JSON to FILE, or to stdout with `-` (the summary line then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run: RunArgs,

    /// Concurrent sessions.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions: u32,

    /// How long to measure, once all sessions are open.
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s")]
    pub duration: humantime::Duration,

    /// What the sessions send: `up` streams data to the target (use a sink or echo target), `none`
    /// only reads (use a source target).
    #[arg(long, value_enum, default_value_t = Send::Up)]
    pub send: Send,

    /// Bytes of payload per write: one WebSocket frame (RD Gateway: one DATA packet in one frame,
    /// split at 65,535 bytes). The default, 16 KiB less the 8-byte masked header (and less the
    /// 10-byte DATA header with --rd-gateway), makes each frame exactly one full TLS record, as
    /// `portcullis connect` sends them; 16384 would cost a second, 8-byte record per frame.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024).map(|v| v as usize))]
    pub frame_size: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    Up,
    None,
}

#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run: RunArgs,

    /// Concurrent sessions; the rate is spread evenly over them.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions: u32,

    /// Total messages per second over all sessions (each session sends at rate/sessions).
    #[arg(long, short = 'r', value_name = "MSG_PER_S", default_value_t = 1000.0, value_parser = positive_f64)]
    pub rate: f64,

    /// Message size in bytes (at least 8: a sequence number checks the echo's order).
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=1024 * 1024).map(|v| v as usize))]
    pub size: usize,

    /// How long to send, once all sessions are open.
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s")]
    pub duration: humantime::Duration,

    /// After sending stops, how long to wait for the last echoes; later ones count as lost.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub drain: humantime::Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run: RunArgs,

    /// Concurrent connect loops (sessions in flight).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sessions: u32,

    /// How long to keep opening sessions.
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s")]
    pub duration: humantime::Duration,

    /// After the upgrade, send 16 bytes and wait for their echo (needs an echo target); times the
    /// first round trip, which includes the target connect of bridges that connect lazily.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run: RunArgs,

    /// Sessions to open and hold.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub sessions: u32,

    /// Sessions being opened at the same time.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// How long to hold the sessions once all are open, before measuring memory again.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub hold: humantime::Duration,

    /// The gateway's process id: its VmRSS (/proc/PID/status) is read before and after.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct SshArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run: RunArgs,

    /// Sessions in flight at the same time (concurrent loops).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Run exactly this many sessions (completed or failed), then stop; without it the run lasts
    /// --duration.
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub sessions: Option<u64>,

    /// How long to keep starting sessions (when --sessions is not given).
    #[arg(
        long,
        short = 'd',
        value_name = "DURATION",
        default_value = "10s",
        conflicts_with = "sessions"
    )]
    pub duration: humantime::Duration,

    /// SSH user name to log in as.
    #[arg(long, value_name = "NAME")]
    pub ssh_user: String,

    /// Private key to authenticate with (OpenSSH or PEM format, unencrypted).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: PathBuf,

    /// The server's host key (a public key file, `ssh-ed25519 AAAA… [comment]`): any other key is
    /// refused. Without it any host key is accepted, and the results say so.
    #[arg(long, value_name = "FILE")]
    pub known_host_key: Option<PathBuf>,

    /// Command each session runs; its exit status must be 0.
    #[arg(long, value_name = "COMMAND", default_value = "true")]
    pub command: String,

    /// Time limit of each SSH step (handshake, authentication, channel open, command, close).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: humantime::Duration,
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// echo: send back what arrives; sink: discard it; source: send data without end.
    #[arg(long, value_enum, default_value_t = TargetMode::Echo)]
    pub mode: TargetMode,

    /// Tokio worker threads.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub workers: usize,
}

#[derive(Args, Debug, Clone)]
pub struct CryptoFloorArgs {
    /// How long to measure (after a 0.2 s warm-up).
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "3s")]
    pub duration: humantime::Duration,

    /// The AEAD: aes128 (AES-128-GCM, the gateway's choice) or aes256 (AES-256-GCM).
    #[arg(long, value_enum, default_value_t = FloorCipher::Aes128)]
    pub cipher: FloorCipher,

    /// Plaintext bytes per record (16384: a full TLS record).
    #[arg(long, value_name = "BYTES", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1024 * 1024).map(|v| v as usize))]
    pub record_size: usize,

    /// Write the results as JSON to FILE, or to stdout with `-` (the summary line then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorCipher {
    Aes128,
    Aes256,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetMode {
    Echo,
    Sink,
    Source,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number, got {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("portcullis-loadgen").chain(args.iter().copied()))
    }

    fn parse_checked(args: &[&str]) -> Result<Cli, clap::Error> {
        let cli = parse(args)?;
        cli.check()?;
        Ok(cli)
    }

    #[test]
    fn auth_is_one_of_three() {
        assert!(parse(&["latency", "wss://x", "--target", "t", "--token", "a", "--no-auth"]).is_err());
        assert!(parse(&["latency", "wss://x", "--target", "t", "--token-key", "k"]).is_err()); // needs --user
        assert!(parse(&["latency", "wss://x", "--user", "u"]).is_err()); // needs --token-key
        assert!(parse_checked(&["latency", "wss://x", "--target", "t", "--token-key", "k", "--user", "u"]).is_ok());
        assert!(parse_checked(&["latency", "ws://x", "--no-auth", "--path", "/"]).is_ok());
        let e = parse_checked(&["latency", "ws://x", "--path", "/"]).unwrap_err(); // no auth choice at all
        assert!(e.to_string().contains("--no-auth"), "{e}");
    }

    #[test]
    fn direct_path_takes_no_token_tls_or_headers() {
        assert!(parse_checked(&["throughput", "tcp://127.0.0.1:9000"]).is_ok());
        assert!(parse_checked(&["connect", "tcp://127.0.0.1:9000", "--no-auth", "--probe"]).is_ok());
        for extra in [
            &["--token", "t"][..],
            &["--token-key", "k", "--user", "u", "--target", "t"],
            &["--insecure"],
            &["--ca", "ca.pem"],
            &["--header", "X: y"],
        ] {
            let mut a = vec!["latency", "tcp://127.0.0.1:9000"];
            a.extend_from_slice(extra);
            let e = parse_checked(&a).unwrap_err();
            assert!(e.to_string().contains("direct path"), "{a:?}: {e}");
        }
    }

    #[test]
    fn peers_are_one_auth_choice() {
        let dg = [
            "connect",
            "wss://x",
            "--devolutions-key",
            "k.pem",
            "--devolutions-dst",
            "127.0.0.1:9",
        ];
        assert!(parse_checked(&dg).is_ok());
        assert!(parse(&dg[..4]).is_err(), "--devolutions-key needs --devolutions-dst");
        assert!(parse(&["connect", "wss://x", "--devolutions-dst", "h:1"]).is_err());
        let wst = ["idle", "wss://x", "--wstunnel-dst", "127.0.0.1:9"];
        assert!(parse_checked(&wst).is_ok());
        for extra in [
            &["--no-auth"][..],
            &["--token", "t"],
            &["--path", "/"],
            &["--rd-gateway"],
        ] {
            let mut a = dg.to_vec();
            a.extend_from_slice(extra);
            assert!(parse_checked(&a).is_err(), "{a:?}");
            let mut a = wst.to_vec();
            a.extend_from_slice(extra);
            assert!(parse_checked(&a).is_err(), "{a:?}");
        }
        let mut both = dg.to_vec();
        both.extend(["--wstunnel-dst", "h:1"]);
        assert!(parse(&both).is_err());
        let e = parse_checked(&["connect", "tcp://127.0.0.1:9", "--wstunnel-dst", "h:1"]).unwrap_err();
        assert!(e.to_string().contains("direct path"), "{e}");
    }

    #[test]
    fn crypto_floor_takes_its_own_arguments() {
        let cli = parse_checked(&["crypto-floor", "-d", "1s", "--json", "-"]).unwrap();
        let Command::CryptoFloor(a) = &cli.command else {
            panic!("not crypto-floor")
        };
        assert_eq!((a.record_size, a.cipher), (16384, FloorCipher::Aes128));
        assert!(parse(&["crypto-floor", "--cipher", "aes256"]).is_ok());
        assert!(cli.command.run_args().is_none());
        assert!(parse(&["crypto-floor", "--record-size", "0"]).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        assert!(parse(&["latency", "ws://x", "--no-auth", "--size", "4"]).is_err());
        assert!(parse(&["latency", "ws://x", "--no-auth", "--rate", "0"]).is_err());
        assert!(parse(&["latency", "ws://x", "--no-auth", "--rate", "-3"]).is_err());
        assert!(parse(&["throughput", "ws://x", "--no-auth", "--sessions", "0"]).is_err());
        assert!(parse(&["throughput", "ws://x", "--no-auth", "--workers", "0"]).is_err());
        assert!(parse(&["throughput", "ws://x", "--no-auth", "--duration", "5 parsecs"]).is_err());
        let cli = parse(&["throughput", "ws://x", "--no-auth", "--workers", "3", "-d", "500ms"]).unwrap();
        assert_eq!(cli.command.workers(), 3);
    }

    #[test]
    fn ssh_needs_user_and_key_and_one_stop_rule() {
        let base = ["ssh", "tcp://127.0.0.1:22", "--ssh-user", "u", "--ssh-key", "k"];
        let cli = parse_checked(&base).unwrap();
        let Command::Ssh(a) = cli.command else {
            panic!("not ssh")
        };
        assert_eq!((a.concurrency, a.sessions, a.command.as_str()), (4, None, "true"));
        assert!(parse(&base[..4]).is_err()); // no --ssh-key
        assert!(parse(&["ssh", "tcp://127.0.0.1:22", "--ssh-key", "k"]).is_err()); // no --ssh-user
        let mut both = base.to_vec();
        both.extend(["-n", "5", "-d", "1s"]);
        assert!(parse(&both).is_err(), "--sessions and --duration conflict");
        let mut zero = base.to_vec();
        zero.extend(["-c", "0"]);
        assert!(parse(&zero).is_err());
        let e = parse_checked(&["ssh", "wss://x", "--ssh-user", "u", "--ssh-key", "k", "--target", "t"]).unwrap_err();
        assert!(e.to_string().contains("--no-auth"), "{e}");
    }
}
