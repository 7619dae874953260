// HTTP side of the gateway contract (see ../API.md). All requests are same-origin; the session
// cookie is HttpOnly and is sent by the browser, so the app never sees it.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function request(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "cannot reach the gateway (network error)", null);
  }
  return res;
}

async function json(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function expectOk(res) {
  const body = await json(res);
  if (res.ok) return body;
  const message = (body && typeof body.error === "string" && body.error) || `${res.status} ${res.statusText || "error"}`.trim();
  throw new ApiError(res.status, message, body);
}

export async function login(user, password) {
  return expectOk(await request("POST", "/api/login", { user, password }));
}

/** The second step of a password sign-in: the pending token it returned and a code. */
export async function loginCode(pending, code) {
  return expectOk(await request("POST", "/api/login/mfa", { pending, code }));
}

/** Starts enrolling an authenticator app: `{secret, uri, qr: {size, modules}}`. */
export async function totpBegin() {
  return expectOk(await request("POST", "/api/mfa/totp", {}));
}

/** Finishes it with a first code: `{recovery_codes: [...]}`. */
export async function totpConfirm(code) {
  return expectOk(await request("POST", "/api/mfa/totp/confirm", { code }));
}

/** Single sign-on providers: `[{id, name}]` (none when the request fails). */
export async function oidcProviders() {
  try {
    const r = await expectOk(await request("GET", "/api/oidc"));
    return Array.isArray(r?.providers) ? r.providers : [];
  } catch {
    return [];
  }
}

export async function passkeyBegin() {
  return expectOk(await request("POST", "/api/mfa/webauthn", {}));
}

export async function passkeyConfirm(answer) {
  return expectOk(await request("POST", "/api/mfa/webauthn/confirm", answer));
}

export async function loginPasskeyBegin(pending) {
  return expectOk(await request("POST", "/api/login/webauthn/begin", { pending }));
}

export async function loginPasskey(pending, answer) {
  return expectOk(await request("POST", "/api/login/webauthn", { pending, ...answer }));
}

export async function loginWithToken(token) {
  return expectOk(await request("POST", "/api/login/token", { token }));
}

export async function logout() {
  const res = await request("POST", "/api/logout", {});
  if (!res.ok && res.status !== 401) await expectOk(res);
}

/** `{user, targets: [{name, protocol, credentials}], can_replay}`; throws ApiError(401) when signed out. */
export async function session() {
  const s = await expectOk(await request("GET", "/api/session"));
  return {
    user: String(s?.user ?? ""),
    targets: Array.isArray(s?.targets) ? s.targets : [],
    can_replay: s?.can_replay === true,
    admin: s?.admin === true,
    mfa: s?.mfa && typeof s.mfa === "object" ? s.mfa : { enrolled: false, verified: false, required: false },
  };
}

export async function recordings() {
  const list = await expectOk(await request("GET", "/api/recordings"));
  return Array.isArray(list) ? list : [];
}

/** The asciicast v2 text of one recording. */
export async function recording(id) {
  const res = await fetch(`/api/recordings/${encodeURIComponent(id)}`, {
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/x-asciicast, application/json;q=0.5" },
  }).catch(() => {
    throw new ApiError(0, "cannot reach the gateway (network error)", null);
  });
  if (!res.ok) await expectOk(res);
  return res.text();
}

/** ws:// or wss:// URL of the terminal WebSocket for a target, on this page's origin. */
export function sshUrl(target, cols, rows, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/v1/ssh/${encodeURIComponent(target)}?cols=${cols}&rows=${rows}`;
}

/** A one-time RDCleanPath `proxy_auth` ticket for an RDP target: `{ticket, destination, path}`. */
export async function rdpTicket(target) {
  const t = await expectOk(await request("POST", "/api/rdp/ticket", { target }));
  if (!t || typeof t.ticket !== "string" || !t.ticket) throw new ApiError(0, "the gateway sent no RDP ticket", t);
  return {
    ticket: t.ticket,
    destination: typeof t.destination === "string" && t.destination ? t.destination : target,
    path: typeof t.path === "string" && t.path.startsWith("/") ? t.path : "/v1/rdp",
  };
}

/** ws:// or wss:// URL of the gateway's RDCleanPath endpoint (`path` from the ticket), on this page's origin. */
export function rdpProxyUrl(path = "/v1/rdp", loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${path}`;
}

/** A pending `portcullis login`: `{code, client, requested}` (Unix seconds); 404 when unknown or expired. */
export async function deviceRequest(code) {
  return expectOk(await request("GET", `/api/device/${encodeURIComponent(code)}`));
}

/** Approves (or denies) a pending `portcullis login`. */
export async function answerDevice(code, approve) {
  return expectOk(await request("POST", "/api/device", { code, approve }));
}

/** A `.rdp` file for RDP target `target` (through the gateway's RD Gateway): `{name, blob}`. Its
 * token is single use and valid for at most five minutes. */
export async function rdpFile(target) {
  const res = await request("POST", "/api/rdp/file", { target });
  if (!res.ok) await expectOk(res);
  return { name: `${target}.rdp`, blob: await res.blob() };
}

/** Every live session of the fleet (administrators): `{sessions: [...], partial?}`. */
export async function liveSessions() {
  return expectOk(await request("GET", "/api/admin/sessions"));
}

/** Ends live session `id`; `reason` goes to the audit log. */
export async function terminateSession(id, reason) {
  return expectOk(await request("POST", "/api/admin/sessions/terminate", { id, reason }));
}

/** Searches this node's audit log (administrators): `filters` of event, user, target, outcome,
 * from, to (RFC 3339) -> `{records: [...], complete, scanned_bytes}`, newest first. */
export async function auditSearch(filters) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  return expectOk(await request("GET", `/api/admin/audit?${q}`));
}

/** Shared links (administrators): `{links: [{id, target, created_by, created, expires, once}], targets}`. */
export async function links() {
  return expectOk(await request("GET", "/api/admin/links"));
}

/** Makes a shared link: `{id, url, target, expires, once}` (the URL with its secret, shown once). */
export async function createLink(target, ttlSeconds, once) {
  return expectOk(await request("POST", "/api/admin/links", { target, ttl_seconds: ttlSeconds, once }));
}

export async function revokeLink(id) {
  return expectOk(await request("POST", "/api/admin/links/revoke", { id }));
}

/** Opens a shared link (its `<id>.<secret>` fragment): a guest session; `{target, protocol}`. */
export async function openLink(link) {
  return expectOk(await request("POST", "/api/link", { link }));
}
