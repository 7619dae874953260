//! The package and the service unit: the systemd unit passes `systemd-analyze verify` and its
//! sandbox rates "OK"; the .deb (cargo-deb, from the test build) installs the binary, unit and
//! configuration with the right owners and modes and a `portcullis` system user, the installed
//! gateway runs as that user with only CAP_NET_BIND_SERVICE (as the unit starts it) and writes its
//! audit log where the package said, and a purge removes it all.

use portcullis_testkit::gateway::{gateway_bin, repo_root, spawn_ready_line};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The unit with its ExecStart pointing at `binary` (verify checks that the command exists).
fn unit_for(binary: &Path, dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(repo_root().join("packaging/portcullis.service")).unwrap();
    let path = dir.join("portcullis.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/portcullis", &binary.display().to_string()),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_its_sandbox_rates_ok() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for(gateway_bin(), dir.path());
    // verify exits 0 even for unknown keys: any output is a finding.
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    let (_, text) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for portcullis.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        level <= 2.0,
        "exposure {level} (systemd rates up to 2.0 as OK):\n{text}"
    );
    // The filter must still allow io_uring, the engine's I/O.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(unit_text.contains(call), "SystemCallFilter lacks {call}");
    }
}

fn mode(path: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn id(args: &[&str]) -> u32 {
    let (ok, text) = run(Command::new("id").args(args));
    assert!(ok, "id {args:?}: {text}");
    text.trim().parse().unwrap()
}

#[test]
fn the_deb_installs_runs_as_its_user_and_purges() {
    if !is_root() {
        eprintln!("skipped: installing a package needs root (CI runs as root)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let root = repo_root();
    let (ok, text) = run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "deb",
            "-p",
            "portcullis",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
            "-o",
        ])
        .arg(out.path()));
    assert!(ok, "cargo deb (scripts/test installs cargo-deb):\n{text}");
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    // A package left by an earlier, interrupted run.
    let _ = run(Command::new("dpkg").args(["--purge", "portcullis"]));
    let (ok, text) = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(ok, "dpkg -i:\n{text}");

    let (uid, gid) = (id(&["-u", "portcullis"]), id(&["-g", "portcullis"]));
    assert!(uid > 0 && uid < 1000, "a system user: uid {uid}");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd.lines().find(|l| l.starts_with("portcullis:")).unwrap();
    assert!(
        entry.ends_with("/usr/sbin/nologin") || entry.ends_with("/bin/false"),
        "{entry}"
    );
    assert_eq!(mode("/usr/bin/portcullis"), (0o755, 0, 0));
    assert_eq!(mode("/usr/lib/systemd/system/portcullis.service"), (0o644, 0, 0));
    assert_eq!(mode("/etc/portcullis"), (0o750, 0, gid));
    assert_eq!(mode("/etc/portcullis/portcullis.toml"), (0o640, 0, gid));
    assert_eq!(mode("/var/lib/portcullis"), (0o750, uid, gid));
    assert_eq!(mode("/var/log/portcullis"), (0o750, uid, gid));
    let (ok, text) =
        run(Command::new("systemd-analyze").args(["verify", "/usr/lib/systemd/system/portcullis.service"]));
    assert!(ok && text.trim().is_empty(), "installed unit:\n{text}");

    // What an operator does next: a token key, the configuration (self-signed TLS here, and a
    // free port), then the service as systemd starts it: as `portcullis`, with only
    // CAP_NET_BIND_SERVICE. It must read its configuration and write its audit log.
    let (ok, text) = run(Command::new("/usr/bin/portcullis").args(["keygen", "--out", "/etc/portcullis/token"]));
    assert!(ok, "keygen: {text}");
    let _ = run(Command::new("chgrp").args(["portcullis", "/etc/portcullis/token.pub"]));
    let config = std::fs::read_to_string("/etc/portcullis/portcullis.toml").unwrap();
    let config = config
        .replace("cert = \"/etc/portcullis/tls/cert.pem\"\n", "")
        .replace("key = \"/etc/portcullis/tls/key.pem\"\n", "")
        .replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"");
    std::fs::write("/etc/portcullis/portcullis.toml", config).unwrap();
    let (ok, text) =
        run(Command::new("/usr/bin/portcullis").args(["config", "check", "/etc/portcullis/portcullis.toml"]));
    assert!(ok, "config check: {text}");
    let port = portcullis_testkit::free_port();
    let log = out.path().join("service.log");
    let (mut service, ready) = spawn_ready_line(
        Command::new("setpriv")
            .args(["--reuid=portcullis", "--regid=portcullis", "--init-groups"])
            .args([
                "--inh-caps=-all,+net_bind_service",
                "--ambient-caps=-all,+net_bind_service",
            ])
            .args(["--bounding-set=-all,+net_bind_service", "--no-new-privs", "--"])
            .args([
                "/usr/bin/portcullis",
                "serve",
                "--config",
                "/etc/portcullis/portcullis.toml",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}")),
        &log,
        None,
    );
    let admin = ready.admin.expect("admin listener");
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(mode("/var/log/portcullis/audit.jsonl"), (0o600, uid, gid));
    service.stop();
    drop(service);

    let (ok, text) = run(Command::new("dpkg").args(["--purge", "portcullis"]));
    assert!(ok, "dpkg --purge:\n{text}");
    for gone in [
        "/usr/bin/portcullis",
        "/usr/lib/systemd/system/portcullis.service",
        "/etc/portcullis",
        "/var/lib/portcullis",
        "/var/log/portcullis",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
}
