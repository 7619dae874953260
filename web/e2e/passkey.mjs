// A passkey as the second factor, with Chromium's virtual authenticator (CDP WebAuthn domain) on
// https://localhost (Chromium refuses WebAuthn on an IP address): enrol it from the Security page
// (recovery codes shown once), sign out, sign in with the password and the passkey; then with the
// authenticator's credentials gone, the passkey step fails and nobody is signed in.
//
// E2E_CONFIG: {url (https://localhost:PORT), user, password, artifacts}
import { assert, main, newContext, signIn, waitFor, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser);
  const page = watchPage(await ctx.newPage(), "passkey");
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });

  await signIn(page, c.url, c.user, c.password);
  await page.goto(`${c.url}/#/security`);
  await page.locator("#passkey-begin").click();
  await page.locator("#passkey-added").waitFor();
  const codes = await page.locator("#mfa-recovery li").count();
  assert(codes === 10, `ten recovery codes with the first factor: ${codes}`);
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert(credentials.length === 1, `one credential on the authenticator: ${credentials.length}`);
  check("passkey enrolled from the Security page, 10 recovery codes");

  await page.locator("#signout").click();
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  await page.locator("#login-passkey").waitFor();
  await page.locator("#login-passkey").click();
  await page.locator("#targets").waitFor();
  const after = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert(after.credentials[0].signCount >= 1, `the authenticator signed: ${JSON.stringify(after.credentials[0].signCount)}`);
  check("signed in with password and passkey");

  // The key is lost: its credential is gone from the authenticator.
  await cdp.send("WebAuthn.clearCredentials", { authenticatorId });
  await page.locator("#signout").click();
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  await page.locator("#login-passkey").click();
  const error = await waitFor(async () => {
    const e = page.locator("#login-error");
    return (await e.isVisible()) ? await e.textContent() : false;
  }, "the passkey step to fail", 30_000);
  assert(!(await page.locator("#targets").count()), "not signed in without the passkey");
  check(`without the passkey: ${error}`);
  return { error };
});
