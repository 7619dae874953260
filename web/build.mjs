// Builds the single-page app into dist/: index.html, app.js, app.css.
// Usage: node build.mjs            build (minified, no source maps, deterministic)
//        node build.mjs --check    build into a temporary directory and fail if dist/ differs
//        node build.mjs --watch    rebuild on change (unminified, for development)
import * as esbuild from "esbuild";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const args = new Set(process.argv.slice(2));
const watch = args.has("--watch");
const check = args.has("--check");
const FILES = ["index.html", "app.js", "app.css"];

function options(outdir) {
  return {
    absWorkingDir: root,
    entryPoints: { app: "src/main.js" },
    outdir,
    bundle: true,
    format: "iife",
    platform: "browser",
    target: ["chrome110", "firefox115", "safari16"],
    minify: !watch,
    sourcemap: watch ? "inline" : false,
    legalComments: "none",
    charset: "utf8",
    logLevel: "warning",
    // CSS imported from JS (src/style.css, which imports xterm's CSS) lands in app.css.
    loader: { ".css": "css" },
  };
}

async function build(outdir) {
  await mkdir(outdir, { recursive: true });
  await esbuild.build(options(outdir));
  await copyFile(join(root, "src/index.html"), join(outdir, "index.html"));
}

if (watch) {
  const outdir = join(root, "dist");
  await mkdir(outdir, { recursive: true });
  await copyFile(join(root, "src/index.html"), join(outdir, "index.html"));
  const ctx = await esbuild.context(options(outdir));
  await ctx.watch();
  console.log("watching src/ (dist/ is unminified until the next `npm run build`)");
} else if (check) {
  const tmp = await mkdtemp(join(tmpdir(), "portcullis-web-"));
  try {
    await build(tmp);
    const stale = [];
    for (const f of FILES) {
      const want = await readFile(join(tmp, f));
      const have = await readFile(join(root, "dist", f)).catch(() => null);
      if (!have || !want.equals(have)) stale.push(f);
    }
    const extra = (await readdir(join(root, "dist")).catch(() => [])).filter((f) => !FILES.includes(f));
    if (stale.length || extra.length) {
      console.error(`dist/ is out of date (${[...stale, ...extra.map((f) => f + " (extra)")].join(", ")}): run \`npm run build\` in web/`);
      process.exit(1);
    }
    console.log("dist/ is up to date");
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
} else {
  const outdir = join(root, "dist");
  for (const f of await readdir(outdir).catch(() => [])) {
    if (!FILES.includes(f)) await rm(join(outdir, f), { recursive: true, force: true });
  }
  await build(outdir);
  console.log(`built ${FILES.map((f) => "dist/" + f).join(", ")}`);
}
