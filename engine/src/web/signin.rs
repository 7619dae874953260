//! Web sign-in over the state store: session cookies, one-time RDP tickets, and the brake on
//! password guessing. Secrets are random (256 bits) and stored only as their SHA-256.

use crate::store::{key_of, Store, StoreError, ThrottleKey, ThrottleRule, Ticket, WebSession};
use portcullis_core::secret::{self, RandomError};
use portcullis_protocols::http::RequestHead;
use std::net::IpAddr;
use std::time::Duration;

pub const COOKIE: &str = "portcullis_session";
/// Tickets are recognisable, so `/v1/rdp` knows not to parse them as tokens.
pub const TICKET_PREFIX: &str = "pct_";
const TICKET_TTL: Duration = Duration::from_secs(60);

/// Failed sign-ins: 5 per user in 15 minutes lock the user for 5 minutes; 20 per client address
/// lock the address for 15 minutes.
pub const USER_RULE: ThrottleRule = ThrottleRule {
    limit: 5,
    window: Duration::from_secs(15 * 60),
    lock: Duration::from_secs(5 * 60),
};
pub const ADDRESS_RULE: ThrottleRule = ThrottleRule {
    limit: 20,
    window: Duration::from_secs(15 * 60),
    lock: Duration::from_secs(15 * 60),
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigninError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The session cookie's value in a request, if any.
pub fn cookie<'a>(head: &RequestHead<'a>) -> Option<&'a str> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|v| v.strip_prefix('=')))
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

pub async fn issue_ticket(store: &dyn Store, user: &str, target: &str) -> Result<String, SigninError> {
    let ticket = format!("{TICKET_PREFIX}{}", secret::random_base64url::<32>()?);
    let value = Ticket {
        user: user.to_owned(),
        target: target.to_owned(),
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

/// How long the user or the address is still locked out, if either is.
pub async fn locked_for(store: &dyn Store, user: &str, addr: IpAddr) -> Result<Option<Duration>, StoreError> {
    store
        .locked_for(&[ThrottleKey::User(user.to_owned()), ThrottleKey::Address(addr)])
        .await
}

pub async fn failed(store: &dyn Store, user: &str, addr: IpAddr) -> Result<(), StoreError> {
    store
        .record_failure(ThrottleKey::User(user.to_owned()), USER_RULE)
        .await?;
    store.record_failure(ThrottleKey::Address(addr), ADDRESS_RULE).await
}

/// A successful sign-in clears the user's count (not the address's).
pub async fn succeeded(store: &dyn Store, user: &str) -> Result<(), StoreError> {
    store.clear_failures(ThrottleKey::User(user.to_owned())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use futures_lite::future::block_on;

    #[test]
    fn lockout_per_user_and_per_address() {
        let s = MemoryStore::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..USER_RULE.limit {
            assert_eq!(block_on(locked_for(&s, "alice", ip)).unwrap(), None);
            block_on(failed(&s, "alice", ip)).unwrap();
        }
        assert!(block_on(locked_for(&s, "alice", ip)).unwrap().is_some());
        assert!(
            block_on(locked_for(&s, "alice", "192.0.2.2".parse().unwrap()))
                .unwrap()
                .is_some(),
            "the user is locked from anywhere"
        );
        assert_eq!(block_on(locked_for(&s, "bob", ip)).unwrap(), None);
        for i in 0..ADDRESS_RULE.limit {
            block_on(failed(&s, &format!("u{i}"), ip)).unwrap();
        }
        assert!(
            block_on(locked_for(&s, "carol", ip)).unwrap().is_some(),
            "the address is locked for every user"
        );
        assert_eq!(
            block_on(locked_for(&s, "carol", "192.0.2.3".parse().unwrap())).unwrap(),
            None
        );
    }

    #[test]
    fn sessions_and_tickets() {
        let s = MemoryStore::new();
        let session = WebSession {
            user: "a".into(),
            only_target: None,
        };
        let value = block_on(start_session(&s, session.clone(), Duration::from_secs(60))).unwrap();
        assert_eq!(value.len(), 43);
        let head_text = format!("GET / HTTP/1.1\r\nCookie: x=1; {COOKIE}={value}\r\n\r\n");
        let head = portcullis_protocols::http::parse_head(head_text.as_bytes(), Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(block_on(current(&s, &head)).unwrap(), Some(session));
        block_on(end_session(&s, &head)).unwrap();
        assert_eq!(block_on(current(&s, &head)).unwrap(), None);
        let ticket = block_on(issue_ticket(&s, "a", "desk")).unwrap();
        assert!(is_ticket(&ticket));
        assert_eq!(block_on(redeem_ticket(&s, &ticket)).unwrap().unwrap().target, "desk");
        assert_eq!(block_on(redeem_ticket(&s, &ticket)).unwrap(), None);
    }
}
