//! Real RDP peers for end-to-end tests, all from Debian packages: an Xvfb display, xrdp with
//! xorgxrdp (TLS security, PAM password check in xrdp-sesman), freerdp-shadow-cli (NLA with a SAM
//! file), and the FreeRDP client (xfreerdp). Self-contained (no dependency on `common`), so any
//! test file can `mod rdp_peers;`.
//!
//! Packages: xrdp xorgxrdp freerdp2-x11 freerdp2-shadow-x11 winpr-utils xvfb x11-utils openssl.
//!
//! Every process is started in its own process group with a bounded readiness wait, and is ended
//! by a Drop guard: SIGTERM to it and every descendant (by pid, found through /proc), SIGKILL to
//! whatever is left after a grace period.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------------------------

/// A free loopback port: bind to 0 and release.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `ready` every 50 ms until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` (stdin closed, output captured) in its own process group; after `limit` the group
/// is killed and the test panics.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            terminate(&mut child, Duration::ZERO);
            panic!(
                "timed out after {limit:?}: {what}\nstderr:\n{}",
                text(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A leftover process of the group may hold the pipes open: bound that too.
    let grace = Instant::now() + Duration::from_secs(5);
    while !(out.is_finished() && err.is_finished()) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !(out.is_finished() && err.is_finished()) {
        kill_pgrp(child.id());
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn kill_pgrp(pgid: u32) {
    // SAFETY: plain syscall on a process group this test created (`process_group(0)`).
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall on a pid this test started (directly or as a descendant).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `(state, ppid)` of a live process, from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// `root` and all its descendants (parents before children).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((_, ppid)) = proc_stat(pid) {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Ends `child` and every process it started: SIGTERM to the whole tree (so an X server removes
/// its lock file and socket), SIGKILL to whatever still lives after `grace`, then reaps `child`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let tree = process_tree(child.id());
    for &pid in tree.iter().rev() {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        let direct_done = child.try_wait().ok().flatten().is_some();
        if direct_done && !tree.iter().skip(1).any(|&p| alive(p)) {
            break;
        }
        if Instant::now() >= deadline {
            for &pid in tree.iter().chain(process_tree(child.id()).iter()) {
                if alive(pid) {
                    signal(pid, libc::SIGKILL);
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// True when something LISTENs on TCP `port` (IPv4 or IPv6), from /proc/net/tcp{,6}: readiness
/// without a probe connection (a probe would be a session of its own for the server).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
        })
    })
}

/// Spawns `cmd` in its own process group with stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"))
}

fn read_log(p: &Path) -> String {
    text(&std::fs::read(p).unwrap_or_default())
}

/// A random alphanumeric string (passwords, markers).
pub fn random_string(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn tempdir_0755() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("portcullis-rdp-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Xvfb
// ---------------------------------------------------------------------------------------------

/// A virtual X display. The server picks a free display number itself (`-displayfd`), so tests
/// running in parallel never fight over one.
pub struct Xvfb {
    child: Child,
    pub display: u32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

impl Xvfb {
    /// Starts Xvfb on the first free display from :100 on. The display is chosen here rather than
    /// with `-displayfd`: parallel tests racing for the same number then fail fast (Xvfb refuses
    /// a display whose lock file exists) and move on, instead of sharing one server.
    pub fn start() -> Xvfb {
        let mut last_log = String::new();
        for display in 100..300u32 {
            if Path::new(&format!("/tmp/.X{display}-lock")).exists() {
                continue;
            }
            let dir = tempfile::Builder::new().prefix("portcullis-xvfb-").tempdir().unwrap();
            let log = dir.path().join("xvfb.log");
            let child = Command::new(XVFB)
                .arg(format!(":{display}"))
                .args(["-nolisten", "tcp", "-screen", "0", "1024x768x24"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {XVFB} (package xvfb): {e}"));
            let mut xvfb = Xvfb {
                child,
                display,
                log,
                _dir: dir,
            };
            let answered = wait_until(Duration::from_secs(20), || {
                xvfb.child.try_wait().ok().flatten().is_some()
                    || run_bounded(
                        Command::new(XDPYINFO).args(["-display", &xvfb.name()]),
                        Duration::from_secs(10),
                    )
                    .status
                    .success()
            });
            if answered && xvfb.child.try_wait().ok().flatten().is_none() {
                return xvfb;
            }
            // Lost the race for this display, or it did not come up: try the next one.
            last_log = read_log(&xvfb.log);
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
/// it reads from /etc/xrdp/sesman.ini (compiled-in path), so only one sesman can serve at a time.
struct XrdpLock(std::fs::File);

impl XrdpLock {
    fn acquire(limit: Duration) -> XrdpLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/portcullis-xrdp-tests.lock")
            .unwrap();
        let got = wait_until(limit, || {
            // SAFETY: flock on a descriptor we own; released when the File closes (on drop).
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        });
        assert!(
            got,
            "another xrdp test held /tmp/portcullis-xrdp-tests.lock for {limit:?}"
        );
        XrdpLock(file)
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
        } else if in_section && !t.starts_with('#') && !t.starts_with(';') {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().eq_ignore_ascii_case(key) {
                    lines[i] = format!("{key}={value}");
                    return lines.join("\n") + "\n";
                }
            }
        }
    }
    match (in_section, section_end) {
        (_, Some(end)) => lines.insert(end, format!("{key}={value}")),
        (true, None) => lines.push(format!("{key}={value}")),
        (false, None) => {
            lines.push(header);
            lines.push(format!("{key}={value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// `key` in `[section]` of an ini text.
pub fn ini_get(ini: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in ini.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.eq_ignore_ascii_case(&format!("[{section}]"));
        } else if in_section {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim().eq_ignore_ascii_case(key) {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

/// Creates [`XRDP_USER`] if absent and gives it `password`.
fn ensure_user(password: &str) {
    let exists = run_bounded(Command::new("id").args(["-u", XRDP_USER]), Duration::from_secs(10))
        .status
        .success();
    if !exists {
        let out = run_bounded(
            Command::new("useradd").args(["-m", "-s", "/bin/sh", XRDP_USER]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "useradd {XRDP_USER} failed: {}",
            text(&out.stderr)
        );
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run chpasswd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{XRDP_USER}:{password}\n").as_bytes())
        .unwrap();
    let status = wait_status(&mut child, Duration::from_secs(30));
    assert!(status.success(), "chpasswd for {XRDP_USER} failed");
}

fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            terminate(child, Duration::ZERO);
            panic!("process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sesman port xrdp dials: `[Globals] ListenPort` of /etc/xrdp/sesman.ini, default 3350.
pub fn system_sesman_port() -> u16 {
    let ini = std::fs::read_to_string("/etc/xrdp/sesman.ini").unwrap_or_default();
    ini_get(&ini, "Globals", "ListenPort")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3350)
}

/// xrdp (TLS security only, its own port, certificate and logs) and xrdp-sesman (PAM) with
/// xorgxrdp sessions whose "window manager" just sleeps. Holds the xrdp lock while alive.
pub struct Xrdp {
    xrdp: Child,
    sesman: Child,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    xrdp_log: PathBuf,
    sesman_log: PathBuf,
    _lock: XrdpLock,
}

impl Drop for Xrdp {
    fn drop(&mut self) {
        // xrdp first (its per-connection children), then sesman and its sessions (Xorg, chansrv,
        // the window manager), each whole tree by pid.
        terminate(&mut self.xrdp, Duration::from_secs(5));
        terminate(&mut self.sesman, Duration::from_secs(5));
        // Nobody knows the password any more, but lock the account anyway.
        let _ = run_bounded(Command::new("usermod").args(["-L", XRDP_USER]), Duration::from_secs(20));
    }
}

impl Xrdp {
    pub fn start() -> Xrdp {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            uid, 0,
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

        let password = format!("Pw-{}", random_string(20));
        ensure_user(&password);

        // 0755: the session's window manager script runs as the test user.
        let dir = tempdir_0755();
        let d = dir.path();
        let cert = d.join("cert.pem");
        let key = d.join("key.pem");
        let out = run_bounded(
            Command::new(OPENSSL)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "openssl req failed: {}", text(&out.stderr));

        let wm = d.join("wm.sh");
        std::fs::write(
            &wm,
            "#!/bin/sh\n# portcullis test session: keep the X session up\nexec sleep 600\n",
        )
        .unwrap();
        std::fs::set_permissions(&wm, std::fs::Permissions::from_mode(0o755)).unwrap();

        let port = free_port();
        let xrdp_log = d.join("xrdp.log");
        let sesman_log = d.join("xrdp-sesman.log");

        let mut ini = std::fs::read_to_string("/etc/xrdp/xrdp.ini").expect("/etc/xrdp/xrdp.ini (package xrdp)");
        for (section, k, v) in [
            ("Globals", "port", format!("tcp://127.0.0.1:{port}")),
            ("Globals", "security_layer", "tls".to_owned()),
            ("Globals", "certificate", cert.display().to_string()),
            ("Globals", "key_file", key.display().to_string()),
            ("Globals", "autorun", "Xorg".to_owned()),
            ("Logging", "LogFile", xrdp_log.display().to_string()),
            ("Logging", "LogLevel", "INFO".to_owned()),
            ("Logging", "EnableSyslog", "false".to_owned()),
        ] {
            ini = ini_set(&ini, section, k, &v);
        }
        // Never a listener on another address (the packaged default is 0.0.0.0:3389).
        assert_eq!(
            ini_get(&ini, "Globals", "port"),
            Some(format!("tcp://127.0.0.1:{port}")),
            "{ini}"
        );
        let xrdp_ini = d.join("xrdp.ini");
        std::fs::write(&xrdp_ini, ini).unwrap();

        let mut ini = std::fs::read_to_string("/etc/xrdp/sesman.ini").expect("/etc/xrdp/sesman.ini (package xrdp)");
        for (section, k, v) in [
            ("Globals", "ListenAddress", "127.0.0.1".to_owned()),
            ("Globals", "ListenPort", sesman_port.to_string()),
            ("Globals", "EnableUserWindowManager", "false".to_owned()),
            ("Globals", "DefaultWindowManager", wm.display().to_string()),
            ("Sessions", "KillDisconnected", "true".to_owned()),
            ("Logging", "LogFile", sesman_log.display().to_string()),
            ("Logging", "LogLevel", "INFO".to_owned()),
            ("Logging", "EnableSyslog", "false".to_owned()),
            ("ChansrvLogging", "EnableSyslog", "false".to_owned()),
        ] {
            ini = ini_set(&ini, section, k, &v);
        }
        let sesman_ini = d.join("sesman.ini");
        std::fs::write(&sesman_ini, ini).unwrap();

        let sesman = spawn_logged(
            Command::new(XRDP_SESMAN).arg("-n").arg("-c").arg(&sesman_ini),
            &d.join("sesman.out"),
        );
        let xrdp = spawn_logged(
            Command::new(XRDP).arg("-n").arg("-c").arg(&xrdp_ini),
            &d.join("xrdp.out"),
        );
        let mut x = Xrdp {
            xrdp,
            sesman,
            port,
            user: XRDP_USER.to_owned(),
            password,
            dir,
            xrdp_log,
            sesman_log,
            _lock: lock,
        };
        // sesman logs nothing once it listens: watch its socket. xrdp says so in its log.
        let want = format!("listening to port {port} on 127.0.0.1");
        let ready = wait_until(Duration::from_secs(20), || {
            let exited = x.sesman.try_wait().ok().flatten().is_some() || x.xrdp.try_wait().ok().flatten().is_some();
            exited || (listening(sesman_port) && x.xrdp_log().contains(&want) && listening(port))
        });
        let exited = x.sesman.try_wait().ok().flatten().is_some() || x.xrdp.try_wait().ok().flatten().is_some();
        if !ready || exited {
            panic!(
                "xrdp/sesman did not start (ready: {ready}, one exited: {exited})\n{}",
                x.diagnostics()
            );
        }
        x
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn xrdp_log(&self) -> String {
        read_log(&self.xrdp_log)
    }

    pub fn sesman_log(&self) -> String {
        read_log(&self.sesman_log)
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

// ---------------------------------------------------------------------------------------------
// freerdp-shadow-cli
// ---------------------------------------------------------------------------------------------

/// freerdp-shadow-cli sharing its own Xvfb display, NLA only, one SAM account.
pub struct ShadowServer {
    child: Child,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    pub xvfb: Xvfb,
}

impl Drop for ShadowServer {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

impl ShadowServer {
    pub fn start(user: &str, password: &str) -> ShadowServer {
        let xvfb = Xvfb::start();
        let dir = tempfile::Builder::new().prefix("portcullis-shadow-").tempdir().unwrap();
        let d = dir.path();
        // `winpr-hash -f sam` prints one SAM line: "user:::NTHASH:::" (empty domain and LM hash).
        let out = run_bounded(
            Command::new(WINPR_HASH).args(["-u", user, "-p", password, "-f", "sam"]),
            Duration::from_secs(20),
        );
        let line = text(&out.stdout);
        assert!(
            out.status.success() && line.starts_with(&format!("{user}:::")) && line.trim_end().ends_with(":::"),
            "winpr-hash gave an unexpected SAM line ({}): {line:?} {}",
            out.status,
            text(&out.stderr)
        );
        let sam = d.join("sam");
        std::fs::write(&sam, line.trim_end().to_owned() + "\n").unwrap();

        let log = d.join("shadow.log");
        // Now and then freerdp-shadow-cli fails its first XOpenDisplay on a display that
        // xdpyinfo has just answered on; it exits at once, so a second attempt is cheap.
        let mut attempt = 0;
        let (child, port) = loop {
            attempt += 1;
            let port = free_port();
            // HOME: the server writes its generated certificate under ~/.config/freerdp/server.
            let mut child = spawn_logged(
                Command::new(SHADOW)
                    .arg("/bind-address:127.0.0.1")
                    .arg(format!("/port:{port}"))
                    .arg("+auth")
                    .arg("/sec:nla")
                    .arg(format!("/sam-file:{}", sam.display()))
                    .env("DISPLAY", xvfb.name())
                    .env("HOME", d)
                    .env_remove("XDG_CONFIG_HOME"),
                &log,
            );
            // It logs nothing when it listens: watch its socket.
            wait_until(Duration::from_secs(20), || {
                child.try_wait().ok().flatten().is_some() || listening(port)
            });
            match child.try_wait().ok().flatten() {
                None => break (child, port),
                Some(status) if attempt < 3 && read_log(&log).contains("failed to open display") => {
                    eprintln!("freerdp-shadow-cli exited with {status} (display not ready); retrying");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Some(status) => panic!("freerdp-shadow-cli exited with {status}:\n{}", read_log(&log)),
            }
        };
        let s = ShadowServer {
            child,
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            dir,
            log,
            xvfb,
        };
        let ready = listening(port);
        assert!(
            ready,
            "freerdp-shadow-cli did not listen on {port} within 20 s:\n{}",
            s.log_text()
        );
        s
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
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
}

impl FreeRdp {
    pub fn new(xvfb: &Xvfb) -> FreeRdp {
        FreeRdp {
            display: xvfb.name(),
            home: tempfile::Builder::new()
                .prefix("portcullis-xfreerdp-")
                .tempdir()
                .unwrap(),
        }
    }

    fn command(&self, port: u16, user: &str, password: &str) -> Command {
        // xfreerdp logs with stdio: line-buffer it, else a running client's log sits in a buffer.
        let mut cmd = Command::new(STDBUF);
        cmd.args(["-oL", "-eL", XFREERDP])
            .arg(format!("/v:127.0.0.1:{port}"))
            .arg(format!("/u:{user}"))
            .arg(format!("/p:{password}"))
            .arg("/cert-ignore")
            .arg("/timeout:20000")
            .arg("-grab-keyboard")
            .arg("/size:1024x768")
            .env("DISPLAY", &self.display)
            .env("HOME", self.home.path())
            .env("WLOG_FILTER", CLIENT_LOG_FILTER)
            .env_remove("XDG_CONFIG_HOME");
        cmd
    }

    /// `xfreerdp +auth-only`: connects, authenticates, exits (0 on success).
    pub fn auth_only(&self, port: u16, user: &str, password: &str, limit: Duration) -> Output {
        run_bounded(self.command(port, user, password).arg("+auth-only"), limit)
    }

    /// A full session that runs until stopped (or dropped).
    pub fn session(&self, port: u16, user: &str, password: &str) -> ClientSession {
        let log = self.home.path().join(format!("xfreerdp-{}.log", random_string(6)));
        let child = spawn_logged(&mut self.command(port, user, password), &log);
        ClientSession { child, log }
    }
}

pub struct ClientSession {
    child: Child,
    log: PathBuf,
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

impl ClientSession {
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// The exit status if it ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Ends the client (SIGTERM, then SIGKILL after 3 s): its TCP connection closes.
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}
