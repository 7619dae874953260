// `portcullis login` approved in the browser: the link the CLI printed, opened before signing
// in, leads through the sign-in form back to the approval page, which shows the code and where
// the request came from; Approve logs the terminal in. Then each target's "Connect with a native
// client" shows commands and never a token.
//
// E2E_CONFIG: {url, uri (the link the CLI printed), code, user, password, artifacts}
import { assert, main, newContext, waitFor, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser);
  const page = watchPage(await ctx.newPage(), "device");
  await page.goto(c.uri);
  // Not signed in yet: the app asks first.
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  await page.locator("#device-approve").waitFor();
  const shown = (await page.locator("#device-shown-code").textContent()).trim();
  assert(shown === c.code, `the page shows the CLI's code: ${shown} vs ${c.code}`);
  const asked = await page.locator(".device").textContent();
  assert(asked.includes("127.0.0.1"), `the page says where the request came from: ${asked}`);
  check(`approval page after sign-in, code ${shown} shown`);
  await page.locator("#device-approve").click();
  const done = await waitFor(async () => {
    const s = await page.locator("#device-status").textContent();
    return /Approved/.test(s) ? s : false;
  }, "the approval to be confirmed");
  check(`approved: ${done}`);
  await page.screenshot({ path: `${c.artifacts}/approved.png` });

  await page.goto(`${c.url}/#/targets`);
  await page.locator('details[data-native-target="vm1"]').waitFor();
  await page.locator('details[data-native-target="vm1"] summary').click();
  const commands = await page.locator('details[data-native-target="vm1"] pre').textContent();
  assert(commands.includes(`portcullis login ${c.url}`), `the login command: ${commands}`);
  assert(commands.includes("portcullis ssh-config") && commands.includes("ssh vm1"), `the ssh commands: ${commands}`);
  assert(!/eyJ/.test(commands), "no token in the commands");
  check("native client commands for vm1, no token in them");
  return { commands };
});
