// #/ssh/<target> : xterm.js terminal over the gateway's WebSocket (GET /v1/ssh/<target>).
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import * as api from "../api.js";
import { h } from "../dom.js";
import { authMessage, closeMessage, describeClose, describeExit, parseControl, resizeMessage } from "../protocol.js";

export const TERMINAL_OPTIONS = {
  cursorBlink: true,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
  fontSize: 15,
  scrollback: 5000,
};

export const terminalPage = {
  id: "terminal",
  title: ({ target }) => `${target} · Portcullis`,
  mount(app, ctx, { target }, gen) {
    return mountTerminal(app, ctx, target, gen);
  },
};

function mountTerminal(app, ctx, name, gen) {
  const encoder = new TextEncoder();
  const status = h("span", { id: "status", role: "status", "aria-live": "polite", dataset: { state: "idle" } }, "Loading…");
  const reconnect = h("button", { id: "reconnect", type: "button", hidden: true, onclick: () => onReconnect() }, "Reconnect");
  const container = h("div", { id: "terminal", class: "terminal", "aria-label": `Terminal for ${name}` });
  // Shown while administrators watch the session (the gateway says so).
  const watched = h("span", { id: "watched", class: "badge warn", role: "status", hidden: true });
  // File transfer (SFTP through the gateway), shown when the target allows it.
  const filePath = h("input", { id: "file-path", type: "text", placeholder: "remote path (upload: default the file's name)", size: "32", spellcheck: "false" });
  const fileInput = h("input", { id: "file-input", type: "file", hidden: true });
  const uploadButton = h("button", { id: "file-upload", type: "button", onclick: () => fileInput.click() }, "Upload…");
  const downloadButton = h("button", { id: "file-download", type: "button", onclick: () => startDownload() }, "Download");
  const fileProgress = h("progress", { id: "file-progress", max: "1", value: "0", hidden: true });
  const fileStatus = h("span", { id: "file-status", role: "status" });
  const files = h("details", { id: "files", class: "files", hidden: true }, h("summary", {}, "Files"), filePath, uploadButton, fileInput, downloadButton, fileProgress, fileStatus);
  const toolbar = h(
    "div",
    { class: "term-toolbar" },
    h("a", { href: "#/targets", class: "back" }, "← Targets"),
    h("strong", { class: "term-target" }, name),
    status,
    watched,
    files,
    reconnect,
  );

  // Connect dialog, for targets whose credentials come from the user.
  const authUser = h("input", { id: "auth-user", name: "username", type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true });
  const authPassword = h("input", { id: "auth-password", name: "password", type: "password", autocomplete: "current-password" });
  const authKey = h("textarea", { id: "auth-key", name: "private_key", rows: 5, spellcheck: "false", autocomplete: "off", placeholder: "-----BEGIN OPENSSH PRIVATE KEY-----" });
  const authKeyFile = h("input", { id: "auth-key-file", type: "file", "aria-label": "Load a private key file" });
  const authError = h("p", { id: "auth-error", class: "error", role: "alert", hidden: true });
  const authSubmit = h("button", { id: "auth-submit", type: "submit", class: "primary" }, "Connect");
  const authCancel = h("button", { id: "auth-cancel", type: "button", onclick: () => dialog.close("cancel") }, "Cancel");
  const dialog = h(
    "dialog",
    { id: "auth-dialog", "aria-labelledby": "auth-title" },
    h(
      "form",
      { method: "dialog", onsubmit: (ev) => onAuthSubmit(ev) },
      h("h2", { id: "auth-title" }, `Connect to ${name}`),
      h("p", { class: "muted" }, "This server needs your own credentials. They are sent to the gateway for this connection only."),
      authError,
      h("label", { for: "auth-user" }, "Username"),
      authUser,
      h("label", { for: "auth-password" }, "Password"),
      authPassword,
      h("label", { for: "auth-key" }, "or private key (OpenSSH or PEM, unencrypted)"),
      authKey,
      authKeyFile,
      h("div", { class: "actions" }, authCancel, authSubmit),
    ),
  );
  authKeyFile.addEventListener("change", async () => {
    const f = authKeyFile.files && authKeyFile.files[0];
    if (f) authKey.value = await f.text();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "connect" && !ws) setStatus("idle", "Not connected");
    dialog.returnValue = "";
  });

  app.append(h("section", { class: "term-page" }, toolbar, container, dialog));

  const term = new Terminal(TERMINAL_OPTIONS);
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(container);
  window.portcullis.term = term;

  let disposed = false;
  let ws = null;
  let target = null; // {name, protocol, credentials} from the session
  let credentials = null; // {username, password | privateKey} for the next connect only
  let lastUser = "";
  let clipboardAllowed = false;
  let sessionExpired = false;
  let connectedOnce = false;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    const done = state === "ended" || state === "error" || state === "lost" || state === "idle";
    reconnect.hidden = !done || !target;
    reconnect.textContent = sessionExpired ? "Sign in again" : connectedOnce ? "Reconnect" : "Connect";
  }

  // ---- sizing -------------------------------------------------------------------------------
  let fitQueued = false;
  function queueFit() {
    if (fitQueued || disposed) return;
    fitQueued = true;
    requestAnimationFrame(() => {
      fitQueued = false;
      if (disposed) return;
      const dims = fit.proposeDimensions();
      if (dims && dims.cols > 1 && dims.rows > 1 && (dims.cols !== term.cols || dims.rows !== term.rows)) fit.fit();
    });
  }
  const observer = new ResizeObserver(queueFit);
  observer.observe(container);
  window.addEventListener("resize", queueFit);
  fit.fit();
  term.onResize(({ cols, rows }) => sendText(resizeMessage(cols, rows)));

  // ---- input --------------------------------------------------------------------------------
  term.onData((data) => sendBytes(encoder.encode(data)));
  term.onBinary((data) => {
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    sendBytes(bytes);
  });
  term.onTitleChange((title) => {
    document.title = title ? `${title} · ${name}` : `${name} · Portcullis`;
  });

  // ---- file transfer ------------------------------------------------------------------------
  const CHUNK = 8 * 1024;
  let maxFileSize = 0;
  let transfer = null; // {upload, path, size, chunks?: Uint8Array[], resolve}
  function fileState(text, cls = "muted") {
    fileStatus.className = cls;
    fileStatus.textContent = text;
  }
  function showProgress(done, size) {
    fileProgress.hidden = false;
    fileProgress.max = Math.max(1, size);
    fileProgress.value = done;
  }
  function toBase64(bytes) {
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }
  function fromBase64(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  fileInput.addEventListener("change", async () => {
    const f = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!f || transfer || !ws) return;
    if (f.size > maxFileSize) {
      fileState(`${f.name} is over the limit of ${maxFileSize} bytes`, "error");
      return;
    }
    const path = filePath.value.trim() || f.name;
    const bytes = new Uint8Array(await f.arrayBuffer());
    transfer = { upload: true, path, size: bytes.length };
    fileState(`Uploading ${path}…`);
    showProgress(0, bytes.length);
    const sock = ws;
    sock.send(JSON.stringify({ type: "upload", path, size: bytes.length }));
    for (let at = 0; at < bytes.length && transfer && ws === sock; at += CHUNK) {
      // The socket's own buffer is the backpressure: a megabyte in flight at most.
      while (sock.bufferedAmount > 1 << 20) await new Promise((r) => setTimeout(r, 20));
      sock.send(JSON.stringify({ type: "chunk", data: toBase64(bytes.subarray(at, at + CHUNK)) }));
    }
    if (transfer && ws === sock) sock.send(JSON.stringify({ type: "done" }));
  });
  function startDownload() {
    const path = filePath.value.trim();
    if (!path || transfer || !ws) {
      if (!path) fileState("Type the remote path to download", "error");
      return;
    }
    transfer = { upload: false, path, size: 0, chunks: [] };
    fileState(`Downloading ${path}…`);
    showProgress(0, 1);
    sendText(JSON.stringify({ type: "download", path }));
  }
  function onFileMessage(m) {
    if (m.type === "fileprogress" && transfer) {
      showProgress(m.bytes, transfer.size);
    } else if (m.type === "filedata" && transfer && !transfer.upload) {
      const chunk = fromBase64(m.data);
      transfer.chunks.push(chunk);
      transfer.size += chunk.length;
      fileState(`Downloading ${transfer.path}: ${transfer.size} bytes`);
    } else if (m.type === "filedone") {
      if (transfer && !transfer.upload) {
        const blob = new Blob(transfer.chunks, { type: "application/octet-stream" });
        const a = h("a", { href: URL.createObjectURL(blob), download: transfer.path.split("/").pop() || "download" });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      }
      showProgress(m.size, m.size);
      fileState(`${m.direction === "upload" ? "Uploaded" : "Downloaded"} ${m.path} (${m.size} bytes, SHA-256 ${String(m.sha256).slice(0, 12)}…)`);
      transfer = null;
    } else if (m.type === "fileerror") {
      fileState(m.message, "error");
      fileProgress.hidden = true;
      transfer = null;
    }
  }

  function sendBytes(bytes) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }
  function sendText(text) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(text);
  }

  // ---- clipboard policy ---------------------------------------------------------------------
  // Copy: xterm copies the selection on the browser's copy command (menu, Ctrl+Insert, Cmd+C),
  // and the app also copies on select. Paste: the browser's paste command (menu, Shift+Insert,
  // Ctrl+Shift+V, Cmd+V, middle click) reaches xterm as a paste event. With `clipboard:false`
  // all of these are stopped here, in the capture phase, before xterm's own handlers run.
  const blockIfDisabled = (ev) => {
    if (clipboardAllowed) return;
    if (ev.type === "beforeinput" && !/^insertFrom(Paste|Drop)/.test(ev.inputType || "")) return;
    ev.preventDefault();
    ev.stopImmediatePropagation();
    if (ev.type !== "dragover") flashPolicy();
  };
  const clipboardEvents = ["copy", "cut", "paste", "drop", "dragover", "beforeinput"];
  for (const type of clipboardEvents) container.addEventListener(type, blockIfDisabled, true);

  let copyTimer = null;
  term.onSelectionChange(() => {
    clearTimeout(copyTimer);
    if (!clipboardAllowed || !term.hasSelection()) return;
    copyTimer = setTimeout(() => {
      const text = term.getSelection();
      if (clipboardAllowed && text && navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).catch(() => {});
    }, 150);
  });

  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== "keydown") return true;
    const key = ev.key.toLowerCase();
    const pasteKey = (ev.shiftKey && key === "insert") || (ev.ctrlKey && ev.shiftKey && key === "v") || (ev.metaKey && key === "v");
    const copyKey = (ev.ctrlKey && ev.shiftKey && key === "c") || (ev.metaKey && key === "c") || (ev.ctrlKey && key === "insert");
    if (!clipboardAllowed && (pasteKey || copyKey)) {
      ev.preventDefault();
      flashPolicy();
      return false;
    }
    // Ctrl+Shift+C copies the selection (plain Ctrl+C stays the interrupt key).
    if (clipboardAllowed && ev.ctrlKey && ev.shiftKey && key === "c" && term.hasSelection()) {
      ev.preventDefault();
      navigator.clipboard?.writeText(term.getSelection()).catch(() => {});
      return false;
    }
    return true;
  });

  function setClipboard(allowed) {
    clipboardAllowed = allowed;
    term.options.rightClickSelectsWord = allowed;
    container.dataset.clipboard = allowed ? "on" : "off";
    if (!allowed) term.clearSelection();
  }
  setClipboard(false); // until the gateway's `ready` says otherwise

  let policyTimer = null;
  function flashPolicy() {
    const state = status.dataset.state;
    if (state !== "connected") return;
    status.textContent = `Connected to ${name} · copy and paste are disabled for this server`;
    clearTimeout(policyTimer);
    policyTimer = setTimeout(() => {
      if (status.dataset.state === "connected") status.textContent = `Connected to ${name}`;
    }, 4000);
  }

  // ---- connection ---------------------------------------------------------------------------
  function connect() {
    if (disposed) return;
    if (target.credentials === "user" && !credentials) {
      openDialog();
      return;
    }
    if (connectedOnce) term.reset();
    const dims = fit.proposeDimensions();
    if (dims && dims.cols > 1 && dims.rows > 1) fit.fit();
    setClipboard(false);
    setStatus("connecting", `Connecting to ${name}…`);
    const sock = new WebSocket(api.sshUrl(name, term.cols, term.rows));
    sock.binaryType = "arraybuffer";
    ws = sock;
    let opened = false;
    let ended = false; // an exit or error message arrived
    let urlSize = `${term.cols}x${term.rows}`;
    const auth = credentials;
    credentials = null; // not kept after use

    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      connectedOnce = true;
      if (auth) sock.send(authMessage(auth));
      if (`${term.cols}x${term.rows}` !== urlSize) sock.send(resizeMessage(term.cols, term.rows));
      setStatus("connecting", `Connected to the gateway, starting a shell on ${name}…`);
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      const m = parseControl(ev.data);
      if (m.type === "ready") {
        setClipboard(m.clipboard);
        files.hidden = !m.file_transfer;
        maxFileSize = m.max_file_size || 0;
        setStatus("connected", `Connected to ${name}`);
        urlSize = `${term.cols}x${term.rows}`;
        term.focus();
      } else if (m.type === "exit") {
        ended = true;
        setStatus("ended", describeExit(m));
      } else if (m.type === "error") {
        ended = true;
        setStatus("error", `Error: ${m.message}`);
      } else if (m.type.startsWith("file")) {
        onFileMessage(m);
      } else if (m.type === "watched") {
        watched.hidden = m.watchers === 0;
        watched.textContent = m.watchers === 1 ? "An administrator is watching this session" : `${m.watchers} administrators are watching this session`;
      }
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      setClipboard(false);
      if (disposed || ended) {
        if (!disposed) setStatus(status.dataset.state, status.textContent); // refresh the button
        return;
      }
      if (!opened || ev.code === 1006) diagnose(opened);
      else setStatus("lost", describeClose(ev.code, ev.reason));
    };
  }

  // The browser tells nothing about a refused upgrade (401/403/404/502 all look like 1006):
  // ask the session API whether the sign-in and the target are still valid.
  async function diagnose(wasOpen) {
    setStatus(wasOpen ? "lost" : "error", wasOpen ? "Connection lost" : `Could not connect to ${name}`);
    try {
      const s = await api.session();
      if (disposed) return;
      if (!s.targets.some((t) => t.name === name)) {
        target = null;
        setStatus("error", `${name} is no longer available to you.`);
        return;
      }
      setStatus(wasOpen ? "lost" : "error", wasOpen ? "Connection lost: the connection closed without an exit status" : `Could not connect to ${name}: the gateway refused the terminal connection or the server did not answer.`);
    } catch (e) {
      if (disposed) return;
      if (e.status === 401) {
        sessionExpired = true;
        setStatus("error", "Your sign-in has expired. Sign in again to reconnect.");
      } else {
        setStatus("lost", `${wasOpen ? "Connection lost" : `Could not connect to ${name}`}: the gateway cannot be reached.`);
      }
    }
  }

  function onReconnect() {
    if (sessionExpired) {
      ctx.returnTo = `#/ssh/${encodeURIComponent(name)}`;
      ctx.notice = "Your sign-in has expired. Please sign in again.";
      ctx.navigate("#/");
      return;
    }
    connect();
  }

  function openDialog() {
    authError.hidden = true;
    authUser.value = lastUser;
    authPassword.value = "";
    authKey.value = "";
    authKeyFile.value = "";
    setStatus("idle", `Waiting for your credentials for ${name}`);
    reconnect.hidden = true;
    if (!dialog.open) dialog.showModal();
    (lastUser ? authPassword : authUser).focus();
  }

  function onAuthSubmit(ev) {
    const username = authUser.value.trim();
    const password = authPassword.value;
    const privateKey = authKey.value;
    if (!username || (!password && !privateKey.trim())) {
      ev.preventDefault();
      authError.textContent = !username ? "Enter a username." : "Enter a password or paste a private key.";
      authError.hidden = false;
      (!username ? authUser : authPassword).focus();
      return;
    }
    lastUser = username;
    credentials = privateKey.trim() ? { username, privateKey } : { username, password };
    authPassword.value = "";
    authKey.value = "";
    ev.preventDefault();
    dialog.close("connect");
    connect();
    term.focus();
  }

  // ---- start --------------------------------------------------------------------------------
  ctx
    .requireSession()
    .then((s) => {
      if (!s || disposed || !ctx.current(gen)) return;
      const t = s.targets.find((x) => x.name === name);
      if (!t) {
        setStatus("error", `There is no target named ${name} that you may reach.`);
        return;
      }
      if (String(t.protocol).toLowerCase() === "rdp") {
        setStatus("error", `${name} is an RDP target: open it as a remote desktop from the targets list.`);
        return;
      }
      if (String(t.protocol).toLowerCase() !== "ssh") {
        setStatus("error", `${name} is a ${String(t.protocol).toUpperCase()} target: use the native client (portcullis tunnel).`);
        return;
      }
      target = t;
      connect();
    })
    .catch((e) => {
      if (!disposed) setStatus("error", `Cannot load your session: ${e.message}`);
    });

  return () => {
    disposed = true;
    clearTimeout(copyTimer);
    clearTimeout(policyTimer);
    observer.disconnect();
    window.removeEventListener("resize", queueFit);
    if (ws) {
      const sock = ws;
      ws = null;
      try {
        if (sock.readyState === WebSocket.OPEN) sock.send(closeMessage());
        sock.close(1000, "closed by user");
      } catch {
        /* already closing */
      }
    }
    if (dialog.open) dialog.close();
    term.dispose();
  };
}
