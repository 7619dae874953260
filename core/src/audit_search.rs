//! Searching audit records (the web app's Audit page): which records a query selects, as a pure
//! function of one record (a line of the JSON audit log) and the query. No I/O: the engine reads
//! the log and asks [`Query::matches`] line by line.
//!
//! A query selects by kind (`session`, `denied`, `identity` for sign-ins and tokens, `admin`),
//! user, target, time range and outcome (`ok` or `refused`). A record's time is its `time`, or a
//! session's `end`; times compare as RFC 3339 strings in UTC, which is how the log writes them.

use serde_json::Value;

/// Longest value of a query field (a user or target name, a time).
pub const MAX_FIELD: usize = 128;

/// What a record's kind is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Session,
    Denied,
    Identity,
    Admin,
    /// Files moved in the browser terminal.
    File,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "session" => Kind::Session,
            "denied" => Kind::Denied,
            "identity" => Kind::Identity,
            "admin" => Kind::Admin,
            "file" => Kind::File,
            _ => return None,
        })
    }

    fn of(record: &Value) -> Option<Kind> {
        Kind::parse(record["event"].as_str()?)
    }
}

/// Whether what a record tells went through or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "refused" => Some(Outcome::Refused),
            _ => None,
        }
    }

    /// Denials, failed sign-ins, device logins refused and admin requests answered 4xx/5xx are
    /// refusals; sessions (granted, whatever ended them) and the rest went through.
    pub fn of(record: &Value) -> Outcome {
        let refused = match Kind::of(record) {
            Some(Kind::Denied) => true,
            Some(Kind::Identity) => matches!(record["action"].as_str(), Some("sign_in_failed" | "device_denied")),
            Some(Kind::Admin) => record["status"].as_u64().is_some_and(|s| s >= 400),
            Some(Kind::File) => record["outcome"].as_str() != Some("ok"),
            Some(Kind::Session) | None => false,
        };
        if refused {
            Outcome::Refused
        } else {
            Outcome::Ok
        }
    }
}

/// Why a query is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("unknown event kind {0:?} (session, denied, identity, admin, file)")]
    Kind(String),
    #[error("unknown outcome {0:?} (ok, refused)")]
    Outcome(String),
    #[error("{0} is too long")]
    TooLong(&'static str),
    #[error("{0} is not an RFC 3339 time (2026-11-26T09:00:00Z)")]
    Time(&'static str),
}

/// A search of the audit log; empty fields select everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub kind: Option<Kind>,
    pub user: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records at or after this time (RFC 3339, UTC).
    pub from: Option<String>,
    /// Records before this time.
    pub to: Option<String>,
}

impl Query {
    /// A query from its fields as text (the web API's query parameters); empty means any.
    pub fn parse(
        kind: Option<&str>,
        user: Option<&str>,
        target: Option<&str>,
        outcome: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Query, QueryError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let bounded = |v: Option<&str>, what| match given(v) {
            Some(v) if v.len() > MAX_FIELD => Err(QueryError::TooLong(what)),
            v => Ok(v.map(str::to_owned)),
        };
        let time = |v: Option<&str>, what| match bounded(v, what)? {
            Some(t) if !is_rfc3339(&t) => Err(QueryError::Time(what)),
            t => Ok(t.map(|t| normalise_time(&t))),
        };
        Ok(Query {
            kind: match given(kind) {
                Some(k) => Some(Kind::parse(k).ok_or_else(|| QueryError::Kind(k.chars().take(32).collect()))?),
                None => None,
            },
            user: bounded(user, "user")?,
            target: bounded(target, "target")?,
            outcome: match given(outcome) {
                Some(o) => Some(Outcome::parse(o).ok_or_else(|| QueryError::Outcome(o.chars().take(32).collect()))?),
                None => None,
            },
            from: time(from, "from")?,
            to: time(to, "to")?,
        })
    }

    /// Whether `record` (one line of the audit log) is selected.
    pub fn matches(&self, record: &Value) -> bool {
        if self.kind.is_some_and(|k| Kind::of(record) != Some(k)) {
            return false;
        }
        if let Some(user) = &self.user {
            // Admin records name the administrator.
            let who = record["user"].as_str().or_else(|| record["admin"].as_str());
            if who != Some(user.as_str()) {
                return false;
            }
        }
        if let Some(target) = &self.target {
            if !names_target(record, target) {
                return false;
            }
        }
        if self.outcome.is_some_and(|o| Outcome::of(record) != o) {
            return false;
        }
        let time = record_time(record);
        if self.from.as_deref().is_some_and(|from| time.is_none_or(|t| t < from)) {
            return false;
        }
        if self.to.as_deref().is_some_and(|to| time.is_none_or(|t| t >= to)) {
            return false;
        }
        true
    }
}

/// A record's time: `time`, or a session's `end`.
fn record_time(record: &Value) -> Option<&str> {
    record["time"].as_str().or_else(|| record["end"].as_str())
}

/// The record is about `target`: its `target` field, or (a denial) the last segment of its path.
fn names_target(record: &Value, target: &str) -> bool {
    if record["target"].as_str() == Some(target) {
        return true;
    }
    record["path"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|last| last == target)
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional fraction and `Z`: what the log writes and the page sends
/// (a date alone, `YYYY-MM-DD`, is taken as its midnight).
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let date = b.len() >= 10 && digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10);
    if b.len() == 10 {
        return date;
    }
    date && b.len() >= 19
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19..].iter().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'Z'))
}

fn normalise_time(t: &str) -> String {
    if t.len() == 10 {
        format!("{t}T00:00:00")
    } else {
        t.trim_end_matches('Z').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(kind: &str, user: &str, target: &str, outcome: &str, from: &str, to: &str) -> Query {
        Query::parse(
            Some(kind),
            Some(user),
            Some(target),
            Some(outcome),
            Some(from),
            Some(to),
        )
        .unwrap()
    }

    #[test]
    fn queries_select_by_kind_user_target_outcome_and_time() {
        let session = json!({"event":"session","user":"carol","target":"echo","start":"2026-11-26T09:00:00.000Z","end":"2026-11-26T09:05:00.000Z","ended":"terminated"});
        let denied = json!({"event":"denied","time":"2026-11-26T09:01:00.000Z","path":"/v1/tunnel/echo","status":403,"reason":"not allowed","user":"bob"});
        let failed = json!({"event":"identity","time":"2026-11-26T09:02:00.000Z","action":"sign_in_failed","user":"bob","client":"1.2.3.4"});
        let signed = json!({"event":"identity","time":"2026-11-26T09:03:00.000Z","action":"signed_in","user":"alice","client":"1.2.3.4"});
        let admin = json!({"event":"admin","time":"2026-11-26T09:04:00.000Z","admin":"alice","action":"terminate","status":202});
        let all = [&session, &denied, &failed, &signed, &admin];
        let hits = |query: Query| all.iter().filter(|r| query.matches(r)).count();
        assert_eq!(hits(Query::default()), 5);
        assert_eq!(hits(q("session", "", "", "", "", "")), 1);
        assert_eq!(hits(q("", "bob", "", "", "", "")), 2);
        assert_eq!(
            hits(q("", "alice", "", "", "", "")),
            2,
            "admin records name the administrator"
        );
        assert_eq!(
            hits(q("", "", "echo", "", "", "")),
            2,
            "a denial names its target in its path"
        );
        assert_eq!(hits(q("", "", "", "refused", "", "")), 2);
        assert_eq!(hits(q("identity", "", "", "ok", "", "")), 1);
        assert_eq!(
            hits(q("", "", "", "", "2026-11-26T09:02:00Z", "")),
            4,
            "a session by its end"
        );
        assert_eq!(
            hits(q("", "", "", "", "2026-11-26T09:01:00Z", "2026-11-26T09:03:00Z")),
            2
        );
        assert_eq!(hits(q("", "", "", "", "2026-11-26", "2026-11-27")), 5);
        assert_eq!(hits(q("", "", "", "", "2026-11-27", "")), 0);
    }

    #[test]
    fn bad_queries_are_refused() {
        let parse = |kind, outcome, from| Query::parse(Some(kind), None, None, Some(outcome), Some(from), None);
        assert!(matches!(parse("nope", "", ""), Err(QueryError::Kind(_))));
        assert!(matches!(parse("", "maybe", ""), Err(QueryError::Outcome(_))));
        for bad in [
            "yesterday",
            "2026-1-1",
            "2026-11-26 09:00:00",
            "2026-11-26T09:00:00+01:00",
        ] {
            assert!(matches!(parse("", "", bad), Err(QueryError::Time(_))), "{bad}");
        }
        let long = "x".repeat(MAX_FIELD + 1);
        assert!(matches!(
            Query::parse(None, Some(&long), None, None, None, None),
            Err(QueryError::TooLong("user"))
        ));
        assert_eq!(
            Query::parse(None, None, None, None, None, None).unwrap(),
            Query::default()
        );
    }
}
