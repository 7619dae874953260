// The IronRDP web client: `@devolutions/iron-remote-desktop` (the <iron-remote-desktop> web
// component: canvas, keyboard, mouse, clipboard, scaling) driven by the RDP backend of
// `@devolutions/iron-remote-desktop-rdp` (the RDP stack compiled to WebAssembly).
//
// The backend ships its wasm inside its JavaScript as a `data:application/wasm;base64,…` URL and
// its `init()` fetches that URL. The gateway's Content-Security-Policy (`connect-src 'self'`)
// refuses a fetch of a data: URL, so while `init()` starts, `fetch` answers that one URL from
// the bundle itself; nothing leaves the page. Compiling the wasm needs `'wasm-unsafe-eval'` in the
// policy's `script-src`.
import "@devolutions/iron-remote-desktop";
import { Backend, displayControl, init } from "@devolutions/iron-remote-desktop-rdp";

export { Backend, displayControl };

const WASM_URL = "data:application/wasm;base64,";
let ready = null;

/** Loads and starts the wasm module once per page; later calls return the same promise. */
export function loadBackend(logLevel = "WARN") {
  if (!ready) {
    ready = startBackend(logLevel).catch((e) => {
      ready = null;
      throw e;
    });
  }
  return ready;
}

async function startBackend(logLevel) {
  const realFetch = window.fetch;
  window.fetch = function (input, options) {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : null;
    if (url && url.startsWith(WASM_URL)) {
      const bytes = base64Bytes(url.slice(WASM_URL.length));
      return Promise.resolve(new Response(bytes, { status: 200, headers: { "Content-Type": "application/wasm" } }));
    }
    return realFetch.call(this, input, options);
  };
  let started;
  try {
    // init() calls fetch synchronously, before its first await.
    started = init(logLevel);
  } finally {
    window.fetch = realFetch;
  }
  try {
    await started;
  } catch (e) {
    const text = String(e?.message ?? e);
    if (/Content Security Policy|CompileError|wasm-unsafe-eval/i.test(text)) {
      throw new Error(`this browser refused to start the remote desktop client (${text})`);
    }
    throw e;
  }
}

function base64Bytes(b64) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(b64);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
