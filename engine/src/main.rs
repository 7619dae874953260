//! The `portcullis` command: the gateway (`serve`) and the tools around it.

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use portcullis::cli::client::{self, GatewayUrl};
use portcullis::logging::{self, LogFormat};
use portcullis::server::{serve, KeySource, ServeOptions};
use portcullis::tls::{client_config, ServerTrust};
use portcullis_core::config::Config;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Bastion gateway: TLS/WebSocket tunnels to SSH, RDP and TCP targets"
)]
struct Cli {
    /// Log lines as text (coloured on a terminal) or as JSON objects.
    #[arg(long, global = true, value_enum, default_value_t, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no --config: a self-contained demo on 127.0.0.1:8443).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the listen address of the config (or of the demo).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// An inherited file descriptor to write `READY <certificate fingerprint>` to, then
        /// close, once every worker listens (for supervisors and tests).
        #[arg(long, value_name = "FD")]
        ready_fd: Option<RawFd>,
    },
    /// Write an Ed25519 token key pair: PREFIX.key (private, 0600) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an Argon2id hash of a password for a `[[user]]` `password_hash` (reads stdin when
    /// it is not a terminal, else prompts without echo).
    Passwd,
    /// Token operations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Configuration operations.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Tunnel stdin/stdout to a target (use as OpenSSH ProxyCommand).
    Connect {
        #[command(flatten)]
        gw: GatewayArgs,
    },
    /// Forward a local TCP port to a target, one tunnel per connection.
    Tunnel {
        #[command(flatten)]
        gw: GatewayArgs,
        /// Local address to listen on, e.g. 127.0.0.1:2222.
        #[arg(long)]
        local: SocketAddr,
    },
    /// Log in to a gateway: approve the code this prints in the web app; then `connect` and
    /// `tunnel` need no token.
    Login {
        #[command(flatten)]
        gw: GatewayOnly,
        /// Do not try to open the browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// End the login to a gateway (the gateway revokes its credential).
    Logout {
        #[command(flatten)]
        gw: GatewayOnly,
    },
    /// Print an OpenSSH `Host` block for your SSH targets (after `login`): append it to
    /// ~/.ssh/config, then `ssh TARGET` and `scp` go through the gateway.
    SshConfig {
        #[command(flatten)]
        gw: GatewayOnly,
    },
    /// Open an RDP target with the local RDP client: a local tunnel on a free loopback port and
    /// the client pointed at it (FreeRDP when found); without one, prints the address to use.
    Rdp {
        #[command(flatten)]
        gw: GatewayArgs,
        /// Local address of the tunnel.
        #[arg(long, default_value = "127.0.0.1:0")]
        local: SocketAddr,
        /// The client's command line, `{addr}` standing for the tunnel (e.g. "remmina -c rdp://{addr}").
        #[arg(long)]
        client: Option<String>,
    },
    /// Operate a running gateway through its admin listener (`[admin] listen`).
    Admin {
        #[command(flatten)]
        conn: AdminArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The admin listener: http://HOST:PORT on loopback, https://HOST:PORT elsewhere.
    #[arg(long, default_value = "http://127.0.0.1:9464", env = "PORTCULLIS_ADMIN_URL")]
    url: String,
    /// A file holding an admin token (`portcullis token issue --scope admin`).
    #[arg(long, value_name = "FILE", env = "PORTCULLIS_ADMIN_TOKEN_FILE")]
    token_file: PathBuf,
    /// Trust only the CA certificate(s) in this PEM file (https).
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the admin listener's certificate (self-signed gateways only).
    #[arg(long)]
    insecure: bool,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List live sessions.
    Sessions,
    /// End a live session (its client gets Close 1008; audited `ended: terminated`).
    Terminate { id: String },
    /// Remove a user's enrolled second factors (a lost phone): they sign in with the password,
    /// then enrol again.
    ResetFactors { name: String },
    /// Refuse a user's new sessions and end their live ones (`ended: revoked`).
    RevokeUser {
        name: String,
        /// Until when: a duration from now (e.g. 2h) or an RFC 3339 time; default: for good.
        #[arg(long)]
        until: Option<String>,
    },
    /// Refuse a token (by its `jti`) and end the sessions it opened.
    RevokeToken {
        jti: String,
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed token for USER to reach TARGET.
    Issue {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        user: String,
        /// The target it reaches; not needed for `--scope admin`.
        #[arg(long, required_unless_present = "scope")]
        target: Option<String>,
        /// Rights beyond a target: `admin` for the admin API.
        #[arg(long)]
        scope: Option<String>,
        /// Single use: accepted once (by every node of a fleet together), then refused.
        #[arg(long, conflicts_with = "scope")]
        once: bool,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "15m")]
        ttl: humantime::Duration,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; prints what is wrong, with the key and line.
    Check { file: PathBuf },
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// Gateway URL, e.g. wss://bastion.example.com:443
    url: String,
    #[arg(long)]
    target: String,
    /// Access token. On a command line it is visible to every local user (`ps`): prefer the
    /// PORTCULLIS_TOKEN environment variable or --token-file.
    #[arg(
        long,
        env = "PORTCULLIS_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Read the access token from this file (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust only the CA certificate(s) in this PEM file.
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the gateway's certificate (self-signed demo gateways only).
    #[arg(long)]
    insecure: bool,
}

impl GatewayArgs {
    /// The token given, else the stored login to this gateway (a token is fetched per tunnel).
    fn token(&self, url: &GatewayUrl) -> anyhow::Result<client::TokenSource> {
        let given = |t: &str| client::TokenSource::Given(t.into());
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(given(t)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(anyhow!("{} holds no token", path.display()));
                }
                Ok(given(token))
            }
            (None, None) => match portcullis::cli::login::stored(url)? {
                Some(login) => Ok(client::TokenSource::Login(std::sync::Arc::new(login))),
                None => Err(anyhow!(
                    "not logged in to this gateway: run `portcullis login {}` (or give a token: PORTCULLIS_TOKEN or --token-file)",
                    self.url
                )),
            },
        }
    }

    fn resolve(&self) -> anyhow::Result<(GatewayUrl, std::sync::Arc<rustls::ClientConfig>)> {
        resolve(&self.url, self.ca.as_deref(), self.insecure)
    }
}

fn resolve(
    url: &str,
    ca: Option<&std::path::Path>,
    insecure: bool,
) -> anyhow::Result<(GatewayUrl, std::sync::Arc<rustls::ClientConfig>)> {
    let url = GatewayUrl::parse(url)?;
    let trust = match (ca, insecure) {
        (Some(ca), _) => ServerTrust::CaFile(ca),
        (None, true) => ServerTrust::Insecure,
        (None, false) => ServerTrust::WebPki,
    };
    Ok((url, client_config(trust)?))
}

/// A gateway to log in to (or out of), and how to trust it.
#[derive(clap::Args)]
struct GatewayOnly {
    /// Gateway URL, e.g. https://bastion.example.com
    url: String,
    /// Trust only the CA certificate(s) in this PEM file.
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the gateway's certificate (self-signed demo gateways only).
    #[arg(long)]
    insecure: bool,
}

impl GatewayOnly {
    fn resolve(&self) -> anyhow::Result<(GatewayUrl, std::sync::Arc<rustls::ClientConfig>)> {
        resolve(&self.url, self.ca.as_deref(), self.insecure)
    }

    /// The `portcullis connect` command for this gateway, as a ProxyCommand runs it.
    fn connect_command(&self) -> String {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "portcullis".into());
        let mut cmd = format!("{} connect {}", quote(&exe), quote(&self.url));
        if let Some(ca) = &self.ca {
            let ca = std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone());
            cmd.push_str(&format!(" --ca {}", quote(&ca.display().to_string())));
        }
        if self.insecure {
            cmd.push_str(" --insecure");
        }
        cmd
    }
}

/// `s` for a shell command line (OpenSSH runs ProxyCommand with the user's shell).
fn quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.:=@,+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")
}

/// Takes ownership of the descriptor `--ready-fd` names, after checking that it is open.
fn ready_fd(fd: Option<RawFd>) -> anyhow::Result<Option<OwnedFd>> {
    let Some(fd) = fd else { return Ok(None) };
    if fd <= 2 {
        return Err(anyhow!(
            "--ready-fd {fd}: stdin, stdout and stderr cannot be the readiness channel"
        ));
    }
    // Whether it is open, without borrowing a descriptor that might not be.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(anyhow!("--ready-fd {fd} is not an open file descriptor"));
    }
    // SAFETY: the parent passed this open descriptor for the gateway to write to and close; this
    // is the only place that takes it, once.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Serve {
            config: None,
            listen,
            ready_fd: fd,
        } => {
            logging::init(log_format);
            Ok(portcullis::demo::run(listen, ready_fd(fd)?)?)
        }
        Command::Serve {
            config: Some(path),
            listen,
            ready_fd: fd,
        } => {
            logging::init(log_format);
            let ready_fd = ready_fd(fd)?;
            let mut config = Config::load(&path)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            let listen = config.listen;
            let on_ready = Box::new(move |id: &portcullis::tls::Identity, admin: Option<SocketAddr>| {
                if log_format == LogFormat::Json {
                    return; // every stderr line is JSON; the listening event says the same
                }
                let kind = if id.self_signed { " (self-signed)" } else { "" };
                eprintln!(
                    "portcullis: listening on {listen}, certificate{kind} SHA-256 {}",
                    id.fingerprint
                );
                if let Some(admin) = admin {
                    eprintln!("portcullis: admin listener (health, metrics, admin API) on {admin}");
                }
            });
            Ok(serve(ServeOptions {
                config,
                config_path: Some(path),
                key: KeySource::File,
                on_ready,
                ready_fd,
            })?)
        }
        Command::Keygen { out } => Ok(portcullis::cli::keygen::keygen(&out)?),
        Command::Passwd => Ok(portcullis::cli::passwd::run()?),
        Command::Token {
            command:
                TokenCommand::Issue {
                    key,
                    user,
                    target,
                    scope,
                    once,
                    ttl,
                },
        } => {
            let pem = std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let target = target.unwrap_or_default();
            let token = if once {
                portcullis_core::keys::issue_once(&pem, &user, &target, Duration::from(ttl))
            } else {
                portcullis_core::keys::issue_scoped(&pem, &user, &target, scope.as_deref(), Duration::from(ttl))
            }
            .context("cannot issue the token")?;
            println!("{token}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::load(&file)?;
            portcullis::server::validate(&config).with_context(|| file.display().to_string())?;
            println!(
                "{}: ok ({} targets, {} users)",
                file.display(),
                config.targets.len(),
                config.users.len()
            );
            for warning in portcullis::server::warnings(&config) {
                println!("{}: warning: {warning}", file.display());
            }
            Ok(())
        }
        Command::Connect { gw } => {
            let (url, tls) = gw.resolve()?;
            let token = gw.token(&url)?;
            let rt = client_runtime()?;
            let result = rt.block_on(client::connect_stdio(&url, &gw.target, &token, tls));
            // A read of stdin may still be blocked in tokio's thread pool: do not wait for it.
            rt.shutdown_background();
            Ok(result?)
        }
        Command::Admin { conn, command } => admin(conn, command),
        Command::Login { gw, no_browser } => {
            let (url, tls) = gw.resolve()?;
            let rt = client_runtime()?;
            let login = rt.block_on(portcullis::cli::login::login(&url, tls, !no_browser))?;
            let until = std::time::UNIX_EPOCH + Duration::from_secs(login.expires);
            eprintln!(
                "Logged in as {} until {} (kept in {}).",
                login.user,
                portcullis_core::audit::rfc3339(until),
                portcullis::cli::login::logins_path()?.display()
            );
            Ok(())
        }
        Command::Logout { gw } => {
            let (url, tls) = gw.resolve()?;
            let rt = client_runtime()?;
            let user = rt.block_on(portcullis::cli::login::logout(&url, tls))?;
            eprintln!("Logged out ({user}).");
            Ok(())
        }
        Command::SshConfig { gw } => {
            let (url, tls) = gw.resolve()?;
            let login = portcullis::cli::login::stored(&url)?
                .ok_or_else(|| anyhow!("not logged in to this gateway: run `portcullis login {}`", gw.url))?;
            let rt = client_runtime()?;
            let targets = rt.block_on(portcullis::cli::login::targets(&url, tls, &login))?;
            print!(
                "{}",
                portcullis::cli::login::ssh_config(&targets, &gw.connect_command())
            );
            Ok(())
        }
        Command::Rdp { gw, local, client } => {
            let (url, tls) = gw.resolve()?;
            let token = gw.token(&url)?;
            let rt = client_runtime()?;
            let words = client::rdp_client(client.as_deref());
            let result = rt.block_on(client::rdp(url, gw.target, token, tls, local, words));
            rt.shutdown_background();
            Ok(result?)
        }
        Command::Tunnel { gw, local } => {
            let (url, tls) = gw.resolve()?;
            let token = gw.token(&url)?;
            let rt = client_runtime()?;
            let result = rt.block_on(client::tunnel(url, gw.target, token, tls, local));
            rt.shutdown_background();
            Ok(result?)
        }
    }
}

fn admin(args: AdminArgs, command: AdminCommand) -> anyhow::Result<()> {
    use portcullis::cli::admin::{format_sessions, request, AdminUrl};
    let url = AdminUrl::parse(&args.url)?;
    let tls = if url.tls {
        let trust = match (&args.ca, args.insecure) {
            (Some(ca), _) => ServerTrust::CaFile(ca),
            (None, true) => ServerTrust::Insecure,
            (None, false) => ServerTrust::WebPki,
        };
        Some(client_config(trust)?)
    } else {
        None
    };
    let text = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read {}", args.token_file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(anyhow!("{} holds no token", args.token_file.display()));
    }
    let until = |t: Option<String>| -> anyhow::Result<Option<String>> {
        let Some(t) = t else { return Ok(None) };
        if let Ok(d) = humantime::parse_duration(&t) {
            let at = std::time::SystemTime::now() + d;
            return Ok(Some(portcullis_core::audit::rfc3339(at)));
        }
        humantime::parse_rfc3339_weak(&t)
            .with_context(|| format!("--until {t}: expected a duration (2h) or an RFC 3339 time"))?;
        Ok(Some(t))
    };
    let (method, path, body) = match command {
        AdminCommand::Sessions => ("GET", "/v1/sessions".to_owned(), None),
        AdminCommand::Terminate { id } => ("DELETE", format!("/v1/sessions/{id}"), None),
        AdminCommand::ResetFactors { name } => ("DELETE", format!("/v1/users/{name}/factors"), None),
        AdminCommand::RevokeUser { name, until: t } => (
            "POST",
            "/v1/revocations".to_owned(),
            Some(serde_json::json!({ "user": name, "until": until(t)? })),
        ),
        AdminCommand::RevokeToken { jti, until: t } => (
            "POST",
            "/v1/revocations".to_owned(),
            Some(serde_json::json!({ "token_id": jti, "until": until(t)? })),
        ),
    };
    let body = body.map(|b| b.to_string());
    let answer = request(&url, tls, method, &path, token, body.as_deref())?;
    if !(200..300).contains(&answer.status) {
        return Err(anyhow!(
            "the gateway refused ({}): {}",
            answer.status,
            answer.body.trim()
        ));
    }
    if args.json || path != "/v1/sessions" {
        println!("{}", answer.body.trim());
    } else {
        print!("{}", format_sessions(&answer.body)?);
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = run(cli);
    logging::flush(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("portcullis: error: {e:#}");
        std::process::exit(1);
    }
}
