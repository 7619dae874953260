//! `portcullis login` and `logout`, and the login credentials they keep: one per gateway, in
//! `$XDG_CONFIG_HOME/portcullis/logins.json` (else `~/.config/…`), 0600 in a 0700 directory.
//! `connect` and `tunnel` use a stored login to fetch a short-lived token per tunnel, so no
//! token ever appears on a command line or in the environment. The flow is in
//! `engine/src/web/device.rs`.

use super::client::{tls_connect, ClientError, GatewayUrl};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest answer read from the gateway's API.
const MAX_ANSWER: usize = 1024 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A stored login to one gateway.
#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    pub user: String,
    credential: String,
    /// Unix seconds.
    pub expires: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("expires", &self.expires)
            .finish()
    }
}

impl Login {
    /// A fresh access token for `target`, from the gateway.
    pub async fn access_token(
        &self,
        url: &GatewayUrl,
        target: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<String, ClientError> {
        let body = serde_json::json!({ "target": target });
        let answer = request(url, tls, "POST", "/v1/token", Some(&self.credential), Some(&body)).await?;
        match answer {
            (200, v) => v["token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Api("the gateway sent no token".into())),
            (401, v) => Err(ClientError::Api(format!(
                "your login is no longer valid ({}): run portcullis login again",
                error_of(&v)
            ))),
            (status, v) => Err(ClientError::Api(format!(
                "no token for {target}: {status} {}",
                error_of(&v)
            ))),
        }
    }
}

fn error_of(v: &serde_json::Value) -> String {
    v["error"].as_str().unwrap_or("no reason given").to_owned()
}

/// One JSON request to the gateway's API: (status, JSON body; `null` when there is none).
pub async fn request(
    url: &GatewayUrl,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), ClientError> {
    let mut stream = tls_connect(url, tls).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portcullis/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        url.prefix,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(b) = bearer {
        head.push_str(&format!("Authorization: Bearer {b}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || answer.len() + n > MAX_ANSWER {
                return Ok::<_, std::io::Error>(());
            }
            answer.extend_from_slice(&chunk[..n]);
            if complete(&answer) {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, read)
        .await
        .map_err(|_| ClientError::NoAnswer)??;
    parse_answer(&answer).ok_or(ClientError::NoAnswer)
}

/// Whether `buf` holds a whole answer (its head and `Content-Length` bytes of body).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|n| buf.len() >= end + 4 + n)
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

fn parse_answer(buf: &[u8]) -> Option<(u16, serde_json::Value)> {
    let end = find(buf, b"\r\n\r\n")?;
    let status_line = std::str::from_utf8(&buf[..end]).ok()?.lines().next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_slice(&buf[end + 4..]).unwrap_or(serde_json::Value::Null);
    Some((status, body))
}

/// Where logins are kept.
pub fn logins_path() -> Result<PathBuf, ClientError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| ClientError::Api("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    Ok(base.join("portcullis").join("logins.json"))
}

/// The key a gateway's login is kept under.
fn key(url: &GatewayUrl) -> String {
    format!("{}{}", url.authority(), url.prefix)
}

fn read_all() -> Result<BTreeMap<String, Login>, ClientError> {
    let path = logins_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            ClientError::Api(format!(
                "{}: unreadable ({e}); remove it and log in again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the logins: a new 0600 file renamed over the old one (never a moment with the
/// credentials readable by others, or half written).
fn write_all(logins: &BTreeMap<String, Login>) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = logins_path()?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".logins.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let text = serde_json::to_string_pretty(logins).map_err(|e| ClientError::Api(e.to_string()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The stored login to `url`, if it has not expired.
pub fn stored(url: &GatewayUrl) -> Result<Option<Login>, ClientError> {
    let now = portcullis_core::keys::unix_now();
    Ok(read_all()?.remove(&key(url)).filter(|l| l.expires > now))
}

/// `portcullis login`: asks the gateway for a code, shows it (and opens the browser when it
/// can), waits for the user to approve it in the web app, and keeps the credential.
pub async fn login(url: &GatewayUrl, tls: Arc<rustls::ClientConfig>, open_browser: bool) -> Result<Login, ClientError> {
    let (status, code) = request(url, tls.clone(), "POST", "/v1/device/code", None, None).await?;
    if status != 200 {
        return Err(ClientError::Api(format!(
            "the gateway refused to log in: {status} {}",
            error_of(&code)
        )));
    }
    let field = |name: &str| code[name].as_str().map(str::to_owned);
    let (Some(device_code), Some(user_code), Some(uri)) = (
        field("device_code"),
        field("user_code"),
        field("verification_uri_complete"),
    ) else {
        return Err(ClientError::Api("the gateway's answer is incomplete".into()));
    };
    // Only a page of this gateway is opened or shown.
    if !uri.starts_with(&format!("https://{}/", url.authority())) {
        return Err(ClientError::Api(format!("the gateway sent an unexpected link: {uri}")));
    }
    let interval = Duration::from_secs(code["interval"].as_u64().unwrap_or(2).clamp(1, 30));
    let expires_in = Duration::from_secs(code["expires_in"].as_u64().unwrap_or(600).min(3600));
    eprintln!("To log in, open {uri}\nand check that it shows the code {user_code}, then approve.");
    if open_browser {
        open_in_browser(&uri);
    }
    let deadline = tokio::time::Instant::now() + expires_in;
    let body = serde_json::json!({ "device_code": device_code });
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::Api("the code expired before it was approved".into()));
        }
        let (status, answer) = request(url, tls.clone(), "POST", "/v1/device/token", None, Some(&body)).await?;
        match (status, answer["error"].as_str()) {
            (200, _) => {
                let (Some(user), Some(credential), Some(ttl)) = (
                    answer["user"].as_str(),
                    answer["credential"].as_str(),
                    answer["expires_in"].as_u64(),
                ) else {
                    return Err(ClientError::Api("the gateway's answer is incomplete".into()));
                };
                let login = Login {
                    user: user.to_owned(),
                    credential: credential.to_owned(),
                    expires: portcullis_core::keys::unix_now() + ttl,
                };
                let mut all = read_all()?;
                all.insert(key(url), login.clone());
                write_all(&all)?;
                return Ok(login);
            }
            (_, Some("authorization_pending")) => continue,
            (_, Some("access_denied")) => return Err(ClientError::Api("the login was denied".into())),
            (status, _) => {
                return Err(ClientError::Api(format!(
                    "login failed: {status} {}",
                    error_of(&answer)
                )));
            }
        }
    }
}

/// Opens `uri` with `$BROWSER` or xdg-open, when there is a display to open it on; says nothing
/// when it cannot (the URL is printed anyway).
fn open_in_browser(uri: &str) {
    let display = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let program = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    let program = match (program, display) {
        (Some(p), _) => p,
        (None, true) => "xdg-open".to_owned(),
        (None, false) => return,
    };
    let _ = std::process::Command::new(program)
        .arg(uri)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// `portcullis logout`: the gateway revokes the credential, and it is forgotten here (also
/// when the gateway cannot be reached: then say so).
pub async fn logout(url: &GatewayUrl, tls: Arc<rustls::ClientConfig>) -> Result<String, ClientError> {
    let mut all = read_all()?;
    let Some(login) = all.remove(&key(url)) else {
        return Err(ClientError::Api("not logged in to this gateway".into()));
    };
    write_all(&all)?;
    match request(url, tls, "POST", "/v1/logout", Some(&login.credential), None).await? {
        (200, _) => Ok(login.user),
        // Already revoked or expired: nothing left to end.
        (401 | 403, _) => Ok(login.user),
        (status, v) => Err(ClientError::Api(format!(
            "forgotten here, but the gateway did not revoke it: {status} {}",
            error_of(&v)
        ))),
    }
}

/// The logged-in user's targets: (name, protocol).
pub async fn targets(
    url: &GatewayUrl,
    tls: Arc<rustls::ClientConfig>,
    login: &Login,
) -> Result<Vec<(String, String)>, ClientError> {
    match request(url, tls, "GET", "/v1/targets", Some(&login.credential), None).await? {
        (200, v) => Ok(v["targets"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|t| Some((t["name"].as_str()?.to_owned(), t["protocol"].as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()),
        (status, v) => Err(ClientError::Api(format!(
            "cannot list targets: {status} {}",
            error_of(&v)
        ))),
    }
}

/// An OpenSSH configuration block for the SSH targets: `ssh NAME` and `scp` then go through the
/// gateway with the stored login. `connect` is the command that opens a tunnel to `%n`.
pub fn ssh_config(targets: &[(String, String)], connect: &str) -> String {
    // Names as the configuration allows them: nothing that could break out of the `Host` line.
    let valid =
        |n: &str| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let names: Vec<&str> = targets
        .iter()
        .filter(|(n, p)| p == "ssh" && valid(n))
        .map(|(n, _)| n.as_str())
        .collect();
    if names.is_empty() {
        return "# no SSH targets for this user\n".into();
    }
    format!(
        "# Portcullis: SSH targets reached through the gateway (portcullis ssh-config)\nHost {}\n    ProxyCommand {connect} --target %n\n",
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_whole_and_parsed() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"a\":\"bc\"}";
        assert!(!complete(a), "one byte of body missing");
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\":\"bc\"}";
        assert!(complete(a));
        assert_eq!(parse_answer(a), Some((200, serde_json::json!({"a": "bc"}))));
        assert_eq!(parse_answer(b"HTTP/1.1 400 Bad\r\n\r\n").map(|a| a.0), Some(400));
        assert_eq!(parse_answer(b"garbage"), None);
    }

    #[test]
    fn ssh_config_lists_ssh_targets_only() {
        let targets = [
            ("vm1".to_owned(), "ssh".to_owned()),
            ("desk".to_owned(), "rdp".to_owned()),
            ("vm2".to_owned(), "ssh".to_owned()),
        ];
        let block = ssh_config(&targets, "portcullis connect wss://gw");
        assert!(block.contains("Host vm1 vm2\n"), "{block}");
        assert!(
            block.contains("ProxyCommand portcullis connect wss://gw --target %n"),
            "{block}"
        );
        assert!(!block.contains("desk"));
    }
}
