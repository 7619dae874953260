//! The fleet store on a real Redis: the `Store` contract holds on Redis as on the local store;
//! gateways sharing one Redis share sign-ins and the sign-in throttle; while Redis is down a node
//! fails closed (or not, as `on_store_down` says) and recovers by itself when Redis returns;
//! revocations and live sessions reach every node; behind HAProxy, a fleet keeps sign-ins,
//! drains a stopping node and outlives a dead one.
//!
//! One Redis for the whole binary: the scenarios run one after another, each in a database of
//! its own, the one that stops Redis last.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_on_one_redis() {
    // Append-only persistence, as a fleet's durable records need: the last scenario restarts it.
    let mut redis = RedisServer::with_append_only();
    the_store_contract_holds_locally_and_on_redis(&redis.db(1)).await;
    gateways_on_one_redis_share_sign_ins_and_the_throttle(&redis.db(2)).await;
    a_revocation_on_one_node_ends_sessions_on_every_node(&redis.db(3)).await;
    any_node_lists_and_ends_the_fleets_sessions_and_the_cap_is_fleet_wide(&redis.db(4)).await;
    places_leased_in_blocks_never_exceed_the_cap_and_quiet_ones_go_back(&redis.db(11)).await;
    behind_haproxy_a_fleet_keeps_sign_ins_drains_and_outlives_a_node(&redis.db(5)).await;
    a_node_cut_off_catches_up_on_what_it_missed(&redis, 7).await;
    a_single_use_token_is_good_once_across_the_fleet(&redis.db(8)).await;
    recordings_on_shared_storage_replay_from_any_node(&redis.db(9)).await;
    a_ticket_minted_on_one_node_is_redeemed_once_on_another(&redis.db(10)).await;
    a_shared_link_made_on_one_node_opens_once_anywhere(&redis.db(12)).await;
    a_terminal_on_one_node_is_watched_from_another(&redis.db(13)).await;
    a_tls_session_from_one_node_resumes_on_another(&redis.db(14)).await;
    with_redis_down_a_node_fails_closed_then_recovers_by_itself(&mut redis).await;
}

use portcullis::store::{Attempt, MemoryStore, RedisStore, Store, ThrottleKey, ThrottleRule, Ticket, WebSession};
use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::{eventually, sign_in};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{RedisDb, RedisServer};
use portcullis_testkit::*;
use std::sync::Arc;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "correct horse battery";

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

/// What every store must do, local or Redis.
async fn contract(store: Arc<dyn Store>) {
    let alice = WebSession {
        user: "alice".into(),
        roles: vec!["corp-ops".into()],
        only_target: Some("vm1".into()),
        mfa: true,
    };
    store.put_session(key(1), alice.clone(), 60 * SEC).await.unwrap();
    assert_eq!(store.session(key(1)).await.unwrap(), Some(alice));
    assert_eq!(store.session(key(2)).await.unwrap(), None);
    store.delete_session(key(1)).await.unwrap();
    assert_eq!(store.session(key(1)).await.unwrap(), None);
    // A session lives for its TTL only.
    let bob = WebSession {
        user: "bob".into(),
        roles: Vec::new(),
        only_target: None,
        mfa: false,
    };
    store
        .put_session(key(3), bob, Duration::from_millis(200))
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if store.session(key(3)).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a session outlived its TTL");

    // A ticket is good once, even when two redeem it at the same moment.
    let ticket = Ticket {
        user: "alice".into(),
        target: "desk1".into(),
        roles: vec!["corp-ops".into()],
    };
    store.put_ticket(key(4), ticket.clone(), 60 * SEC).await.unwrap();
    let (a, b) = tokio::join!(store.take_ticket(key(4)), store.take_ticket(key(4)));
    let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken, [ticket]);

    // A single-use token is spent once.
    assert!(store.use_once(key(9), 60 * SEC).await.unwrap());
    assert!(!store.use_once(key(9), 60 * SEC).await.unwrap());

    // Attempts: counted before the check, all keys or none, five of forty simultaneous.
    let ip = "192.0.2.7".parse().unwrap();
    let rule = ThrottleRule {
        limit: 5,
        window: 60 * SEC,
    };
    let keys = vec![
        (ThrottleKey::UserAddress("carol".into(), ip), rule),
        (
            ThrottleKey::Address(ip),
            ThrottleRule {
                limit: 20,
                window: 60 * SEC,
            },
        ),
    ];
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move { store.reserve_attempt(&keys).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    answers.sort_by_key(|a| matches!(a, Attempt::Refused { .. }));
    let reserved = answers.iter().filter(|a| matches!(a, Attempt::Reserved { .. })).count();
    assert_eq!(reserved, 5, "{answers:?}");
    match &answers[39] {
        Attempt::Refused { retry_after } => assert!(*retry_after > 50 * SEC && *retry_after <= 60 * SEC),
        other => panic!("{other:?}"),
    }
    // A refund gives one back; a clear forgets them all.
    let user_key = [keys[0].0.clone()];
    store.refund_attempt(&user_key).await.unwrap();
    assert!(
        matches!(store.reserve_attempt(&keys).await.unwrap(), Attempt::Reserved { ref before } if before == &[4, 5])
    );
    store.clear_attempts(&user_key).await.unwrap();
    assert!(matches!(store.reserve_attempt(&keys).await.unwrap(), Attempt::Reserved { ref before } if before[0] == 0));
    // Durable second factors: compare and set, so two requests cannot both spend one code.
    let user = format!("carol-{}", portcullis_core::secret::random_hex::<4>().unwrap());
    assert_eq!(store.factors(&user).await.unwrap(), None);
    assert!(store.swap_factors(&user, None, Some("{\"v\":1}".into())).await.unwrap());
    assert!(
        !store.swap_factors(&user, None, Some("{\"v\":2}".into())).await.unwrap(),
        "not what was expected"
    );
    assert!(store
        .swap_factors(&user, Some("{\"v\":1}".into()), Some("{\"v\":3}".into()))
        .await
        .unwrap());
    assert_eq!(store.factors(&user).await.unwrap().as_deref(), Some("{\"v\":3}"));
    assert!(store.swap_factors(&user, Some("{\"v\":3}".into()), None).await.unwrap());
    assert_eq!(store.factors(&user).await.unwrap(), None);
    // Shared links: kept until removed, listed, each once.
    let until = portcullis_core::keys::unix_now() + 60;
    store.put_link("aa01", "{\"id\":\"aa01\"}".into(), until).await.unwrap();
    store.put_link("aa02", "{\"id\":\"aa02\"}".into(), until).await.unwrap();
    assert_eq!(store.link("aa01").await.unwrap().as_deref(), Some("{\"id\":\"aa01\"}"));
    assert_eq!(store.link("zz").await.unwrap(), None);
    let mut all = store.links().await.unwrap();
    all.sort();
    assert_eq!(all, ["{\"id\":\"aa01\"}", "{\"id\":\"aa02\"}"]);
    assert!(store.remove_link("aa01").await.unwrap());
    assert!(!store.remove_link("aa01").await.unwrap());
    assert_eq!(store.links().await.unwrap().len(), 1);
    // Shared random values: created once, the same for every later ask, one per name.
    let first = store.shared_random("tls-ticket-key:1", 60 * SEC).await.unwrap();
    assert_eq!(store.shared_random("tls-ticket-key:1", 60 * SEC).await.unwrap(), first);
    assert_ne!(store.shared_random("tls-ticket-key:2", 60 * SEC).await.unwrap(), first);
    assert_ne!(first, [0u8; 32]);
}

async fn the_store_contract_holds_locally_and_on_redis(redis: &RedisDb) {
    contract(Arc::new(MemoryStore::new())).await;
    // The local store with `[state] dir`: durable records written through, and read back by the
    // next run.
    let dir = tempfile::tempdir().unwrap();
    let local = || {
        let state = Arc::new(portcullis::store::LocalState::open(dir.path()).unwrap());
        Arc::new(MemoryStore::with_durable(state).unwrap())
    };
    contract(local()).await;
    assert!(local().swap_factors("dave", None, Some("{}".into())).await.unwrap());
    assert_eq!(local().factors("dave").await.unwrap().as_deref(), Some("{}"));
    let store = RedisStore::start(&redis.url(), "gw-test", tokio::runtime::Handle::current()).unwrap();
    let health = store.health();
    assert!(
        eventually(10 * SEC, || async { health.is_up() }).await,
        "never connected"
    );
    contract(Arc::new(store)).await;
}

/// A gateway of the fleet on `redis`, with alice's password and an echo target.
fn node(redis: &RedisDb, name: &str, echo: &targets::TcpTarget, extra: &str) -> Gateway {
    Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .password(PASSWORD)
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .toml(&format!("{}{extra}", redis.cluster_toml(name)))
        .start()
}

async fn session_status(gw: &Gateway, cookie: &str) -> u16 {
    https(gw, "GET", "/api/session", &[("Cookie", cookie)], "").await.0
}

async fn gateways_on_one_redis_share_sign_ins_and_the_throttle(redis: &RedisDb) {
    let echo = EchoTarget::start();
    let (a, b) = (node(redis, "gw-a", &echo, ""), node(redis, "gw-b", &echo, ""));
    let (status, cookie) = sign_in(&a, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    // Signed in on A, known on B; signed out on B, gone on A.
    assert_eq!(session_status(&b, &cookie).await, 200);
    assert_eq!(
        https(&b, "POST", "/api/logout", &[("Cookie", &cookie)], "").await.0,
        200
    );
    assert_eq!(session_status(&a, &cookie).await, 401);
    // Wrong passwords spread over both nodes meet one throttle: 5 per user and address.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(sign_in(gw, "bob", "wrong").await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    assert_eq!(
        sign_in(&a, "bob", PASSWORD).await.0,
        429,
        "the right password waits too"
    );
}

/// Last: it stops the shared server (and brings it back).
async fn with_redis_down_a_node_fails_closed_then_recovers_by_itself(redis: &mut RedisServer) {
    let echo = EchoTarget::start();
    let db = redis.db(6);
    let strict = node(&db, "gw-strict", &echo, "");
    let lenient = node(&db, "gw-lenient", &echo, "on_store_down = \"allow\"\n");
    for gw in [&strict, &lenient] {
        assert!(
            wait_until(10 * SEC, || gw.admin_request("GET", "/readyz", None, "").0 == 200),
            "{}",
            gw.log()
        );
    }
    // A durable record written before the outage (bob revoked for good).
    let body = serde_json::json!({ "user": "bob" }).to_string();
    let (status, answer) = strict.admin_request("POST", "/v1/revocations", Some(&strict.admin_token("root")), &body);
    assert_eq!(status, 200, "{answer}");
    redis.stop();
    // Noticed without traffic (the store is probed): the strict node leaves the balancer.
    assert!(wait_until(10 * SEC, || strict
        .admin_request("GET", "/readyz", None, "")
        .0
        == 503));
    let (_, body) = strict.admin_request("GET", "/readyz", None, "");
    assert!(body.contains("state store"), "{body}");
    assert_eq!(lenient.admin_request("GET", "/readyz", None, "").0, 200);
    // Sign-ins need the store on every node: 503 with a clear message, not a crash.
    let (status, _, body) = https(
        &strict,
        "POST",
        "/api/login",
        &[],
        &serde_json::json!({"user": "alice", "password": PASSWORD}).to_string(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    // Token tunnels: refused where the policy is deny, served where it is allow.
    assert_eq!(
        WsClient::refused_tunnel(&strict, "echo", &strict.token("alice", "echo")).await,
        503
    );
    let mut ws = WsClient::open(&lenient, "echo", &lenient.token("alice", "echo")).await;
    ws.echoes(b"on what this node knows").await;
    ws.send_close(CloseCode::NORMAL).await;
    let (_, metrics) = strict.admin_request("GET", "/metrics", Some(&strict.admin_token("root")), "");
    assert!(metrics.contains("portcullis_store_up 0\n"), "{metrics}");
    assert_eq!(
        strict.log().matches("the state store (Redis) is unavailable").count(),
        1,
        "said once"
    );

    // Redis returns (restarted, from its append-only file): both recover without a restart,
    // and the revocation written before is still there for a node that starts now.
    redis.start_again();
    let late = node(&db, "gw-late", &echo, "");
    assert!(
        wait_until(10 * SEC, || late.log().contains("revocations loaded: 1")
            || late.log().contains("revocations=1")),
        "{}",
        late.log()
    );
    assert_eq!(
        WsClient::refused_tunnel(&late, "echo", &late.token("bob", "echo")).await,
        403
    );
    assert!(wait_until(10 * SEC, || strict
        .admin_request("GET", "/readyz", None, "")
        .0
        == 200));
    assert_eq!(sign_in(&strict, "alice", PASSWORD).await.0, 200);
    let mut ws = WsClient::open(&strict, "echo", &strict.token("alice", "echo")).await;
    ws.echoes(b"back").await;
    ws.send_close(CloseCode::NORMAL).await;
}

async fn a_revocation_on_one_node_ends_sessions_on_every_node(redis: &RedisDb) {
    let echo = EchoTarget::start();
    let (a, b) = (node(redis, "gw-a", &echo, ""), node(redis, "gw-b", &echo, ""));
    for gw in [&a, &b] {
        assert!(
            wait_until(10 * SEC, || gw.log().contains("revocations loaded")),
            "{}",
            gw.log()
        );
    }
    let mut on_a = WsClient::open(&a, "echo", &a.token("alice", "echo")).await;
    let mut on_b = WsClient::open(&b, "echo", &b.token("alice", "echo")).await;
    let mut bob_on_b = WsClient::open(&b, "echo", &b.token("bob", "echo")).await;
    on_b.echoes(b"before").await;
    let body = serde_json::json!({ "user": "alice" }).to_string();
    let (status, answer) = a.admin_request("POST", "/v1/revocations", Some(&a.admin_token("root")), &body);
    assert_eq!(status, 200, "{answer}");
    // Within a second or two on both nodes (the close itself is bounded by the test's wait).
    let started = std::time::Instant::now();
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(ws.recv_close(10 * SEC).await, (Some(1008), "revoked".to_owned()));
        ws.send_close(CloseCode::POLICY).await;
    }
    assert!(started.elapsed() < 3 * SEC, "took {:?}", started.elapsed());
    bob_on_b.echoes(b"bob goes on").await;
    let ended = b.sessions_of("echo", 1);
    assert_eq!(
        (ended[0]["ended"].as_str(), ended[0]["terminated_by"].as_str()),
        (Some("revoked"), Some("root"))
    );
    assert_eq!(
        WsClient::refused_tunnel(&b, "echo", &b.token("alice", "echo")).await,
        403
    );
    // A node that starts afterwards loads it too.
    let c = node(redis, "gw-c", &echo, "");
    assert!(
        wait_until(10 * SEC, || c.log().contains("revocations loaded")),
        "{}",
        c.log()
    );
    assert_eq!(
        WsClient::refused_tunnel(&c, "echo", &c.token("alice", "echo")).await,
        403
    );
    bob_on_b.send_close(CloseCode::NORMAL).await;
}

/// A gateway of the fleet with a 1 s heartbeat and `cap` sessions per user.
fn fast_node(redis: &RedisDb, name: &str, echo: &targets::TcpTarget, cap: usize) -> Gateway {
    Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .session(&format!("max_sessions_per_user = {cap}"))
        .toml(&format!("{}heartbeat = \"1s\"\n", redis.cluster_toml(name)))
        .start()
}

fn fleet_sessions(gw: &Gateway) -> Vec<serde_json::Value> {
    let (status, body) = gw.admin_request("GET", "/v1/sessions", Some(&gw.admin_token("root")), "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("partial").is_none(), "{v}");
    v["sessions"].as_array().unwrap().clone()
}

async fn any_node_lists_and_ends_the_fleets_sessions_and_the_cap_is_fleet_wide(redis: &RedisDb) {
    let echo = EchoTarget::start();
    let a = fast_node(redis, "gw-a", &echo, 2);
    let b = fast_node(redis, "gw-b", &echo, 2);
    let c = fast_node(redis, "gw-c", &echo, 2);
    for gw in [&a, &b, &c] {
        assert!(
            wait_until(10 * SEC, || gw.log().contains("revocations loaded")),
            "{}",
            gw.log()
        );
    }
    let mut alice_b = WsClient::open(&b, "echo", &b.token("alice", "echo")).await;
    let mut alice_c = WsClient::open(&c, "echo", &c.token("alice", "echo")).await;
    let mut bob_c = WsClient::open(&c, "echo", &c.token("bob", "echo")).await;
    alice_b.echoes(&[1u8; 1000]).await;
    // The cap counts alice's sessions on every node: a third, anywhere, is refused.
    assert_eq!(
        WsClient::refused_tunnel(&a, "echo", &a.token("alice", "echo")).await,
        429
    );
    // A lists every node's sessions.
    let listed = fleet_sessions(&a);
    let mut who: Vec<(String, String)> = listed
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_owned(),
                s["user"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        [
            ("gw-b".into(), "alice".into()),
            ("gw-c".into(), "alice".into()),
            ("gw-c".into(), "bob".into())
        ]
    );
    // A ends bob's session on C.
    let bob_id = listed.iter().find(|s| s["user"] == "bob").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let (status, _) = a.admin_request(
        "DELETE",
        &format!("/v1/sessions/{bob_id}"),
        Some(&a.admin_token("root")),
        "",
    );
    assert_eq!(status, 202);
    assert_eq!(bob_c.recv_close(10 * SEC).await, (Some(1008), "terminated".to_owned()));
    assert!(started.elapsed() < 3 * SEC, "took {:?}", started.elapsed());
    bob_c.send_close(CloseCode::POLICY).await;
    let ended = c.sessions_of("echo", 1);
    assert_eq!(
        (
            ended[0]["session"].as_str(),
            ended[0]["ended"].as_str(),
            ended[0]["terminated_by"].as_str()
        ),
        (Some(bob_id.as_str()), Some("terminated"), Some("root"))
    );
    assert_eq!(
        a.admin_request("DELETE", "/v1/sessions/nope", Some(&a.admin_token("root")), "")
            .0,
        404
    );
    // B dies: its session leaves the fleet's list within the heartbeat TTL (3 s), and alice's
    // place with it.
    b.signal(portcullis_testkit::process::Signal::KILL);
    assert!(
        wait_until(10 * SEC, || fleet_sessions(&a).iter().all(|s| s["node"] != "gw-b")),
        "{:?}",
        fleet_sessions(&a)
    );
    let mut again = WsClient::open(&a, "echo", &a.token("alice", "echo")).await;
    again.echoes(b"a place again").await;
    drop(alice_b);
    alice_c.send_close(CloseCode::NORMAL).await;
    again.send_close(CloseCode::NORMAL).await;
}

/// A node leases a user's places in blocks while the user is far from the cap (most sessions
/// then start without a round trip to Redis), one at a time near it: the fleet never holds more
/// than the cap, a session started on a spare place is listed, spares a node stops drawing on go
/// back to the fleet (within two heartbeats), and near the cap a place goes back as its session
/// ends.
async fn places_leased_in_blocks_never_exceed_the_cap_and_quiet_ones_go_back(redis: &RedisDb) {
    const CAP: usize = 34;
    let echo = EchoTarget::start();
    // A's first session leases a block of 16 (34 free: at least two blocks).
    let a = fast_node(redis, "gw-a", &echo, CAP);
    let b = fast_node(redis, "gw-b", &echo, CAP);
    let c = fast_node(redis, "gw-c", &echo, CAP);
    let mut on_a = Vec::new();
    for _ in 0..2 {
        let mut ws = WsClient::open(&a, "echo", &a.token("alice", "echo")).await;
        ws.echoes(b"on a").await;
        on_a.push(ws);
    }
    // The second took a spare place: listed by the batched writer, not by its lease call.
    assert!(
        eventually(5 * SEC, || async { fleet_sessions(&b).len() == 2 }).await,
        "{:?}",
        fleet_sessions(&b)
    );
    // B takes places one at a time until refused: at least the 18 A does not hold, and never
    // more than the cap with A's (A's spares may have gone back meanwhile if this was slow).
    let mut on_b = Vec::new();
    while on_b.len() < CAP {
        let token = b.token("alice", "echo");
        match WsClient::connect(&b, "/v1/tunnel/echo", Some(&token), &[]).await {
            Ok(ws) => on_b.push(ws),
            Err(answer) => {
                assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 429"));
                break;
            }
        }
    }
    assert!((18..=CAP - 2).contains(&on_b.len()), "B opened {}", on_b.len());
    // A's sessions end: its spares go quiet and back to the fleet; B fills the cap exactly.
    for mut ws in on_a.drain(..) {
        ws.send_close(CloseCode::NORMAL).await;
    }
    while on_b.len() < CAP {
        on_b.push(open_within(&b, "alice", 10 * SEC).await);
    }
    assert_eq!(
        WsClient::refused_tunnel(&b, "echo", &b.token("alice", "echo")).await,
        429
    );
    assert_eq!(fleet_sessions(&a).len(), CAP);
    // Near the cap, a place goes back as its session ends: a third node takes it.
    on_b.pop().unwrap().send_close(CloseCode::NORMAL).await;
    let on_c = open_within(&c, "alice", 5 * SEC).await;
    assert_eq!(
        WsClient::refused_tunnel(&c, "echo", &c.token("alice", "echo")).await,
        429
    );
    for mut ws in on_b.into_iter().chain([on_c]) {
        ws.send_close(CloseCode::NORMAL).await;
    }
}

/// A tunnel for `user` to echo on `gw`, tried until it opens (within `limit`).
async fn open_within(gw: &Gateway, user: &str, limit: Duration) -> WsClient {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let token = gw.token(user, "echo");
        match WsClient::connect(gw, "/v1/tunnel/echo", Some(&token), &[]).await {
            Ok(ws) => return ws,
            Err(answer) if std::time::Instant::now() >= deadline => {
                panic!("still refused after {limit:?}: {}", String::from_utf8_lossy(&answer))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A node behind the balancer: it trusts HAProxy's PROXY header and drains for a minute.
fn balanced(redis: &RedisDb, name: &str, echo: &targets::TcpTarget, keys: Option<&Gateway>) -> Gateway {
    let mut builder = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .password(PASSWORD)
        .user("alice", &["echo"], "")
        .session("drain_timeout = \"1m\"")
        .toml(&format!(
            "{}heartbeat = \"1s\"\n[proxy_protocol]\ntrusted = [\"127.0.0.1/32\"]\n",
            redis.cluster_toml(name)
        ));
    if let Some(first) = keys {
        builder = builder.keys_of(first);
    }
    builder.start()
}

fn web_requests(gw: &Gateway) -> f64 {
    let (_, m) = gw.admin_request("GET", "/metrics", Some(&gw.admin_token("root")), "");
    m.lines()
        .find_map(|l| l.strip_prefix("portcullis_requests_total{route=\"web\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn behind_haproxy_a_fleet_keeps_sign_ins_drains_and_outlives_a_node(redis: &RedisDb) {
    use portcullis_testkit::haproxy::Haproxy;
    let echo = EchoTarget::start();
    let a = balanced(redis, "gw-a", &echo, None);
    let b = balanced(redis, "gw-b", &echo, Some(&a));
    let c = balanced(redis, "gw-c", &echo, Some(&a));
    let lb = Haproxy::fleet(
        &[a.addr(), b.addr(), c.addr()]
            .iter()
            .zip([&a, &b, &c])
            .map(|(addr, n)| (*addr, n.admin.unwrap().port()))
            .collect::<Vec<_>>(),
    );
    assert!(
        wait_until(10 * SEC, || lb.servers_up() == 3),
        "the balancer's checks never passed"
    );

    // Signed in through the balancer: the requests that follow land on every node (round
    // robin) and stay signed in.
    let (status, cookie) = sign_in(&lb, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    for _ in 0..6 {
        assert_eq!(
            https(&lb, "GET", "/api/session", &[("Cookie", cookie.as_str())], "")
                .await
                .0,
            200
        );
    }
    for n in [&a, &b, &c] {
        assert!(web_requests(n) >= 2.0, "a node served no signed-in request");
    }

    // One tunnel per node through the balancer (round robin), with a token of the fleet's issuer.
    let token = a.token("alice", "echo");
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::open(&lb, "echo", &token).await;
        ws.echoes(b"through the balancer").await;
        tunnels.push(ws);
    }
    let per_node = |gw: &Gateway| fleet_sessions(gw).iter().filter(|s| s["node"] == gw_name(gw)).count();
    fn gw_name(gw: &Gateway) -> String {
        let config = std::fs::read_to_string(gw.config_path()).unwrap();
        config
            .split("node = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    }
    assert!(wait_until(10 * SEC, || [&a, &b, &c].iter().all(|n| per_node(n) == 1)));

    // SIGTERM on B: its /readyz fails first, the balancer takes it out, new sessions go to A and
    // C, and B's session goes on (draining).
    b.signal(portcullis_testkit::process::Signal::TERM);
    assert!(
        wait_until(10 * SEC, || lb.servers_up() == 2),
        "B never left the balancer"
    );
    for _ in 0..4 {
        let mut ws = WsClient::open(&lb, "echo", &token).await;
        ws.echoes(b"not to B").await;
        ws.send_close(CloseCode::NORMAL).await;
        ws.recv_close(10 * SEC).await;
    }
    assert_eq!(
        b.sessions_of("echo", 0).len(),
        0,
        "no session on B ended, none started there"
    );
    for ws in tunnels.iter_mut() {
        ws.echoes(b"still relaying").await;
    }

    // C dies: the balancer notices, and the fleet serves on A alone; C's session leaves the list.
    c.signal(portcullis_testkit::process::Signal::KILL);
    assert!(
        wait_until(10 * SEC, || lb.servers_up() == 1),
        "C never left the balancer"
    );
    let mut ws = WsClient::open(&lb, "echo", &token).await;
    ws.echoes(b"on A").await;
    assert!(wait_until(10 * SEC, || fleet_sessions(&a)
        .iter()
        .all(|s| s["node"] != "gw-c")));
    for ws in tunnels.iter_mut() {
        ws.send_close(CloseCode::NORMAL).await;
    }
    ws.send_close(CloseCode::NORMAL).await;
}

/// B alone loses Redis (its link is cut) while A revokes alice; when the link comes back, B loads
/// the revocation it missed and refuses her.
async fn a_node_cut_off_catches_up_on_what_it_missed(redis: &RedisServer, db: u8) {
    use portcullis_testkit::redis::Link;
    let echo = EchoTarget::start();
    let a = node(&redis.db(db), "gw-a", &echo, "");
    let link = Link::to(redis.port);
    let b = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .toml(&format!(
            "[cluster]\nnode = \"gw-b\"\nstore = \"{}\"\non_store_down = \"allow\"\n",
            link.url(db)
        ))
        .start();
    for gw in [&a, &b] {
        assert!(
            wait_until(10 * SEC, || gw.log().contains("revocations loaded")),
            "{}",
            gw.log()
        );
    }
    link.cut();
    assert!(
        wait_until(10 * SEC, || b.log().contains("the state store (Redis) is unavailable")),
        "{}",
        b.log()
    );
    let body = serde_json::json!({ "user": "alice" }).to_string();
    let (status, answer) = a.admin_request("POST", "/v1/revocations", Some(&a.admin_token("root")), &body);
    assert_eq!(status, 200, "{answer}");
    // Cut off (and "allow"), B still lets alice in: it cannot know.
    let mut ws = WsClient::open(&b, "echo", &b.token("alice", "echo")).await;
    ws.echoes(b"B does not know yet").await;
    link.restore();
    // Back: B reloads every revocation when it subscribes again; her session there ends and she
    // is refused.
    assert_eq!(ws.recv_close(15 * SEC).await, (Some(1008), "revoked".to_owned()));
    ws.send_close(CloseCode::POLICY).await;
    assert_eq!(
        WsClient::refused_tunnel(&b, "echo", &b.token("alice", "echo")).await,
        403
    );
}

/// The answer to a tunnel with `token`: 101 (then an echo and a close) or the refusal's status.
async fn status(gw: &Gateway, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    match WsClient::open_with(gw, "/v1/tunnel/echo", &[("Authorization", &bearer)]).await {
        Ok(mut ws) => {
            ws.echoes(b"once").await;
            ws.send_close(CloseCode::NORMAL).await;
            101
        }
        Err(answer) => status_of(&answer),
    }
}

/// A token with `once` opens one session: on one node alone (local store), or on any one node
/// of a fleet (and then nowhere).
async fn a_single_use_token_is_good_once_across_the_fleet(redis: &RedisDb) {
    let echo = EchoTarget::start();
    let alone = Gateway::builder().target("echo", echo.addr, "tcp").start();
    let token = alone.token_once("alice", "echo");
    assert_eq!(status(&alone, &token).await, 101);
    assert_eq!(status(&alone, &token).await, 403);
    assert_eq!(
        status(&alone, &alone.token("alice", "echo")).await,
        101,
        "ordinary tokens are reusable"
    );

    let a = node(redis, "gw-a", &echo, "");
    let b = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .password(PASSWORD)
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .keys_of(&a)
        .toml(&redis.cluster_toml("gw-b"))
        .start();
    let token = a.token_once("alice", "echo");
    assert_eq!(status(&b, &token).await, 101);
    assert_eq!(status(&a, &token).await, 403);
    assert_eq!(status(&b, &token).await, 403);
    let refused = a.records_where(1, |r| r["event"] == "denied" && r["status"] == 403);
    assert_eq!(refused[0]["reason"], "single-use token used already");
}

/// Two nodes given the same `[recording] dir` (shared storage): a browser terminal recorded on A
/// is listed and replayed through B, with the sign-in made on A.
async fn recordings_on_shared_storage_replay_from_any_node(redis: &RedisDb) {
    use portcullis_testkit::sshd::Sshd;
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let shared = tempfile::tempdir().unwrap();
    let recordings = shared.path().join("recordings");
    let recorded = |name: &str| {
        Gateway::builder()
            .target_with("vm1", &addr, "ssh", &sshd.target_keys(&pin))
            .password(PASSWORD)
            .user("alice", &["vm1"], "replay = true")
            .toml(&format!(
                "[recording]\ndir = \"{}\"\n{}",
                recordings.display(),
                redis.cluster_toml(name)
            ))
            .start()
    };
    let (a, b) = (recorded("gw-a"), recorded("gw-b"));
    let (status, cookie) = sign_in(&a, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    let headers = [("Cookie", cookie.as_str()), ("Origin", &a.origin())];
    let mut ws = WsClient::open_with(&a, "/v1/ssh/vm1", &headers)
        .await
        .unwrap_or_else(|e| panic!("{}", text(&e)));
    ws.send_binary(b"echo SHARED-$((6*7)); exit\n").await;
    // Until the exit message: the shell ran the command.
    loop {
        match ws.recv_json(15 * SEC).await {
            Some(m) if m["type"] == "exit" => break,
            Some(_) => {}
            None => panic!("no exit message"),
        }
    }
    let id = a.session_records(1)[0]["session"].as_str().unwrap().to_owned();
    let (status, _, list) = https(&b, "GET", "/api/recordings", &[("Cookie", cookie.as_str())], "").await;
    assert_eq!(status, 200, "{list}");
    assert!(list.contains(&id), "{list}");
    let replayed = eventually(5 * SEC, || async {
        let (status, _, cast) = https(
            &b,
            "GET",
            &format!("/api/recordings/{id}"),
            &[("Cookie", cookie.as_str())],
            "",
        )
        .await;
        status == 200 && cast.contains("SHARED-42")
    })
    .await;
    assert!(replayed, "the recording made on A does not replay through B");
}

/// A web RDP ticket minted on A is taken by B (which then reaches the RDP target: here one that
/// hangs up, so the answer is 502 after the ticket was accepted), and refused on its second use,
/// on either node.
async fn a_ticket_minted_on_one_node_is_redeemed_once_on_another(redis: &RedisDb) {
    use portcullis_protocols::rdp::{self, CleanPathAnswer};
    use portcullis_protocols::ws::{Message, OpCode};
    let desk = targets::TcpTarget::answering(b"");
    let rdp_node = |name: &str| {
        Gateway::builder()
            .target("desk", desk.addr, "rdp")
            .password(PASSWORD)
            .user("alice", &["desk"], "")
            .toml(&redis.cluster_toml(name))
            .start()
    };
    let (a, b) = (rdp_node("gw-a"), rdp_node("gw-b"));
    let (status, cookie) = sign_in(&a, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    let (status, _, body) = https(
        &a,
        "POST",
        "/api/rdp/ticket",
        &[("Cookie", cookie.as_str())],
        r#"{"target":"desk"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ticket = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let pdu = rdp::cleanpath_request(&rdp::connection_request("alice"), "desk", &ticket, None).unwrap();
    let ask = |gw: &Gateway| {
        let pdu = pdu.clone();
        let addr = gw.addr();
        async move {
            let mut ws = WsClient::open_path(&addr, "/v1/rdp", None).await;
            ws.send_frame(true, OpCode::Binary, &pdu, true).await;
            match ws.recv(15 * SEC).await {
                Some(Message::Binary(b)) => match rdp::parse_cleanpath_answer(&b).expect("an RDCleanPath PDU") {
                    CleanPathAnswer::Error { http_status, .. } => http_status,
                    CleanPathAnswer::Response { .. } => Some(200),
                },
                other => panic!("expected an RDCleanPath PDU, got {other:?}"),
            }
        }
    };
    let before = desk.accepted();
    // No HTTP status: the RDCleanPath "general" error of a server that hung up (audited 502).
    assert_eq!(ask(&b).await, None, "B took the ticket and tried the target");
    assert_eq!(desk.accepted(), before + 1);
    assert_eq!(ask(&a).await, Some(401), "used already, on the node that minted it");
    assert_eq!(ask(&b).await, Some(401), "and on the node that took it");
    assert_eq!(desk.accepted(), before + 1, "a refused ticket reaches no server");
    let tried = b.records_where(1, |r| r["event"] == "denied" && r["status"] == 502);
    assert_eq!(tried[0]["user"], "alice", "{tried:?}");
}

/// A shared link made on A is listed on B, opens once across the fleet (B first, then refused on
/// A), and a reusable one revoked on B stops working on A.
async fn a_shared_link_made_on_one_node_opens_once_anywhere(redis: &RedisDb) {
    let sshd_like = targets::TcpTarget::answering(b"");
    let link_node = |name: &str| {
        Gateway::builder()
            .target("vm1", sshd_like.addr, "ssh")
            .password(PASSWORD)
            .user("alice", &["vm1"], "")
            .toml(&format!(
                "{}[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]\n",
                redis.cluster_toml(name)
            ))
            .start()
    };
    let (a, b) = (link_node("gw-a"), link_node("gw-b"));
    let (status, cookie) = sign_in(&a, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    let make = |once: bool| {
        let (addr, cookie) = (a.addr(), cookie.clone());
        async move {
            let body = format!(r#"{{"target":"vm1","ttl_seconds":600,"once":{once}}}"#);
            let (status, _, body) =
                https(&addr, "POST", "/api/admin/links", &[("Cookie", cookie.as_str())], &body).await;
            assert_eq!(status, 201, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let url = v["url"].as_str().unwrap().to_owned();
            (
                v["id"].as_str().unwrap().to_owned(),
                url.split("#/link/").nth(1).unwrap().to_owned(),
            )
        }
    };
    let open = |gw: &Gateway, link: &str| {
        let (addr, body) = (gw.addr(), serde_json::json!({ "link": link }).to_string());
        async move { https(&addr, "POST", "/api/link", &[], &body).await.0 }
    };
    let (once_id, once_link) = make(true).await;
    let (b_status, b_cookie) = sign_in(&b, "alice", PASSWORD).await;
    assert_eq!(b_status, 200);
    let b_cookie = b_cookie.unwrap();
    let (status, _, listed) = https(&b, "GET", "/api/admin/links", &[("Cookie", b_cookie.as_str())], "").await;
    assert_eq!(status, 200);
    assert!(listed.contains(&once_id), "{listed}");
    assert!(
        !listed.contains(once_link.split('.').nth(1).unwrap()),
        "the secret is not listed"
    );
    assert_eq!(open(&b, &once_link).await, 200);
    assert_eq!(
        open(&a, &once_link).await,
        403,
        "a single-use link opens once across the fleet"
    );
    let (id, link) = make(false).await;
    assert_eq!(open(&a, &link).await, 200);
    let body = serde_json::json!({ "id": id }).to_string();
    let (status, _, _) = https(
        &b,
        "POST",
        "/api/admin/links/revoke",
        &[("Cookie", b_cookie.as_str())],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(open(&a, &link).await, 403, "revoked on B, refused on A");
    // A wrong secret for a live link is refused too.
    let (_, live) = make(false).await;
    let forged = format!("{}.{}", live.split('.').next().unwrap(), "A".repeat(43));
    assert_eq!(open(&a, &forged).await, 403);
}

/// A browser terminal on A, watched by an administrator signed in on B: the stream crosses the
/// fleet store (publish and subscribe); the terminal's user is told; what the shell prints
/// reaches the watcher; when the watcher leaves, the user is told that too.
async fn a_terminal_on_one_node_is_watched_from_another(redis: &RedisDb) {
    use portcullis_protocols::ws::Message;
    use portcullis_testkit::sshd::Sshd;
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let node = |name: &str| {
        Gateway::builder()
            .target_with("vm1", &addr, "ssh", &sshd.target_keys(&pin))
            .password(PASSWORD)
            .user("alice", &["vm1"], "")
            .user("carol", &["vm1"], "")
            .toml(&format!(
                "{}[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]\n",
                redis.cluster_toml(name)
            ))
            .start()
    };
    let (a, b) = (node("gw-a"), node("gw-b"));
    let (_, carol) = sign_in(&a, "carol", PASSWORD).await;
    let carol = carol.unwrap();
    let headers = [("Cookie", carol.as_str()), ("Origin", &a.origin())];
    let mut term = WsClient::open_with(&a, "/v1/ssh/vm1", &headers)
        .await
        .unwrap_or_else(|e| panic!("{}", text(&e)));
    loop {
        match term.recv_json(15 * SEC).await {
            Some(m) if m["type"] == "ready" => break,
            Some(_) => {}
            None => panic!("no ready message"),
        }
    }
    // The session is listed fleet-wide before anyone can find it from B.
    let listed = || {
        let (status, body) = b.admin_request("GET", "/v1/sessions", Some(&b.admin_token("alice")), "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["sessions"]
            .as_array()
            .unwrap()
            .clone()
    };
    let id = eventually(10 * SEC, || async { !listed().is_empty() }).await;
    assert!(id, "B never listed A's session");
    let id = listed()[0]["id"].as_str().unwrap().to_owned();
    let (_, alice) = sign_in(&b, "alice", PASSWORD).await;
    let alice = alice.unwrap();
    let headers = [("Cookie", alice.as_str()), ("Origin", &b.origin())];
    let mut watcher = WsClient::open_with(&b, &format!("/v1/watch/{id}"), &headers)
        .await
        .unwrap_or_else(|e| panic!("watch refused: {}", text(&e)));
    let hello = watcher.recv_json(10 * SEC).await.expect("the watch's first message");
    assert_eq!(
        (hello["type"].as_str(), hello["user"].as_str()),
        (Some("watching"), Some("carol"))
    );
    // Carol is told.
    loop {
        match term.recv_json(15 * SEC).await {
            Some(m) if m["type"] == "watched" => {
                assert_eq!(m["watchers"], 1);
                break;
            }
            Some(_) => {}
            None => panic!("carol was not told she is watched"),
        }
    }
    term.send_binary(b"echo WATCHED-$((6*7))\n").await;
    let mut seen = Vec::new();
    let found = tokio::time::timeout(20 * SEC, async {
        loop {
            match watcher.recv(20 * SEC).await {
                Some(Message::Binary(b)) => {
                    seen.extend_from_slice(&b);
                    if String::from_utf8_lossy(&seen).contains("WATCHED-42") {
                        return true;
                    }
                }
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "the watcher on B saw: {}",
        String::from_utf8_lossy(&seen)
    );
    drop(watcher);
    // The watcher left: A's forwarder finds nobody listening at its next publish (output or
    // keepalive), and carol is told.
    term.send_binary(b"echo again\n").await;
    let told = tokio::time::timeout(20 * SEC, async {
        loop {
            match term.recv_json(20 * SEC).await {
                Some(m) if m["type"] == "watched" && m["watchers"] == 0 => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(told, Ok(true), "carol was not told the watch ended");
    let admin = b.records_where(1, |l| l["event"] == "admin" && l["action"] == "watch_session");
    assert_eq!(
        (admin[0]["status"].as_u64(), admin[0]["subject"].as_str()),
        (Some(101), Some(id.as_str()))
    );
}

/// One TLS connection to `gw` with `config` (its session cache), asking `/healthz` so that the
/// session tickets sent after the handshake are read: how the handshake went.
fn tls_handshake(gw: &Gateway, config: &Arc<rustls::ClientConfig>) -> Option<rustls::HandshakeKind> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(gw.addr()).unwrap());
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert_eq!(status_of(&answer), 200, "{}", String::from_utf8_lossy(&answer));
    tls.conn.handshake_kind()
}

/// TLS session tickets are sealed with keys the fleet shares through the store: a client whose
/// first connection went to A resumes its session on B (no full handshake); a gateway of another
/// store cannot open A's tickets, so its clients do full handshakes there.
async fn a_tls_session_from_one_node_resumes_on_another(redis: &RedisDb) {
    use rustls::HandshakeKind::{Full, Resumed};
    let echo = EchoTarget::start();
    let a = node(redis, "gw-a", &echo, "");
    let b = node(redis, "gw-b", &echo, "");
    let alone = Gateway::builder().target("echo", echo.addr, "tcp").start();
    let kinds = tokio::task::spawn_blocking(move || {
        // Each client config is one client's session cache. (A node has its keys before it
        // reports ready.)
        let fresh =
            || -> Arc<rustls::ClientConfig> { Arc::new(portcullis_testkit::client::insecure_tls().as_ref().clone()) };
        let c = fresh();
        let kinds = [tls_handshake(&a, &c), tls_handshake(&b, &c), tls_handshake(&a, &c)];
        let other = fresh();
        tls_handshake(&a, &other);
        (kinds, tls_handshake(&alone, &other))
    })
    .await
    .unwrap();
    assert_eq!(
        kinds.0,
        [Some(Full), Some(Resumed), Some(Resumed)],
        "resumed across the fleet"
    );
    assert_eq!(
        kinds.1,
        Some(Full),
        "another store's gateway cannot open the fleet's tickets"
    );
}
