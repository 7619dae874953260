//! `portcullis serve` without a config: a working gateway on a fresh machine, with a built-in echo
//! target, an ephemeral token key and ready-made tokens printed for the demo user.

use crate::config::{Config, DEMO};
use crate::keys;
use crate::server::{serve, KeySource, ServeOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub fn run(listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let echo = start_echo()?;
    let mut config = Config::parse(DEMO, Path::new("."))?;
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(t) = config.targets.get_mut("echo") {
        t.address = echo.to_string();
    }
    let (private, public) = keys::generate()?;
    let ttl = Duration::from_secs(8 * 3600);
    let listen = config.listen;
    let echo_token = keys::issue(private.as_bytes(), "demo", "echo", ttl)?;
    let ssh_token = keys::issue(private.as_bytes(), "demo", "local-ssh", ttl)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "portcullis".into());
    let on_ready = Box::new(move |id: &crate::tls::Identity| {
        let url = format!("wss://{listen}");
        println!(
            "Portcullis demo gateway on https://{listen}\n\
             TLS certificate (self-signed) SHA-256 {fp}\n\
             Targets: echo (built-in echo server at {echo}), local-ssh (127.0.0.1:22)\n\
             Tokens for user \"demo\" (valid 8h):\n  echo:      {echo_token}\n  local-ssh: {ssh_token}\n\n\
             Try it:\n  curl -k https://{listen}/healthz\n  \
             echo hello | {exe} connect {url} --insecure --target echo --token {echo_token}\n  \
             ssh -o ProxyCommand='{exe} connect {url} --insecure --target local-ssh --token {ssh_token}' $USER@local-ssh\n\n\
             Stop with Ctrl-C.",
            fp = id.fingerprint
        );
        let _ = std::io::stdout().flush();
    });
    serve(ServeOptions {
        config,
        config_path: None,
        key: KeySource::Pem(public.into_bytes()),
        on_ready,
    })
}

/// A minimal echo service on a loopback port, for trying tunnels with nothing else installed.
fn start_echo() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("demo-echo".into()).spawn(move || {
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
    })?;
    Ok(addr)
}
