//! Child processes that never outlive their test and never hang it: commands bounded in time and
//! run in their own process group (so ssh and its ProxyCommand, or node and its browser, end
//! together), guards that end a server and everything it started, and waits on events (a pidfd,
//! a pipe) with a deadline. Signals go through `rustix::process`.

use rustix::event::{PollFd, PollFlags};
use rustix::process::Pid;
pub use rustix::process::Signal;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a command's pipes may stay open after it exited (a lingering member of its group).
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Calls `condition` every 20 ms until it holds (true) or `limit` passes (false), for states that
/// announce themselves with no event: a log line, a file, a socket in /proc.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `fd` is readable (data or EOF) or `limit` passes; false on timeout.
pub fn readable_within(fd: impl AsFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = rustix::event::Timespec::try_from(left).expect("a representable timeout");
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => return true,
            Err(e) => panic!("poll failed: {e}"),
        }
    }
}

/// The child's exit status once it exits, or `None` if it still runs after `limit`. Waits on a
/// pidfd (readable when the process ends), not by polling.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    if let Some(status) = child.try_wait().expect("try_wait") {
        return Some(status);
    }
    let pidfd =
        rustix::process::pidfd_open(Pid::from_child(child), rustix::process::PidfdFlags::empty()).expect("pidfd_open");
    readable_within(&pidfd, limit);
    child.try_wait().expect("try_wait")
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// SIGKILL to the process group `pgid` (a child spawned with `process_group(0)` and whatever it
/// started); a group that is gone is not an error.
pub fn kill_group_of(pgid: u32) {
    if let Some(pgid) = Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    }
}

/// SIGKILL to the process group led by `child` (spawned with `process_group(0)`), then reaps it.
pub fn kill_group(child: &mut Child) {
    kill_group_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` (stdin closed, output captured) in its own process group. If it is not done after
/// `limit`, the whole group is killed and the test panics with its stderr.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    run_bounded_fed(cmd, limit, |_| {})
}

/// [`run_bounded`] with `feed` writing the command's stdin from a thread (the command may answer
/// before it has read everything); stdin closes when `feed` returns.
pub fn run_bounded_fed(cmd: &mut Command, limit: Duration, feed: impl FnOnce(ChildStdin) + Send + 'static) -> Output {
    let what = format!("{cmd:?}");
    let mut child = spawn_piped(cmd);
    let stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || feed(stdin));
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let Some(status) = wait_exit(&mut child, limit) else {
        kill_group(&mut child);
        let err = stderr.recv_timeout(PIPE_GRACE).unwrap_or_default();
        panic!("timed out after {limit:?}: {what}\nstderr:\n{}", crate::text(&err));
    };
    // A member of the group may still hold the pipes open (a lingering ProxyCommand): bound that.
    let mut collect = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(PIPE_GRACE).unwrap_or_else(|_| {
            kill_group(&mut child);
            rx.recv().unwrap_or_default()
        })
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// Spawns `cmd` in its own process group with stdin, stdout and stderr piped.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
}

/// Reads `pipe` to its end on a thread; the receiver gets everything once it closes.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// `(state, ppid)` of a process, from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..."; comm may contain spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// `root` and all its descendants, parents before children (from /proc, before any dies: an
/// orphan is re-parented and no longer found).
pub fn process_tree(root: u32) -> Vec<u32> {
    let parent_of: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, proc_stat(pid)?.1)))
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// SIGKILL to `pid` and every process below it; returns how many there were.
pub fn kill_tree(pid: u32) -> usize {
    let tree = process_tree(pid);
    for &p in &tree {
        signal(p, Signal::KILL);
    }
    tree.len()
}

/// Ends `child` and every process it started: SIGTERM to the whole tree (so an X server removes
/// its lock file, playwright closes its browser), SIGKILL to whatever still lives after `grace`
/// (at once when `grace` is zero), then reaps `child`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let tree = process_tree(child.id());
    if !grace.is_zero() {
        for &pid in tree.iter().rev() {
            signal(pid, Signal::TERM);
        }
        // Only `child` can be waited for; its descendants announce nothing to us.
        wait_until(grace, || {
            child.try_wait().ok().flatten().is_some() && !tree.iter().skip(1).any(|&p| alive(p))
        });
    }
    for &pid in tree.iter().chain(process_tree(child.id()).iter()) {
        if alive(pid) {
            signal(pid, Signal::KILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process that is ended with its descendants ([`terminate`]) when the guard drops.
pub struct ChildGuard {
    child: Child,
    grace: Duration,
}

impl ChildGuard {
    /// Ends `child` with SIGTERM and, after `grace`, SIGKILL (zero: SIGKILL at once).
    pub fn new(child: Child, grace: Duration) -> ChildGuard {
        ChildGuard { child, grace }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (on its pidfd) up to `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    pub fn signal(&self, sig: Signal) {
        signal(self.child.id(), sig);
    }

    /// Ends it now (as on drop).
    pub fn stop(&mut self) {
        terminate(&mut self.child, self.grace);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` in its own process group with stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    spawn_logged_with(cmd, log, None)
}

/// As [`spawn_logged`], with stderr sent to `stderr` instead of the log when given.
pub fn spawn_logged_with(cmd: &mut Command, log: &Path, stderr: Option<Stdio>) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(stderr.unwrap_or_else(|| file.into()))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"))
}

/// A file's text, empty while it does not exist (logs the servers write).
pub fn read_log(path: &Path) -> String {
    crate::text(&std::fs::read(path).unwrap_or_default())
}

/// The user running the tests (the account an sshd test logs in as).
pub fn current_user() -> String {
    let out = run_bounded(Command::new("id").arg("-un"), Duration::from_secs(10));
    assert!(out.status.success(), "id -un failed");
    crate::text(&out.stdout).trim().to_owned()
}

/// A random alphanumeric string (passwords, markers, file names).
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..len)
        .map(|_| {
            let [b] = portcullis_core::secret::random::<1>().expect("OS randomness");
            ALPHABET[usize::from(b) % ALPHABET.len()] as char
        })
        .collect()
}

/// A marker unlikely to appear by chance in any output.
pub fn marker() -> String {
    format!("MARK-{}-{}", std::process::id(), random_string(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_commands_report_output_and_status() {
        let out = run_bounded_fed(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Duration::from_secs(10),
            |mut stdin| {
                use std::io::Write;
                let _ = stdin.write_all(b"fed");
            },
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (crate::text(&out.stdout).as_str(), crate::text(&out.stderr).as_str()),
            ("fed", "err\n")
        );
    }

    #[test]
    fn a_command_over_its_limit_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = Instant::now();
        let panicked = std::panic::catch_unwind(|| {
            run_bounded(Command::new("sh").args(["-c", &script]), Duration::from_millis(500))
        });
        assert!(panicked.is_err(), "no timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
        let grandchild: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || !alive(grandchild)),
            "the group's sleep survived"
        );
    }

    #[test]
    fn guards_end_the_whole_tree() {
        let child = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let root = child.id();
        assert!(wait_until(Duration::from_secs(5), || process_tree(root).len() == 3));
        let tree = process_tree(root);
        drop(ChildGuard::new(child, Duration::from_secs(2)));
        assert!(tree.iter().all(|&p| !alive(p)), "{tree:?}");
    }
}
