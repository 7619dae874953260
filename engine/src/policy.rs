//! Who may reach what. Deny by default: a session needs a valid token, for a target that exists
//! in the config, naming that same target, for a user whose policy lists it.

use crate::config::{Config, Target};
use portcullis_protocols::token::{Claims, TokenError, TokenVerifier};

/// Why a tunnel request was refused. `status()` is the HTTP answer; the text is safe to log and
/// to send (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    MissingToken,
    BadToken(TokenError),
    UnknownTarget,
    /// The token names another target.
    TokenTargetMismatch,
    /// The token's user is not in the policy.
    UnknownUser,
    /// The user's policy does not list the target.
    NotAllowed,
}

impl Denial {
    pub fn status(&self) -> u16 {
        match self {
            Denial::MissingToken | Denial::BadToken(_) => 401,
            Denial::UnknownTarget => 404,
            Denial::TokenTargetMismatch | Denial::UnknownUser | Denial::NotAllowed => 403,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Denial::MissingToken => "missing token".into(),
            Denial::BadToken(e) => e.to_string(),
            Denial::UnknownTarget => "unknown target".into(),
            Denial::TokenTargetMismatch => "token is for another target".into(),
            Denial::UnknownUser => "user is not allowed".into(),
            Denial::NotAllowed => "target is not allowed for this user".into(),
        }
    }
}

pub struct Policy {
    pub config: Config,
    pub verifier: TokenVerifier,
}

impl Policy {
    /// Decides a request for `target` carrying `token`, at `now` (Unix seconds).
    pub fn authorize(&self, token: Option<&str>, target: &str, now: u64) -> Result<(Claims, &Target), Denial> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Denial::MissingToken)?;
        let claims = self.verifier.verify(token, now).map_err(Denial::BadToken)?;
        let target = self.config.targets.get(target).ok_or(Denial::UnknownTarget)?;
        if claims.tgt != target.name {
            return Err(Denial::TokenTargetMismatch);
        }
        let allowed = self.config.users.get(&claims.sub).ok_or(Denial::UnknownUser)?;
        if !allowed.contains(&target.name) {
            return Err(Denial::NotAllowed);
        }
        Ok((claims, target))
    }
}
