//! `portcullis serve` without a config: a working gateway on a fresh machine, with a built-in echo
//! target, a built-in SSH server for the browser terminal, an ephemeral token key and ready-made
//! tokens printed for the demo user. Nothing here is used by a configured gateway.

mod ssh;

use crate::error::{Error, Result};
use crate::server::{serve, KeySource, ServeOptions};
use portcullis_core::config::{Config, DEMO};
use portcullis_core::keys;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn run(listen: Option<SocketAddr>, ready_fd: Option<OwnedFd>) -> Result<()> {
    let echo = start_echo()?;
    let mut config = Config::parse(DEMO, Path::new(".")).map_err(|e| Error::Startup(format!("demo config: {e}")))?;
    if let Some(l) = listen {
        config.listen = l;
    }
    if !config.listen.ip().is_loopback() {
        // Anyone who reaches it gets a shell behind a password printed on a terminal.
        return Err(Error::Usage(format!(
            "the demo listens on loopback only (127.0.0.1 or ::1), not {}: it serves a shell behind a printed password; give a --config to listen elsewhere",
            config.listen
        )));
    }
    if let Some(t) = config.targets.get_mut("echo") {
        Arc::make_mut(t).address = echo.to_string();
    }
    // The built-in SSH server, its keys and the recordings live in a private temp dir.
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::file("cannot create", &dir, e))?;
    }
    let shell = ssh::start(&dir)?;
    if let Some(t) = config.targets.get_mut("demo-shell") {
        let t = Arc::make_mut(t);
        t.address = shell.addr.to_string();
        t.ssh.user = Some(shell.user.clone());
        t.ssh.key = Some(shell.client_key.clone());
        t.ssh.host_keys = vec![shell.host_key.clone()];
    }
    config.recording.dir = Some(dir.join("recordings"));
    let password = portcullis_core::secret::random_base64url::<12>()?;
    if let Some(user) = config.users.get_mut("demo") {
        user.password_hash = Some(portcullis_core::passwd::hash(&password)?);
    }
    let (private, public) = keys::generate()?;
    let ttl = Duration::from_secs(8 * 3600);
    let listen = config.listen;
    // Tokens go to files (0600), not into the commands printed below, where `ps` would show them.
    let echo_token = write_token(&dir, "echo", &keys::issue(private.as_bytes(), "demo", "echo", ttl)?)?;
    let ssh_token = write_token(
        &dir,
        "local-ssh",
        &keys::issue(private.as_bytes(), "demo", "local-ssh", ttl)?,
    )?;
    let admin_token = write_token(
        &dir,
        "admin",
        &keys::issue_scoped(private.as_bytes(), "demo", "", Some("admin"), ttl)?,
    )?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "portcullis".into());
    let on_ready = Box::new(move |id: &crate::tls::Identity, admin: Option<SocketAddr>| {
        let admin = admin.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let url = format!("wss://{listen}");
        println!(
            "Portcullis demo gateway on https://{listen}\n\
             TLS certificate (self-signed) SHA-256 {fp}\n\n\
             Web terminal: open https://{listen}/ and sign in as demo / {password}\n\
             (demo-shell is a built-in SSH server giving your own shell; sessions are recorded in {rec})\n\n\
             Targets: echo (built-in echo server at {echo_addr}), local-ssh (127.0.0.1:22), demo-shell (built-in)\n\
             Tokens for user \"demo\" (valid 8h), in files readable by you only:\n  echo:      {echo}\n  local-ssh: {ssh}\n\n\
             Try it:\n  curl -k https://{listen}/healthz\n  \
             echo hello | {exe} connect {url} --insecure --target echo --token-file {echo}\n  \
             ssh -o ProxyCommand='{exe} connect {url} --insecure --target local-ssh --token-file {ssh}' $USER@local-ssh\n\n\
             Or log in as demo (approve in the web app), then no token is needed:\n  \
             {exe} login https://{listen} --insecure\n  \
             echo hello | {exe} connect https://{listen} --insecure --target echo\n\n\
             Admin listener on {admin}: curl http://{admin}/readyz\n  \
             {exe} admin --url http://{admin} --token-file {admin_token} sessions\n\n\
             Stop with Ctrl-C.",
            admin_token = admin_token.display(),
            fp = id.fingerprint,
            rec = dir.join("recordings").display(),
            echo = echo_token.display(),
            echo_addr = echo,
            ssh = ssh_token.display(),
        );
        let _ = std::io::stdout().flush();
    });
    serve(ServeOptions {
        config,
        config_path: None,
        key: KeySource::Pem {
            public: public.into_bytes(),
            private: Some(private.into_bytes()),
        },
        on_ready,
        ready_fd,
    })
}

/// A minimal echo service on a loopback port, for trying tunnels with nothing else installed.
fn start_echo() -> Result<SocketAddr> {
    let io = |e| Error::Io("demo echo server", e);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    std::thread::Builder::new()
        .name("demo-echo".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        })
        .map_err(io)?;
    Ok(addr)
}

/// Writes a demo token to `dir/<target>.token`, 0600; returns the path.
fn write_token(dir: &Path, target: &str, token: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{target}.token"));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .map_err(|e| Error::file("cannot write", &path, e))?;
    Ok(path)
}
