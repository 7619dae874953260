use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:8443"
workers = 2
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
token_public_key = "token.pub"
[audit]
path = "/var/log/portcullis/audit.jsonl"
[session]
idle_timeout = "5m"
max_lifetime = "8h"
[[target]]
name = "vm1"
address = "10.0.0.4:22"
protocol = "ssh"
[[user]]
name = "alice"
targets = ["vm1"]
"#;

#[test]
fn parses_the_documented_example() {
    let c = Config::parse(GOOD, Path::new("/etc/portcullis")).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/etc/portcullis/cert.pem")));
    assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.session.max_lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(c.targets["vm1"].protocol, Protocol::Ssh);
    assert!(c.users["alice"].targets.contains("vm1"));
    assert_eq!(Some(c.auth.leeway), settings::LEEWAY.default);
    assert_eq!(
        c.limits.max_frame_size,
        portcullis_protocols::ws::DEFAULT_MAX_FRAME_PAYLOAD
    );
}

#[test]
fn the_demo_config_parses() {
    Config::parse(DEMO, Path::new(".")).unwrap();
}

fn error_of(src: &str) -> String {
    Config::parse(src, Path::new(".")).unwrap_err().to_string()
}

#[test]
fn errors_name_key_and_line() {
    let e = error_of(&GOOD.replace("targets = [\"vm1\"]", "targets = [\"vm2\"]"));
    assert_eq!(e, "line 20: user.targets: unknown target \"vm2\"");
    let e = error_of(&GOOD.replace("protocol = \"ssh\"", "protocol = \"telnet\""));
    assert!(e.starts_with("line 17: target.protocol:"), "{e}");
    let e = error_of(&GOOD.replace("idle_timeout = \"5m\"", "idle_timeout = \"soon\""));
    assert!(e.starts_with("line 12: session.idle_timeout:"), "{e}");
    let e = error_of(&GOOD.replace("workers = 2", "workers = 2\nwrokers = 3"));
    assert!(e.contains("line 4") && e.contains("wrokers"), "{e}");
    let e = error_of(&GOOD.replace("10.0.0.4:22", "10.0.0.4"));
    assert!(e.starts_with("line 16: target.address"), "{e}");
    // IPv6 only in brackets: unbracketed, the last group would be taken for the port.
    for bad in ["2001:db8::4:22", "[2001:db8::4:22", "[not-v6]:22", "[::1]:0"] {
        let e = error_of(&GOOD.replace("10.0.0.4:22", bad));
        assert!(
            e.starts_with("line 16: target.address") && e.contains("brackets"),
            "{bad}: {e}"
        );
    }
    for good in ["[2001:db8::4]:22", "[::1]:3389", "vm1.internal:22"] {
        assert!(
            Config::parse(&GOOD.replace("10.0.0.4:22", good), Path::new("/")).is_ok(),
            "{good}"
        );
    }
    let e = error_of(&GOOD.replace("key = \"key.pem\"", ""));
    assert!(e.contains("tls.key"), "{e}");
    let e = error_of(&format!(
        "{GOOD}\n[[target]]\nname = \"vm1\"\naddress = \"h:1\"\nprotocol = \"tcp\"\n"
    ));
    assert!(e.contains("duplicate target"), "{e}");
}

/// Values out of range are refused with their key and line, never clamped (a typo must not
/// weaken policy), and durations cannot be large enough to overflow a clock.
#[test]
fn out_of_range_values_are_refused() {
    const MINIMAL: &str = "listen = \"127.0.0.1:1\"\n[auth]\ntoken_public_key = \"k\"\n";
    let cases = [
        (
            "[limits]\nmax_frame_size = 1",
            "limits.max_frame_size: must be between 125 and",
        ),
        ("[limits]\nmax_headers = 1000", "limits.max_headers:"),
        ("[limits]\nmax_header_bytes = 100", "limits.max_header_bytes:"),
        ("[limits]\nmax_message_size = 0", "limits.max_message_size:"),
        ("[session]\nbuffer_size = 100", "session.buffer_size:"),
        (
            "[session]\nmax_lifetime = \"500000000000y\"",
            "session.max_lifetime: must be between",
        ),
        ("[session]\nidle_timeout = \"0s\"", "session.idle_timeout:"),
        ("[session]\nping_interval = \"1ms\"", "session.ping_interval:"),
        ("[session]\ndrain_timeout = \"2d\"", "session.drain_timeout:"),
        ("[web]\nsession_ttl = \"31d\"", "web.session_ttl:"),
        ("[web]\norigins = 3", "config: invalid type"),
    ];
    for (extra, want) in cases {
        let e = error_of(&format!("{MINIMAL}{extra}\n"));
        assert!(e.starts_with(&format!("line 5: {want}")), "{extra}: {e}");
    }
    let e = error_of(&GOOD.replace("[auth]\n", "[auth]\nleeway = \"11m\"\n"));
    assert!(e.starts_with("line 8: auth.leeway: must be between 0s and 10m"), "{e}");
    let e = error_of(&GOOD.replace("workers = 2", "workers = 0"));
    assert!(e.starts_with("line 3: workers: must be between 1 and 1024"), "{e}");
    let e = error_of(&GOOD.replace("protocol = \"ssh\"", "protocol = \"ssh\"\nmax_lifetime = \"100y\""));
    assert!(e.starts_with("line 18: target.max_lifetime:"), "{e}");
}

#[test]
fn limits_at_their_bounds_are_accepted() {
    let src = GOOD.replace(
        "[session]\n",
        "[limits]\nmax_frame_size = 125\nmax_headers = 128\n[session]\nbuffer_size = 1048576\nping_interval = \"100ms\"\n",
    );
    let c = Config::parse(&src, Path::new(".")).unwrap();
    assert_eq!((c.limits.max_frame_size, c.limits.max_headers), (125, 128));
    assert_eq!(c.session.buffer_size, 1 << 20);
}

/// Per-target `idle_timeout` and `max_lifetime` override `[session]` for that target.
#[test]
fn target_overrides() {
    let src = GOOD.replace(
        "protocol = \"ssh\"",
        "protocol = \"ssh\"\nidle_timeout = \"1m\"\nmax_lifetime = \"2h\"",
    );
    let c = Config::parse(&src, Path::new(".")).unwrap();
    let t = &c.targets["vm1"];
    assert_eq!(t.idle_timeout(&c.session), Duration::from_secs(60));
    assert_eq!(t.max_lifetime(&c.session), Duration::from_secs(7200));
    let c = Config::parse(GOOD, Path::new(".")).unwrap();
    let t = &c.targets["vm1"];
    assert_eq!(t.idle_timeout(&c.session), Duration::from_secs(300));
    assert_eq!(t.max_lifetime(&c.session), Duration::from_secs(8 * 3600));
}

#[test]
fn ssh_settings_belong_to_ssh_targets() {
    let e = error_of(&GOOD.replace(
        "protocol = \"ssh\"",
        "protocol = \"rdp\"\nssh_agent = \"/run/agent.sock\"",
    ));
    assert!(e.starts_with("line 18: target.ssh_user:"), "{e}");
    let e = error_of(&GOOD.replace("protocol = \"ssh\"", "protocol = \"ssh\"\nhost_key = \"SHA256:abc\""));
    assert!(e.starts_with("line 18: target.host_key: not an SSH public key"), "{e}");
}

/// The README's configuration example documents the defaults: every key it shows with a value
/// holds exactly the default of `settings`.
#[test]
fn readme_documents_the_defaults() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("[auth]\ntoken_public_key")
        .expect("README configuration example");
    let block = &readme[start..];
    let block = &block[..block.find("```").unwrap()];
    // Only the tables of tunables; targets and users follow.
    let tunables = &block[..block.find("[[target]]").unwrap()];
    let doc: toml::Table = toml::from_str(tunables).unwrap();
    // `web.throttle.window` is the key `window` of the table `[web.throttle]`.
    let value = |key: &str| {
        let mut path = key.split('.');
        let first = doc.get(path.next().unwrap()).cloned();
        path.try_fold(first?, |v, part| v.get(part).cloned())
    };
    // Each key's line states its range, e.g. `(1s..7days)`.
    let line_of = |key: &str| {
        let name = key.rsplit_once('.').unwrap().1;
        tunables
            .lines()
            .find(|l| l.starts_with(&format!("{name} =")))
            .unwrap_or_else(|| panic!("README does not show {key}"))
    };
    for s in settings::DURATIONS {
        let v = value(s.key).unwrap_or_else(|| panic!("README does not show {}", s.key));
        // Optional keys (no default) show an example value.
        if let Some(default) = s.default {
            let d = humantime::parse_duration(v.as_str().unwrap()).unwrap();
            assert_eq!(d, default, "README shows {} = {v}", s.key);
        }
        let range = format!("({})", s.range_text().replace(" and ", ".."));
        assert!(line_of(s.key).contains(&range), "README: {} should say {range}", s.key);
    }
    for s in settings::DERIVED {
        let name = s.key.split_once('.').unwrap().1;
        let line = tunables
            .lines()
            .find(|l| l.starts_with(&format!("# {name} =")))
            .unwrap_or_else(|| panic!("README does not show {}", s.key));
        assert!(
            line.contains(&format!("({}..{})", s.min, s.max)),
            "README: range of {}",
            s.key
        );
    }
    for s in settings::INTEGERS {
        let v = value(s.key).unwrap_or_else(|| panic!("README does not show {}", s.key));
        assert_eq!(
            v.as_integer().unwrap() as u64,
            s.default,
            "README shows {} = {v}",
            s.key
        );
        let range = format!("({}..{})", s.min, s.max);
        assert!(line_of(s.key).contains(&range), "README: {} should say {range}", s.key);
    }
}

#[test]
fn trusted_proxies() {
    let src = format!("{GOOD}[proxy_protocol]\ntrusted = [\"10.0.0.0/8\", \"2001:db8::1\"]\n");
    let c = Config::parse(&src, Path::new(".")).unwrap();
    assert_eq!(c.proxy_trusted.len(), 2);
    assert!(c.proxy_trusted[0].contains("10.1.2.3".parse().unwrap()));
    assert!(Config::parse(GOOD, Path::new(".")).unwrap().proxy_trusted.is_empty());
    let e = error_of(&format!("{GOOD}[proxy_protocol]\ntrusted = [\"10.0.0.0/40\"]\n"));
    assert!(e.starts_with("line 22: proxy_protocol.trusted:"), "{e}");
}

#[test]
fn connection_limits() {
    let c = Config::parse(GOOD, Path::new(".")).unwrap();
    let limits = c.limits.connections.resolve(10_000);
    assert_eq!(
        (limits.max_connections, limits.max_connections_per_client),
        (10_000, 2_500)
    );
    assert_eq!((limits.rate, limits.burst), (50.0, 100.0));
    let src = GOOD.replace(
        "[session]\n",
        "[limits]\nmax_connections = 100\nmax_connections_per_client = 7\nnew_connections_per_second = 5\n[session]\n",
    );
    let limits = Config::parse(&src, Path::new("."))
        .unwrap()
        .limits
        .connections
        .resolve(10_000);
    assert_eq!(
        (limits.max_connections, limits.max_connections_per_client, limits.rate),
        (100, 7, 5.0)
    );
    let e = error_of(&GOOD.replace("[session]\n", "[limits]\nearly_drop_from = 4096\n[session]\n"));
    assert!(e.starts_with("line 12: limits.early_drop_from: must be below"), "{e}");
}

#[test]
fn roles_grant_targets_by_pattern_and_label_and_rights() {
    let src = r#"listen = "127.0.0.1:1"
[auth]
token_public_key = "k"
[[target]]
name = "web-1"
address = "10.0.0.1:22"
protocol = "ssh"
[[target]]
name = "web-2"
address = "10.0.0.2:22"
protocol = "ssh"
[[target]]
name = "db"
address = "10.0.0.3:22"
protocol = "ssh"
labels = { env = "prod", tier = "data" }
[[target]]
name = "db-test"
address = "10.0.0.4:22"
protocol = "ssh"
labels = { env = "test", tier = "data" }
[[role]]
name = "web"
targets = ["web-*"]
[[role]]
name = "prod-data"
labels = { env = "prod", tier = "data" }
require_mfa = true
[[role]]
name = "auditors"
admin = true
[[user]]
name = "alice"
roles = ["web", "prod-data"]
[[user]]
name = "bob"
targets = ["db-test"]
roles = ["auditors"]
"#;
    let c = Config::parse(src, Path::new("/etc/portcullis")).unwrap();
    let mut alice: Vec<_> = c.users["alice"].targets.iter().cloned().collect();
    alice.sort();
    assert_eq!(alice, ["db", "web-1", "web-2"]);
    assert!(c.users["alice"].require_mfa && !c.users["alice"].admin && !c.users["alice"].replay);
    let bob = &c.users["bob"];
    assert_eq!(
        bob.targets.iter().collect::<Vec<_>>(),
        ["db-test"],
        "the shorthand list still works"
    );
    assert!(bob.admin && bob.replay && !bob.require_mfa);
    let e = Config::parse(
        &src.replace("roles = [\"auditors\"]", "roles = [\"nope\"]"),
        Path::new("/"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("user.roles: unknown role \"nope\""), "{e}");
}

#[test]
fn glob_patterns() {
    for (p, n, m) in [
        ("web-*", "web-1", true),
        ("web-*", "web-", true),
        ("web-*", "db", false),
        ("*", "anything", true),
        ("w?b", "web", true),
        ("w?b", "weeb", false),
        ("*-prod-*", "eu-prod-db", true),
        ("*-prod-*", "eu-test-db", false),
        ("a*b*c", "aXbYbZc", true),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(glob(p, n), m, "{p} vs {n}");
    }
}
