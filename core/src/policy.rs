//! Who may reach what: the one place that says yes.
//!
//! Every route asks [`Policy::authorize`] with the credential it holds (a token, a web sign-in, a
//! redeemed one-time ticket), the destination it was asked for and the route itself, and gets one
//! [`Grant`] or a typed [`Denial`] with its HTTP status. Deny by default: a session needs a
//! credential for a target that exists in the configuration, naming that same target when the
//! credential is bound to one, for a user whose policy lists it, over a route that carries that
//! target's protocol, unless the user or the token is revoked. Session caps plug in here next.

use crate::audit::Via;
use crate::config::{Config, Protocol, Target, User};
use crate::revocation::Revocations;
use portcullis_protocols::token::{Claims, TokenError, TokenVerifier, MAX_TOKEN_LEN};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The user name of a shared link's guest is this and the link's id (`link:3f2a…`). No
/// configured or signed-in user can have such a name (configured names have no `:`, single
/// sign-on refuses it), and no token may claim one: only the gateway makes these sessions, when
/// a link is redeemed.
pub const LINK_USER_PREFIX: &str = "link:";

/// Most verified tokens a policy snapshot remembers; when full it starts over.
const TOKEN_CACHE_MAX: usize = 4096;

/// What the requester holds.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// A bearer token (absent or empty: refused as missing).
    Token(Option<&'a str>),
    /// A signed-in browser: its user, and the one target a token sign-in is limited to.
    WebSession {
        user: &'a str,
        only_target: Option<&'a str>,
        /// Roles from single sign-on (empty for configured users signing in locally).
        roles: &'a [String],
    },
    /// A one-time ticket already redeemed from the store: issued to `user` for `target`.
    Ticket {
        user: &'a str,
        target: &'a str,
        roles: &'a [String],
    },
}

/// How the request names its target.
#[derive(Clone, Copy, Debug)]
pub enum Destination<'a> {
    /// A configured target's name (tunnels, the terminal).
    Name(&'a str),
    /// A name, or the configured address of the target the credential is bound to (RDCleanPath
    /// clients send `host:port`; several targets may share an address). Never any other address.
    NameOrAddress(&'a str),
}

/// A yes: who may open which target over which route. Sessions start only from one of these.
#[derive(Clone, Debug)]
pub struct Grant {
    pub user: String,
    pub target: Arc<Target>,
    /// The token's `jti` when a token was the credential.
    pub token_id: Option<String>,
    /// The token's `exp` (Unix seconds) when a token was the credential.
    pub token_expires: Option<u64>,
    /// The token is single use (`once`): the route spends it in the store before the session.
    pub single_use: bool,
    pub via: Via,
    /// Roles from single sign-on the grant rests on (checked again after a reload).
    pub roles: Vec<String>,
    /// The login credential the token was fetched with: its revocation ends the session too.
    pub login_id: Option<String>,
}

/// Why a request was refused. `status()` is the HTTP answer; `Display` is safe to log and to send
/// (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    #[error("missing token")]
    MissingToken,
    #[error("{0}")]
    BadToken(TokenError),
    #[error("unknown target")]
    UnknownTarget,
    /// The token (or ticket, or token sign-in) names another target.
    #[error("token is for another target")]
    TargetMismatch,
    /// The user is not in the policy.
    #[error("user is not allowed")]
    UnknownUser,
    /// The user's policy does not list the target.
    #[error("target is not allowed for this user")]
    NotAllowed,
    /// The route does not carry the target's protocol (a terminal to an RDP target).
    #[error("not {} target", article(.0))]
    WrongProtocol(Protocol),
    /// The user, or the token, is revoked.
    #[error("access is revoked")]
    Revoked,
    /// The user may not replay recordings.
    #[error("replaying recordings is not allowed for this user")]
    ReplayNotAllowed,
    /// A web sign-in made with a token is good for that token's target, nothing else.
    #[error("a token sign-in is limited to its target")]
    OutOfScope,
    /// A live session's target is no longer what it was granted as (address or protocol).
    #[error("the target has changed")]
    TargetChanged,
    /// The token has no `admin` scope, or its user is not in `[admin] users`.
    #[error("not an admin token")]
    NotAdmin,
    /// A `portcullis login` credential offered as an access token, or the other way round.
    #[error("a login credential is not an access token")]
    LoginCredential,
    /// An access token offered where a login credential is needed.
    #[error("not a login credential")]
    NotLoginCredential,
    /// The target's policy is enforced by the gateway in the browser only (`native = false`):
    /// the tunnel and the RD Gateway do not reach it.
    #[error("this target is reachable from the browser only")]
    BrowserOnly,
}

fn article(p: &Protocol) -> &'static str {
    match p {
        Protocol::Ssh => "an SSH",
        Protocol::Rdp => "an RDP",
        Protocol::Tcp => "a TCP",
    }
}

impl Denial {
    pub fn status(&self) -> u16 {
        match self {
            Denial::MissingToken | Denial::BadToken(_) => 401,
            Denial::UnknownTarget => 404,
            Denial::TargetMismatch
            | Denial::UnknownUser
            | Denial::NotAllowed
            | Denial::Revoked
            | Denial::ReplayNotAllowed
            | Denial::OutOfScope
            | Denial::TargetChanged
            | Denial::NotAdmin
            | Denial::LoginCredential
            | Denial::BrowserOnly => 403,
            Denial::NotLoginCredential => 401,
            Denial::WrongProtocol(_) => 400,
        }
    }
}

/// Who the credential says the requester is.
struct Identity<'a> {
    user: std::borrow::Cow<'a, str>,
    /// The target the credential is limited to, if any.
    bound: Option<std::borrow::Cow<'a, str>>,
    token_id: Option<String>,
    token_expires: Option<u64>,
    single_use: bool,
    roles: Vec<String>,
    login_id: Option<String>,
}

pub struct Policy {
    pub config: Config,
    pub verifier: TokenVerifier,
    /// Claims of tokens this snapshot has verified, by SHA-256 of the token text: a client that
    /// reconnects with the same token (a ProxyCommand per `ssh`, reconnect loops) skips the Ed25519
    /// check (~60 µs, about 15 % of a tunnel's setup). The period is still checked on every use,
    /// and the cache dies with the snapshot, so a reload with another key never honours it. Only
    /// digests of valid tokens are kept, never token text.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
    /// The process's revocations, shared by every snapshot.
    revocations: Arc<Revocations>,
}

impl Policy {
    pub fn new(config: Config, verifier: TokenVerifier, revocations: Arc<Revocations>) -> Policy {
        Policy {
            config,
            verifier,
            verified: Mutex::new(HashMap::new()),
            revocations,
        }
    }

    /// Decides whether `credential` may open `destination` over `via` at `now` (Unix seconds).
    pub fn authorize(
        &self,
        credential: Credential<'_>,
        destination: Destination<'_>,
        via: Via,
        now: u64,
    ) -> Result<Grant, Denial> {
        let who = self.identify(credential, now)?;
        let link = who.user.starts_with(LINK_USER_PREFIX);
        if link && matches!(credential, Credential::Token(_)) {
            return Err(Denial::UnknownUser);
        }
        if self.revocations.is_revoked(&who.user, who.token_id.as_deref(), now)
            || who
                .login_id
                .as_deref()
                .is_some_and(|l| self.revocations.is_revoked(&who.user, Some(l), now))
        {
            return Err(Denial::Revoked);
        }
        let target = self.resolve(destination, who.bound.as_deref())?;
        if who.bound.as_deref().is_some_and(|b| b != target.name) {
            return Err(Denial::TargetMismatch);
        }
        if link {
            // A shared link: its one target (bound), in the browser only; the administrator who
            // made the link is the policy.
            if who.bound.is_none() || !matches!(via, Via::WebTerminal | Via::WebRdp) {
                return Err(Denial::OutOfScope);
            }
        } else {
            let user = self.user_of(who.user.as_ref(), &who.roles).ok_or(Denial::UnknownUser)?;
            if !user.targets.contains(&target.name) {
                return Err(Denial::NotAllowed);
            }
        }
        let needed = match via {
            Via::Tunnel => None,
            Via::WebTerminal => Some(Protocol::Ssh),
            Via::WebRdp | Via::RdGateway => Some(Protocol::Rdp),
        };
        if let Some(protocol) = needed.filter(|p| *p != target.protocol) {
            return Err(Denial::WrongProtocol(protocol));
        }
        if !target.native && matches!(via, Via::Tunnel | Via::RdGateway) {
            return Err(Denial::BrowserOnly);
        }
        Ok(Grant {
            user: who.user.into_owned(),
            target: target.clone(),
            token_id: who.token_id,
            token_expires: who.token_expires,
            single_use: who.single_use,
            via,
            roles: who.roles,
            login_id: who.login_id,
        })
    }

    /// A user as this policy sees them: as configured, plus what the `roles` they signed in with
    /// (single sign-on groups) grant. `None`: unknown (no such user, and no roles).
    pub fn user_of(&self, name: &str, roles: &[String]) -> Option<std::borrow::Cow<'_, User>> {
        let configured = self.config.users.get(name);
        if roles.is_empty() {
            return configured.map(std::borrow::Cow::Borrowed);
        }
        let mut user = configured.cloned().unwrap_or_default();
        for role in roles.iter().filter_map(|r| self.config.roles.get(r)) {
            user.take_role(role, &self.config.targets);
        }
        Some(std::borrow::Cow::Owned(user))
    }

    /// Decides whether `token` may use the admin API at `now`: a valid token (signature, period,
    /// issuer, audience, lifetime) with the `admin` scope, neither it nor its user revoked, and
    /// its user in `[admin] users` when that list is set. Returns the administrator's name.
    pub fn authorize_admin(&self, token: Option<&str>, now: u64) -> Result<String, Denial> {
        let token = token.ok_or(Denial::MissingToken)?;
        let claims = self.verify_access(token, now)?;
        if self.revocations.is_revoked(&claims.sub, Some(&claims.jti), now) {
            return Err(Denial::Revoked);
        }
        let listed = self.is_admin(&claims.sub);
        if !claims.has_scope(portcullis_protocols::token::ADMIN_SCOPE) || !listed {
            return Err(Denial::NotAdmin);
        }
        Ok(claims.sub)
    }

    /// Whether this policy (after a reload) still allows a live session granted by an earlier
    /// one: the user and the token unrevoked, the user still in the policy and still listing the
    /// target, and the target still the same destination (address and protocol).
    pub fn still_allows(&self, grant: &Grant, now: u64) -> Result<(), Denial> {
        if self.revocations.is_revoked(&grant.user, grant.token_id.as_deref(), now)
            || grant
                .login_id
                .as_deref()
                .is_some_and(|l| self.revocations.is_revoked(&grant.user, Some(l), now))
        {
            return Err(Denial::Revoked);
        }
        if !grant.user.starts_with(LINK_USER_PREFIX) {
            let user = self.user_of(&grant.user, &grant.roles).ok_or(Denial::UnknownUser)?;
            if !user.targets.contains(&grant.target.name) {
                return Err(Denial::NotAllowed);
            }
        }
        let target = self
            .config
            .targets
            .get(&grant.target.name)
            .ok_or(Denial::UnknownTarget)?;
        if target.address != grant.target.address || target.protocol != grant.target.protocol {
            return Err(Denial::TargetChanged);
        }
        if !target.native && matches!(grant.via, Via::Tunnel | Via::RdGateway) {
            return Err(Denial::BrowserOnly);
        }
        Ok(())
    }

    /// A token for signing in to the web app: valid, unrevoked, and for a user of the policy.
    pub fn sign_in_token(&self, token: &str, now: u64) -> Result<Claims, Denial> {
        let claims = self.verify_access(token, now)?;
        if self.user_of(&claims.sub, &claims.roles).is_none() {
            return Err(Denial::UnknownUser);
        }
        if self.revocations.is_revoked(&claims.sub, Some(&claims.jti), now) {
            return Err(Denial::Revoked);
        }
        Ok(claims)
    }

    /// Whether a signed-in user (with the `roles` of their sign-in) administers the gateway from
    /// the web app: named in `[admin] users` or holding a role with `admin = true`. Unlike admin
    /// tokens, nobody does when neither is configured.
    pub fn is_web_admin(&self, user: &str, roles: &[String]) -> bool {
        self.config.admin.users.iter().any(|u| u == user) || self.user_of(user, roles).is_some_and(|u| u.admin)
    }

    /// Whether `user` holds admin rights: listed in `[admin] users` or holding a role with
    /// `admin = true`. With neither configured, any admin token's user does (the list is then
    /// the token issuer's to keep).
    pub fn is_admin(&self, user: &str) -> bool {
        let by_role = self.config.users.get(user).is_some_and(|u| u.admin);
        let any_configured = !self.config.admin.users.is_empty() || self.config.users.values().any(|u| u.admin);
        !any_configured || by_role || self.config.admin.users.iter().any(|u| u == user)
    }

    /// A `portcullis login` credential (the `login` scope): valid, neither it nor its user
    /// revoked, and its user in the policy. What it may fetch tokens for is still `authorize`'s
    /// to say, per target.
    pub fn login_credential(&self, credential: Option<&str>, now: u64) -> Result<Claims, Denial> {
        let credential = credential.filter(|t| !t.is_empty()).ok_or(Denial::MissingToken)?;
        let claims = self.verify(credential, now).map_err(Denial::BadToken)?;
        // A credential names no target and is not single use (those are access tokens' traits).
        if !claims.has_scope(portcullis_protocols::token::LOGIN_SCOPE) || !claims.tgt.is_empty() || claims.once {
            return Err(Denial::NotLoginCredential);
        }
        if self.revocations.is_revoked(&claims.sub, Some(&claims.jti), now) {
            return Err(Denial::Revoked);
        }
        if self.user_of(&claims.sub, &claims.roles).is_none() {
            return Err(Denial::UnknownUser);
        }
        Ok(claims)
    }

    /// A verified token that is an access token (not a login credential).
    fn verify_access(&self, token: &str, now: u64) -> Result<Claims, Denial> {
        let claims = self.verify(token, now).map_err(Denial::BadToken)?;
        if claims.has_scope(portcullis_protocols::token::LOGIN_SCOPE) {
            return Err(Denial::LoginCredential);
        }
        Ok(claims)
    }

    /// Whether a signed-in `user` may list and replay session recordings. A sign-in with a token
    /// (`only_target`) may not: the token was for opening one target.
    pub fn may_replay(&self, user: &str, only_target: Option<&str>, roles: &[String], now: u64) -> Result<(), Denial> {
        if only_target.is_some() {
            return Err(Denial::OutOfScope);
        }
        if self.revocations.is_revoked(user, None, now) {
            return Err(Denial::Revoked);
        }
        match self.user_of(user, roles).as_deref() {
            Some(u) if u.replay => Ok(()),
            Some(_) => Err(Denial::ReplayNotAllowed),
            None => Err(Denial::UnknownUser),
        }
    }

    /// The targets `user` may open, sorted by name, limited to `only` (a token sign-in's target):
    /// what the web app lists. Listing is not a grant; opening one still goes through `authorize`.
    pub fn targets_of(&self, user: &str, only: Option<&str>, roles: &[String]) -> Vec<&Arc<Target>> {
        if user.starts_with(LINK_USER_PREFIX) {
            // A shared link's guest: its one target.
            return only.and_then(|o| self.config.targets.get(o)).into_iter().collect();
        }
        let Some(user) = self.user_of(user, roles) else {
            return Vec::new();
        };
        let mut targets: Vec<&Arc<Target>> = user
            .targets
            .iter()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .filter_map(|n| self.config.targets.get(n))
            .collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        targets
    }

    fn identify<'a>(&self, credential: Credential<'a>, now: u64) -> Result<Identity<'a>, Denial> {
        use std::borrow::Cow::{Borrowed, Owned};
        Ok(match credential {
            Credential::Token(token) => {
                let token = token.filter(|t| !t.is_empty()).ok_or(Denial::MissingToken)?;
                let claims = self.verify_access(token, now)?;
                Identity {
                    user: Owned(claims.sub),
                    bound: Some(Owned(claims.tgt)),
                    token_id: Some(claims.jti),
                    token_expires: Some(claims.exp),
                    single_use: claims.once,
                    roles: claims.roles,
                    login_id: claims.lgn,
                }
            }
            Credential::WebSession {
                user,
                only_target,
                roles,
            } => Identity {
                user: Borrowed(user),
                bound: only_target.map(Borrowed),
                token_id: None,
                token_expires: None,
                single_use: false,
                roles: roles.to_vec(),
                login_id: None,
            },
            Credential::Ticket { user, target, roles } => Identity {
                user: Borrowed(user),
                bound: Some(Borrowed(target)),
                token_id: None,
                token_expires: None,
                single_use: false,
                roles: roles.to_vec(),
                login_id: None,
            },
        })
    }

    fn resolve(&self, destination: Destination<'_>, bound: Option<&str>) -> Result<&Arc<Target>, Denial> {
        let targets = &self.config.targets;
        match destination {
            Destination::Name(name) => targets.get(name),
            Destination::NameOrAddress(d) => targets
                .get(d)
                .or_else(|| bound.and_then(|b| targets.get(b)).filter(|t| t.address == d)),
        }
        .ok_or(Denial::UnknownTarget)
    }

    /// Verifies `token` at `now`, from the cache when this snapshot has verified it before.
    fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return self.verifier.verify(token, now);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.verified.lock().ok().and_then(|m| m.get(&digest).cloned());
        if let Some(claims) = cached {
            self.verifier.check_period(&claims, now)?;
            return Ok(claims);
        }
        let claims = self.verifier.verify(token, now)?;
        if let Ok(mut map) = self.verified.lock() {
            if map.len() >= TOKEN_CACHE_MAX {
                map.clear();
            }
            map.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.verified.lock().unwrap().len()
    }
}

/// A policy over `targets_and_users` (TOML) with a fresh token key pair, and the private key's
/// PEM: the fixture of the policy and request-path tests.
#[cfg(test)]
pub(crate) fn test_policy(targets_and_users: &str) -> (Policy, String) {
    let (private, public) = crate::keys::generate().expect("key generation");
    let config = Config::parse(
        &format!("listen = \"127.0.0.1:1\"\n[auth]\ntoken_public_key = \"k\"\nleeway = \"0s\"\n{targets_and_users}"),
        std::path::Path::new("."),
    )
    .expect("test policy");
    // The test key plays the gateway's own (it signs login credentials in the tests).
    let verifier = TokenVerifier::from_public_pem(public.as_bytes(), 0)
        .expect("test key")
        .granting_roles(None);
    (Policy::new(config, verifier, Default::default()), private)
}

#[cfg(test)]
mod tests;
