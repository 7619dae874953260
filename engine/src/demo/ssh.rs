//! The demo's built-in SSH server, so `portcullis serve` on a fresh machine gives a working
//! browser terminal with nothing else installed. It listens on loopback only, accepts only the
//! gateway's own freshly generated key, and runs the invoking user's shell in a PTY.

use crate::error::{Error, Result};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

pub struct DemoSsh {
    pub addr: SocketAddr,
    /// `ssh-ed25519 AAAA…`, to pin in the gateway's config.
    pub host_key: String,
    /// The gateway's client key (OpenSSH format, mode 0600).
    pub client_key: PathBuf,
    pub user: String,
}

fn random_key() -> Result<PrivateKey> {
    let seed = portcullis_core::secret::random::<32>()?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// Starts the server on its own thread; `dir` receives the client key file.
pub fn start(dir: &std::path::Path) -> Result<DemoSsh> {
    use russh::keys::ssh_key::LineEnding;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let host = random_key()?;
    let client = random_key()?;
    let client_key = dir.join("demo-ssh-client-key");
    let pem = client
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Startup(format!("demo SSH key: {e}")))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&client_key)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(|e| Error::file("cannot write", &client_key, e))?;
    let host_key = host
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Startup(format!("demo SSH key: {e}")))?;
    let allowed = client.public_key().clone();

    let io = |e| Error::Io("demo SSH server", e);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    std_listener.set_nonblocking(true).map_err(io)?;
    let addr = std_listener.local_addr().map_err(io)?;
    let config = Arc::new(russh::server::Config {
        keys: vec![host],
        auth_rejection_time: std::time::Duration::from_millis(200),
        inactivity_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    });
    std::thread::Builder::new()
        .name("demo-ssh".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("demo SSH server: {e}"),
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let handler = Shell {
                        allowed: allowed.clone(),
                        ptys: HashMap::new(),
                    };
                    let config = config.clone();
                    tokio::spawn(async move {
                        if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                            let _ = session.await;
                        }
                    });
                }
            });
        })
        .map_err(io)?;
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "demo".into());
    Ok(DemoSsh {
        addr,
        host_key,
        client_key,
        user,
    })
}

struct Pty {
    master: Arc<AsyncFd<OwnedFd>>,
    size: (u16, u16),
}

struct Shell {
    allowed: PublicKey,
    ptys: HashMap<ChannelId, Pty>,
}

impl russh::server::Handler for Shell {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.allowed.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = (clamp(cols), clamp(rows));
        match open_pty(size) {
            Ok(master) => {
                self.ptys.insert(
                    channel,
                    Pty {
                        master: Arc::new(master),
                        size,
                    },
                );
                session.channel_success(channel)?;
            }
            Err(e) => {
                tracing::warn!("demo SSH: no PTY: {e}");
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let Some(pty) = self.ptys.get(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let mut child = match spawn_shell(&pty.master, pty.size) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("demo SSH: cannot start a shell: {e}");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        let handle = session.handle();
        let master = pty.master.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let Ok(mut guard) = master.readable().await else { break };
                match guard.try_io(|fd| read_fd(fd.get_ref().as_fd(), &mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        if handle.data(channel, buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Err(_would_block) => continue,
                }
            }
            let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(255);
            let _ = handle.exit_status_request(channel, status as u32).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(pty) = self.ptys.get(&channel) {
            let mut rest = data;
            while !rest.is_empty() {
                let Ok(mut guard) = pty.master.writable().await else {
                    break;
                };
                match guard.try_io(|fd| write_fd(fd.get_ref().as_fd(), rest)) {
                    Ok(Ok(n)) => rest = &rest[n..],
                    Ok(Err(_)) => break,
                    Err(_would_block) => continue,
                }
            }
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(pty) = self.ptys.get_mut(&channel) {
            pty.size = (clamp(cols), clamp(rows));
            set_size(pty.master.get_ref().as_fd(), pty.size);
        }
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        // Dropping the master hangs up the shell (SIGHUP).
        self.ptys.remove(&channel);
        Ok(())
    }
}

fn clamp(v: u32) -> u16 {
    v.clamp(1, 1000) as u16
}

fn winsize((cols, rows): (u16, u16)) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_size(fd: BorrowedFd<'_>, size: (u16, u16)) {
    let _ = rustix::termios::tcsetwinsize(fd, winsize(size));
}

/// A PTY master (non-blocking, registered with tokio); the slave is opened per shell.
fn open_pty(size: (u16, u16)) -> std::io::Result<AsyncFd<OwnedFd>> {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    set_size(master.as_fd(), size);
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: `register` needs the descriptor to stay open and owned by the AsyncFd for as long as
    // it is registered: the OwnedFd is moved into it and closed only when the AsyncFd drops.
    unsafe { AsyncFd::register(master) }.map_err(|e| std::io::Error::other(e.to_string()))
}

fn spawn_shell(master: &AsyncFd<OwnedFd>, size: (u16, u16)) -> std::io::Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    set_size(master.get_ref().as_fd(), size);
    let path = rustix::pty::ptsname(master.get_ref(), Vec::new())?;
    let path = path.to_string_lossy().into_owned();
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| std::path::Path::new(s).exists())
        .unwrap_or_else(|| {
            if std::path::Path::new("/bin/bash").exists() {
                "/bin/bash".into()
            } else {
                "/bin/sh".into()
            }
        });
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    let mut cmd = std::process::Command::new(&shell);
    cmd.env("TERM", "xterm-256color")
        .current_dir(&home)
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave);
    // SAFETY: the closure runs between fork and exec; it only makes two system calls (setsid and
    // the TIOCSCTTY ioctl on stdin, the PTY slave), both async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::io::stdin())?;
            Ok(())
        });
    }
    tokio::process::Command::from(cmd).kill_on_drop(true).spawn()
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    match rustix::io::read(fd, buf) {
        Ok(n) => Ok(n),
        // EIO: the shell exited and the slave side is gone.
        Err(rustix::io::Errno::IO) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> std::io::Result<usize> {
    Ok(rustix::io::write(fd, buf)?)
}
