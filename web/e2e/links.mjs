// Shared links: alice (an administrator) makes a single-use link to vm1 on the Links page; a
// browser with no account opens it and gets a shell on vm1, and vm1 only; the same link again is
// refused; a second (reusable) link works until alice revokes it, which also ends its open
// session; a link that expired is refused.
//
// E2E_CONFIG: {url, user (admin), password, target, other_target, marker, artifacts}
import { assert, echoMarker, main, newContext, signIn, waitFor, waitForPrompt, waitStatus, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const adminCtx = await newContext(browser);
  const admin = watchPage(await adminCtx.newPage(), "admin");
  await signIn(admin, c.url, c.user, c.password);
  await admin.locator("#nav-links").click();
  await admin.locator("#link-target").selectOption(c.target);

  const make = async (once) => {
    const box = admin.locator("#link-once");
    if ((await box.isChecked()) !== once) await box.click();
    await admin.locator("#link-create").click();
    const url = admin.locator("#link-url");
    await waitFor(async () => (await url.count()) && (await url.inputValue()).includes("#/link/"), "the new link");
    const value = await url.inputValue();
    await admin.locator("#link-made").evaluate((p) => p.replaceChildren());
    return value;
  };
  const single = await make(true);
  assert(!single.split("#")[0].includes(single.split("#/link/")[1].split(".")[1]), "the secret is in the fragment only");
  check(`made a single-use link: ${single.replace(/\.[^.]+$/, ".<secret>")}`);

  // A guest: no account, just the link.
  const open = async (url, name) => {
    const ctx = await newContext(browser);
    const page = watchPage(await ctx.newPage(), name);
    await page.goto(url);
    return { ctx, page };
  };
  const first = await open(single, "guest1");
  await waitForPrompt(first.page);
  assert(!(await first.page.evaluate(() => location.hash)).includes("."), "the secret left the address bar");
  await echoMarker(first.page, c.marker);
  const session = await first.page.evaluate(async () => (await fetch("/api/session")).json());
  assert(session.targets.length === 1 && session.targets[0].name === c.target, `the guest sees ${c.target} only: ${JSON.stringify(session.targets)}`);
  check(`the guest (${session.user}) got a shell on ${c.target}, and sees that target only`);
  // Another target, asked for directly: refused.
  await first.page.goto(`${c.url}/#/ssh/${c.other_target}`);
  await waitStatus(first.page, ["error", "disconnected", "closed"]);
  // And its terminal WebSocket opened by hand: the gateway refuses it.
  const opened = await first.page.evaluate(
    (t) =>
      new Promise((resolve) => {
        const ws = new WebSocket(`wss://${location.host}/v1/ssh/${t}`);
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
        ws.onclose = () => resolve(false);
      }),
    c.other_target,
  );
  assert(!opened, `the guest opened a terminal WebSocket to ${c.other_target}`);
  check(`${c.other_target} refused to the guest`);

  const again = await open(single, "guest2");
  await again.page.locator("#link-status.error").waitFor();
  check(`the single-use link refused the second time: ${await again.page.locator("#link-status").textContent()}`);

  // A reusable link, revoked while its session is open.
  const reusable = await make(false);
  const third = await open(reusable, "guest3");
  await waitForPrompt(third.page);
  await admin.locator("#links tr[data-link] button[data-revoke-link]").first().waitFor();
  const id = reusable.split("#/link/")[1].split(".")[0];
  await admin.locator(`button[data-revoke-link="${id}"]`).click();
  await waitFor(async () => (await admin.locator(`#links tr[data-link="${id}"]`).count()) === 0, "the revoked link to leave the list");
  await waitStatus(third.page, ["disconnected", "closed", "error"]);
  const fourth = await open(reusable, "guest4");
  await fourth.page.locator("#link-status.error").waitFor();
  check("revoking the link ended its session and refuses it from then on");

  // A link of one second, opened too late.
  const expiring = await admin.evaluate(async (target) => {
    const r = await fetch("/api/admin/links", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ target, ttl_seconds: 1, once: false }) });
    return (await r.json()).url;
  }, c.target);
  await new Promise((r) => setTimeout(r, 2100));
  const late = await open(expiring, "guest5");
  await late.page.locator("#link-status.error").waitFor();
  check("an expired link is refused");
  return { link_ids: [single, reusable, expiring].map((u) => u.split("#/link/")[1].split(".")[0]) };
});
