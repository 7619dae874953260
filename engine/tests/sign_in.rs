//! The brake on password guessing, from the outside: attempts are counted before the password is
//! checked (concurrent guesses cannot slip through), limits are per user and client address and
//! per address, and guesses from other addresses slow a user's sign-in but never lock them out.

use portcullis_testkit::client::{sign_in, From};
use portcullis_testkit::*;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

fn from(gw: &Gateway, source: &str) -> From {
    From {
        addr: gw.addr(),
        source: source.parse().unwrap(),
    }
}

/// 40 wrong passwords for one user, sent at once from one address: at most 5 are checked (401),
/// the others refused before the check (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_guesses_are_counted_before_the_check() {
    let gw = Gateway::builder().password(PASSWORD).start();
    let attacker = from(&gw, "127.0.0.30");
    // All spawned before any is awaited.
    let guesses: Vec<_> = (0..40)
        .map(|i| tokio::spawn(async move { sign_in(&attacker, "alice", &format!("guess {i}")).await.0 }))
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 35), "statuses: {statuses:?}");
    // The same address is refused for alice even with her password; alice from elsewhere is not.
    assert_eq!(sign_in(&attacker, "alice", PASSWORD).await.0, 429);
    assert_eq!(sign_in(&from(&gw, "127.0.0.31"), "alice", PASSWORD).await.0, 200);
}

/// Guesses at alice from many addresses (more than one address's share): her sign-in from an
/// address that has not failed succeeds, slowed by at most `max_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_elsewhere_never_lock_a_user_out() {
    let gw = Gateway::builder()
        .password(PASSWORD)
        .toml("[web.throttle]\nmax_delay = \"1s\"\n")
        .start();
    // 8 addresses, 5 wrong guesses each: 40 attempts at alice in the window.
    let attackers: Vec<_> = (0..8)
        .map(|i| {
            let ep = from(&gw, &format!("127.0.0.{}", 40 + i));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0..5 {
                    statuses.push(sign_in(&ep, "alice", &format!("guess {n}")).await.0);
                }
                statuses
            })
        })
        .collect();
    // Meanwhile, and after, alice signs in from her own address.
    let alice = from(&gw, "127.0.0.60");
    assert_eq!(
        sign_in(&alice, "alice", PASSWORD).await.0,
        200,
        "while guessing goes on"
    );
    for a in attackers {
        let statuses = a.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 401),
            "each address had its 5 attempts: {statuses:?}"
        );
    }
    let before = Instant::now();
    assert_eq!(
        sign_in(&alice, "alice", PASSWORD).await.0,
        200,
        "after 40 guesses from 8 addresses"
    );
    // Slowed by the capped delay (1 s here); the upper bound leaves room for a slow password hash
    // in a debug build, and is far below a lockout.
    let waited = before.elapsed();
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(6)).contains(&waited),
        "her sign-in took {waited:?}"
    );
}
