// Shared helpers of the browser end-to-end scripts. engine/tests/browser.rs starts sshd and the
// gateway, then runs one script with its settings as JSON in the E2E_CONFIG environment variable.
//
// Protocol with the Rust side: stdout carries JSON lines only. `{"step":…}` lines ask the Rust
// side to do something (kill a server) and the script waits for one line on stdin when it says
// so; the last line is `{"result":{"ok":true|false,…}}`. Logs go to stderr. The exit code is 0
// only when every check passed.
import { chromium } from "playwright-core";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

export const CHROMIUM = "/usr/bin/chromium";

// Debian's Chromium, headless, no sandbox (CI runs as root), nothing that phones home.
// Playwright adds a fresh temporary --user-data-dir of its own to every launch and removes it
// when the browser closes.
export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function config() {
  const raw = process.env.E2E_CONFIG;
  if (!raw) throw new Error("E2E_CONFIG is not set (these scripts are run by engine/tests/browser.rs)");
  const c = JSON.parse(raw);
  fs.mkdirSync(c.artifacts, { recursive: true });
  return c;
}

const t0 = Date.now();
export function log(...args) {
  const s = ((Date.now() - t0) / 1000).toFixed(2).padStart(6);
  console.error(`[e2e ${s}s]`, ...args);
}

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

let stdinLines = null;
/** The next line the Rust side writes on stdin. */
export function nextInputLine() {
  if (!stdinLines) {
    const rl = readline.createInterface({ input: process.stdin });
    const queue = [];
    const waiters = [];
    rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
    rl.on("close", () => {
      while (waiters.length) waiters.shift()(null);
    });
    stdinLines = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
  }
  return stdinLines();
}

/** Asks the Rust side to do `step` and waits for its answer line. */
export async function askRust(step, extra = {}) {
  emit({ step, ...extra });
  const line = await withTimeout(nextInputLine(), 30_000, `an answer to step ${step}`);
  if (line === null) throw new Error(`stdin closed while waiting for step ${step}`);
  log(`step ${step}: ${line}`);
  return line;
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` (async, returns a truthy value when done) every 100 ms. */
export async function waitFor(probe, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** A fresh, isolated context (its own cookie jar) for the gateway's self-signed certificate. */
export async function newContext(browser, viewport = { width: 1100, height: 720 }) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  ctx.setDefaultTimeout(15_000);
  return ctx;
}

/** Console messages and page errors go to the log, prefixed by `name`. */
export function watchPage(page, name) {
  page.on("console", (m) => log(`[${name} console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log(`[${name} pageerror] ${e.message}`));
  page.__e2eName = name;
  return page;
}

/** `#status` as {state, text}. */
export async function status(page) {
  return page.evaluate(() => {
    const s = document.getElementById("status");
    return s ? { state: s.dataset.state, text: s.textContent } : null;
  });
}

/** Waits for `#status` to be in one of `states` and returns it. */
export async function waitStatus(page, states, ms = 20_000) {
  const want = Array.isArray(states) ? states : [states];
  return waitFor(
    async () => {
      const s = await status(page);
      return s && want.includes(s.state) ? s : false;
    },
    `#status in ${want.join("|")}`,
    ms,
  ).catch(async (e) => {
    throw new Error(`${e.message}; #status is ${JSON.stringify(await status(page).catch(() => null))}`);
  });
}

/** The terminal buffer (window.portcullis.term.buffer.active): lines, cursor line, size. */
export async function terminal(page) {
  return page.evaluate(() => {
    const t = window.portcullis && window.portcullis.term;
    if (!t) return null;
    const b = t.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? "");
    return { lines, cursor: b.baseY + b.cursorY, rows: t.rows, cols: t.cols };
  });
}

/** Signs in through the form; waits for the targets list. */
export async function signIn(page, base, user, password) {
  await page.goto(`${base}/`);
  await page.locator("#login-user").fill(user);
  await page.locator("#login-password").fill(password);
  await page.locator("#login-submit").click();
  await page.locator("#targets").waitFor();
  await waitFor(() => page.locator("#targets button[data-target]").count(), "the targets list to fill");
}

/** The target names the list shows. */
export async function listedTargets(page) {
  return page.locator("#targets button[data-target]").evaluateAll((bs) => bs.map((b) => b.dataset.target));
}

/** Waits for the shell's prompt: connected, and the cursor line holds something. */
export async function waitForPrompt(page) {
  await waitStatus(page, "connected");
  await waitFor(
    async () => {
      const t = await terminal(page);
      return t && t.lines[t.cursor] && t.lines[t.cursor].trim().length > 0;
    },
    "a shell prompt in the terminal",
  );
  await page.locator("#terminal").click();
}

/** Types `command` + Enter with the keyboard (into xterm's focused textarea). */
export async function typeLine(page, command) {
  await page.keyboard.type(command, { delay: 5 });
  await page.keyboard.press("Enter");
}

/** Types `echo <marker>` and waits for a terminal line that is exactly the marker (the output,
 * not the echoed command line). */
export async function echoMarker(page, marker) {
  await typeLine(page, `echo ${marker}`);
  await waitFor(
    async () => (await terminal(page))?.lines.some((l) => l.trim() === marker),
    `the marker ${marker} in the terminal`,
  ).catch(async (e) => {
    const t = await terminal(page).catch(() => null);
    throw new Error(`${e.message}\nscreen:\n${t ? t.lines.filter((l) => l).slice(-15).join("\n") : "(no terminal)"}`);
  });
}

/** Runs `stty size` and returns the remote PTY's {rows, cols} (the first "R C" line below the command). */
export async function sttySize(page) {
  const base = (await terminal(page)).cursor;
  await typeLine(page, "stty size");
  return waitFor(
    async () => {
      const t = await terminal(page);
      for (let i = base + 1; i < t.lines.length; i++) {
        const m = /^(\d+) (\d+)$/.exec(t.lines[i].trim());
        if (m) return { rows: Number(m[1]), cols: Number(m[2]) };
      }
      return false;
    },
    "the output of stty size",
  );
}

/** Runs `body(ctx)` with a browser and a watchdog; always closes the browser; prints the result
 * line and exits 0 (ok) or 1 (failed: the error and a screenshot of every open page). */
export async function main(body) {
  const c = config();
  const limit = c.timeout_ms || 80_000;
  let browser = null;
  const result = { checks: [] };
  const check = (name) => {
    log(`ok: ${name}`);
    result.checks.push(name);
  };
  const watchdog = setTimeout(async () => {
    log(`watchdog: no result after ${limit} ms`);
    await failureScreenshots(browser, c.artifacts);
    emit({ result: { ...result, ok: false, error: `timed out after ${limit} ms` } });
    process.exit(1);
  }, limit);
  let code = 0;
  try {
    browser = await launch();
    log(`chromium ${browser.version()}`);
    const extra = await body({ config: c, browser, check, result });
    emit({ result: { ...result, ...extra, ok: true } });
  } catch (e) {
    log(`FAILED: ${e.stack || e}`);
    await failureScreenshots(browser, c.artifacts);
    emit({ result: { ...result, ok: false, error: String(e.message || e) } });
    code = 1;
  } finally {
    clearTimeout(watchdog);
    if (browser) await withTimeout(browser.close(), 10_000, "the browser to close").catch((e) => log(e.message));
  }
  process.exit(code);
}

async function failureScreenshots(browser, dir) {
  if (!browser) return;
  let n = 0;
  for (const ctx of browser.contexts()) {
    for (const page of ctx.pages()) {
      const file = path.join(dir, `failure-${++n}-${page.__e2eName || "page"}.png`);
      try {
        await withTimeout(page.screenshot({ path: file }), 5_000, "a screenshot");
        log(`failure screenshot: ${file} (${page.url()})`);
      } catch (e) {
        log(`no failure screenshot of ${page.url()}: ${e.message}`);
      }
    }
  }
}

/** An authenticator app's arithmetic, for the tests that enrol one. */
export function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (SHA1, 6 digits, 30 s) at step `step`. */
export function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac("sha1", secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 15;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, "0");
}
