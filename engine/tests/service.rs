//! Running as a service: started as root, the gateway binds, opens what it keeps open, then
//! becomes `[service] user` in every thread, and still reloads and reopens its audit log.

use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::WsClient;
use portcullis_testkit::process::Signal;
use portcullis_testkit::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn id(args: &[&str]) -> u32 {
    let out = std::process::Command::new("id").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A `/proc/<pid>/status`-style line's value, e.g. `Cpus_allowed_list:`.
fn status_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The credentials lines of every thread of `pid`: (thread, Uid line, Gid line, Groups line).
fn thread_credentials(pid: u32) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let line = |key: &str| status_line(&status, key);
        let name = line("Name:");
        out.push((name, line("Uid:"), line("Gid:"), line("Groups:")));
    }
    out
}

/// Kept to some CPUs by whoever starts it (`taskset`, systemd's `CPUAffinity=`, a container's
/// cpuset), the gateway keeps its executors on them: before, worker `i` was pinned to CPU `i`
/// whatever the mask, so a gateway given the last CPU ran its executors on the first ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_stay_on_the_cpus_the_gateway_is_given() {
    let mine = status_line(
        &std::fs::read_to_string("/proc/self/status").unwrap(),
        "Cpus_allowed_list:",
    );
    // The highest CPU this test may use: "0-1" gives 1, "0,2-3" gives 3.
    let last: usize = mine.rsplit([',', '-']).next().unwrap().parse().unwrap();
    if last == 0 {
        eprintln!("skipped: needs a second CPU to keep the gateway off CPU 0 ({mine})");
        return;
    }
    let echo = EchoTarget::start();
    // Two workers (the builder's config) on one CPU.
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .cpus(&last.to_string())
        .start();
    // glommio names each executor's threads after it: "portcullis-<worker>-<executor id>".
    let mut executors = std::collections::BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", gw.pid())).unwrap() {
        // A thread that ended meanwhile has nothing to check.
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        let name = status_line(&status, "Name:");
        if name.starts_with("portcullis-") {
            executors.insert(name.clone());
        }
        assert_eq!(
            status_line(&status, "Cpus_allowed_list:"),
            last.to_string(),
            "thread {name}"
        );
    }
    assert_eq!(executors.len(), 2, "two workers: {executors:?}");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"on the CPU it was given").await;
    ws.send_close(CloseCode::NORMAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_runs_unprivileged_and_reloads_still_work() {
    if id(&["-u"]) != 0 {
        eprintln!("skipped: dropping privileges needs a test run as root (CI runs as root)");
        return;
    }
    let (uid, gid) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .target("echo2", echo.addr, "tcp")
        .run_as("nobody")
        .start();
    let threads = thread_credentials(gw.pid());
    // Executors, pools, the audit, log, signal and admin threads: all of them.
    assert!(threads.len() >= 8, "{threads:?}");
    let want_uid = format!("{uid} {uid} {uid} {uid}");
    let want_gid = format!("{gid} {gid} {gid} {gid}");
    for (name, uids, gids, groups) in &threads {
        assert_eq!(uids, &want_uid, "thread {name}");
        assert_eq!(gids, &want_gid, "thread {name}");
        assert!(
            !groups.split(' ').any(|g| g == "0"),
            "thread {name} keeps group root: {groups}"
        );
    }
    assert!(gw.log().contains("running unprivileged"), "{}", gw.log());
    let mut ws = WsClient::open(&gw, "echo2", &gw.token("alice", "echo2")).await;
    ws.echoes(b"as nobody").await;

    // SIGHUP: the file is read again as the unprivileged user, and the new policy applies.
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    let changed = config.replace("targets = [\"echo\", \"echo2\"]", "targets = [\"echo\"]");
    assert_ne!(config, changed);
    std::fs::write(gw.config_path(), changed).unwrap();
    gw.signal(Signal::HUP);
    assert_eq!(ws.recv_close(10 * SEC).await, (Some(1008), "policy_revoked".to_owned()));
    ws.send_close(CloseCode::POLICY).await;
    assert!(gw.log().contains("configuration reloaded"), "{}", gw.log());

    // The audit log is reopened as that user after a rotation.
    gw.sessions_of("echo2", 1);
    let rotated = gw.dir.path().join("audit.jsonl.1");
    std::fs::rename(&gw.audit, &rotated).unwrap();
    gw.signal(Signal::USR1);
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"after rotation").await;
    ws.send_close(CloseCode::NORMAL).await;
    ws.recv_close(10 * SEC).await;
    let records = gw.sessions_of("echo", 1);
    assert_eq!(records.len(), 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&gw.audit).unwrap().uid(),
        uid,
        "the new audit file is nobody's"
    );
}
