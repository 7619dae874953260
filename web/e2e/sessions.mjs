// The Sessions page (administrators): alice sees the live tunnel session the test opened for
// carol, refreshed as it carries bytes, and ends it with a reason; bob (not an administrator) has
// no Sessions link and is refused by the API.
//
// E2E_CONFIG: {url, user (admin), password, other (not an admin), target, session_user, artifacts}
import { assert, askRust, main, newContext, signIn, waitFor, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser);
  const page = watchPage(await ctx.newPage(), "admin");
  await signIn(page, c.url, c.user, c.password);
  assert(await page.locator("#nav-sessions").isVisible(), "an administrator has the Sessions link");
  await page.locator("#nav-sessions").click();
  const row = page.locator(`#sessions tr:has(td:text-is("${c.session_user}"))`);
  await row.waitFor();
  const id = await row.getAttribute("data-session");
  const cells = await row.locator("td").allTextContents();
  assert(cells.includes(c.target) && cells.includes("tunnel"), `the row names the target and route: ${cells}`);
  check(`live session ${id} of ${c.session_user} listed: ${cells.slice(0, 6).join(" | ")}`);

  // The page follows the session: bytes it carries after the first view show up.
  const before = (await row.locator("td").nth(7).textContent()).trim();
  await askRust("send");
  await waitFor(async () => (await row.locator("td").nth(7).textContent()).trim() !== before, "the byte count to move");
  check(`bytes up went from "${before}" to "${(await row.locator("td").nth(7).textContent()).trim()}"`);

  // No reason, no termination (the form requires one); then with one.
  await row.locator(`button[data-terminate="${id}"]`).click();
  await row.locator(`button[data-confirm-terminate="${id}"]`).click();
  assert((await page.locator(`#sessions tr[data-session="${id}"]`).count()) === 1, "still live without a reason");
  await row.locator(`input[data-reason="${id}"]`).fill("e2e: suspicious activity");
  await row.locator(`button[data-confirm-terminate="${id}"]`).click();
  await waitFor(async () => (await page.locator(`#sessions tr[data-session="${id}"]`).count()) === 0, "the session to go");
  check("terminated with a reason; gone from the list");

  // Not an administrator: no link, and the API says no.
  const other = await newContext(browser);
  const bob = watchPage(await other.newPage(), "bob");
  await signIn(bob, c.url, c.other, c.password);
  assert(await bob.locator("#nav-sessions").isHidden(), "no Sessions link for a non-administrator");
  const status = await bob.evaluate(async () => (await fetch("/api/admin/sessions")).status);
  assert(status === 403, `the API refuses a non-administrator: ${status}`);
  check("a non-administrator has no link and gets 403");

  // The Audit page finds the terminated session and bob's refusal.
  await page.locator("#nav-audit").click();
  await page.locator("#audit-status").filter({ hasText: /record/ }).waitFor();
  await page.locator("#audit-user").fill(c.session_user);
  await page.locator("#audit-event").selectOption("session");
  await page.locator("#audit-search").click();
  const sessionRow = page.locator("#audit-records tr[data-event=session]");
  await waitFor(async () => (await sessionRow.count()) === 1, "carol's session in the audit search");
  const text = await sessionRow.textContent();
  assert(/terminated/.test(text), `the record says it was terminated: ${text}`);
  check(`audit search user=${c.session_user} kind=session: ${text}`);
  await page.locator("#audit-user").fill(c.other);
  await page.locator("#audit-event").selectOption("");
  await page.locator("#audit-outcome").selectOption("refused");
  await page.locator("#audit-search").click();
  await waitFor(async () => (await page.locator("#audit-records tr[data-event=admin]").count()) >= 1, "bob's refused admin request");
  const rows = await page.locator("#audit-records tr").count();
  const oks = await page.locator("#audit-records td:text-is('ok')").count();
  assert(oks === 0, `only refusals listed (${rows} rows)`);
  check(`audit search user=${c.other} outcome=refused: ${rows} rows, all refusals`);
  return { session: id };
});
