//! The web app's assets, from the outside: shared rather than copied per request (slow readers
//! cannot grow the gateway), gzipped for clients that take it, and sent as long as the reader
//! keeps reading (a stalled one is dropped).

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis_testkit::client::ClientTls;
use portcullis_testkit::client::{eventually, read_to_close, tls_connect, tls_over};
use portcullis_testkit::*;
use std::io::Read;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const APP_JS: &[u8] = include_bytes!("../../web/dist/app.js");

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n")
}

/// Reads a whole response: (head, body).
async fn response(tls: &mut ClientTls, limit: Duration) -> (String, Vec<u8>) {
    let bytes = read_to_close(tls, limit).await;
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (text(&bytes[..end]), bytes[end..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 100 readers of the 6.5 MB app that stop after its first 256 KiB: the gateway grows by what
/// the connections hold (TLS buffers), not by a copy of the app each (650 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_the_app_do_not_grow_the_gateway() {
    let gw = Gateway::builder().unlimited_connections().start();
    // Warm: the first request builds what is built once (the ETag, the pools).
    let mut warm = tls_connect(&gw).await;
    warm.write_all(get("/assets/app.js", "").as_bytes()).await.unwrap();
    assert_eq!(response(&mut warm, 30 * SEC).await.1.len(), APP_JS.len());
    let before = rss_kib(gw.pid());
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut tls = tls_connect(&gw).await;
        tls.write_all(get("/assets/app.js", "").as_bytes()).await.unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 256 * 1024 {
            let n = tokio::time::timeout(10 * SEC, tls.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed early");
            got += n;
        }
        readers.push(tls);
    }
    let grown_mib = rss_kib(gw.pid()).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 100,
        "100 stalled readers of app.js grew the gateway by {grown_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_gzipped_for_clients_that_take_it() {
    let gw = Gateway::builder().start();
    let gzip = get("/assets/app.js", "Accept-Encoding: br, gzip;q=0.9\r\n");
    // Compressed on a thread at start: until then the plain body is sent.
    let answer = std::sync::Mutex::new((String::new(), Vec::new()));
    let compressed = eventually(30 * SEC, || async {
        let mut tls = tls_connect(&gw).await;
        tls.write_all(gzip.as_bytes()).await.unwrap();
        let got = response(&mut tls, 30 * SEC).await;
        let done = header(&got.0, "content-encoding") == Some("gzip");
        *answer.lock().unwrap() = got;
        done
    })
    .await;
    let (head, body) = answer.into_inner().unwrap();
    assert!(compressed, "never gzipped: {head}");
    assert_eq!(header(&head, "vary"), Some("Accept-Encoding"));
    assert!(body.len() < APP_JS.len() / 2, "{} bytes gzipped", body.len());
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).unwrap();
    assert!(plain == APP_JS, "gzipped body differs from app.js");
    // Each encoding has its own ETag: revalidating the gzipped one gives 304, not the plain one.
    let etag = header(&head, "etag").unwrap().to_owned();
    assert!(etag.ends_with("-gz\""), "{etag}");
    let mut tls = tls_connect(&gw).await;
    let revalidate = format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n");
    tls.write_all(get("/assets/app.js", &revalidate).as_bytes())
        .await
        .unwrap();
    assert!(response(&mut tls, 10 * SEC).await.0.starts_with("HTTP/1.1 304"));
    // A client that does not take gzip gets the plain body.
    for refuses in ["", "Accept-Encoding: gzip;q=0, br\r\n"] {
        let mut tls = tls_connect(&gw).await;
        tls.write_all(get("/assets/app.js", refuses).as_bytes()).await.unwrap();
        let (head, body) = response(&mut tls, 30 * SEC).await;
        assert_eq!(header(&head, "content-encoding"), None, "{refuses}");
        assert!(body == APP_JS, "plain body differs ({refuses})");
        assert_ne!(header(&head, "etag").unwrap(), etag);
    }
    // The page itself is never compressed (BREACH: documents, not scripts, hold secrets next to
    // reflected input), even once every asset is compressed and the client asks for gzip.
    for page in ["/", "/index.html"] {
        let mut tls = tls_connect(&gw).await;
        tls.write_all(get(page, "Accept-Encoding: gzip\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = response(&mut tls, 30 * SEC).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "content-encoding"), None, "{page}: {head}");
    }
}

/// TLS over a connection with a small receive window, so that the gateway's writes wait for the
/// reader instead of filling loopback buffers.
async fn narrow(gw: &Gateway) -> ClientTls {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    tls_over(socket.connect(gw.addr()).await.unwrap()).await
}

/// A reader slower than the close timeout gets the whole app as long as it keeps reading; a
/// reader that stops is dropped a close timeout later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_get_everything_and_stalled_ones_are_dropped() {
    let gw = Gateway::builder().session("close_timeout = \"300ms\"\n").start();
    let request = get("/assets/app.js", "");
    let mut slow = narrow(&gw).await;
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut stalled = narrow(&gw).await;
    stalled.write_all(request.as_bytes()).await.unwrap();
    // About 2.5 MB/s: the 6.5 MB take over two seconds, many close timeouts.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(10 * SEC, slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % (128 * 1024) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - end, APP_JS.len(), "a slow reader got a truncated app");
    // The stalled reader has been dropped meanwhile: what it gets now ends short.
    let (_, body) = response(&mut stalled, 10 * SEC).await;
    assert!(body.len() < APP_JS.len(), "a stalled reader was sent the whole app");
}
