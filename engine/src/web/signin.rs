//! Web sign-in over the state store: session cookies, one-time RDP tickets, and the brake on
//! password guessing. Secrets are random (256 bits) and stored only as their SHA-256.

use crate::store::{key_of, Attempt, Store, StoreError, ThrottleKey, ThrottleRule, Ticket, WebSession};
use portcullis_core::config::ThrottleSettings;
use portcullis_core::net::client_key;
use portcullis_core::secret::{self, RandomError};
use portcullis_protocols::http::RequestHead;
use std::net::IpAddr;
use std::time::Duration;

/// `__Host-`: browsers accept it only from this host, `Secure`, with `Path=/` and no `Domain`,
/// so a sibling subdomain cannot plant one (cookie tossing).
pub const COOKIE: &str = "__Host-portcullis_session";
/// Tickets are recognisable, so `/v1/rdp` knows not to parse them as tokens.
pub const TICKET_PREFIX: &str = "pct_";
const TICKET_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigninError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The session cookie's value in a request, if there is exactly one: several (a planted one next
/// to the real one) are ambiguous, and neither is taken.
pub fn cookie<'a>(head: &RequestHead<'a>) -> Option<&'a str> {
    let mut values = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE).and_then(|v| v.strip_prefix('=')));
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// `Set-Cookie` for a session (an empty value and 0 end it).
pub fn set_cookie(value: &str, max_age: Duration) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

/// Starts a session; returns the cookie value.
pub async fn start_session(store: &dyn Store, session: WebSession, ttl: Duration) -> Result<String, SigninError> {
    let value = secret::random_base64url::<32>()?;
    store.put_session(key_of(&value), session, ttl).await?;
    Ok(value)
}

/// The live session the request's cookie names.
pub async fn current(store: &dyn Store, head: &RequestHead<'_>) -> Result<Option<WebSession>, StoreError> {
    match cookie(head) {
        Some(value) => store.session(key_of(value)).await,
        None => Ok(None),
    }
}

pub async fn end_session(store: &dyn Store, head: &RequestHead<'_>) -> Result<(), StoreError> {
    match cookie(head) {
        Some(value) => store.delete_session(key_of(value)).await,
        None => Ok(()),
    }
}

pub async fn issue_ticket(
    store: &dyn Store,
    user: &str,
    target: &str,
    roles: &[String],
) -> Result<String, SigninError> {
    let ticket = format!("{TICKET_PREFIX}{}", secret::random_base64url::<32>()?);
    let value = Ticket {
        user: user.to_owned(),
        target: target.to_owned(),
        roles: roles.to_vec(),
    };
    store.put_ticket(key_of(&ticket), value, TICKET_TTL).await?;
    Ok(ticket)
}

pub fn is_ticket(credential: &str) -> bool {
    credential.starts_with(TICKET_PREFIX)
}

/// The ticket's user and target if it is live; it is used up either way.
pub async fn redeem_ticket(store: &dyn Store, ticket: &str) -> Result<Option<Ticket>, StoreError> {
    store.take_ticket(key_of(ticket)).await
}

/// Whether a password sign-in may go on to the (costly) password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted; check the password after `delay` (zero unless the user is being guessed at
    /// from many addresses).
    Check { delay: Duration },
    /// Too many attempts from this client (for this user, or for anyone): try after this.
    Refused { retry_after: Duration },
}

/// The keys an attempt by `user` from `client` counts under: the pair, the client, the user.
fn attempt_keys(user: &str, client: IpAddr) -> [ThrottleKey; 3] {
    let client = client_key(client);
    [
        ThrottleKey::UserAddress(user.to_owned(), client),
        ThrottleKey::Address(client),
        ThrottleKey::User(user.to_owned()),
    ]
}

/// Reserves a sign-in attempt, before the password is checked: the pair and the client have
/// limits per window; the user only slows down, so that guesses from anywhere never lock the
/// real user out of a client that has not failed.
pub async fn begin_attempt(
    store: &dyn Store,
    user: &str,
    client: IpAddr,
    rules: &ThrottleSettings,
) -> Result<Admission, StoreError> {
    let [pair, address, user_key] = attempt_keys(user, client);
    let rule = |limit| ThrottleRule {
        limit,
        window: rules.window,
    };
    let keys = [
        (pair, rule(rules.per_user_address)),
        (address, rule(rules.per_address)),
        (user_key, rule(u32::MAX)),
    ];
    Ok(match store.reserve_attempt(&keys).await? {
        Attempt::Reserved { before } => Admission::Check {
            delay: user_delay(before[2], rules),
        },
        Attempt::Refused { retry_after } => Admission::Refused { retry_after },
    })
}

/// The delay before checking a password for a user with `before` attempts in the window: none up
/// to `per_user_address` (one client's share), then 250 ms doubling per attempt, capped.
pub fn user_delay(before: u32, rules: &ThrottleSettings) -> Duration {
    let Some(over) = before.checked_sub(rules.per_user_address) else {
        return Duration::ZERO;
    };
    let delay = Duration::from_millis(250).saturating_mul(1u32 << over.min(16));
    delay.min(rules.max_delay)
}

/// The right password: the pair's attempts are forgotten; this attempt is given back to the
/// client and the user, whose counts keep the guesses of others (a valid account must not reset
/// its client's count of guesses at other users, nor the user's brake on guesses from elsewhere).
pub async fn attempt_succeeded(store: &dyn Store, user: &str, client: IpAddr) -> Result<(), StoreError> {
    let [pair, address, user_key] = attempt_keys(user, client);
    store.clear_attempts(&[pair]).await?;
    store.refund_attempt(&[address, user_key]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use futures_lite::future::block_on;

    const RULES: ThrottleSettings = ThrottleSettings {
        per_user_address: 5,
        per_address: 20,
        window: Duration::from_secs(900),
        max_delay: Duration::from_secs(5),
    };

    fn attempt(s: &MemoryStore, user: &str, client: &str) -> Admission {
        block_on(begin_attempt(s, user, client.parse().unwrap(), &RULES)).unwrap()
    }

    #[test]
    fn a_client_is_limited_per_user_and_overall_and_others_only_slowed() {
        let s = MemoryStore::new();
        for _ in 0..5 {
            assert_eq!(
                attempt(&s, "alice", "192.0.2.1"),
                Admission::Check { delay: Duration::ZERO }
            );
        }
        assert!(matches!(attempt(&s, "alice", "192.0.2.1"), Admission::Refused { .. }));
        // Another client is not locked out of alice: slowed, since alice is being guessed at.
        assert_eq!(
            attempt(&s, "alice", "192.0.2.2"),
            Admission::Check {
                delay: Duration::from_millis(250)
            }
        );
        // The first client may still try other users, up to 20 attempts in all.
        for i in 0..15 {
            assert!(matches!(
                attempt(&s, &format!("u{i}"), "192.0.2.1"),
                Admission::Check { .. }
            ));
        }
        assert!(matches!(attempt(&s, "carol", "192.0.2.1"), Admission::Refused { .. }));
        // An IPv6 client is counted by its /64.
        for i in 0..5 {
            assert!(matches!(
                attempt(&s, "bob", &format!("2001:db8::{i}")),
                Admission::Check { .. }
            ));
        }
        assert!(matches!(
            attempt(&s, "bob", "2001:db8::ffff"),
            Admission::Refused { .. }
        ));
        assert!(matches!(attempt(&s, "bob", "2001:db8:0:1::1"), Admission::Check { .. }));
    }

    #[test]
    fn the_delay_grows_per_attempt_and_is_capped() {
        let d = |n| user_delay(n, &RULES).as_millis();
        assert_eq!(
            [d(0), d(4), d(5), d(6), d(7), d(9), d(10), d(u32::MAX)],
            [0, 0, 250, 500, 1000, 4000, 5000, 5000]
        );
    }

    #[test]
    fn success_forgets_the_pair_and_gives_the_attempt_back() {
        let s = MemoryStore::new();
        let ip = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            attempt(&s, "alice", "192.0.2.1");
        }
        attempt(&s, "alice", "192.0.2.2");
        // 6 attempts at alice; the one from 192.0.2.2 was right.
        block_on(attempt_succeeded(&s, "alice", "192.0.2.2".parse().unwrap())).unwrap();
        assert!(matches!(attempt(&s, "alice", "192.0.2.1"), Admission::Refused { .. }));
        // Five failures remain against alice: the next attempt is slowed from the first one.
        assert_eq!(
            attempt(&s, "alice", "192.0.2.3"),
            Admission::Check {
                delay: Duration::from_millis(250)
            }
        );
        block_on(attempt_succeeded(&s, "alice", ip)).unwrap();
        assert!(matches!(attempt(&s, "alice", "192.0.2.1"), Admission::Check { .. }));
    }

    #[test]
    fn sessions_and_tickets() {
        let s = MemoryStore::new();
        let session = WebSession {
            user: "a".into(),
            roles: Vec::new(),
            only_target: None,
            mfa: false,
        };
        let value = block_on(start_session(&s, session.clone(), Duration::from_secs(60))).unwrap();
        assert_eq!(value.len(), 43);
        let head_text = format!("GET / HTTP/1.1\r\nCookie: x=1; {COOKIE}={value}\r\n\r\n");
        let head = portcullis_protocols::http::parse_head(head_text.as_bytes(), Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(block_on(current(&s, &head)).unwrap(), Some(session));
        // A second cookie of the same name (planted, or a stale one) makes it ambiguous.
        for twice in [
            format!("GET / HTTP/1.1\r\nCookie: {COOKIE}=planted; {COOKIE}={value}\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nCookie: {COOKIE}={value}\r\nCookie: {COOKIE}=planted\r\n\r\n"),
        ] {
            let head = portcullis_protocols::http::parse_head(twice.as_bytes(), Default::default())
                .unwrap()
                .unwrap();
            assert_eq!(cookie(&head), None, "{twice}");
        }
        // The old name (without the prefix) is not the session cookie.
        let old = format!("GET / HTTP/1.1\r\nCookie: portcullis_session={value}\r\n\r\n");
        let head = portcullis_protocols::http::parse_head(old.as_bytes(), Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(cookie(&head), None);
        block_on(end_session(&s, &head)).unwrap();
        assert_eq!(block_on(current(&s, &head)).unwrap(), None);
        let ticket = block_on(issue_ticket(&s, "a", "desk", &[])).unwrap();
        assert!(is_ticket(&ticket));
        assert_eq!(block_on(redeem_ticket(&s, &ticket)).unwrap().unwrap().target, "desk");
        assert_eq!(block_on(redeem_ticket(&s, &ticket)).unwrap(), None);
    }
}
