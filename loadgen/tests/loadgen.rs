//! End-to-end runs of every scenario: against a real gateway process with the loadgen's own
//! targets, against a plain `ws://` bridge without auth, and on the direct path (`tcp://` straight
//! to the target); `ssh` against a real OpenSSH server. Runs are short (about a second).

use clap::Parser;
use portcullis_loadgen::cli::{Cli, TargetMode};
use portcullis_loadgen::target::{self, TargetStats};
use portcullis_testkit::bridge::plain_bridge;
use portcullis_testkit::sshd::Sshd;
use portcullis_testkit::Gateway;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const LOADGEN: &str = env!("CARGO_BIN_EXE_portcullis-loadgen");

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn run(args: Vec<String>) -> anyhow::Result<Value> {
    Ok(run_outcome(args).await?.json)
}

async fn run_outcome(args: Vec<String>) -> anyhow::Result<portcullis_loadgen::Outcome> {
    let cli = Cli::try_parse_from(std::iter::once("portcullis-loadgen".to_string()).chain(args))?;
    portcullis_loadgen::execute(cli.command).await
}

fn args(scenario: &str, url: &str, auth: &[String], rest: &[&str]) -> Vec<String> {
    let mut v = vec![scenario.to_string(), url.to_string()];
    v.extend(auth.iter().cloned());
    v.extend(rest.iter().map(|s| s.to_string()));
    v.push("--quiet".into());
    v
}

/// A gateway whose user alice may reach the `tcp` targets (started off the runtime's threads),
/// without the per-client connection limits a load from one address would hit.
fn start_gateway(targets: &[(&str, SocketAddr)]) -> Gateway {
    let gw = targets
        .iter()
        .fold(Gateway::builder().unlimited_connections(), |gw, (name, addr)| {
            gw.target(name, addr, "tcp")
        });
    tokio::task::block_in_place(|| gw.start())
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A latency summary made of `count` real samples: positive and ordered.
fn check_summary(s: &Value, count: u64) {
    assert_eq!(u(s, "count"), count, "{s}");
    let keys = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"];
    let values: Vec<f64> = keys.iter().map(|k| f(s, k)).collect();
    assert!(values[0] > 0.0, "{s}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {s}");
    assert!(f(s, "mean_us") >= values[0] && f(s, "mean_us") <= values[5], "{s}");
}

fn no_errors(r: &Value) {
    assert_eq!(u(r, "error_count"), 0, "errors: {}", r["errors"]);
}

/// A loadgen target of `mode` on a fresh port: its address and counters.
async fn spawn_target(mode: TargetMode) -> (SocketAddr, Arc<TargetStats>) {
    target::spawn(any(), mode).await.unwrap()
}

/// An echo target's counters, and a gateway to it (target `echo`).
async fn echo_gateway() -> (Arc<TargetStats>, Gateway) {
    let (echo, stats) = spawn_target(TargetMode::Echo).await;
    (stats, start_gateway(&[("echo", echo)]))
}

/// `scenario` as alice through `gw` to `target`: it must succeed with no errors.
async fn via(gw: &Gateway, target: &str, scenario: &str, rest: &[&str]) -> Value {
    ok(scenario, &gw.url(), &gw.auth(target), rest).await
}

/// `scenario` on the direct path (`tcp://addr`, no gateway): it must succeed with no errors.
async fn direct(addr: SocketAddr, scenario: &str, rest: &[&str]) -> Value {
    ok(scenario, &format!("tcp://{addr}"), &[], rest).await
}

/// Runs a scenario that must succeed with no errors; its JSON result.
async fn ok(scenario: &str, url: &str, auth: &[String], rest: &[&str]) -> Value {
    let r = run(args(scenario, url, auth, rest))
        .await
        .unwrap_or_else(|e| panic!("{scenario} {url}: {e:#}"));
    no_errors(&r);
    r
}

/// Runs a scenario that must fail; the reason.
async fn fails(scenario: &str, url: &str, auth: &[String], rest: &[&str]) -> String {
    match run(args(scenario, url, auth, rest)).await {
        Ok(r) => panic!("{scenario} {url} succeeded: {r}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_through_the_gateway_each_way() {
    let (echo, echo_stats) = spawn_target(TargetMode::Echo).await;
    let (sink, sink_stats) = spawn_target(TargetMode::Sink).await;
    let (source, _) = spawn_target(TargetMode::Source).await;
    let gw = start_gateway(&[("echo", echo), ("sink", sink), ("source", source)]);

    let r = via(&gw, "echo", "throughput", &["-n", "2", "-d", "1s"]).await;
    assert_eq!(u(&r, "sessions_opened"), 2);
    let (up, down) = (u(&r, "up_bytes"), u(&r, "down_bytes"));
    assert!(up > 1_000_000 && down > 0, "{r}");
    // The echo can only return what the target got, and the target got at least what we counted
    // (the frame in flight at the end was finished after the count stopped).
    assert!(echo_stats.bytes_in.load(Relaxed) >= up, "{r}");
    assert!(down <= echo_stats.bytes_out.load(Relaxed), "{r}");
    assert_eq!(r["per_session"].as_array().unwrap().len(), 2);
    assert!(f(&r, "up_mb_s") > 0.0 && f(&r, "down_mb_s") > 0.0);
    assert_eq!(f(&r, "total_mb_s"), ((up + down) as f64 / 1e6 * 100.0).round() / 100.0);

    let r = via(&gw, "sink", "throughput", &["-d", "500ms", "--frame-size", "4000"]).await;
    assert!(u(&r, "up_bytes") > 0 && u(&r, "up_bytes").is_multiple_of(4000), "{r}");
    assert_eq!(u(&r, "down_bytes"), 0);
    assert!(sink_stats.bytes_in.load(Relaxed) >= u(&r, "up_bytes"));

    let r = via(&gw, "source", "throughput", &["-d", "500ms", "--send", "none"]).await;
    assert_eq!(u(&r, "up_bytes"), 0);
    assert!(u(&r, "down_bytes") > 100_000, "{r}");

    // Every session ended with a clean close handshake.
    let audit = gw.audit_lines(4);
    assert_eq!(audit.len(), 4);
    assert!(audit.iter().all(|l| l["ended"] == "client_closed"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_every_echo_and_reports_real_percentiles() {
    let (stats, gw) = echo_gateway().await;
    // 10 sessions at 20 msg/s each, phases 5 ms apart: exactly 20 sends per session in 1 s.
    let r = via(
        &gw,
        "echo",
        "latency",
        &["-n", "10", "-r", "200", "-d", "1s", "--size", "100"],
    )
    .await;
    assert_eq!(u(&r, "sent"), 200, "{r}");
    assert_eq!(u(&r, "received"), 200, "{r}");
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    assert_eq!(u(&r, "unexpected_bytes"), 0);
    check_summary(&r["rtt"], 200);
    check_summary(&r["rtt_from_schedule"], 200);
    assert_eq!(u(&r["send_lag"], "count"), 200);
    // Each message's time from its schedule is at least its time from being sent.
    for k in ["p50_us", "p99_us", "max_us"] {
        assert!(f(&r["rtt_from_schedule"], k) >= f(&r["rtt"], k), "{k}: {r}");
    }
    assert_eq!(stats.bytes_in.load(Relaxed), 200 * 100);
    assert_eq!(stats.bytes_out.load(Relaxed), 200 * 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_times_each_step_of_each_session() {
    let (stats, gw) = echo_gateway().await;
    let r = via(&gw, "echo", "connect", &["-n", "2", "-d", "1s", "--probe"]).await;
    let done = u(&r, "completed");
    assert!(done >= 2, "{r}");
    assert_eq!(u(&r, "failed"), 0);
    for step in ["tcp", "tls", "upgrade", "probe", "close", "total"] {
        check_summary(&r["steps"][step], done);
    }
    assert!(f(&r["steps"]["total"], "p50_us") >= f(&r["steps"]["upgrade"], "p50_us"));
    assert!(f(&r, "sessions_per_s") > 0.0);
    // The gateway connected to the target once per session, and every probe came back.
    assert_eq!(stats.accepted.load(Relaxed), done);
    assert_eq!(stats.bytes_out.load(Relaxed), 16 * done);
    // The gateway issues TLS 1.3 tickets: later sessions of the run resume earlier ones...
    assert!(u(&r, "tls_resumed") > 0 && u(&r, "tls_resumed") <= done, "{r}");
    // ...unless told not to.
    let r = via(&gw, "echo", "connect", &["-n", "1", "-d", "200ms", "--no-tls-resume"]).await;
    assert!(u(&r, "completed") > 1);
    assert_eq!(u(&r, "tls_resumed"), 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_sessions_from_several_sources_and_reads_gateway_memory() {
    let (_, gw) = echo_gateway().await;
    let pid = gw.pid().to_string();
    let r = via(
        &gw,
        "echo",
        "idle",
        &["-n", "60", "--source-addrs", "3", "--hold", "300ms", "--pid", &pid],
    )
    .await;
    assert_eq!(u(&r, "held"), 60, "{r}");
    assert_eq!(u(&r, "source_addrs"), 3);
    assert!(
        u(&r, "gateway_rss_before_kib") > 0 && u(&r, "gateway_rss_after_kib") > 0,
        "{r}"
    );
    assert!(r["gateway_rss_per_session_bytes"].is_number(), "{r}");
    // The gateway saw the sessions come from 127.0.0.1, .2 and .3.
    let audit = gw.audit_lines(60);
    let mut sources: Vec<String> = audit
        .iter()
        .filter_map(|l| l["client"].as_str())
        .map(|c| c.rsplit_once(':').unwrap().0.to_string())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources, ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "{audit:?}");
    assert!(audit.iter().all(|l| l["ended"] == "client_closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ws_bridges_without_auth() {
    let (echo, _) = spawn_target(TargetMode::Echo).await;
    let (bridge, seen) = plain_bridge(echo).await;
    let url = format!("ws://{bridge}");
    let no_auth = ["--no-auth".to_string()];

    let r = ok(
        "latency",
        &url,
        &no_auth,
        &["--path", "/websockify", "-n", "3", "-r", "60", "-d", "500ms"],
    )
    .await;
    assert!(u(&r, "sent") > 0);
    assert_eq!(u(&r, "sent"), u(&r, "received"));
    check_summary(&r["rtt"], u(&r, "received"));
    assert!(r["url"].as_str().unwrap().starts_with("ws://"));

    let r = ok("throughput", &url, &no_auth, &["--path", "/", "-d", "300ms"]).await;
    assert!(u(&r, "up_bytes") > 0 && u(&r, "down_bytes") > 0);

    // A token in the path goes only there; a token otherwise goes in the Authorization header.
    let with_token = ["--token".to_string(), "abc.def".to_string()];
    for path in ["/tunnel?token={token}", "/t"] {
        ok(
            "connect",
            &url,
            &with_token,
            &["--path", path, "-n", "1", "-d", "100ms"],
        )
        .await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .take(3)
            .all(|s| s.target == "/websockify" && s.authorization.is_none()),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s.target == "/" && s.authorization.is_none()));
    let query: Vec<_> = seen.iter().filter(|s| s.target.starts_with("/tunnel")).collect();
    assert!(!query.is_empty());
    assert!(query
        .iter()
        .all(|s| s.target == "/tunnel?token=abc.def" && s.authorization.is_none()));
    let header: Vec<_> = seen.iter().filter(|s| s.target == "/t").collect();
    assert!(!header.is_empty());
    assert!(header
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer abc.def")));
}

/// `tcp://`: every scenario straight to the targets, raw bytes, no gateway; counts match the
/// targets' own counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tcp_path_runs_every_scenario() {
    let (echo, echo_stats) = spawn_target(TargetMode::Echo).await;
    let (sink, sink_stats) = spawn_target(TargetMode::Sink).await;
    let (source, _) = spawn_target(TargetMode::Source).await;

    let r = direct(echo, "throughput", &["-n", "2", "-d", "300ms"]).await;
    assert_eq!(r["url"], format!("tcp://{echo}"));
    assert_eq!(u(&r, "sessions_opened"), 2);
    let (up, down) = (u(&r, "up_bytes"), u(&r, "down_bytes"));
    assert!(up > 1_000_000 && down > 0, "{r}");
    assert!(echo_stats.bytes_in.load(Relaxed) >= up && down <= echo_stats.bytes_out.load(Relaxed));

    let r = direct(sink, "throughput", &["-d", "200ms", "--frame-size", "4000"]).await;
    assert!(u(&r, "up_bytes") > 0 && u(&r, "up_bytes").is_multiple_of(4000), "{r}");
    assert_eq!(u(&r, "down_bytes"), 0);
    // Raw bytes, no frame headers: the sink got exactly what was sent (the last piece included).
    assert!(sink_stats.bytes_in.load(Relaxed) >= u(&r, "up_bytes"));
    assert!(sink_stats.bytes_in.load(Relaxed).is_multiple_of(4000));

    let r = direct(source, "throughput", &["-d", "200ms", "--send", "none"]).await;
    assert!(u(&r, "down_bytes") > 100_000 && u(&r, "up_bytes") == 0, "{r}");

    // Latency, connect and idle on a fresh echo target, so its counters are theirs alone.
    let (echo, stats) = spawn_target(TargetMode::Echo).await;
    let r = direct(
        echo,
        "latency",
        &["-n", "5", "-r", "100", "-d", "500ms", "--size", "100"],
    )
    .await;
    assert_eq!((u(&r, "sent"), u(&r, "received"), u(&r, "lost")), (50, 50, 0), "{r}");
    assert_eq!(u(&r, "out_of_order"), 0);
    check_summary(&r["rtt"], 50);
    // Raw bytes both ways: exactly the messages, no frame headers.
    assert_eq!(stats.bytes_in.load(Relaxed), 50 * 100);
    assert_eq!(stats.bytes_out.load(Relaxed), 50 * 100);

    let r = direct(echo, "connect", &["-n", "2", "-d", "300ms", "--probe"]).await;
    let done = u(&r, "completed");
    assert!(done >= 2, "{r}");
    for step in ["tcp", "probe", "close", "total"] {
        check_summary(&r["steps"][step], done);
    }
    assert!(r["steps"]["tls"].is_null() && r["steps"]["upgrade"].is_null(), "{r}");
    assert_eq!(stats.accepted.load(Relaxed), 5 + done);
    assert_eq!(stats.bytes_out.load(Relaxed), 50 * 100 + 16 * done);

    let pid = std::process::id().to_string();
    let r = direct(
        echo,
        "idle",
        &["-n", "30", "--source-addrs", "2", "--hold", "100ms", "--pid", &pid],
    )
    .await;
    assert_eq!((u(&r, "held"), u(&r, "source_addrs")), (30, 2), "{r}");
    assert_eq!(u(&r, "unclean_closes"), 0);
    assert_eq!(stats.accepted.load(Relaxed), 5 + done + 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_fail_the_run_with_the_reason() {
    let (_, gw) = echo_gateway().await;
    let short = ["-n", "2", "-d", "200ms"];
    let bad_token = vec![
        "--insecure".to_string(),
        "--token".into(),
        "nope".into(),
        "--target".into(),
        "echo".into(),
    ];
    let e = fails("latency", &gw.url(), &bad_token, &short).await;
    assert!(e.contains("401"), "{e}");
    let e = fails("throughput", &gw.url(), &gw.auth("missing"), &short).await;
    assert!(e.contains("404"), "{e}");
    // Without --insecure the self-signed certificate is refused, with a hint.
    let mut strict = gw.auth("echo");
    strict.retain(|a| a != "--insecure");
    let e = fails("connect", &gw.url(), &strict, &short).await;
    assert!(e.contains("--insecure"), "{e}");
}

/// The RD Gateway path: the same scenarios through `/remoteDesktopGateway/` (MS-TSGU over
/// WebSocket) to `rdp` targets, DATA packets both ways, and its refusals named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rd_gateway_path_carries_every_scenario() {
    let (echo, echo_stats) = spawn_target(TargetMode::Echo).await;
    let (sink, sink_stats) = spawn_target(TargetMode::Sink).await;
    let gw = tokio::task::block_in_place(|| {
        Gateway::builder()
            .unlimited_connections()
            .target("desk", echo, "rdp")
            .target("sinkdesk", sink, "rdp")
            .target("tcpecho", echo, "tcp")
            .start()
    });
    let rdg = |target: &str| {
        let mut a = gw.auth(target);
        a.push("--rd-gateway".into());
        a
    };

    let r = ok("throughput", &gw.url(), &rdg("desk"), &["-d", "1s"]).await;
    let (up, down) = (u(&r, "up_bytes"), u(&r, "down_bytes"));
    // One DATA packet of 16 KiB less both headers per frame.
    assert_eq!(u(&r, "frame_size"), 16 * 1024 - 8 - 10);
    assert!(up > 1_000_000 && down > 0 && up.is_multiple_of(16 * 1024 - 18), "{r}");
    assert_eq!(r["rd_gateway"], true);
    assert!(r["url"].as_str().unwrap().ends_with("/remoteDesktopGateway/"), "{r}");
    assert!(echo_stats.bytes_in.load(Relaxed) >= up, "{r}");
    assert!(down <= echo_stats.bytes_out.load(Relaxed), "{r}");
    // Writes over 65,535 bytes go as several DATA packets.
    let r = ok(
        "throughput",
        &gw.url(),
        &rdg("sinkdesk"),
        &["-d", "500ms", "--frame-size", "70000"],
    )
    .await;
    assert!(u(&r, "up_bytes") > 0 && u(&r, "up_bytes").is_multiple_of(70_000), "{r}");
    assert!(sink_stats.bytes_in.load(Relaxed) >= u(&r, "up_bytes"));

    let before = echo_stats.bytes_out.load(Relaxed);
    let r = ok(
        "latency",
        &gw.url(),
        &rdg("desk"),
        &["-n", "4", "-r", "80", "-d", "1s", "--size", "100"],
    )
    .await;
    assert_eq!((u(&r, "sent"), u(&r, "received"), u(&r, "lost")), (80, 80, 0), "{r}");
    assert_eq!(echo_stats.bytes_out.load(Relaxed) - before, 80 * 100);
    let r = ok(
        "connect",
        &gw.url(),
        &rdg("desk"),
        &["-n", "2", "-d", "500ms", "--probe"],
    )
    .await;
    assert!(u(&r, "completed") >= 2 && u(&r, "failed") == 0, "{r}");

    // Every session went through the RD Gateway and ended with the client's close.
    let sessions = gw.records_where(4, |l| l["event"] == "session");
    assert!(
        sessions
            .iter()
            .all(|l| l["via"] == "rd_gateway" && l["ended"] == "client_closed"),
        "{sessions:?}"
    );

    // Refusals name the step and the reason.
    let short = ["-d", "200ms"];
    let e = fails("throughput", &gw.url(), &rdg("tcpecho"), &short).await;
    assert!(e.contains("channel create refused") && e.contains("not allowed"), "{e}");
    let bad = ["--insecure", "--token", "nope", "--target", "desk", "--rd-gateway"].map(String::from);
    let e = fails("throughput", &gw.url(), &bad, &short).await;
    assert!(e.contains("tunnel create refused") && e.contains("token"), "{e}");
}

/// The target and scenario commands as processes: listening line, JSON to stdout or a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_target_and_writes_json() {
    use std::io::{BufRead, BufReader};
    /// Kills the target process even when an assertion fails.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut target = Killed(
        Command::new(LOADGEN)
            .args(["target", "--listen", "127.0.0.1:0", "--mode", "echo"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(target.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        line.starts_with("portcullis-loadgen target: echo on 127.0.0.1:"),
        "{line}"
    );
    let gw = start_gateway(&[("echo", addr)]);

    let out = Command::new(LOADGEN)
        .args(args(
            "latency",
            &gw.url(),
            &gw.auth("echo"),
            &["-n", "2", "-r", "40", "-d", "500ms", "--json", "-"],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON result");
    assert_eq!(r["scenario"], "latency");
    assert_eq!(u(&r, "sent"), 20);
    assert_eq!(u(&r, "received"), 20);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.starts_with("latency: 2 of 2 sessions") && summary.contains("p99"),
        "{summary}"
    );

    let file = gw.dir.path().join("result.json");
    let out = Command::new(LOADGEN)
        .args(args(
            "throughput",
            &gw.url(),
            &gw.auth("echo"),
            &["-d", "300ms", "--json", file.to_str().unwrap()],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("throughput: 1 of 1 sessions") && stdout.contains("MB/s"),
        "{stdout}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(u(&r, "up_bytes") > 0);
}

#[test]
fn binary_rejects_bad_arguments_clearly() {
    let fail = |a: &[&str], code: i32, want: &str| {
        let out = Command::new(LOADGEN).args(a).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
        assert!(out.stdout.is_empty());
    };
    fail(&["latency", "wss://127.0.0.1:1", "--target", "x"], 2, "--no-auth");
    fail(
        &["latency", "wss://127.0.0.1:1", "--no-auth", "--size", "2"],
        2,
        "--size",
    );
    fail(
        &["throughput", "wss://127.0.0.1:1", "--no-auth", "-n", "0"],
        2,
        "--sessions",
    );
    fail(
        &["connect", "wss://127.0.0.1:1", "--token", "t", "--duration", "soon"],
        2,
        "--duration",
    );
    fail(&["target", "--listen", "nowhere"], 2, "--listen");
    fail(
        &["latency", "http://127.0.0.1:1", "--no-auth", "--path", "/"],
        1,
        "wss://, ws:// or tcp://",
    );
    fail(
        &["throughput", "tcp://127.0.0.1:1", "--token", "t"],
        2,
        "tcp:// is the direct path",
    );
    fail(&["throughput", "tcp://127.0.0.1"], 1, "tcp://HOST:PORT");
    fail(
        &["throughput", "tcp://127.0.0.1:1", "--rd-gateway"],
        2,
        "tcp:// is the direct path",
    );
    fail(
        &[
            "throughput",
            "wss://127.0.0.1:1",
            "--no-auth",
            "--target",
            "t",
            "--rd-gateway",
        ],
        2,
        "--rd-gateway needs a token",
    );
    fail(
        &["throughput", "wss://127.0.0.1:1", "--token", "t", "--rd-gateway"],
        2,
        "--target",
    );
    fail(
        &[
            "throughput",
            "wss://127.0.0.1:1",
            "--token",
            "t",
            "--target",
            "t",
            "--rd-gateway",
            "--path",
            "/",
        ],
        2,
        "--path",
    );
    fail(&["latency", "ws://127.0.0.1:1", "--no-auth"], 1, "--target");
    fail(
        &["latency", "ws://127.0.0.1:1", "--no-auth", "--path", "/", "--insecure"],
        2,
        "wss://",
    );
    fail(
        &[
            "latency",
            "ws://[::1]:1",
            "--no-auth",
            "--path",
            "/",
            "--source-addrs",
            "2",
        ],
        1,
        "loopback",
    );
    fail(
        &[
            "latency",
            "ws://127.0.0.1:1",
            "--token-key",
            "/nonexistent",
            "--user",
            "u",
            "--target",
            "t",
        ],
        1,
        "/nonexistent",
    );
    // Nothing listens there: the run fails with the reason, not with a panic.
    let port = portcullis_testkit::free_port().to_string();
    fail(
        &[
            "latency",
            &format!("ws://127.0.0.1:{port}"),
            "--no-auth",
            "--path",
            "/",
            "-d",
            "100ms",
        ],
        1,
        "portcullis-loadgen: error: no session could be opened",
    );
}

fn start_sshd() -> Sshd {
    tokio::task::block_in_place(Sshd::start)
}

/// An sshd and a gateway to it (target `ssh`).
fn ssh_gateway() -> (Sshd, Gateway) {
    let sshd = start_sshd();
    let gw = start_gateway(&[("ssh", sshd.addr())]);
    (sshd, gw)
}

/// The `ssh` scenario's arguments through `gw`: the right or the wrong login key, and the host
/// key to pin, if any.
fn ssh_auth(gw: &Gateway, sshd: &Sshd, right_key: bool, host_key: Option<String>) -> Vec<String> {
    let mut auth = gw.auth("ssh");
    auth.extend(sshd.login(right_key));
    auth.extend(host_key.into_iter().flat_map(|k| ["--known-host-key".to_owned(), k]));
    auth
}

/// `ssh` through the gateway to a real OpenSSH server: every session logs in and runs the command,
/// with the host key checked; then a command that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_sessions_through_the_gateway_to_openssh() {
    let (sshd, gw) = ssh_gateway();
    let auth = ssh_auth(&gw, &sshd, true, Some(sshd.host_key_pub.display().to_string()));

    let outcome = run_outcome(args("ssh", &gw.url(), &auth, &["-n", "6", "-c", "2"]))
        .await
        .unwrap();
    let r = &outcome.json;
    no_errors(r);
    assert_eq!(r["scenario"], "ssh");
    assert_eq!((u(r, "completed"), u(r, "failed"), u(r, "sessions")), (6, 0, 6), "{r}");
    assert_eq!(r["host_key_checked"], true);
    assert_eq!(r["command"], "true");
    for step in ["tunnel", "handshake", "auth", "channel", "command", "close", "total"] {
        check_summary(&r["steps"][step], 6);
    }
    for kind in ["tunnel", "handshake", "auth", "exec", "timeout"] {
        assert_eq!(u(&r["errors_by_kind"], kind), 0, "{r}");
    }
    assert!(f(r, "sessions_per_s") > 0.0);
    assert!(f(&r["steps"]["total"], "min_us") >= f(&r["steps"]["handshake"], "min_us"));
    assert!(
        outcome.summary.starts_with("ssh: 2 loops, 6 sessions via wss://")
            && outcome.summary.contains("(6 completed, 0 failed)")
            && !outcome.summary.contains("NOT checked"),
        "{}",
        outcome.summary
    );
    // The real server accepted six logins, and each tunnel ended with a clean close handshake:
    // ours after the disconnect, or the gateway's when sshd, having read the disconnect, closed
    // first (a race the client does not control; it happens under load).
    assert_eq!(sshd.accepted(6), 6, "{}", sshd.log_text());
    let audit = gw.audit_lines(6);
    assert_eq!(audit.len(), 6);
    assert!(
        audit
            .iter()
            .all(|l| l["ended"] == "client_closed" || l["ended"] == "target_closed"),
        "{audit:?}"
    );

    // A command that exits with 3: every session is an exec error with the status.
    let e = fails("ssh", &gw.url(), &auth, &["-n", "2", "--command", "exit 3"]).await;
    assert!(e.contains("(2 failed: exec 2)") && e.contains("exit status 3"), "{e}");
}

/// A key the server does not know, and a host key that is not the server's: refused, counted by
/// kind, and the run fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_refusals_are_counted_by_kind() {
    let (sshd, gw) = ssh_gateway();
    let auth = ssh_auth(&gw, &sshd, false, None);
    let e = fails("ssh", &gw.url(), &auth, &["-n", "3", "-c", "3"]).await;
    assert!(e.starts_with("no SSH session completed (3 failed: auth 3)"), "{e}");
    assert!(e.contains("refused the key"), "{e}");
    assert_eq!(sshd.accepted(0), 0);

    // The right login key, but the pinned host key is the client's own public key.
    let wrong_host = format!("{}.pub", sshd.client_key.display());
    let auth = ssh_auth(&gw, &sshd, true, Some(wrong_host));
    let e = fails("ssh", &gw.url(), &auth, &["-n", "2"]).await;
    assert!(e.starts_with("no SSH session completed (2 failed: handshake 2)"), "{e}");
    assert!(e.contains("does not match --known-host-key"), "{e}");
    assert_eq!(sshd.accepted(0), 0, "no login after a refused host key");
}

/// `tcp://`: russh straight to sshd (the baseline), host key not checked and said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_direct_tcp_path() {
    let sshd = start_sshd();
    let outcome = run_outcome(args(
        "ssh",
        &format!("tcp://{}", sshd.addr()),
        &sshd.login(true),
        &["-n", "3", "-c", "2"],
    ))
    .await
    .unwrap();
    let r = &outcome.json;
    no_errors(r);
    assert_eq!(r["url"], format!("tcp://{}", sshd.addr()));
    assert_eq!((u(r, "completed"), u(r, "concurrency")), (3, 2), "{r}");
    for step in ["tunnel", "handshake", "auth", "channel", "command", "close", "total"] {
        check_summary(&r["steps"][step], 3);
    }
    assert_eq!(r["host_key_checked"], false);
    assert!(outcome.summary.contains("host key NOT checked"), "{}", outcome.summary);
    assert_eq!(sshd.accepted(3), 3);

    // With a duration instead of a count: at least one session, no errors.
    let r = ok(
        "ssh",
        &format!("tcp://{}", sshd.addr()),
        &sshd.login(true),
        &["-d", "300ms", "-c", "1"],
    )
    .await;
    assert!(u(&r, "completed") >= 1 && r["sessions"].is_null(), "{r}");
}

#[test]
fn ssh_rejects_unusable_keys_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("id.pub");
    std::fs::write(
        &public,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ x\n",
    )
    .unwrap();
    let fail = |a: &[&str], want: &str| {
        let out = Command::new(LOADGEN).args(a).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {err}");
        assert!(err.contains(want) && err.lines().count() == 1, "{a:?}: {err}");
    };
    let url = "tcp://127.0.0.1:1";
    let public = public.to_str().unwrap();
    fail(
        &["ssh", url, "--ssh-user", "u", "--ssh-key", "/nonexistent/key"],
        "cannot read --ssh-key /nonexistent/key",
    );
    fail(
        &["ssh", url, "--ssh-user", "u", "--ssh-key", public],
        "is not a usable private key",
    );
}
