//! The router: method and path in, the one route that handles them out. Every path the gateway
//! answers is listed here and nowhere else; a new route is a new variant and a handler in
//! `engine/src/server/handlers/`.

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`.
    Health,
    /// `GET /v1/tunnel/{target}` with a WebSocket upgrade and a token.
    Tunnel { target: &'a str },
    /// `GET /v1/rdp` or `/jet/rdp` (what IronRDP web clients use): RDCleanPath over WebSocket.
    RdCleanPath,
    /// `/remoteDesktopGateway/` (the path mstsc and FreeRDP use): the RD Gateway protocol. The
    /// methods (`RDG_OUT_DATA`, `RDG_IN_DATA`) are checked with the rest of the request.
    RdGateway,
    /// The web app: pages, its API and the browser terminal. Requests may carry a small body.
    Web(WebRoute<&'a str>),
}

/// The web app's routes (see `web/API.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebRoute<S> {
    /// `GET /`, `/index.html`, `/assets/*`: an embedded asset, if one has this path.
    Asset {
        path: S,
    },
    /// `GET /v1/ssh/{target}` with a WebSocket upgrade: the browser terminal.
    Terminal {
        target: S,
    },
    /// `POST /api/login`: password sign-in.
    Login,
    /// `POST /api/login/token`: token sign-in.
    LoginToken,
    /// `POST /api/logout`.
    Logout,
    /// `GET /api/session`: who is signed in and their targets.
    Session,
    /// `POST /api/rdp/ticket`: a one-time ticket for web RDP.
    RdpTicket,
    /// `POST /api/rdp/file`: a `.rdp` file that takes a native client through the RD Gateway.
    RdpFile,
    /// `GET /api/admin/sessions`: the fleet's live sessions (web administrators).
    LiveSessions,
    /// `POST /api/admin/sessions/terminate`: end one, with a reason.
    TerminateSession,
    /// `GET /api/admin/audit?…`: search this node's audit log.
    AuditSearch,
    /// `GET /api/admin/links`: the shared links; `POST`: make one.
    Links,
    LinkCreate,
    /// `POST /api/admin/links/revoke`.
    LinkRevoke,
    /// `POST /api/link`: a shared link opened (its secret in the body).
    LinkOpen,
    /// `GET /v1/watch/{session}` with a WebSocket upgrade: watch a live terminal (administrators).
    Watch {
        session: S,
    },
    /// `GET /api/recordings`.
    Recordings,
    /// `GET /api/recordings/{id}`.
    Recording {
        id: S,
    },
    /// `POST /v1/device/code`: `portcullis login` asks for a user code.
    DeviceCode,
    /// `POST /v1/device/token`: the CLI polls for its login credential.
    DeviceToken,
    /// `GET /api/device/{code}`: a signed-in user looks at a pending login before approving it.
    DeviceRequest {
        code: S,
    },
    /// `POST /api/device`: a signed-in user approves or denies a pending login.
    DeviceAnswer,
    /// `POST /v1/token`: a logged-in CLI fetches an access token for a target.
    IssueToken,
    /// `GET /v1/targets`: a logged-in CLI lists its targets.
    Targets,
    /// `POST /v1/logout`: `portcullis logout` revokes its login credential.
    LoginEnd,
    /// `POST /api/login/mfa`: the second step of a password sign-in.
    LoginMfa,
    /// `POST /api/mfa/totp`: start enrolling a TOTP app.
    TotpBegin,
    /// `POST /api/mfa/totp/confirm`: finish it with a first code.
    TotpConfirm,
    /// `GET /api/oidc`: the single sign-on providers.
    OidcProviders,
    /// `GET /api/oidc/{id}/start`: sign in with a provider (a redirect to it).
    OidcStart {
        id: S,
    },
    /// `GET /api/oidc/callback`: where the provider sends the browser back.
    OidcCallback,
    /// `POST /api/mfa/webauthn`: start enrolling a passkey.
    PasskeyBegin,
    /// `POST /api/mfa/webauthn/confirm`: record it.
    PasskeyConfirm,
    /// `POST /api/login/webauthn/begin`: a passkey challenge for a pending sign-in.
    LoginPasskeyBegin,
    /// `POST /api/login/webauthn`: the passkey's answer.
    LoginPasskey,
}

impl<S> WebRoute<S> {
    /// The same route with its parameters converted (e.g. copied out of the request buffer).
    pub fn map<T>(self, f: impl Fn(S) -> T) -> WebRoute<T> {
        match self {
            WebRoute::Asset { path } => WebRoute::Asset { path: f(path) },
            WebRoute::Terminal { target } => WebRoute::Terminal { target: f(target) },
            WebRoute::Login => WebRoute::Login,
            WebRoute::LoginToken => WebRoute::LoginToken,
            WebRoute::Logout => WebRoute::Logout,
            WebRoute::Session => WebRoute::Session,
            WebRoute::RdpTicket => WebRoute::RdpTicket,
            WebRoute::RdpFile => WebRoute::RdpFile,
            WebRoute::LiveSessions => WebRoute::LiveSessions,
            WebRoute::TerminateSession => WebRoute::TerminateSession,
            WebRoute::AuditSearch => WebRoute::AuditSearch,
            WebRoute::Links => WebRoute::Links,
            WebRoute::LinkCreate => WebRoute::LinkCreate,
            WebRoute::LinkRevoke => WebRoute::LinkRevoke,
            WebRoute::LinkOpen => WebRoute::LinkOpen,
            WebRoute::Watch { session } => WebRoute::Watch { session: f(session) },
            WebRoute::Recordings => WebRoute::Recordings,
            WebRoute::Recording { id } => WebRoute::Recording { id: f(id) },
            WebRoute::DeviceCode => WebRoute::DeviceCode,
            WebRoute::DeviceToken => WebRoute::DeviceToken,
            WebRoute::DeviceRequest { code } => WebRoute::DeviceRequest { code: f(code) },
            WebRoute::DeviceAnswer => WebRoute::DeviceAnswer,
            WebRoute::IssueToken => WebRoute::IssueToken,
            WebRoute::Targets => WebRoute::Targets,
            WebRoute::LoginEnd => WebRoute::LoginEnd,
            WebRoute::LoginMfa => WebRoute::LoginMfa,
            WebRoute::TotpBegin => WebRoute::TotpBegin,
            WebRoute::TotpConfirm => WebRoute::TotpConfirm,
            WebRoute::OidcProviders => WebRoute::OidcProviders,
            WebRoute::OidcStart { id } => WebRoute::OidcStart { id: f(id) },
            WebRoute::OidcCallback => WebRoute::OidcCallback,
            WebRoute::PasskeyBegin => WebRoute::PasskeyBegin,
            WebRoute::PasskeyConfirm => WebRoute::PasskeyConfirm,
            WebRoute::LoginPasskeyBegin => WebRoute::LoginPasskeyBegin,
            WebRoute::LoginPasskey => WebRoute::LoginPasskey,
        }
    }
}

/// No route: the answer depends on whether the path belongs to the web app (JSON errors) or not
/// (plain text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrouted {
    NotFound { web: bool },
    MethodNotAllowed { web: bool },
}

impl Unrouted {
    pub fn status(self) -> u16 {
        match self {
            Unrouted::NotFound { .. } => 404,
            Unrouted::MethodNotAllowed { .. } => 405,
        }
    }

    pub fn is_web(self) -> bool {
        matches!(
            self,
            Unrouted::NotFound { web: true } | Unrouted::MethodNotAllowed { web: true }
        )
    }
}

/// Where RD Gateway clients send their requests (Windows matches it without regard to case).
pub const RD_GATEWAY_PATH: &str = "/remoteDesktopGateway/";

/// Routes `method` and `path` (without the query string).
pub fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, Unrouted> {
    if path == "/healthz" {
        return match method {
            "GET" => Ok(Route::Health),
            _ => Err(Unrouted::MethodNotAllowed { web: false }),
        };
    }
    if path == "/v1/rdp" || path == "/jet/rdp" {
        // The method is checked with the rest of the upgrade (405).
        return Ok(Route::RdCleanPath);
    }
    if path.eq_ignore_ascii_case(RD_GATEWAY_PATH) {
        return Ok(Route::RdGateway);
    }
    if let Some(target) = path.strip_prefix("/v1/tunnel/") {
        return match target {
            t if !t.is_empty() && !t.contains('/') => Ok(Route::Tunnel { target: t }),
            _ => Err(Unrouted::NotFound { web: false }),
        };
    }
    web(method, path).map(Route::Web)
}

fn web<'a>(method: &str, path: &'a str) -> Result<WebRoute<&'a str>, Unrouted> {
    let api = path.starts_with("/api/") || path.starts_with("/v1/");
    // `/device`: the page a `portcullis login` sends the user to (the app, on its approval view).
    let page = path == "/" || path == "/index.html" || path == "/device" || path.starts_with("/assets/");
    if !api && !page {
        return Err(Unrouted::NotFound { web: false });
    }
    let route = match (method, path) {
        ("GET", p) if page => WebRoute::Asset { path: p },
        ("POST", "/api/login") => WebRoute::Login,
        ("POST", "/api/login/token") => WebRoute::LoginToken,
        ("POST", "/api/logout") => WebRoute::Logout,
        ("GET", "/api/session") => WebRoute::Session,
        ("POST", "/api/rdp/ticket") => WebRoute::RdpTicket,
        ("POST", "/api/rdp/file") => WebRoute::RdpFile,
        ("GET", "/api/admin/sessions") => WebRoute::LiveSessions,
        ("POST", "/api/admin/sessions/terminate") => WebRoute::TerminateSession,
        ("GET", "/api/admin/audit") => WebRoute::AuditSearch,
        ("GET", "/api/admin/links") => WebRoute::Links,
        ("POST", "/api/admin/links") => WebRoute::LinkCreate,
        ("POST", "/api/admin/links/revoke") => WebRoute::LinkRevoke,
        ("POST", "/api/link") => WebRoute::LinkOpen,
        ("GET", "/api/recordings") => WebRoute::Recordings,
        ("GET", p) if p.starts_with("/api/recordings/") => WebRoute::Recording {
            id: &p["/api/recordings/".len()..],
        },
        ("POST", "/v1/device/code") => WebRoute::DeviceCode,
        ("POST", "/v1/device/token") => WebRoute::DeviceToken,
        ("GET", p) if p.starts_with("/api/device/") => WebRoute::DeviceRequest {
            code: &p["/api/device/".len()..],
        },
        ("POST", "/api/device") => WebRoute::DeviceAnswer,
        ("POST", "/v1/token") => WebRoute::IssueToken,
        ("GET", "/v1/targets") => WebRoute::Targets,
        ("POST", "/v1/logout") => WebRoute::LoginEnd,
        ("POST", "/api/login/mfa") => WebRoute::LoginMfa,
        ("POST", "/api/mfa/totp") => WebRoute::TotpBegin,
        ("POST", "/api/mfa/totp/confirm") => WebRoute::TotpConfirm,
        ("GET", "/api/oidc") => WebRoute::OidcProviders,
        ("POST", "/api/mfa/webauthn") => WebRoute::PasskeyBegin,
        ("POST", "/api/mfa/webauthn/confirm") => WebRoute::PasskeyConfirm,
        ("POST", "/api/login/webauthn/begin") => WebRoute::LoginPasskeyBegin,
        ("POST", "/api/login/webauthn") => WebRoute::LoginPasskey,
        ("GET", "/api/oidc/callback") => WebRoute::OidcCallback,
        ("GET", p) if p.starts_with("/api/oidc/") && p.ends_with("/start") => WebRoute::OidcStart {
            id: &p["/api/oidc/".len()..p.len() - "/start".len()],
        },
        ("GET", p) if p.starts_with("/v1/watch/") => WebRoute::Watch {
            session: &p["/v1/watch/".len()..],
        },
        ("GET", p) if p.starts_with("/v1/ssh/") => WebRoute::Terminal {
            target: &p["/v1/ssh/".len()..],
        },
        _ if api => return Err(Unrouted::NotFound { web: true }),
        _ => return Err(Unrouted::MethodNotAllowed { web: true }),
    };
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let ok = |m, p| route(m, p).unwrap();
        assert_eq!(ok("GET", "/healthz"), Route::Health);
        assert_eq!(ok("GET", "/v1/tunnel/vm1"), Route::Tunnel { target: "vm1" });
        assert_eq!(ok("POST", "/v1/rdp"), Route::RdCleanPath);
        assert_eq!(ok("GET", "/jet/rdp"), Route::RdCleanPath);
        assert_eq!(ok("RDG_OUT_DATA", "/remoteDesktopGateway/"), Route::RdGateway);
        assert_eq!(ok("RDG_IN_DATA", "/remotedesktopgateway/"), Route::RdGateway);
        assert_eq!(ok("GET", "/"), Route::Web(WebRoute::Asset { path: "/" }));
        assert_eq!(
            ok("GET", "/assets/app.js"),
            Route::Web(WebRoute::Asset { path: "/assets/app.js" })
        );
        assert_eq!(ok("POST", "/api/login"), Route::Web(WebRoute::Login));
        assert_eq!(ok("GET", "/device"), Route::Web(WebRoute::Asset { path: "/device" }));
        assert_eq!(ok("POST", "/v1/device/code"), Route::Web(WebRoute::DeviceCode));
        assert_eq!(ok("POST", "/v1/token"), Route::Web(WebRoute::IssueToken));
        assert_eq!(
            ok("GET", "/api/device/BCDF-GHJK"),
            Route::Web(WebRoute::DeviceRequest { code: "BCDF-GHJK" })
        );
        assert_eq!(
            ok("GET", "/api/recordings/abc"),
            Route::Web(WebRoute::Recording { id: "abc" })
        );
        assert_eq!(
            ok("GET", "/v1/ssh/vm1"),
            Route::Web(WebRoute::Terminal { target: "vm1" })
        );
        let no = |m, p| route(m, p).unwrap_err();
        assert_eq!(no("PUT", "/healthz"), Unrouted::MethodNotAllowed { web: false });
        assert_eq!(no("GET", "/v1/tunnel/"), Unrouted::NotFound { web: false });
        assert_eq!(no("GET", "/v1/tunnel/a/b"), Unrouted::NotFound { web: false });
        assert_eq!(no("GET", "/etc/passwd"), Unrouted::NotFound { web: false });
        assert_eq!(no("GET", "/api/login"), Unrouted::NotFound { web: true });
        assert_eq!(no("POST", "/v1/ssh/vm1"), Unrouted::NotFound { web: true });
        assert_eq!(no("DELETE", "/"), Unrouted::MethodNotAllowed { web: true });
        assert_eq!(no("POST", "/assets/app.js"), Unrouted::MethodNotAllowed { web: true });
    }
}
