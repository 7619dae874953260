use super::*;
use std::time::Duration;

const TARGETS: &str = "[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n\
[[target]]\nname = \"vm2\"\naddress = \"10.0.0.5:22\"\nprotocol = \"ssh\"\n\
[[target]]\nname = \"desk\"\naddress = \"10.0.0.6:3389\"\nprotocol = \"rdp\"\n\
[[target]]\nname = \"desk-alias\"\naddress = \"10.0.0.6:3389\"\nprotocol = \"rdp\"\n\
[[user]]\nname = \"alice\"\ntargets = [\"vm1\", \"desk\", \"desk-alias\"]\n";

fn policy() -> (Policy, String) {
    test_policy(TARGETS)
}

fn token(key: &str, user: &str, target: &str) -> String {
    crate::keys::issue(key.as_bytes(), user, target, Duration::from_secs(60)).unwrap()
}

fn now() -> u64 {
    crate::keys::unix_now()
}

#[test]
fn tokens_are_granted_only_for_their_own_allowed_target() {
    let (policy, key) = policy();
    let t = token(&key, "alice", "vm1");
    let grant = policy
        .authorize(
            Credential::Token(Some(&t)),
            Destination::Name("vm1"),
            Via::Tunnel,
            now(),
        )
        .unwrap();
    assert_eq!((grant.user.as_str(), grant.target.name.as_str()), ("alice", "vm1"));
    assert_eq!(grant.token_id.as_ref().map(String::len), Some(32));
    let deny = |cred, dest, via| policy.authorize(cred, dest, via, now()).unwrap_err();
    assert_eq!(
        deny(Credential::Token(None), Destination::Name("vm1"), Via::Tunnel),
        Denial::MissingToken
    );
    assert_eq!(
        deny(Credential::Token(Some("")), Destination::Name("vm1"), Via::Tunnel),
        Denial::MissingToken
    );
    assert_eq!(
        deny(Credential::Token(Some(&t)), Destination::Name("nope"), Via::Tunnel),
        Denial::UnknownTarget
    );
    assert_eq!(
        deny(Credential::Token(Some(&t)), Destination::Name("vm2"), Via::Tunnel),
        Denial::TargetMismatch
    );
    let vm2 = token(&key, "alice", "vm2");
    assert_eq!(
        deny(Credential::Token(Some(&vm2)), Destination::Name("vm2"), Via::Tunnel),
        Denial::NotAllowed
    );
    let mallory = token(&key, "mallory", "vm1");
    assert_eq!(
        deny(Credential::Token(Some(&mallory)), Destination::Name("vm1"), Via::Tunnel),
        Denial::UnknownUser
    );
    assert_eq!(Denial::UnknownUser.status(), 403);
    assert_eq!(Denial::UnknownTarget.status(), 404);
    assert_eq!(Denial::MissingToken.status(), 401);
}

#[test]
fn web_routes_need_the_targets_protocol() {
    let (policy, _) = policy();
    let web = Credential::WebSession {
        user: "alice",
        only_target: None,
        roles: &[],
    };
    let g = policy
        .authorize(web, Destination::Name("vm1"), Via::WebTerminal, now())
        .unwrap();
    assert_eq!((g.via, g.token_id), (Via::WebTerminal, None));
    let e = policy
        .authorize(web, Destination::Name("desk"), Via::WebTerminal, now())
        .unwrap_err();
    assert_eq!((e.status(), e.to_string()), (400, "not an SSH target".into()));
    let e = policy
        .authorize(web, Destination::Name("vm1"), Via::WebRdp, now())
        .unwrap_err();
    assert_eq!(e.to_string(), "not an RDP target");
    // A token sign-in is good for its own target only.
    let limited = Credential::WebSession {
        user: "alice",
        only_target: Some("desk"),
        roles: &[],
    };
    assert_eq!(
        policy
            .authorize(limited, Destination::Name("vm1"), Via::WebTerminal, now())
            .unwrap_err(),
        Denial::TargetMismatch
    );
    assert_eq!(
        policy
            .targets_of("alice", Some("desk"), &[])
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["desk"]
    );
    assert_eq!(policy.targets_of("alice", None, &[]).len(), 3);
    assert!(policy.targets_of("nobody", None, &[]).is_empty());
}

/// RDCleanPath destinations: a configured name, or the configured address of the very target the
/// credential is for; never another address, even one a different target of the user has.
#[test]
fn destinations_by_address_need_a_bound_credential() {
    let (policy, key) = policy();
    let ticket = Credential::Ticket {
        user: "alice",
        target: "desk-alias",
        roles: &[],
    };
    let g = policy
        .authorize(ticket, Destination::NameOrAddress("10.0.0.6:3389"), Via::WebRdp, now())
        .unwrap();
    assert_eq!(g.target.name, "desk-alias");
    let t = token(&key, "alice", "desk");
    let g = policy
        .authorize(
            Credential::Token(Some(&t)),
            Destination::NameOrAddress("10.0.0.6:3389"),
            Via::WebRdp,
            now(),
        )
        .unwrap();
    assert_eq!(g.target.name, "desk");
    for other in ["10.0.0.4:22", "10.0.0.6:3390", "127.0.0.1:3389", "desk2"] {
        assert_eq!(
            policy
                .authorize(ticket, Destination::NameOrAddress(other), Via::WebRdp, now())
                .unwrap_err(),
            Denial::UnknownTarget,
            "{other}"
        );
    }
    // An unbound web session cannot name an address at all.
    let web = Credential::WebSession {
        user: "alice",
        only_target: None,
        roles: &[],
    };
    assert_eq!(
        policy
            .authorize(web, Destination::NameOrAddress("10.0.0.6:3389"), Via::WebRdp, now())
            .unwrap_err(),
        Denial::UnknownTarget
    );
    // A ticket for one target does not open another by name.
    assert_eq!(
        policy
            .authorize(ticket, Destination::NameOrAddress("desk"), Via::WebRdp, now())
            .unwrap_err(),
        Denial::TargetMismatch
    );
}

#[test]
fn verified_tokens_are_cached_but_still_checked() {
    let (policy, key) = policy();
    let t = token(&key, "alice", "vm1");
    let grant = |t: &str, target: &str, at: u64| {
        policy.authorize(Credential::Token(Some(t)), Destination::Name(target), Via::Tunnel, at)
    };
    let first = grant(&t, "vm1", now()).unwrap();
    assert_eq!(policy.cached(), 1);
    let again = grant(&t, "vm1", now()).unwrap();
    assert_eq!((first.token_id, policy.cached()), (again.token_id, 1));
    // A hit is still held to the token's period and to the target and user checks.
    assert_eq!(
        grant(&t, "vm1", now() + 3600).unwrap_err(),
        Denial::BadToken(TokenError::Expired)
    );
    assert_eq!(grant(&t, "vm2", now()).unwrap_err(), Denial::TargetMismatch);
    // Refused tokens are not remembered; a changed signature is another token.
    let mut forged = t.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(matches!(
        grant(&forged, "vm1", now()),
        Err(Denial::BadToken(TokenError::BadSignature | TokenError::Malformed))
    ));
    assert_eq!(policy.cached(), 1);
    // Another snapshot (a reload with a new key) knows nothing of it.
    let (rotated, _) = self::policy();
    assert_eq!(
        rotated
            .authorize(
                Credential::Token(Some(&t)),
                Destination::Name("vm1"),
                Via::Tunnel,
                now()
            )
            .unwrap_err(),
        Denial::BadToken(TokenError::BadSignature)
    );
}

#[test]
fn the_cache_is_bounded() {
    let (policy, key) = policy();
    for _ in 0..TOKEN_CACHE_MAX + 1 {
        let t = token(&key, "alice", "vm1");
        policy
            .authorize(
                Credential::Token(Some(&t)),
                Destination::Name("vm1"),
                Via::Tunnel,
                now(),
            )
            .unwrap();
        assert!(policy.cached() <= TOKEN_CACHE_MAX);
    }
}

#[test]
fn token_sign_in_needs_a_known_user() {
    let (policy, key) = policy();
    assert_eq!(
        policy.sign_in_token(&token(&key, "alice", "vm1"), now()).unwrap().sub,
        "alice"
    );
    assert_eq!(
        policy.sign_in_token(&token(&key, "mallory", "vm1"), now()).unwrap_err(),
        Denial::UnknownUser
    );
}

/// A revoked user or token is refused on every route, by every snapshot sharing the set (a
/// reload does not un-revoke), until the revocation ends.
#[test]
fn revocations_refuse_users_and_tokens() {
    use crate::revocation::{Revocation, Revocations};
    let revocations = std::sync::Arc::new(Revocations::default());
    let (first, key) = policy();
    let policy = Policy::new(first.config.clone(), first.verifier.clone(), revocations.clone());
    let t = token(&key, "alice", "vm1");
    let tunnel =
        |p: &Policy, t: &str| p.authorize(Credential::Token(Some(t)), Destination::Name("vm1"), Via::Tunnel, now());
    assert!(tunnel(&policy, &t).is_ok());
    let jti = tunnel(&policy, &t).unwrap().token_id.unwrap();
    revocations
        .revoke(Revocation::Token { id: jti, until: None }, now())
        .unwrap();
    assert_eq!(tunnel(&policy, &t).unwrap_err(), Denial::Revoked);
    assert!(
        tunnel(&policy, &token(&key, "alice", "vm1")).is_ok(),
        "another token of hers"
    );
    revocations
        .revoke(
            Revocation::User {
                name: "alice".into(),
                until: Some(now() + 60),
            },
            now(),
        )
        .unwrap();
    let web = Credential::WebSession {
        user: "alice",
        only_target: None,
        roles: &[],
    };
    assert_eq!(
        policy
            .authorize(web, Destination::Name("vm1"), Via::WebTerminal, now())
            .unwrap_err(),
        Denial::Revoked
    );
    let reloaded = Policy::new(policy.config.clone(), policy.verifier.clone(), revocations);
    assert_eq!(
        tunnel(&reloaded, &token(&key, "alice", "vm1")).unwrap_err(),
        Denial::Revoked
    );
    assert!(reloaded
        .authorize(web, Destination::Name("vm1"), Via::WebTerminal, now() + 61)
        .is_ok());
    assert_eq!(reloaded.may_replay("alice", None, &[], now()), Err(Denial::Revoked));
}

#[test]
fn replay_needs_the_users_permission() {
    let (policy, _) = test_policy(
        "[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n\
         [[user]]\nname = \"alice\"\ntargets = [\"vm1\"]\nreplay = true\n[[user]]\nname = \"bob\"\n",
    );
    assert_eq!(policy.may_replay("alice", None, &[], now()), Ok(()));
    assert_eq!(
        policy.may_replay("bob", None, &[], now()),
        Err(Denial::ReplayNotAllowed)
    );
    assert_eq!(policy.may_replay("mallory", None, &[], now()), Err(Denial::UnknownUser));
}

#[test]
fn a_token_sign_in_may_not_replay() {
    let (policy, _) = test_policy(
        "[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n\
         [[user]]\nname = \"alice\"\ntargets = [\"vm1\"]\nreplay = true\n",
    );
    assert_eq!(
        policy.may_replay("alice", Some("vm1"), &[], now()),
        Err(Denial::OutOfScope)
    );
}

/// After a reload, a live session's grant is checked against the new policy.
#[test]
fn live_grants_are_checked_against_a_reloaded_policy() {
    let (before, key) = policy();
    let t = token(&key, "alice", "vm1");
    let grant = before
        .authorize(
            Credential::Token(Some(&t)),
            Destination::Name("vm1"),
            Via::Tunnel,
            now(),
        )
        .unwrap();
    assert!(grant.token_expires.is_some_and(|exp| exp > now()));
    assert_eq!(before.still_allows(&grant, now()), Ok(()));
    let reload = |toml: &str| test_policy(toml).0;
    // The same policy (a reload that changed something else): still allowed.
    assert_eq!(reload(TARGETS).still_allows(&grant, now()), Ok(()));
    let without = |from: &str, to: &str| reload(&TARGETS.replace(from, to));
    assert_eq!(
        without("targets = [\"vm1\", ", "targets = [").still_allows(&grant, now()),
        Err(Denial::NotAllowed)
    );
    assert_eq!(
        without("name = \"alice\"", "name = \"alicia\"").still_allows(&grant, now()),
        Err(Denial::UnknownUser)
    );
    assert_eq!(
        without("10.0.0.4:22", "10.0.0.9:22").still_allows(&grant, now()),
        Err(Denial::TargetChanged)
    );
}

#[test]
fn a_login_credential_is_not_an_access_token_nor_the_other_way_round() {
    let (policy, key) = policy();
    let minter = crate::keys::Minter::new(key.as_bytes(), None, None, None).unwrap();
    let login = portcullis_protocols::token::LOGIN_SCOPE;
    let (credential, claims) = minter
        .mint("alice", "", Some(login), Duration::from_secs(600), now())
        .unwrap();
    // It opens nothing, signs nobody in, is no admin token.
    for via in [Via::Tunnel, Via::WebTerminal] {
        assert_eq!(
            policy
                .authorize(
                    Credential::Token(Some(&credential)),
                    Destination::Name("vm1"),
                    via,
                    now()
                )
                .unwrap_err(),
            Denial::LoginCredential
        );
    }
    assert_eq!(
        policy.sign_in_token(&credential, now()).unwrap_err(),
        Denial::LoginCredential
    );
    assert_eq!(
        policy.authorize_admin(Some(&credential), now()).unwrap_err(),
        Denial::LoginCredential
    );
    // It is a credential, until revoked; an access token is not one.
    assert_eq!(
        policy.login_credential(Some(&credential), now()).unwrap().jti,
        claims.jti
    );
    assert_eq!(
        policy
            .login_credential(Some(&token(&key, "alice", "vm1")), now())
            .unwrap_err(),
        Denial::NotLoginCredential
    );
    let revoked = crate::revocation::Revocation::Token {
        id: claims.jti.clone(),
        until: None,
    };
    policy.revocations.revoke(revoked, now()).unwrap();
    assert_eq!(
        policy.login_credential(Some(&credential), now()).unwrap_err(),
        Denial::Revoked
    );
    let (mallory, _) = minter
        .mint("mallory", "", Some(login), Duration::from_secs(600), now())
        .unwrap();
    assert_eq!(
        policy.login_credential(Some(&mallory), now()).unwrap_err(),
        Denial::UnknownUser
    );
}

#[test]
fn roles_grant_targets_and_admin_rights() {
    let (policy, key) = test_policy(&format!(
        "{TARGETS}[[role]]\nname = \"ops\"\ntargets = [\"vm*\"]\nadmin = true\n\
         [[user]]\nname = \"bob\"\nroles = [\"ops\"]\n[[user]]\nname = \"carol\"\n"
    ));
    // vm2 is bob's through the role's pattern; alice's list has no vm2.
    let t = token(&key, "bob", "vm2");
    assert!(policy
        .authorize(
            Credential::Token(Some(&t)),
            Destination::Name("vm2"),
            Via::Tunnel,
            now()
        )
        .is_ok());
    assert!(policy.is_admin("bob"));
    // Once a role names administrators, nobody else is one.
    assert!(!policy.is_admin("carol") && !policy.is_admin("alice"));
    let admin =
        |user| crate::keys::issue_scoped(key.as_bytes(), user, "", Some("admin"), Duration::from_secs(60)).unwrap();
    assert_eq!(policy.authorize_admin(Some(&admin("bob")), now()).unwrap(), "bob");
    assert_eq!(
        policy.authorize_admin(Some(&admin("carol")), now()).unwrap_err(),
        Denial::NotAdmin
    );
    assert!(policy.may_replay("bob", None, &[], now()).is_ok(), "admins replay");
    // Without roles or [admin] users, any admin token's user is one (the issuer decides).
    let (plain, _) = test_policy(TARGETS);
    assert!(plain.is_admin("alice"));
}

/// `native = false`: the browser routes reach the target, the tunnel and the RD Gateway do not,
/// and a reload that sets it ends live native sessions.
#[test]
fn browser_only_targets_refuse_native_routes() {
    let toml = "[[target]]\nname = \"desk\"\naddress = \"10.0.0.6:3389\"\nprotocol = \"rdp\"\nnative = false\n\
                [[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\nnative = false\n\
                [[user]]\nname = \"alice\"\ntargets = [\"desk\", \"vm1\"]\n";
    let (policy, key) = test_policy(toml);
    let web = Credential::WebSession {
        user: "alice",
        only_target: None,
        roles: &[],
    };
    assert!(policy
        .authorize(web, Destination::Name("desk"), Via::WebRdp, now())
        .is_ok());
    assert!(policy
        .authorize(web, Destination::Name("vm1"), Via::WebTerminal, now())
        .is_ok());
    for (target, via) in [("desk", Via::RdGateway), ("desk", Via::Tunnel), ("vm1", Via::Tunnel)] {
        let t = token(&key, "alice", target);
        assert_eq!(
            policy
                .authorize(Credential::Token(Some(&t)), Destination::Name(target), via, now())
                .unwrap_err(),
            Denial::BrowserOnly,
            "{target} {via:?}"
        );
    }
    // A tunnel granted before a reload that keeps the target to the browser ends.
    let (open, key) = test_policy(&toml.replace("native = false\n", ""));
    let t = token(&key, "alice", "vm1");
    let grant = open
        .authorize(
            Credential::Token(Some(&t)),
            Destination::Name("vm1"),
            Via::Tunnel,
            now(),
        )
        .unwrap();
    assert_eq!(policy.still_allows(&grant, now()), Err(Denial::BrowserOnly));
    assert_eq!(open.still_allows(&grant, now()), Ok(()));
}

/// A shared link's guest (`link:<id>`, made only by the gateway when a link is redeemed) reaches
/// the link's one target in the browser, whatever the user policy says, and nothing else; no
/// token may claim such a user.
#[test]
fn shared_link_guests_reach_their_one_target_in_the_browser() {
    let (policy, key) = policy();
    let guest = Credential::WebSession {
        user: "link:3f2a",
        only_target: Some("vm2"),
        roles: &[],
    };
    // vm2 is no user's target: the link is the grant.
    let g = policy
        .authorize(guest, Destination::Name("vm2"), Via::WebTerminal, now())
        .unwrap();
    assert_eq!((g.user.as_str(), g.target.name.as_str()), ("link:3f2a", "vm2"));
    assert_eq!(policy.still_allows(&g, now()), Ok(()));
    let deny = |cred, dest, via| policy.authorize(cred, dest, via, now()).unwrap_err();
    assert_eq!(
        deny(guest, Destination::Name("vm1"), Via::WebTerminal),
        Denial::TargetMismatch
    );
    assert_eq!(deny(guest, Destination::Name("vm2"), Via::Tunnel), Denial::OutOfScope);
    let unbound = Credential::WebSession {
        user: "link:3f2a",
        only_target: None,
        roles: &[],
    };
    assert_eq!(
        deny(unbound, Destination::Name("vm2"), Via::WebTerminal),
        Denial::OutOfScope
    );
    let ticket = Credential::Ticket {
        user: "link:77",
        target: "desk",
        roles: &[],
    };
    assert!(policy
        .authorize(ticket, Destination::Name("desk"), Via::WebRdp, now())
        .is_ok());
    let forged = token(&key, "link:3f2a", "vm2");
    assert_eq!(
        deny(Credential::Token(Some(&forged)), Destination::Name("vm2"), Via::Tunnel),
        Denial::UnknownUser
    );
    assert_eq!(policy.targets_of("link:3f2a", Some("vm2"), &[]).len(), 1);
    assert!(policy.targets_of("link:3f2a", None, &[]).is_empty());
    assert!(!policy.is_web_admin("link:3f2a", &[]));
}
