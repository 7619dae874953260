// What the browser must refuse, each in its own cookie jar: a wrong password, a locked-out user,
// a target outside the user's policy, a changed host key, an expired sign-in, and a terminal
// WebSocket opened by a page of another origin while the user's cookie is in the browser.
//
// E2E_CONFIG: {url, ttl_url, user, lock_user, password, allowed: [..], forbidden, wrong_key,
//              cert_pem, key_pem (for the other-origin pages), artifacts}
import http from "node:http";
import https from "node:https";
import { assert, listedTargets, log, main, newContext, signIn, waitFor, waitStatus, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  // Two tracks at once (each sign-in costs an Argon2 check): the sign-in refusals, and what a
  // signed-in user may not do.
  const [locked, refusals] = await Promise.all([signInRefusals(c, browser, check), signedInRefusals(c, browser, check)]);
  return { lockout: locked, ...refusals };
});

/** A wrong password; a user locked out after 5 wrong passwords. */
async function signInRefusals(c, browser, check) {
  // ---- wrong password -----------------------------------------------------------------------
  const anon = await newContext(browser);
  const page = watchPage(await anon.newPage(), "login");
  await page.goto(`${c.url}/`);
  await tryPassword(page, c.user, "not the password");
  const err = await loginError(page);
  assert(/invalid user or password/.test(err), `#login-error says the sign-in failed: ${err}`);
  assert(!(await page.locator("#targets").count()), "no targets page after a wrong password");
  assert((await page.locator("#login-password").inputValue()) === "", "the password field is cleared for a retry");
  check(`wrong password: #login-error "${err}", still on the sign-in page`);

  // ---- lockout: 5 wrong, then the right password is refused too ------------------------------
  for (let i = 1; i <= 5; i++) {
    await tryPassword(page, c.lock_user, `wrong ${i}`);
    const e = await loginError(page);
    assert(/invalid user or password/.test(e), `attempt ${i}: ${e}`);
  }
  await tryPassword(page, c.lock_user, c.password);
  const locked = await waitFor(async () => {
    const e = await loginError(page);
    return /too many failed sign-ins/.test(e) ? e : false;
  }, "the lockout message");
  const button = await page.locator("#login-submit");
  assert(await button.isDisabled(), "the sign-in button is disabled during the lockout");
  const label = await button.textContent();
  assert(/wait \d+ s/.test(label), `the button counts down: ${label}`);
  assert(!(await page.locator("#targets").count()), "the locked-out user is not signed in");
  check(`locked out after 5 wrong passwords: the right one gets "${locked}", button "${label}"`);

  return locked;
}

/** With a valid sign-in: the policy, a changed host key, other origins; then an expired sign-in. */
async function signedInRefusals(c, browser, check) {
  // The expired sign-in needs 3 s of waiting: sign in on the short-lived gateway first and do
  // the other checks meanwhile.
  const ttlCtx = await newContext(browser);
  const ttlPage = watchPage(await ttlCtx.newPage(), "ttl");
  await signIn(ttlPage, c.ttl_url, c.user, c.password);
  const signedInAt = Date.now();
  const [stale] = (await ttlCtx.cookies(c.ttl_url)).filter((k) => k.name === "__Host-portcullis_session");
  assert(stale && stale.httpOnly && stale.secure && stale.sameSite === "Strict", `session cookie is HttpOnly, Secure, SameSite=Strict: ${JSON.stringify(stale && { ...stale, value: "…" })}`);
  check("signed in on the gateway with session_ttl = 2s; the cookie is HttpOnly, Secure, SameSite=Strict");

  // ---- a signed-in user: policy, changed host key -------------------------------------------
  const ctx = await newContext(browser);
  const app = watchPage(await ctx.newPage(), "app");
  await signIn(app, c.url, c.user, c.password);
  const listed = (await listedTargets(app)).sort();
  assert(JSON.stringify(listed) === JSON.stringify([...c.allowed].sort()), `listed ${listed} = policy ${c.allowed}`);
  assert(!listed.includes(c.forbidden), `${c.forbidden} is not listed`);
  check(`the targets list is the policy (${listed.join(", ")}); ${c.forbidden} is not listed`);

  await app.goto(`${c.url}/#/ssh/${c.forbidden}`);
  const forbidden = await waitStatus(app, ["error", "lost", "ended"]);
  assert(forbidden.state === "error" && forbidden.text.includes(c.forbidden), `#status: ${JSON.stringify(forbidden)}`);
  // The app did not even try; a page that tries anyway is refused by the gateway.
  const direct = await refusedWebSocket(ctx, app, `${wss(c.url)}/v1/ssh/${c.forbidden}`);
  check(`#/ssh/${c.forbidden} opened directly: #status ${forbidden.state} "${forbidden.text}"; a WebSocket opened anyway is refused: ${direct}`);

  await app.goto(`${c.url}/#/ssh/${c.wrong_key}`);
  const hk = await waitStatus(app, ["error", "lost", "ended"], 30_000);
  assert(hk.state === "error" && /does not match the pinned key/.test(hk.text), `#status: ${JSON.stringify(hk)}`);
  check(`changed host key (${c.wrong_key}): #status ${hk.state} "${hk.text}"`);

  // ---- cross-origin WebSocket ---------------------------------------------------------------
  // Control: from the gateway's own origin, with the cookie, the terminal WebSocket opens.
  await app.goto(`${c.url}/#/targets`);
  await app.locator("#targets").waitFor();
  const own = await probeWebSocket(app, `${wss(c.url)}/v1/ssh/${c.allowed[0]}`);
  assert(own.opened, `control: the same WebSocket from the gateway's own origin opens: ${JSON.stringify(own)}`);
  check(`control: from ${c.url} the terminal WebSocket opens`);

  // Pages of other origins, served from loopback like the gateway (Chromium's local network
  // access checks would block a page from elsewhere before the gateway could refuse anything):
  // https://127.0.0.1:<port> is the same site, so the SameSite=Strict cookie goes along and only
  // the gateway's Origin check stands in the way; http://127.0.0.1:<port> is another site.
  const servers = await otherOrigins(c);
  try {
    const evil = watchPage(await ctx.newPage(), "evil");
    await evil.goto(servers.httpsUrl);
    // Proof that the cookie goes along: the same page opens a WebSocket to a third server on
    // 127.0.0.1 (cookies are not scoped by port), which reports the headers it got.
    await probeWebSocket(evil, `${servers.snifferUrl}/sniff`);
    const sniffed = await waitFor(() => servers.sniffed[0], "the sniffer's handshake");
    const [cookie] = (await ctx.cookies(c.url)).filter((k) => k.name === "__Host-portcullis_session");
    assert(cookie && (sniffed.cookie || "").includes(`__Host-portcullis_session=${cookie.value}`), `a WebSocket from ${servers.httpsUrl} carries the session cookie: ${JSON.stringify({ ...sniffed, cookie: sniffed.cookie ? "(set)" : null })}`);
    assert(sniffed.origin === servers.httpsUrl.replace(/\/$/, ""), `its Origin is the page's: ${sniffed.origin}`);
    const sameSite = await refusedWebSocket(ctx, evil, `${wss(c.url)}/v1/ssh/${c.allowed[0]}`);
    check(`from ${servers.httpsUrl} (same site: the cookie goes along) the terminal WebSocket does not open: ${sameSite}`);

    const other = watchPage(await ctx.newPage(), "other-site");
    await other.goto(servers.httpUrl);
    const crossSite = await refusedWebSocket(ctx, other, `${wss(c.url)}/v1/ssh/${c.allowed[0]}`);
    check(`from ${servers.httpUrl} (another site) the terminal WebSocket does not open: ${crossSite}`);
  } finally {
    servers.close();
  }

  // ---- expired sign-in ----------------------------------------------------------------------
  const wait = signedInAt + 3000 - Date.now();
  if (wait > 0) await ttlPage.waitForTimeout(wait);
  await ttlPage.reload();
  await ttlPage.locator("#login-form").waitFor();
  await waitFor(async () => (await ttlPage.evaluate(() => location.hash)) === "#/", "the sign-in route");
  const notice = await ttlPage.locator("#login-notice").textContent();
  assert(!(await ttlPage.locator("#targets").count()), "no targets after the sign-in expired");
  check(`3 s after signing in (session_ttl 2s) a reload shows the sign-in page: "${notice}"`);
  // The browser dropped the cookie (Max-Age); the gateway refuses the old value on its own too.
  await ttlCtx.addCookies([{ ...stale, expires: Math.floor(Date.now() / 1000) + 3600 }]);
  await ttlPage.goto(`${c.ttl_url}/#/targets`);
  await ttlPage.locator("#login-form").waitFor();
  await waitFor(async () => (await ttlPage.evaluate(() => location.hash)) === "#/", "the sign-in route");
  check("the expired cookie put back into the browser: the gateway refuses it, the app shows the sign-in page");

  return { host_key: hk, forbidden };
}

async function tryPassword(page, user, password) {
  await page.locator("#login-error").evaluate((e) => {
    e.hidden = true;
    e.textContent = "";
  });
  await waitFor(() => page.locator("#login-submit").isEnabled(), "the sign-in button to be enabled");
  await page.locator("#login-user").fill(user);
  await page.locator("#login-password").fill(password);
  await page.locator("#login-submit").click();
}

async function loginError(page) {
  await page.locator("#login-error").waitFor({ state: "visible" });
  return (await page.locator("#login-error").textContent()).trim();
}

/** Opens a WebSocket from `page` and reports whether it opened (then closes it) or failed. */
async function probeWebSocket(page, url) {
  return page.evaluate(
    (url) =>
      new Promise((resolve) => {
        let ws;
        const done = (r) => {
          clearTimeout(timer);
          resolve(r);
        };
        const timer = setTimeout(() => done({ opened: false, timeout: true }), 10_000);
        try {
          ws = new WebSocket(url);
        } catch (e) {
          done({ opened: false, thrown: String(e) });
          return;
        }
        ws.onopen = () => {
          ws.close(1000, "probe");
          done({ opened: true });
        };
        ws.onerror = () => {};
        ws.onclose = (ev) => done({ opened: false, code: ev.code });
      }),
    url,
  );
}

function wss(url) {
  return url.replace(/^https:/, "wss:");
}

/** Opens a WebSocket from `page` that must fail, and returns why Chromium says it failed: the
 * handshake must have reached the gateway and been answered 403. */
async function refusedWebSocket(ctx, page, url) {
  const cdp = await ctx.newCDPSession(page);
  const errors = [];
  cdp.on("Network.webSocketFrameError", (e) => errors.push(e.errorMessage));
  await cdp.send("Network.enable");
  const r = await probeWebSocket(page, url);
  assert(!r.opened, `a WebSocket from ${page.url()} must not open: ${JSON.stringify(r)}`);
  const why = await waitFor(() => errors[0], "Chromium's reason for the failed WebSocket");
  assert(/\b403\b/.test(why), `the gateway answered 403: ${why}`);
  await cdp.detach();
  return why;
}

/** Two HTTPS servers (a page, and a sniffer that records WebSocket handshakes) and one HTTP
 * server on loopback ports of their own. */
async function otherOrigins(c) {
  const page = (_req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>another origin</title><p>not the gateway</p>");
  };
  const tls = { cert: c.cert_pem, key: c.key_pem };
  const sniffed = [];
  const pageServer = https.createServer(tls, page);
  const sniffer = https.createServer(tls, page);
  sniffer.on("upgrade", (req, socket) => {
    sniffed.push({ origin: req.headers.origin, cookie: req.headers.cookie });
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  });
  const plain = http.createServer(page);
  const listen = (s) => new Promise((r) => s.listen(0, "127.0.0.1", () => r(s.address().port)));
  const [p1, p2, p3] = [await listen(pageServer), await listen(sniffer), await listen(plain)];
  return {
    httpsUrl: `https://127.0.0.1:${p1}/`,
    snifferUrl: `wss://127.0.0.1:${p2}`,
    httpUrl: `http://127.0.0.1:${p3}/`,
    sniffed,
    close() {
      for (const s of [pageServer, sniffer, plain]) {
        s.closeAllConnections?.();
        s.close();
      }
    },
  };
}
