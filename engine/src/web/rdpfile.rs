//! `POST /api/rdp/file`: a `.rdp` file that takes mstsc (or FreeRDP, Remmina) through the gateway's
//! RD Gateway to one RDP target, for a signed-in user.
//!
//! The file carries a gateway access token (`gatewayaccesstoken`, sent by the client as its PAA
//! cookie): the one place the gateway hands a token to a page, so the token is single use (spent
//! when its session starts, across the fleet) and lives at most [`MAX_FILE_TOKEN_TTL`]. It names
//! the target by its configured name and the gateway by the host the browser used. A POST with a
//! JSON body from the gateway's own origin, like the other calls that grant something.

use super::api::{json_post, signed_in_grant, WebRequest};
use super::response::Response;
use portcullis_core::audit::{AuditRecord, IdentityAction, IdentityRecord, Via};
use serde::Deserialize;
use std::time::Duration;

/// The longest a `.rdp` file's token lives.
pub const MAX_FILE_TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct FileRequest {
    target: String,
}

pub async fn download(req: &WebRequest<'_>) -> Response {
    let FileRequest { target } = match json_post(req, "{\"target\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let Some(minter) = req.minter else {
        return Response::error(404, "this gateway does not issue tokens (no [auth] token_private_key)");
    };
    let Some(gateway) = req.head.header("host").filter(|h| is_host(h)) else {
        return Response::error(400, "missing or invalid Host");
    };
    // The policy decides as for the session the file will open.
    let grant = match signed_in_grant(req, &target, Via::RdGateway).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let now = portcullis_core::keys::unix_now();
    let ttl = req.policy.config.auth.issued_token_ttl.min(MAX_FILE_TOKEN_TTL);
    let Ok((token, claims)) = minter.mint_single_use(&grant.user, &grant.roles, &grant.target.name, ttl, now) else {
        return Response::error(503, "cannot sign the token");
    };
    req.shared.audit.record(&AuditRecord::Identity(IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action: IdentityAction::TokenIssued,
        user: Some(grant.user.clone()),
        client: req.client.ip().to_string(),
        target: Some(grant.target.name.clone()),
        token_id: Some(claims.jti),
        ttl_s: Some(ttl.as_secs()),
        method: Some("rdp_file"),
        reason: None,
    }));
    let body = rdp_file(&grant.target.name, gateway, &token);
    let name: String = grant
        .target
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Response {
        status: 200,
        content_type: "application/x-rdp",
        headers: vec![
            ("Content-Disposition", format!("attachment; filename=\"{name}.rdp\"")),
            ("Cache-Control", "no-store".to_owned()),
        ],
        body: super::response::Body::Owned(body.into_bytes()),
        reason: None,
    }
}

/// The `.rdp` settings: the target by name (the gateway resolves it), the gateway always used
/// (`gatewayusagemethod` 1, from the file: `gatewayprofileusagemethod` 1), the token as the
/// credential (`gatewaycredentialssource` 5: cookie-based), nothing else.
pub fn rdp_file(target: &str, gateway: &str, token: &str) -> String {
    [
        format!("full address:s:{target}"),
        format!("gatewayhostname:s:{gateway}"),
        "gatewayusagemethod:i:1".to_owned(),
        "gatewayprofileusagemethod:i:1".to_owned(),
        "gatewaycredentialssource:i:5".to_owned(),
        format!("gatewayaccesstoken:s:{token}"),
        "prompt for credentials on client:i:1".to_owned(),
        String::new(),
    ]
    .join("\r\n")
}

/// A `Host` header that is a host name or address with an optional port, and nothing that could
/// break out of its line in the file.
pub(super) fn is_host(host: &str) -> bool {
    (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_the_target_and_the_gateway() {
        let file = rdp_file("desk1", "gw.example:443", "TOKEN");
        let lines: Vec<&str> = file.split("\r\n").collect();
        assert!(lines.contains(&"full address:s:desk1"));
        assert!(lines.contains(&"gatewayhostname:s:gw.example:443"));
        assert!(lines.contains(&"gatewayusagemethod:i:1"));
        assert!(lines.contains(&"gatewayaccesstoken:s:TOKEN"));
    }

    #[test]
    fn hosts_cannot_inject_settings() {
        assert!(is_host("gw.example.com:8443"));
        assert!(is_host("[::1]:443"));
        assert!(is_host("127.0.0.1"));
        for bad in ["", "gw\r\nfull address:s:evil", "gw example", "gw/path", "gw;x"] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }
}
