// `portcullis login` approved in the browser, by a user whose policy requires a second factor:
// the link the CLI printed, opened before signing in, leads through the sign-in form to the
// approval page, which refuses until a factor is enrolled; the user enrols an authenticator app
// (QR code and key shown; the code computed here as the app would), keeps the recovery codes,
// approves the login (the page shows the code and where the request came from), sees the native
// client commands of a target (never a token), signs out, and signs in again with a code.
//
// E2E_CONFIG: {url, uri (the link the CLI printed), code, user, password, artifacts}
import { assert, base32Decode, main, newContext, totp, waitFor, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser);
  const page = watchPage(await ctx.newPage(), "device");
  await page.goto(c.uri);
  // Not signed in yet: the app asks first, then comes back to the approval page.
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  const refused = await waitFor(async () => {
    const s = await page.locator("#device-status").textContent().catch(() => "");
    return /second factor/.test(s) ? s : false;
  }, "the approval page to ask for a second factor first");
  check(`before enrolling a factor the approval is refused: ${refused}`);

  // Enrol: QR code and key, a first code, ten recovery codes.
  await page.goto(`${c.url}/#/security`);
  await page.locator("#mfa-begin").click();
  await page.locator("#mfa-qr").waitFor();
  const key = (await page.locator("#mfa-secret").textContent()).trim();
  const secret = base32Decode(key);
  const step = Math.floor(Date.now() / 1000 / 30);
  await page.locator("#mfa-code").fill(totp(secret, step));
  await page.locator("#mfa-confirm").click();
  await page.locator("#mfa-recovery li").first().waitFor();
  const recovery = await page.locator("#mfa-recovery li").count();
  assert(recovery === 10, `ten recovery codes: ${recovery}`);
  await page.screenshot({ path: `${c.artifacts}/enrolled.png` });
  check("authenticator app enrolled from the QR code page, 10 recovery codes shown");

  // Now the approval.
  await page.goto(c.uri);
  await page.locator("#device-approve").waitFor();
  const shown = (await page.locator("#device-shown-code").textContent()).trim();
  assert(shown === c.code, `the page shows the CLI's code: ${shown} vs ${c.code}`);
  const asked = await page.locator(".device").textContent();
  assert(asked.includes("127.0.0.1"), `the page says where the request came from: ${asked}`);
  await page.locator("#device-approve").click();
  const done = await waitFor(async () => {
    const s = await page.locator("#device-status").textContent();
    return /Approved/.test(s) ? s : false;
  }, "the approval to be confirmed");
  check(`approved: ${done}`);

  await page.goto(`${c.url}/#/targets`);
  await page.locator('details[data-native-target="vm1"]').waitFor();
  await page.locator('details[data-native-target="vm1"] summary').click();
  const commands = await page.locator('details[data-native-target="vm1"] pre').textContent();
  assert(commands.includes(`portcullis login ${c.url}`), `the login command: ${commands}`);
  assert(commands.includes("portcullis ssh-config") && commands.includes("ssh vm1"), `the ssh commands: ${commands}`);
  assert(!/eyJ/.test(commands), "no token in the commands");
  check("native client commands for vm1, no token in them");

  // Signed out and in again: the password, then a code (the next step's: the enrolment used this one).
  await page.locator("#signout").click();
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  await page.locator("#login-code").waitFor();
  await page.locator("#login-code").fill(totp(secret, step + 1));
  await page.locator("#login-code-submit").click();
  await page.locator('#targets button[data-target="vm1"]').waitFor();
  check("signed in again with password and code");
  return { commands };
});
