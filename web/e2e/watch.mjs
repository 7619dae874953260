// Watching a live terminal: carol opens a shell on vm1; alice (an administrator) finds it on the
// Sessions page and watches it read-only: what carol types shows in alice's view, carol sees that
// she is watched, and no longer once alice leaves. bob (no administrator) cannot watch.
//
// E2E_CONFIG: {url, user (admin), other (the watched user), third (not an admin), password,
//              target, marker, artifacts}
import { assert, echoMarker, main, newContext, signIn, waitFor, waitForPrompt, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const carolCtx = await newContext(browser);
  const carol = watchPage(await carolCtx.newPage(), "carol");
  await signIn(carol, c.url, c.other, c.password);
  await carol.goto(`${c.url}/#/ssh/${c.target}`);
  await waitForPrompt(carol);
  assert(await carol.locator("#watched").isHidden(), "nobody watches yet");

  const aliceCtx = await newContext(browser);
  const alice = watchPage(await aliceCtx.newPage(), "alice");
  await signIn(alice, c.url, c.user, c.password);
  await alice.locator("#nav-sessions").click();
  const watch = alice.locator(`#sessions tr:has(td:text-is("${c.other}")) a[data-watch]`);
  await watch.waitFor();
  await watch.click();
  await alice.locator('#status[data-state="connected"]').waitFor();
  check(`alice watches: ${await alice.locator("#watch-title").textContent()}`);

  await carol.locator("#watched").waitFor({ state: "visible" });
  check(`carol is told: ${await carol.locator("#watched").textContent()}`);

  await echoMarker(carol, c.marker);
  const seen = () =>
    alice.evaluate((marker) => {
      const t = window.portcullis.watchTerm;
      const b = t.buffer.active;
      for (let i = 0; i < b.length; i++) if ((b.getLine(i)?.translateToString(true) ?? "").trim() === marker) return true;
      return false;
    }, c.marker);
  await waitFor(seen, "the marker in the watcher's view");
  check("what carol's shell printed shows in alice's view");

  // Read-only: keys in the watcher's view reach nothing.
  await alice.locator("#terminal").click();
  await alice.keyboard.type("echo typed-by-the-watcher\n");
  await new Promise((r) => setTimeout(r, 500));
  const leaked = await carol.evaluate(() => {
    const b = window.portcullis.term.buffer.active;
    for (let i = 0; i < b.length; i++) if ((b.getLine(i)?.translateToString(true) ?? "").includes("typed-by-the-watcher")) return true;
    return false;
  });
  assert(!leaked, "the watcher's keys reached the session");

  await alice.goto(`${c.url}/#/targets`);
  await carol.locator("#watched").waitFor({ state: "hidden" });
  check("alice left: carol's notice is gone");

  const bobCtx = await newContext(browser);
  const bob = watchPage(await bobCtx.newPage(), "bob");
  await signIn(bob, c.url, c.third, c.password);
  const id = await alice.evaluate(async (user) => (await (await fetch("/api/admin/sessions")).json()).sessions.find((s) => s.user === user).id, c.other);
  const opened = await bob.evaluate(
    (id) =>
      new Promise((resolve) => {
        const ws = new WebSocket(`wss://${location.host}/v1/watch/${id}`);
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
        ws.onclose = () => resolve(false);
      }),
    id,
  );
  assert(!opened, "a non-administrator opened a watch");
  check("bob (not an administrator) cannot watch");
  return { session: id };
});
