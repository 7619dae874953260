// Web RDP end to end (issue 6), run by engine/tests/browser_rdp.rs with its settings as JSON in
// E2E_CONFIG: {url, user, password, target, rdp_user, rdp_password, artifacts, timeout_ms,
// restricted_target}.
//
// With `restricted_target` (a target whose policy refuses the clipboard), that target's desktop
// is opened first, as a modified client would: the page is told the clipboard is allowed, so the
// IronRDP client asks for the clipboard channel. Once its first picture shows, the script asks the
// Rust side to check the server's view (`{"step":"restricted"}`, answered "ok" or why not), leaves,
// and goes on with `target` as below.
//
// Signs in to the web app, opens the RDP target from the targets list, types the RDP account into
// the connect dialog, and waits until the IronRDP canvas shows a picture (colours counted in the
// page with getImageData). The IronRDP web client does not ask for an automatic logon, so xrdp
// (TLS security, no NLA) first shows its own login screen: the script then types the password
// there, through the canvas (keyboard events -> IronRDP -> RDP scancodes), and waits for the
// user's session to replace the login screen. Pictures: <artifacts>/rdp-login.png (xrdp's login
// screen, when shown), <artifacts>/rdp.png (the session's desktop), <artifacts>/rdp-page.png.
//
// Protocol with the Rust side (as in lib.mjs): stdout carries JSON lines only. `{"step":"logon"}`
// asks whether xrdp has logged the user on; the answer is one stdin line, "session" or "login".
// `{"step":"logon_wait"}` (after typing the password) waits for the logon; the answer is
// "session" or "failed". The last line is `{"result":{"ok":…,…}}`; logs go to stderr; exit 0
// only on success. Every wait is bounded and a watchdog ends the run.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

const ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const t0 = Date.now();
const log = (...a) => console.error(`[rdp ${((Date.now() - t0) / 1000).toFixed(2).padStart(6)}s]`, ...a);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

/** An error that ends a wait at once (the page reached a state it will not leave). */
class Fatal extends Error {}

async function waitFor(probe, what, ms) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      if (e instanceof Fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const rl = readline.createInterface({ input: process.stdin });
const lines = [];
const waiters = [];
rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : lines.push(l)));
rl.on("close", () => {
  while (waiters.length) waiters.shift()(null);
});

/** Asks the Rust side to do or check `step`; returns its one-line answer. */
async function ask(step, ms) {
  emit({ step });
  let timer;
  const answer = await Promise.race([
    lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r)),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer to step ${step} in ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
  if (answer === null) throw new Error(`stdin closed before the answer to step ${step}`);
  log(`step ${step}: ${answer}`);
  return answer;
}

/** Types `text` key by key with explicit Shift, so IronRDP (which sends scancodes, from
 * KeyboardEvent.code) gets the same characters on the server's US layout. */
async function typeKeys(page, text) {
  for (const ch of text) {
    let key;
    if (/[a-z]/.test(ch)) key = `Key${ch.toUpperCase()}`;
    else if (/[A-Z]/.test(ch)) key = `Shift+Key${ch}`;
    else if (/[0-9]/.test(ch)) key = `Digit${ch}`;
    else if (ch === "-") key = "Minus";
    else if (ch === "_") key = "Shift+Minus";
    else if (ch === " ") key = "Space";
    else throw new Error(`cannot type ${JSON.stringify(ch)} as scancodes`);
    await page.keyboard.press(key, { delay: 10 });
  }
}

const status = (page) =>
  page.evaluate(() => {
    const s = document.getElementById("status");
    return s ? { state: s.dataset.state, text: s.textContent } : null;
  });

/** The desktop canvas as seen by the page: size, distinct colours (sampled), and a PNG data URL. */
const canvasInfo = (page, withPng) =>
  page.evaluate((png) => {
    const c = window.portcullis && window.portcullis.rdp && window.portcullis.rdp.canvas();
    if (!c || !c.width || !c.height) return null;
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    let hash = 2166136261;
    // Every pixel of every 2nd row and column: enough to tell pictures apart.
    for (let y = 0; y < c.height; y += 2) {
      for (let x = 0; x < c.width; x += 2) {
        const i = (y * c.width + x) * 4;
        const rgb = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
        colours.add(rgb);
        hash = Math.imul(hash ^ rgb, 16777619) >>> 0;
      }
    }
    const box = c.getBoundingClientRect();
    return {
      width: c.width,
      height: c.height,
      shown: { width: Math.round(box.width), height: Math.round(box.height) },
      colours: colours.size,
      hash,
      png: png ? c.toDataURL("image/png") : null,
    };
  }, withPng);

async function run(c, result) {
  const browser = await chromium.launch({ executablePath: process.env.E2E_CHROMIUM || "/usr/bin/chromium", headless: true, args: ARGS, timeout: 30_000 });
  result.browser = browser;
  log(`chromium ${browser.version()}`);
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 720 } });
  ctx.setDefaultTimeout(20_000);
  const page = await ctx.newPage();
  result.page = page;
  page.on("console", (m) => log(`[console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log(`[pageerror] ${e.message}`));
  page.on("websocket", (ws) => {
    log(`websocket ${new URL(ws.url()).pathname}`);
    ws.on("close", () => log(`websocket ${new URL(ws.url()).pathname} closed`));
  });

  if (c.restricted_target) {
    // A modified client: whatever the gateway says of the target's clipboard, the page believes
    // it is allowed (and so the IronRDP client asks for the clipboard channel).
    await page.route("**/api/**", async (route) => {
      const response = await route.fetch();
      const type = response.headers()["content-type"] || "";
      if (!type.includes("json")) return route.fulfill({ response });
      const text = (await response.text()).replaceAll('"clipboard":false', '"clipboard":true');
      const headers = { ...response.headers() };
      delete headers["content-length"];
      return route.fulfill({ response, headers, body: text });
    });
  }

  await page.goto(`${c.url}/`);
  await page.locator("#login-user").fill(c.user);
  await page.locator("#login-password").fill(c.password);
  await page.locator("#login-submit").click();
  const button = page.locator(`#targets button[data-rdp-target="${c.target}"]`);
  await button.waitFor();
  result.checks.push(`signed in as ${c.user}; ${c.target} has an "Open desktop" button`);

  if (c.restricted_target) {
    await openDesktop(page, c, c.restricted_target);
    const first = await steadyPicture(page, c.min_colours, null, "the restricted target's first picture");
    const answer = await ask("restricted", 15_000);
    if (answer !== "ok") throw new Error(`restricted target ${c.restricted_target}: ${answer}`);
    result.checks.push(`${c.restricted_target} (clipboard refused): a picture of ${first.colours} colours; the server was not asked for the clipboard channel`);
    // A fresh document for the next desktop: nothing of the first session's client (its
    // WebAssembly state, its socket) carries over.
    await page.goto("about:blank");
    await page.goto(`${c.url}/#/targets`);
    await button.waitFor();
  }

  const connected = await openDesktop(page, c, c.target);
  result.checks.push(`#status: ${connected.text}`);

  // The first picture: xrdp's login screen (or the session, should the client log on by itself).
  const first = await steadyPicture(page, c.min_colours, null, "the first picture");
  let login = null;
  if ((await ask("logon", 10_000)) === "login") {
    login = first;
    save(c, "rdp-login.png", first.png);
    result.checks.push(`xrdp's login screen rendered: canvas ${first.width}x${first.height}, ${first.colours} colours`);
    // Focus the canvas (a click on the background would deactivate xrdp's dialog), then type the
    // password into the dialog: it has the username already, from the RDP logon info, and its
    // password field has the focus.
    await page.evaluate(() => window.portcullis.rdp.canvas().focus());
    await typeKeys(page, c.rdp_password);
    await page.keyboard.press("Enter");
    if ((await ask("logon_wait", 40_000)) !== "session") throw new Error("xrdp did not log the user on with the password typed into its login screen");
    result.checks.push("typed the password into xrdp's login screen through the canvas; xrdp logged the user on");
  }
  const info = await steadyPicture(page, c.min_colours, login, "the session's desktop");
  const file = save(c, "rdp.png", info.png);
  await page.screenshot({ path: path.join(c.artifacts, "rdp-page.png") });
  const desktop = await page.locator("#rdp-screen").getAttribute("data-desktop");
  result.checks.push(`session desktop: canvas ${info.width}x${info.height} (shown at ${info.shown.width}x${info.shown.height}, asked ${desktop}), ${info.colours} colours; saved ${file}`);
  log(result.checks.at(-1));

  // The desktop follows the window: a smaller window asks the server for a smaller desktop
  // (display control); a server that does not resize gets its picture scaled down to fit.
  await page.setViewportSize({ width: 900, height: 600 });
  const fitted = await waitFor(
    async () => {
      const now = await canvasInfo(page, false);
      const room = await page.evaluate(() => {
        const r = document.getElementById("rdp-screen").getBoundingClientRect();
        return { width: Math.round(r.width), height: Math.round(r.height) };
      });
      const fits = now && now.shown.width <= room.width + 1 && now.shown.height <= room.height + 1;
      return fits && (now.shown.width >= room.width - 2 || now.shown.height >= room.height - 2) ? { now, room } : false;
    },
    "the desktop to fit the smaller window",
    15_000,
  );
  const how = fitted.now.width < info.width ? "the server resized the desktop" : "the picture was scaled to fit";
  result.checks.push(`window 900x600: canvas ${fitted.now.width}x${fitted.now.height} shown at ${fitted.now.shown.width}x${fitted.now.shown.height} in ${fitted.room.width}x${fitted.room.height} (${how})`);
  log(result.checks.at(-1));

  // More mouse and keyboard input reaches the session without breaking it.
  await page.mouse.move(200, 300);
  await page.mouse.click(220, 320);
  await page.mouse.wheel(0, 120);
  await page.keyboard.press("Shift");
  await new Promise((r) => setTimeout(r, 500));
  const after = await status(page);
  if (after.state !== "connected") throw new Error(`after input, #status ${after.state}: ${after.text}`);

  // Leaving the page ends the session (the gateway then writes its audit record).
  await page.goto(`${c.url}/#/targets`);
  await page.locator("#targets").waitFor();
  return { login_screen: !!login, colours: info.colours, width: info.width, height: info.height, desktop, screenshot: file };
}

/** Opens `target`'s desktop from the targets list with the RDP account; returns #status once
 * connected. */
async function openDesktop(page, c, target) {
  await page.locator(`#targets button[data-rdp-target="${target}"]`).click();
  await page.waitForURL(`**/#/rdp/${target}`);
  await page.locator("#rdp-dialog[open]").waitFor();
  await page.locator("#rdp-user").fill(c.rdp_user);
  await page.locator("#rdp-password").fill(c.rdp_password);
  await page.locator("#rdp-submit").click();
  log(`${target}: credentials sent; waiting for the session`);
  return waitFor(
    async () => {
      const s = await status(page);
      if (s && (s.state === "error" || s.state === "lost" || s.state === "ended")) throw new Fatal(`#status ${s.state}: ${s.text}`);
      return s && s.state === "connected" ? s : false;
    },
    "#status connected",
    60_000,
  ).catch(async (e) => {
    const s = await status(page).catch(() => null);
    throw new Error(`${e.message}; #status is ${JSON.stringify(s)}`);
  });
}

/** Waits for a canvas picture with at least `min` colours that stays the same for 2 s and, when
 * `unlike` is given, differs from it; returns its info with a PNG data URL. */
async function steadyPicture(page, min, unlike, what) {
  let previous = null;
  let steady = 0;
  await waitFor(
    async () => {
      const s = await status(page);
      if (s && s.state !== "connected") throw new Fatal(`#status ${s.state}: ${s.text}`);
      const info = await canvasInfo(page, false);
      if (!info) return false;
      const fresh = !unlike || info.hash !== unlike.hash;
      const same = previous && previous.hash === info.hash;
      previous = info;
      steady = same && fresh && info.colours >= min ? steady + 1 : 0;
      return steady >= 8;
    },
    `${what} (>= ${min} colours, steady for 2 s)`,
    45_000,
  );
  return canvasInfo(page, true);
}

function save(c, name, dataUrl) {
  const file = path.join(c.artifacts, name);
  fs.writeFileSync(file, Buffer.from(dataUrl.replace(/^data:image\/png;base64,/, ""), "base64"));
  return file;
}

const c = JSON.parse(process.env.E2E_CONFIG || "null");
if (!c) {
  console.error("E2E_CONFIG is not set (this script is run by engine/tests/browser_rdp.rs)");
  process.exit(2);
}
c.min_colours = c.min_colours || 2;
fs.mkdirSync(c.artifacts, { recursive: true });
const result = { checks: [] };
const finish = async (code, extra) => {
  const { browser, page, ...rest } = result;
  if (code !== 0 && page) {
    await Promise.race([page.screenshot({ path: path.join(c.artifacts, "failure.png") }), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
  }
  if (browser) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000))]).catch(() => {});
  emit({ result: { ...rest, ...extra, ok: code === 0 } });
  process.exit(code);
};
const watchdog = setTimeout(() => {
  log(`watchdog: no result after ${c.timeout_ms || 100_000} ms`);
  finish(1, { error: "timed out" });
}, c.timeout_ms || 100_000);
try {
  const extra = await run(c, result);
  clearTimeout(watchdog);
  for (const line of result.checks) log(`ok: ${line}`);
  await finish(0, extra);
} catch (e) {
  clearTimeout(watchdog);
  log(`FAILED: ${e.stack || e}`);
  await finish(1, { error: String(e.message || e) });
}
