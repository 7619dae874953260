// A whole browser SSH session: sign in with the form, pick vm1 from the list, type a command,
// read it back from xterm's buffer, resize the window and watch `stty size` follow, save a
// screenshot, exit the shell and see its exit status.
//
// E2E_CONFIG: {url, user, password, target, marker, artifacts}
import path from "node:path";
import fs from "node:fs";
import { assert, echoMarker, listedTargets, log, main, newContext, signIn, sttySize, terminal, typeLine, waitFor, waitForPrompt, waitStatus, watchPage } from "./lib.mjs";

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser, { width: 1100, height: 720 });
  const page = watchPage(await ctx.newPage(), "session");

  await signIn(page, c.url, c.user, c.password);
  const targets = await listedTargets(page);
  assert(targets.includes(c.target), `${c.target} is listed (${targets})`);
  check(`signed in as ${c.user} with the form; targets listed: ${targets.join(", ")}`);

  await page.locator(`#targets button[data-target="${c.target}"]`).click();
  await page.waitForURL(`**/#/ssh/${c.target}`);
  await waitForPrompt(page);
  const clipboard = await page.locator("#terminal").getAttribute("data-clipboard");
  check(`opened ${c.target}: #status connected, prompt shown, clipboard ${clipboard}`);

  await echoMarker(page, c.marker);
  check(`typed "echo ${c.marker}" and found the marker in the terminal buffer`);

  const before = await terminal(page);
  const size1 = await sttySize(page);
  assert(size1.rows === before.rows && size1.cols === before.cols, `stty size ${size1.rows} ${size1.cols} is the terminal's ${before.rows}x${before.cols}`);
  check(`stty size = ${size1.rows} ${size1.cols} at a 1100x720 window`);

  await page.setViewportSize({ width: 760, height: 460 });
  const after = await waitForSize(page, before);
  assert(after.rows < before.rows && after.cols < before.cols, `the terminal shrank (${before.rows}x${before.cols} -> ${after.rows}x${after.cols})`);
  const size2 = await sttySize(page);
  assert(size2.rows === after.rows && size2.cols === after.cols, `stty size ${size2.rows} ${size2.cols} after the resize is the terminal's ${after.rows}x${after.cols}`);
  check(`resized the window to 760x460: stty size = ${size2.rows} ${size2.cols}`);

  const shot = path.join(c.artifacts, "terminal.png");
  await page.screenshot({ path: shot });
  assert(fs.statSync(shot).size > 1000, "the screenshot has content");
  check(`screenshot saved: ${shot}`);

  await typeLine(page, "exit 3");
  const st = await waitStatus(page, ["ended", "error", "lost"]);
  assert(st.state === "ended" && /exit status 3\b/.test(st.text), `#status shows the exit status: ${JSON.stringify(st)}`);
  check(`exit 3: #status ${st.state} "${st.text}"`);
  const reconnect = await page.locator("#reconnect").isVisible();
  assert(reconnect, "#reconnect is offered after the session ended");
  log("done");
  return { sizes: [size1, size2], status: st, screenshot: shot };
});

/** Waits until the fit addon gave the terminal a new size (the window resize reached xterm). */
async function waitForSize(page, before) {
  return waitFor(
    async () => {
      const t = await terminal(page);
      return t && (t.rows !== before.rows || t.cols !== before.cols) ? t : false;
    },
    "the terminal to follow the window size",
  );
}
