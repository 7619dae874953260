// Single sign-on through a real OpenID provider (oidc-provider, started by engine/tests/sso.rs):
// the sign-in page's provider button, the provider's own login page, back to the gateway signed
// in as corp:alice with the targets her group's role grants; the same callback replayed is
// refused; a user whose groups map to no role is refused; with the provider stopped, its button
// gives a page that says so, and a local administrator still signs in (password and TOTP code).
//
// E2E_CONFIG: {url, provider, admin, admin_password, admin_totp_secret, artifacts}
import { askRust, assert, base32Decode, main, newContext, totp, waitFor, watchPage, listedTargets } from "./lib.mjs";

/** Through the provider's login page as `login`; returns the callback URL the browser followed. */
async function viaProvider(page, c, login) {
  let callback = null;
  page.on("request", (r) => {
    if (r.url().startsWith(`${c.url}/api/oidc/callback`)) callback = r.url();
  });
  await page.goto(`${c.url}/`);
  await page.locator("#oidc-corp").click();
  await page.waitForURL((u) => u.href.startsWith(c.provider));
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill("any password");
  await page.locator('button[type="submit"]').click();
  await waitFor(() => callback, "the provider to send the browser back");
  return callback;
}

await main(async ({ config: c, browser, check }) => {
  const alice = await newContext(browser);
  const page = watchPage(await alice.newPage(), "alice");
  const callback = await viaProvider(page, c, "alice");
  await page.locator('#targets button[data-target="vm1"]').waitFor();
  const who = await page.locator("#whoami").textContent();
  assert(/corp:alice/.test(who), `signed in as corp:alice: ${who}`);
  const targets = await listedTargets(page);
  assert(targets.includes("vm1") && !targets.includes("db1"), `the role's targets only: ${targets}`);
  check(`single sign-on: ${who}, targets ${targets}`);

  // The same callback again (a replay): refused.
  await page.goto(callback);
  const replay = await page.locator("#oidc-error").textContent();
  assert(/already completed or has expired/.test(replay), `replayed callback refused: ${replay}`);
  check(`replayed callback: ${replay}`);

  // A user with no mapped group: signed in at the provider, refused here.
  const eve = await newContext(browser);
  const evePage = watchPage(await eve.newPage(), "eve");
  await viaProvider(evePage, c, "eve");
  const refused = await evePage.locator("#oidc-error").textContent();
  assert(/no access to this gateway/.test(refused), `no role, no access: ${refused}`);
  check(`no role: ${refused}`);

  // The provider goes down.
  await askRust("stop-provider");
  const later = await newContext(browser);
  const down = watchPage(await later.newPage(), "down");
  await down.goto(`${c.url}/`);
  await down.locator("#oidc-corp").click();
  const unavailable = await down.locator("#oidc-error").textContent();
  assert(/unavailable/.test(unavailable), `provider down: ${unavailable}`);
  check(`provider down: ${unavailable}`);
  await down.screenshot({ path: `${c.artifacts}/provider-down.png` });

  // Break-glass: the local administrator signs in meanwhile, with a password and a code.
  const local = await newContext(browser);
  const admin = watchPage(await local.newPage(), "admin");
  await admin.goto(`${c.url}/`);
  await admin.locator("#login-user").fill(c.admin);
  await admin.locator("#login-password").fill(c.admin_password);
  await admin.locator("#login-submit").click();
  await admin.locator("#login-code").waitFor();
  const step = Math.floor(Date.now() / 1000 / 30) + 1;
  await admin.locator("#login-code").fill(totp(base32Decode(c.admin_totp_secret), step));
  await admin.locator("#login-code-submit").click();
  await admin.locator('#targets button[data-target="db1"]').waitFor();
  const adminTargets = await listedTargets(admin);
  assert(adminTargets.includes("db1"), `the local admin's targets: ${adminTargets}`);
  check(`local admin signed in while the provider is down: ${adminTargets}`);
  return { targets, adminTargets };
});
