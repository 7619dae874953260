//! Real RDP peers, all from Debian packages (xrdp xorgxrdp freerdp2-x11 freerdp2-shadow-x11
//! winpr-utils xvfb x11-utils openssl): an Xvfb display, xrdp with xorgxrdp (TLS security, the
//! password checked by xrdp-sesman with PAM), freerdp-shadow-cli (NLA against a SAM file), and
//! the FreeRDP client (xfreerdp).
//!
//! Every process starts in its own process group with a bounded readiness wait, and is ended by
//! a guard: SIGTERM to it and every descendant, SIGKILL to whatever is left after a grace period.

use crate::process::{self, read_log, run_bounded, run_bounded_fed, spawn_logged, wait_until, ChildGuard};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

pub const XVFB: &str = "/usr/bin/Xvfb";
pub const XDPYINFO: &str = "/usr/bin/xdpyinfo";
pub const XRDP: &str = "/usr/sbin/xrdp";
pub const XRDP_SESMAN: &str = "/usr/sbin/xrdp-sesman";
pub const XFREERDP: &str = "/usr/bin/xfreerdp";
pub const SHADOW: &str = "/usr/bin/freerdp-shadow-cli";
pub const WINPR_HASH: &str = "/usr/bin/winpr-hash";
pub const OPENSSL: &str = "/usr/bin/openssl";
pub const STDBUF: &str = "/usr/bin/stdbuf";

/// The local Unix account xrdp's PAM check runs against (created on first use, root only).
pub const XRDP_USER: &str = "portcullis-rdp";

pub use crate::ports::listening;

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

// ---------------------------------------------------------------------------------------------
// Xvfb
// ---------------------------------------------------------------------------------------------

/// A virtual X display of its own.
pub struct Xvfb {
    _process: ChildGuard,
    pub display: u32,
    _dir: tempfile::TempDir,
}

/// The pid in the lock file of display `display` (the X server that holds it).
fn display_owner(display: u32) -> Option<u32> {
    let lock = std::fs::read_to_string(format!("/tmp/.X{display}-lock")).ok()?;
    lock.trim().parse().ok()
}

impl Xvfb {
    /// Starts Xvfb on the first free display from :100 on. Parallel tests may race for the same
    /// number: the X server's lock file decides, and a display counts as ours only when its lock
    /// names our server (the loser exits, or is ended, and we move on). Without that check the
    /// loser's test would use the winner's server and lose its display when the winner's test
    /// ends ("X connection to :100 broken").
    pub fn start() -> Xvfb {
        let mut last_log = String::new();
        for display in 100..300u32 {
            if Path::new(&format!("/tmp/.X{display}-lock")).exists() {
                continue;
            }
            let dir = tempdir("portcullis-xvfb-");
            let log = dir.path().join("xvfb.log");
            let child = spawn_logged(
                Command::new(XVFB)
                    .arg(format!(":{display}"))
                    // -noreset: by default the server resets when its last client leaves, and
                    // a client connecting during that reset (freerdp-shadow-cli right after
                    // xdpyinfo's check) fails with "failed to open display".
                    .args(["-nolisten", "tcp", "-noreset", "-screen", "0", "1024x768x24"]),
                &log,
            );
            let mut process = ChildGuard::new(child, Duration::from_secs(3));
            let (name, pid) = (format!(":{display}"), process.id());
            let ours = || display_owner(display) == Some(pid);
            // Nothing to wait on: ask our display until it answers (or the server gave up).
            let answers = || {
                let mut xdpyinfo = Command::new(XDPYINFO);
                xdpyinfo.args(["-display", &name]);
                run_bounded(&mut xdpyinfo, Duration::from_secs(10)).status.success()
            };
            let answered = wait_until(Duration::from_secs(20), || {
                process.exited().is_some() || (ours() && answers())
            });
            if answered && process.exited().is_none() && ours() {
                return Xvfb {
                    _process: process,
                    display,
                    _dir: dir,
                };
            }
            // Lost the race for this display, or it did not come up: try the next one.
            last_log = read_log(&log);
        }
        panic!("no free X display between :100 and :299:\n{last_log}");
    }

    /// `:N`, for DISPLAY.
    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }
}

// ---------------------------------------------------------------------------------------------
// xrdp + xrdp-sesman
// ---------------------------------------------------------------------------------------------

/// Serializes xrdp instances across threads and processes: xrdp 0.9 always dials the sesman port
/// it reads from /etc/xrdp/sesman.ini (a compiled-in path), so only one sesman can serve at a time.
struct XrdpLock {
    _file: std::fs::File,
}

impl XrdpLock {
    fn acquire(limit: Duration) -> XrdpLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/portcullis-xrdp-tests.lock")
            .expect("xrdp test lock file");
        // flock has no timed wait: try until `limit`. Released when the file closes (on drop).
        let got = wait_until(limit, || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
        });
        assert!(
            got,
            "another xrdp test held /tmp/portcullis-xrdp-tests.lock for {limit:?}"
        );
        XrdpLock { _file: file }
    }
}

/// Sets `key=value` in `[section]` of an xrdp-style ini text: replaces the active line of that
/// key (comments are left alone), else appends the line to the section (or a new section).
pub fn ini_set(ini: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut lines: Vec<String> = ini.lines().map(str::to_owned).collect();
    let mut in_section = false;
    let mut section_end = None;
    for i in 0..lines.len() {
        let t = lines[i].trim().to_owned();
        if t.starts_with('[') {
            if in_section {
                section_end = Some(i);
                break;
            }
            in_section = t.eq_ignore_ascii_case(&header);
        } else if in_section && ini_key(&t).is_some_and(|k| k.eq_ignore_ascii_case(key)) {
            lines[i] = format!("{key}={value}");
            return lines.join("\n") + "\n";
        }
    }
    match (in_section, section_end) {
        (_, Some(end)) => lines.insert(end, format!("{key}={value}")),
        (true, None) => lines.push(format!("{key}={value}")),
        (false, None) => lines.extend([header, format!("{key}={value}")]),
    }
    lines.join("\n") + "\n"
}

/// The key of an active `key=value` line (not a comment).
fn ini_key(line: &str) -> Option<&str> {
    let active = !line.starts_with('#') && !line.starts_with(';');
    active.then(|| line.split_once('=')).flatten().map(|(k, _)| k.trim())
}

/// `key` in `[section]` of an ini text.
pub fn ini_get(ini: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in ini.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line.eq_ignore_ascii_case(&format!("[{section}]"));
        } else if in_section && ini_key(line).is_some_and(|k| k.eq_ignore_ascii_case(key)) {
            return line.split_once('=').map(|(_, v)| v.trim().to_owned());
        }
    }
    None
}

/// Sets every `(section, key, value)` in the ini file at `from`; returns the text.
fn ini_edit(from: &str, edits: &[(&str, &str, String)]) -> String {
    let ini = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("{from} (package xrdp): {e}"));
    edits
        .iter()
        .fold(ini, |ini, (section, k, v)| ini_set(&ini, section, k, v))
}

/// Creates [`XRDP_USER`] if absent and gives it `password`.
fn ensure_user(password: &str) {
    let exists = run_bounded(Command::new("id").args(["-u", XRDP_USER]), Duration::from_secs(10)).status;
    if !exists.success() {
        let out = run_bounded(
            Command::new("useradd").args(["-m", "-s", "/bin/sh", XRDP_USER]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "useradd {XRDP_USER} failed: {}",
            crate::text(&out.stderr)
        );
    }
    let line = format!("{XRDP_USER}:{password}\n");
    let out = run_bounded_fed(
        &mut Command::new("chpasswd"),
        Duration::from_secs(30),
        move |mut stdin| {
            use std::io::Write;
            let _ = stdin.write_all(line.as_bytes());
        },
    );
    assert!(
        out.status.success(),
        "chpasswd for {XRDP_USER} failed: {}",
        crate::text(&out.stderr)
    );
}

/// The sesman port xrdp dials: `[Globals] ListenPort` of /etc/xrdp/sesman.ini, default 3350.
pub fn system_sesman_port() -> u16 {
    let ini = std::fs::read_to_string("/etc/xrdp/sesman.ini").unwrap_or_default();
    ini_get(&ini, "Globals", "ListenPort")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3350)
}

/// xrdp (TLS security only, its own port, certificate and logs) and xrdp-sesman (PAM) with
/// xorgxrdp sessions whose "window manager" (`wm.sh` in `dir`) just sleeps. Holds the xrdp lock
/// while alive.
pub struct Xrdp {
    // xrdp first (its per-connection children), then sesman and its sessions (Xorg, chansrv,
    // the window manager): fields drop in this order.
    _xrdp: ChildGuard,
    _sesman: ChildGuard,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    _lock: XrdpLock,
}

impl Drop for Xrdp {
    fn drop(&mut self) {
        // Nobody knows the password any more, but lock the account anyway.
        let _ = run_bounded(Command::new("usermod").args(["-L", XRDP_USER]), Duration::from_secs(20));
    }
}

impl Xrdp {
    pub fn start() -> Xrdp {
        Xrdp::start_logging("INFO")
    }

    /// xrdp with its log at DEBUG: then it logs every static channel a client asks for
    /// (`Adding channel: name cliprdr, channel id 1004, flags 0x00800000`; see [`channels_asked`]).
    pub fn start_debug() -> Xrdp {
        Xrdp::start_logging("DEBUG")
    }

    fn start_logging(level: &str) -> Xrdp {
        assert!(
            rustix::process::geteuid().is_root(),
            "xrdp tests need root: xrdp-sesman checks passwords with PAM and starts sessions as {XRDP_USER}"
        );
        let lock = XrdpLock::acquire(Duration::from_secs(600));
        let sesman_port = system_sesman_port();
        assert!(
            !listening(sesman_port),
            "port {sesman_port} (sesman's, from /etc/xrdp/sesman.ini) is already taken: is the system \
             xrdp-sesman service running? xrdp can only reach one sesman; stop it for these tests"
        );
        std::fs::create_dir_all("/run/xrdp/sockdir").unwrap();
        std::fs::set_permissions("/run/xrdp/sockdir", std::fs::Permissions::from_mode(0o3777)).unwrap();
        let password = format!("Pw-{}", process::random_string(20));
        ensure_user(&password);

        // 0755: the session's window manager script runs as the test user.
        let dir = tempdir("portcullis-rdp-");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        // A server certificate for 127.0.0.1 and localhost issued by a CA of its own (`ca.pem`),
        // as an enterprise would deploy: pinned by fingerprint, or checked against the CA.
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        issue_server_cert(d, &cert, &key);
        let wm = d.join("wm.sh");
        std::fs::write(
            &wm,
            "#!/bin/sh\n# portcullis test session: keep the X session up\nexec sleep 600\n",
        )
        .unwrap();
        std::fs::set_permissions(&wm, std::fs::Permissions::from_mode(0o755)).unwrap();

        let port = crate::free_port();
        let log = |name: &str| d.join(name).display().to_string();
        let xrdp_ini = ini_edit(
            "/etc/xrdp/xrdp.ini",
            &[
                ("Globals", "port", format!("tcp://127.0.0.1:{port}")),
                ("Globals", "security_layer", "tls".to_owned()),
                ("Globals", "certificate", cert.display().to_string()),
                ("Globals", "key_file", key.display().to_string()),
                ("Globals", "autorun", "Xorg".to_owned()),
                ("Logging", "LogFile", log("xrdp.log")),
                ("Logging", "LogLevel", level.to_owned()),
                ("Logging", "EnableSyslog", "false".to_owned()),
            ],
        );
        // Never a listener on another address (the packaged default is 0.0.0.0:3389).
        assert_eq!(
            ini_get(&xrdp_ini, "Globals", "port"),
            Some(format!("tcp://127.0.0.1:{port}")),
            "{xrdp_ini}"
        );
        let sesman_ini = ini_edit(
            "/etc/xrdp/sesman.ini",
            &[
                ("Globals", "ListenAddress", "127.0.0.1".to_owned()),
                ("Globals", "ListenPort", sesman_port.to_string()),
                ("Globals", "EnableUserWindowManager", "false".to_owned()),
                ("Globals", "DefaultWindowManager", wm.display().to_string()),
                ("Sessions", "KillDisconnected", "true".to_owned()),
                ("Logging", "LogFile", log("xrdp-sesman.log")),
                ("Logging", "LogLevel", "INFO".to_owned()),
                ("Logging", "EnableSyslog", "false".to_owned()),
                ("ChansrvLogging", "EnableSyslog", "false".to_owned()),
            ],
        );
        std::fs::write(d.join("xrdp.ini"), xrdp_ini).unwrap();
        std::fs::write(d.join("sesman.ini"), sesman_ini).unwrap();
        let start = |bin: &str, ini: &str, out: &str| {
            let child = spawn_logged(Command::new(bin).arg("-n").arg("-c").arg(d.join(ini)), &d.join(out));
            ChildGuard::new(child, Duration::from_secs(5))
        };
        let mut sesman = start(XRDP_SESMAN, "sesman.ini", "sesman.out");
        let mut xrdp = start(XRDP, "xrdp.ini", "xrdp.out");
        // sesman logs nothing once it listens: watch its socket. xrdp says so in its log.
        let (xrdp_log, want) = (d.join("xrdp.log"), format!("listening to port {port} on 127.0.0.1"));
        let ready = wait_until(Duration::from_secs(20), || {
            let exited = sesman.exited().is_some() || xrdp.exited().is_some();
            exited || (listening(sesman_port) && read_log(&xrdp_log).contains(&want) && listening(port))
        });
        let exited = sesman.exited().is_some() || xrdp.exited().is_some();
        let x = Xrdp {
            _xrdp: xrdp,
            _sesman: sesman,
            port,
            user: XRDP_USER.to_owned(),
            password,
            dir,
            _lock: lock,
        };
        assert!(
            ready && !exited,
            "xrdp/sesman did not start (ready: {ready}, one exited: {exited})\n{}",
            x.diagnostics()
        );
        x
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn xrdp_log(&self) -> String {
        read_log(&self.dir.path().join("xrdp.log"))
    }

    /// Bytes of xrdp's log so far: where the lines of the next connection start.
    pub fn xrdp_log_len(&self) -> usize {
        self.xrdp_log().len()
    }

    pub fn sesman_log(&self) -> String {
        read_log(&self.dir.path().join("xrdp-sesman.log"))
    }

    /// Everything the servers wrote, for failure messages.
    pub fn diagnostics(&self) -> String {
        let d = self.dir.path();
        format!(
            "--- xrdp.log\n{}\n--- xrdp-sesman.log\n{}\n--- xrdp stdout/stderr\n{}\n--- sesman stdout/stderr\n{}",
            self.xrdp_log(),
            self.sesman_log(),
            read_log(&d.join("xrdp.out")),
            read_log(&d.join("sesman.out"))
        )
    }
}

/// The static channels clients asked for, in order, as xrdp logs them at DEBUG
/// ([`Xrdp::start_debug`]).
pub fn channels_asked(xrdp_log: &str) -> Vec<String> {
    xrdp_log
        .lines()
        .filter_map(|l| {
            l.split_once("Adding channel: name ")?
                .1
                .split_once(',')
                .map(|(n, _)| n.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// freerdp-shadow-cli
// ---------------------------------------------------------------------------------------------

/// freerdp-shadow-cli sharing its own Xvfb display, NLA only, one SAM account.
pub struct ShadowServer {
    _process: ChildGuard,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    pub xvfb: Xvfb,
}

impl ShadowServer {
    pub fn start(user: &str, password: &str) -> ShadowServer {
        let xvfb = Xvfb::start();
        let dir = tempdir("portcullis-shadow-");
        let d = dir.path();
        // `winpr-hash -f sam` prints one SAM line: "user:::NTHASH:::" (empty domain and LM hash).
        let out = run_bounded(
            Command::new(WINPR_HASH).args(["-u", user, "-p", password, "-f", "sam"]),
            Duration::from_secs(20),
        );
        let line = crate::text(&out.stdout);
        assert!(
            out.status.success() && line.starts_with(&format!("{user}:::")) && line.trim_end().ends_with(":::"),
            "winpr-hash gave an unexpected SAM line ({}): {line:?} {}",
            out.status,
            crate::text(&out.stderr)
        );
        let sam = d.join("sam");
        std::fs::write(&sam, line.trim_end().to_owned() + "\n").unwrap();
        let log = d.join("shadow.log");
        // Now and then freerdp-shadow-cli fails its first XOpenDisplay on a display that
        // xdpyinfo has just answered on; it exits at once, so a second attempt is cheap.
        for attempt in 1..=3 {
            let port = crate::free_port();
            // HOME: the server writes its generated certificate under ~/.config/freerdp/server.
            let child = spawn_logged(
                Command::new(SHADOW)
                    .arg("/bind-address:127.0.0.1")
                    .arg(format!("/port:{port}"))
                    .args(["+auth", "/sec:nla"])
                    .arg(format!("/sam-file:{}", sam.display()))
                    .env("DISPLAY", xvfb.name())
                    .env("HOME", d)
                    .env_remove("XDG_CONFIG_HOME"),
                &log,
            );
            let mut process = ChildGuard::new(child, Duration::from_secs(3));
            // It logs nothing when it listens: watch its socket.
            wait_until(Duration::from_secs(20), || {
                process.exited().is_some() || listening(port)
            });
            match process.exited() {
                None => {
                    let text = read_log(&log);
                    assert!(
                        listening(port),
                        "freerdp-shadow-cli did not listen on {port} within 20 s:\n{text}"
                    );
                    return ShadowServer {
                        _process: process,
                        port,
                        user: user.to_owned(),
                        password: password.to_owned(),
                        dir,
                        xvfb,
                    };
                }
                Some(status) if attempt < 3 && read_log(&log).contains("failed to open display") => {
                    eprintln!("freerdp-shadow-cli exited with {status} (display not ready); retrying");
                }
                Some(status) => panic!("freerdp-shadow-cli exited with {status}:\n{}", read_log(&log)),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        read_log(&self.dir.path().join("shadow.log"))
    }
}

// ---------------------------------------------------------------------------------------------
// The FreeRDP client
// ---------------------------------------------------------------------------------------------

/// WLOG filter that makes xfreerdp log its negotiation and connection state machine (a few dozen
/// lines): `Negotiated TLS security`, `... --> CONNECTION_STATE_ACTIVE`. (The exact tag
/// `com.freerdp.core.connection:DEBUG` does not match in FreeRDP 2.11; the wildcard does.)
pub const CLIENT_LOG_FILTER: &str = "com.freerdp.core.*:DEBUG";

/// The line xfreerdp logs once the connection sequence is complete (a session is up).
pub const CLIENT_ACTIVE: &str = "--> CONNECTION_STATE_ACTIVE";

/// An xfreerdp client on an X display, with its own HOME (it writes ~/.config/freerdp).
pub struct FreeRdp {
    pub display: String,
    pub home: tempfile::TempDir,
    /// Arguments that make it go through an RD Gateway (see [`FreeRdp::via_gateway`]).
    gateway: Vec<String>,
    /// The server (`/v:`) when going through a gateway: a name or address it resolves.
    server: Option<String>,
    /// A `.rdp` file naming the server and the gateway instead (see [`FreeRdp::with_file`]).
    file: Option<PathBuf>,
}

/// How xfreerdp carries its RD Gateway tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayTransport {
    /// `/gt:http`: one WebSocket (FreeRDP's default for the HTTP transport).
    WebSocket,
    /// `/gt:http,no-websockets`: the RDG_OUT_DATA / RDG_IN_DATA pair.
    HttpPair,
}

impl FreeRdp {
    pub fn new(xvfb: &Xvfb) -> FreeRdp {
        FreeRdp {
            display: xvfb.name(),
            home: tempdir("portcullis-xfreerdp-"),
            gateway: Vec::new(),
            server: None,
            file: None,
        }
    }

    /// Connects as the `.rdp` file at `path` says (its server, its gateway and token).
    pub fn with_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_owned());
        self
    }

    /// Connects to `server` (`/v:`, a target's name or address) through the RD Gateway at
    /// 127.0.0.1:`gateway_port`, with `token` as the gateway access token (`None`: none given).
    pub fn via_gateway(
        mut self,
        gateway_port: u16,
        token: Option<&str>,
        transport: GatewayTransport,
        server: &str,
    ) -> Self {
        self.gateway = vec![format!("/g:127.0.0.1:{gateway_port}")];
        self.gateway.push(match transport {
            GatewayTransport::WebSocket => "/gt:http".into(),
            GatewayTransport::HttpPair => "/gt:http,no-websockets".into(),
        });
        if let Some(token) = token {
            self.gateway.push(format!("/gat:{token}"));
        }
        self.server = Some(server.to_owned());
        self
    }

    fn command(&self, port: u16, user: &str, password: &str) -> Command {
        // xfreerdp logs with stdio: line-buffer it, else a running client's log sits in a buffer.
        let server = self.server.clone().unwrap_or_else(|| format!("127.0.0.1:{port}"));
        let mut cmd = Command::new(STDBUF);
        cmd.args(["-oL", "-eL", XFREERDP]);
        match &self.file {
            Some(file) => cmd.arg(file),
            None => cmd.arg(format!("/v:{server}")),
        };
        cmd.args(&self.gateway)
            .arg(format!("/u:{user}"))
            .arg(format!("/p:{password}"))
            .args(["/cert-ignore", "/timeout:20000", "-grab-keyboard", "/size:1024x768"])
            .env("DISPLAY", &self.display)
            .env("HOME", self.home.path())
            .env("WLOG_FILTER", CLIENT_LOG_FILTER)
            .env_remove("XDG_CONFIG_HOME");
        cmd
    }

    /// `xfreerdp +auth-only`: connects, authenticates, exits (0 on success).
    pub fn auth_only(&self, port: u16, user: &str, password: &str, limit: Duration) -> Output {
        run_bounded(
            self.command(port, user, password)
                .arg("+auth-only")
                .stdin(Stdio::null()),
            limit,
        )
    }

    /// A full session that runs until stopped (or dropped); it keeps the client's HOME.
    pub fn session(self, port: u16, user: &str, password: &str) -> ClientSession {
        let log = self.home.path().join("xfreerdp.log");
        let child = spawn_logged(&mut self.command(port, user, password), &log);
        ClientSession {
            process: ChildGuard::new(child, Duration::from_secs(3)),
            log,
            _client: self,
        }
    }
}

/// A running xfreerdp session.
pub struct ClientSession {
    process: ChildGuard,
    log: PathBuf,
    _client: FreeRdp,
}

impl ClientSession {
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// The exit status if it ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// True when it is still running after `period` (it must not end on its own meanwhile).
    pub fn stays_up(&mut self, period: Duration) -> bool {
        self.process.wait_exit(period).is_none()
    }

    /// Ends the client (SIGTERM, then SIGKILL after 3 s): its TCP connection closes.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Writes `dir/ca.pem` (a CA) and the server certificate and key it issues (SANs `127.0.0.1`,
/// `localhost`) to `cert` and `key`.
fn issue_server_cert(dir: &Path, cert: &Path, key: &Path) {
    let openssl = |args: &[&str]| {
        let out = run_bounded(
            Command::new(OPENSSL).args(args).current_dir(dir),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            crate::text(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=portcullis test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        cert.to_str().unwrap(),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_editing_replaces_only_active_keys_of_the_section() {
        let ini = "[Globals]\n; port=tcp://:3389\nport=3389\n#hidelogwindow=true\n[Xorg]\nport=-1\n";
        let out = ini_set(ini, "Globals", "port", "tcp://127.0.0.1:5");
        assert_eq!(ini_get(&out, "Globals", "port").as_deref(), Some("tcp://127.0.0.1:5"));
        assert_eq!(ini_get(&out, "Xorg", "port").as_deref(), Some("-1"));
        assert!(out.contains("; port=tcp://:3389\n"), "{out}");
        let out = ini_set(&out, "Globals", "autorun", "Xorg");
        assert_eq!(ini_get(&out, "Globals", "autorun").as_deref(), Some("Xorg"));
        assert!(out.find("autorun=Xorg").unwrap() < out.find("[Xorg]").unwrap(), "{out}");
        let out = ini_set(&out, "Logging", "LogLevel", "INFO");
        assert_eq!(ini_get(&out, "Logging", "LogLevel").as_deref(), Some("INFO"));
    }
}
