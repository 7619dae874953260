// File transfer in the browser terminal (SFTP through the gateway): alice uploads a file to vm1
// and downloads one from it; a file over the limit is refused before it leaves the browser; vm2
// (file_transfer = false) offers no file transfer at all.
//
// E2E_CONFIG: {url, user, password, target, other_target, dir (on the SSH server), upload_size,
//              too_big, artifacts}
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { assert, main, newContext, signIn, waitFor, waitForPrompt, watchPage } from "./lib.mjs";

const pattern = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7) % 251));

await main(async ({ config: c, browser, check }) => {
  const ctx = await newContext(browser);
  const page = watchPage(await ctx.newPage(), "files");
  await signIn(page, c.url, c.user, c.password);
  await page.goto(`${c.url}/#/ssh/${c.target}`);
  await waitForPrompt(page);
  assert(await page.locator("#files").isVisible(), "the Files panel shows on a target that allows it");
  await page.locator("#files summary").click();

  // Upload: several chunks, with progress, to a path on the server.
  await page.locator("#file-path").fill(`${c.dir}/up.bin`);
  await page.locator("#file-input").setInputFiles({ name: "up.bin", mimeType: "application/octet-stream", buffer: pattern(c.upload_size) });
  await waitFor(async () => /Uploaded/.test(await page.locator("#file-status").textContent()), "the upload to finish");
  check(`upload: ${await page.locator("#file-status").textContent()}`);

  // Download: a file the test put on the server.
  await page.locator("#file-path").fill(`${c.dir}/down.bin`);
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#file-download").click()]);
  const saved = `${c.artifacts}/down.bin`;
  await download.saveAs(saved);
  const sha256 = createHash("sha256").update(await readFile(saved)).digest("hex");
  check(`download: ${await page.locator("#file-status").textContent()}`);

  // Over the limit: refused in the page (the gateway refuses it too: see web_terminal.rs).
  await page.locator("#file-path").fill(`${c.dir}/big.bin`);
  await page.locator("#file-input").setInputFiles({ name: "big.bin", mimeType: "application/octet-stream", buffer: pattern(c.too_big) });
  await waitFor(async () => /over the limit/.test(await page.locator("#file-status").textContent()), "the size refusal");
  check(`too big: ${await page.locator("#file-status").textContent()}`);

  // A target whose policy says no: no Files panel.
  await page.goto(`${c.url}/#/ssh/${c.other_target}`);
  await waitForPrompt(page);
  assert(await page.locator("#files").isHidden(), "no Files panel where file_transfer = false");
  check(`${c.other_target}: no file transfer offered`);
  return { download_sha256: sha256 };
});
