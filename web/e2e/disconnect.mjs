// The SSH server dies under a live browser session: that tab shows the disconnect, another
// session through the same gateway keeps working, and a new session starts afterwards.
//
// E2E_CONFIG: {url, user, password, stable, doomed, markers: [4 strings], artifacts}
// Step: {"step":"kill_sshd"} -> the Rust side kills the doomed target's sshd (every process of
// it, sessions included) and answers one line.
import path from "node:path";
import { askRust, assert, echoMarker, log, main, newContext, signIn, status, typeLine, waitFor, waitForPrompt, waitStatus, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser, { width: 1000, height: 600 });
  const [m1, m2, m3, m4] = c.markers;

  // Two live sessions through one gateway, to two sshds.
  const stable = watchPage(await ctx.newPage(), "stable");
  await signIn(stable, c.url, c.user, c.password);
  await stable.locator(`#targets button[data-target="${c.stable}"]`).click();
  await waitForPrompt(stable);
  await echoMarker(stable, m1);
  const doomed = watchPage(await ctx.newPage(), "doomed");
  await doomed.goto(`${c.url}/#/ssh/${c.doomed}`);
  await waitForPrompt(doomed);
  await echoMarker(doomed, m2);
  check(`two live sessions: ${c.stable} and ${c.doomed}, both echo`);

  const answer = await askRust("kill_sshd");
  const lost = await waitStatus(doomed, ["error", "ended", "lost"], 20_000);
  assert(!/exit status|signal/.test(lost.text), `a killed server is not reported as an exit status: ${JSON.stringify(lost)}`);
  assert(await doomed.locator("#reconnect").isVisible(), "#reconnect is offered after the disconnect");
  const shot = path.join(c.artifacts, "disconnected.png");
  await doomed.screenshot({ path: shot });
  check(`sshd of ${c.doomed} killed (${answer}): #status ${lost.state} "${lost.text}"; screenshot ${shot}`);

  // The other session did not notice.
  const st = await waitStatus(stable, ["connected", "error", "ended", "lost"]);
  assert(st.state === "connected", `${c.stable} is still connected: ${JSON.stringify(st)}`);
  await stable.bringToFront();
  await stable.locator("#terminal").click();
  await echoMarker(stable, m3);
  check(`${c.stable}'s session keeps working after the kill`);

  // A new session through the same gateway works.
  const fresh = watchPage(await ctx.newPage(), "fresh");
  await fresh.goto(`${c.url}/#/targets`);
  await fresh.locator(`#targets button[data-target="${c.stable}"]`).click();
  await waitForPrompt(fresh);
  await echoMarker(fresh, m4);
  await typeLine(fresh, "exit 0");
  const freshEnd = await waitStatus(fresh, ["ended", "error", "lost"]);
  assert(freshEnd.state === "ended" && /exit status 0\b/.test(freshEnd.text), `the new session ends with its exit status: ${JSON.stringify(freshEnd)}`);
  check(`a new session to ${c.stable} after the kill: echo works, "${freshEnd.text}"`);

  // Reconnecting to the dead server says why it cannot.
  await doomed.bringToFront();
  await doomed.locator("#reconnect").click();
  const again = await waitFor(async () => {
    const s = await status(doomed);
    return s && ["error", "ended", "lost"].includes(s.state) && s.text !== lost.text ? s : false;
  }, "a new #status after reconnecting", 20_000);
  assert(again.state === "error" || again.state === "lost", `reconnecting to a dead server fails: ${JSON.stringify(again)}`);
  check(`reconnect to ${c.doomed}: #status ${again.state} "${again.text}"`);

  await stable.bringToFront();
  await stable.locator("#terminal").click();
  await typeLine(stable, "exit 0");
  const stableEnd = await waitStatus(stable, ["ended", "error", "lost"]);
  assert(stableEnd.state === "ended", `${c.stable} ends normally: ${JSON.stringify(stableEnd)}`);
  log("done");
  return { lost, reconnect: again, screenshot: shot };
});
