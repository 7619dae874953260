// A stand-in for the gateway's web side, for developing and checking the app without Rust, sshd
// or TLS: serves dist/ like the gateway (/ and /assets/<file>) and implements API.md with a fake
// shell on the terminal WebSocket. Plain node, no dependencies. NOT a security reference.
//
//   node dev/mock-gateway.mjs [port]        (default 8089, listens on 127.0.0.1 only)
//
// Users: alice / secret (all targets, may replay); bob / secret (vm1 only). Token sign-in: "demo-token".
// Targets: vm1 (ssh, gateway credentials), vm2 (ssh, user credentials: any username, password
// "pw" or any private key), locked (ssh, clipboard:false), win1 (rdp: a ticket from
// POST /api/rdp/ticket, but no /v1/rdp, so the desktop page fails to connect), db1 (tcp).
// Fake shell commands: echo …, stty size, colors, utf8, exit [n], kill (drops the connection),
// fail (sends an error), seq N, clear. Ctrl-C prints ^C.
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const port = Number(process.argv[2] || 8089);
const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");

const USERS = { alice: { password: "secret", targets: ["vm1", "vm2", "locked", "win1", "db1"], replay: true }, bob: { password: "secret", targets: ["vm1"], replay: false } };
const TARGETS = {
  vm1: { protocol: "ssh", credentials: "gateway", clipboard: true },
  vm2: { protocol: "ssh", credentials: "user", clipboard: true },
  locked: { protocol: "ssh", credentials: "gateway", clipboard: false },
  win1: { protocol: "rdp", credentials: "gateway" },
  db1: { protocol: "tcp", credentials: "gateway" },
};
const sessions = new Map(); // cookie value -> user
const failures = new Map(); // user -> count
const recordings = new Map(); // id -> {meta, lines[]}

seedRecording();

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };

const server = createServer(async (req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const path = url.pathname;
  try {
    if (req.method === "GET" && (path === "/" || path.startsWith("/assets/"))) {
      const file = path === "/" ? "index.html" : path.slice("/assets/".length);
      if (!/^[\w.-]+$/.test(file)) return send(res, 404, "not found");
      const body = await readFile(join(dist, file)).catch(() => null);
      if (!body) return send(res, 404, "not found");
      res.writeHead(200, { "Content-Type": TYPES[file.slice(file.lastIndexOf("."))] || "application/octet-stream", "Cache-Control": "no-cache" });
      return res.end(body);
    }
    if (path.startsWith("/api/")) return await api(req, res, path);
    send(res, 404, "not found");
  } catch (e) {
    console.error(e);
    send(res, 500, "internal error");
  }
});

function send(res, status, body, headers = {}) {
  const json = typeof body !== "string";
  res.writeHead(status, { "Content-Type": json ? "application/json" : "text/plain", ...headers });
  res.end(json ? JSON.stringify(body) : body);
}

function userOf(req) {
  const m = /(?:^|;\s*)portcullis_session=([^;]+)/.exec(req.headers.cookie || "");
  return m ? sessions.get(m[1]) : undefined;
}

function sameOrigin(req) {
  return req.headers.origin === `http://${req.headers.host}`;
}

async function bodyOf(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8") || "null");
  } catch {
    return null;
  }
}

function startSession(res, user) {
  const id = randomBytes(18).toString("base64url");
  sessions.set(id, user);
  send(res, 200, { user }, { "Set-Cookie": `portcullis_session=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600` });
}

async function api(req, res, path) {
  if (req.method === "POST" && !sameOrigin(req)) return send(res, 403, { error: "cross-origin request refused" });
  if (req.method === "POST" && path === "/api/login") {
    const b = await bodyOf(req);
    const name = String(b?.user ?? "");
    if ((failures.get(name) || 0) >= 5) return send(res, 429, { error: "too many failed sign-ins; try again in 60 s", retry_after: 60 });
    await new Promise((r) => setTimeout(r, 200));
    if (!USERS[name] || USERS[name].password !== b?.password) {
      failures.set(name, (failures.get(name) || 0) + 1);
      return send(res, 401, { error: "invalid user or password" });
    }
    failures.delete(name);
    return startSession(res, name);
  }
  if (req.method === "POST" && path === "/api/login/token") {
    const b = await bodyOf(req);
    if (b?.token !== "demo-token") return send(res, 401, { error: "invalid token" });
    return startSession(res, "alice");
  }
  if (req.method === "POST" && path === "/api/logout") {
    const m = /(?:^|;\s*)portcullis_session=([^;]+)/.exec(req.headers.cookie || "");
    if (m) sessions.delete(m[1]);
    res.writeHead(204, { "Set-Cookie": "portcullis_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0" });
    return res.end();
  }
  const user = userOf(req);
  if (!user) return send(res, 401, { error: "not signed in" });
  if (req.method === "GET" && path === "/api/session") {
    const u = USERS[user];
    return send(res, 200, { user, targets: u.targets.map((name) => ({ name, protocol: TARGETS[name].protocol, credentials: TARGETS[name].credentials })), can_replay: u.replay });
  }
  if (req.method === "POST" && path === "/api/rdp/ticket") {
    const name = (await bodyOf(req))?.target;
    if (!USERS[user].targets.includes(name)) return send(res, 403, { error: "target is not allowed for this user" });
    if (TARGETS[name].protocol !== "rdp") return send(res, 400, { error: "not an RDP target" });
    // The mock has no RDCleanPath endpoint: the desktop page gets this far, then fails to connect.
    return send(res, 200, { ticket: `pct_mock${randomBytes(8).toString("hex")}`, destination: name, path: "/v1/rdp" });
  }
  if (req.method === "GET" && path === "/api/recordings") {
    if (!USERS[user].replay) return send(res, 403, { error: "not allowed to replay" });
    return send(res, 200, [...recordings.values()].map((r) => r.meta));
  }
  const rec = /^\/api\/recordings\/([\w-]+)$/.exec(path);
  if (req.method === "GET" && rec) {
    if (!USERS[user].replay) return send(res, 403, { error: "not allowed to replay" });
    const r = recordings.get(rec[1]);
    if (!r) return send(res, 404, { error: "no such recording" });
    res.writeHead(200, { "Content-Type": "application/x-asciicast" });
    return res.end(r.lines.join("\n") + "\n");
  }
  send(res, 404, { error: "not found" });
}

// ---- WebSocket (RFC 6455, just enough) ----------------------------------------------------------

server.on("upgrade", (req, socket) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const m = /^\/v1\/ssh\/([\w.-]+)$/.exec(url.pathname);
  const user = userOf(req);
  const refuse = (status, text) => {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  };
  if (!m) return refuse(404, "Not Found");
  if (!sameOrigin(req)) return refuse(403, "Forbidden");
  if (!user) return refuse(401, "Unauthorized");
  const name = m[1];
  const target = TARGETS[name];
  if (!target || !USERS[user].targets.includes(name) || target.protocol !== "ssh") return refuse(403, "Forbidden");
  const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  socket.setNoDelay(true);
  new FakeShell(socket, user, name, target, Number(url.searchParams.get("cols")) || 80, Number(url.searchParams.get("rows")) || 24);
});

function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLen(len)]);
  return Buffer.concat([head, payload]);
}

function bigLen(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

class FakeShell {
  constructor(socket, user, name, target, cols, rows) {
    Object.assign(this, { socket, user, name, target, cols, rows });
    this.buf = Buffer.alloc(0);
    this.line = "";
    this.closed = false;
    this.started = false;
    this.t0 = Date.now();
    this.id = randomBytes(8).toString("hex");
    this.cast = [JSON.stringify({ version: 2, width: cols, height: rows, timestamp: Math.floor(this.t0 / 1000) })];
    recordings.set(this.id, { meta: { session: this.id, user, target: name, start: new Date(this.t0).toISOString(), bytes: 0 }, lines: this.cast });
    socket.on("data", (d) => this.onData(d));
    socket.on("close", () => (this.closed = true));
    socket.on("error", () => {});
    if (target.credentials !== "user") this.start();
  }

  start() {
    this.started = true;
    this.text({ type: "ready", clipboard: this.target.clipboard });
    this.out(`Welcome to the mock shell on ${this.name}, ${this.user}. Size ${this.cols}x${this.rows}.\r\n`);
    this.prompt();
  }

  text(obj) {
    if (!this.closed) this.socket.write(frame(1, Buffer.from(JSON.stringify(obj))));
  }

  out(s) {
    if (this.closed) return;
    const b = Buffer.from(s, "utf8");
    this.socket.write(frame(2, b));
    this.cast.push(JSON.stringify([(Date.now() - this.t0) / 1000, "o", s]));
    recordings.get(this.id).meta.bytes += b.length;
  }

  prompt() {
    this.out(`\x1b[1;32m${this.user}@${this.name}\x1b[0m:\x1b[1;34m~\x1b[0m$ `);
  }

  close(code, reason) {
    if (this.closed) return;
    const r = Buffer.from(reason);
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this.socket.write(frame(8, p));
    this.closed = true;
    this.socket.end();
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 2) {
      const op = this.buf[0] & 15;
      let len = this.buf[1] & 127;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + 4 + len) return;
      const mask = this.buf.subarray(off, off + 4);
      const payload = Buffer.from(this.buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this.buf = this.buf.subarray(off + 4 + len);
      if (op === 8) return this.close(1000, "");
      if (op === 9) this.socket.write(frame(10, payload));
      else if (op === 1) this.control(payload.toString("utf8"));
      else if (op === 2 && this.started) this.keys(payload.toString("utf8"));
    }
  }

  control(s) {
    let m;
    try {
      m = JSON.parse(s);
    } catch {
      return this.close(1003, "bad control message");
    }
    console.log(`[${this.name}] control ${m.type === "auth" ? JSON.stringify({ ...m, password: m.password && "***", private_key: m.private_key && "***" }) : s}`);
    if (m.type === "auth" && !this.started) {
      if (m.username && (m.password === "pw" || (m.private_key || "").includes("PRIVATE KEY"))) return this.start();
      this.text({ type: "error", message: `authentication failed for ${m.username} on ${this.name}` });
      return this.close(1008, "authentication failed");
    }
    if (!this.started) {
      this.text({ type: "error", message: "the first message must be auth" });
      return this.close(1008, "auth expected");
    }
    if (m.type === "resize") {
      this.cols = m.cols;
      this.rows = m.rows;
      this.cast.push(JSON.stringify([(Date.now() - this.t0) / 1000, "r", `${m.cols}x${m.rows}`]));
    } else if (m.type === "close") this.close(1000, "closed by client");
  }

  keys(s) {
    for (const ch of s) {
      if (ch === "\r") {
        this.out("\r\n");
        const cmd = this.line.trim();
        this.line = "";
        if (this.run(cmd) !== false) this.prompt();
      } else if (ch === "\x7f") {
        if (this.line) {
          this.line = [...this.line].slice(0, -1).join("");
          this.out("\b \b");
        }
      } else if (ch === "\x03") {
        this.line = "";
        this.out("^C\r\n");
        this.prompt();
      } else if (ch === "\x04" && !this.line) {
        this.exit(0);
        return;
      } else if (ch >= " ") {
        this.line += ch;
        this.out(ch);
      }
    }
  }

  exit(status) {
    this.out("logout\r\n");
    this.text({ type: "exit", status });
    this.close(1000, "session ended");
  }

  run(cmd) {
    const [word, ...rest] = cmd.split(/\s+/);
    switch (word) {
      case "":
        return;
      case "echo":
        return this.out(rest.join(" ") + "\r\n");
      case "stty":
        return this.out(rest[0] === "size" ? `${this.rows} ${this.cols}\r\n` : "stty: only `stty size` here\r\n");
      case "colors":
        return this.out([31, 32, 33, 34, 35, 36].map((c) => `\x1b[${c}mcolour ${c}\x1b[0m`).join(" ") + "\r\n");
      case "utf8":
        return this.out("héllo wörld · 日本語 · ✓ · 🙂\r\n");
      case "seq":
        return this.out(Array.from({ length: Math.min(10000, Number(rest[0]) || 10) }, (_, i) => i + 1).join("\r\n") + "\r\n");
      case "clear":
        return this.out("\x1b[H\x1b[2J");
      case "exit":
        this.exit(Number(rest[0]) || 0);
        return false;
      case "kill":
        this.closed = true;
        this.socket.destroy();
        return false;
      case "fail":
        this.text({ type: "error", message: `host key for ${this.name} does not match the pinned key` });
        this.close(1011, "host key mismatch");
        return false;
      default:
        return this.out(`${word}: command not found\r\n`);
    }
  }
}

function seedRecording() {
  const lines = [JSON.stringify({ version: 2, width: 80, height: 24, timestamp: 1763800000 })];
  let t = 0.2;
  const o = (s, dt = 0.08) => lines.push(JSON.stringify([+(t += dt).toFixed(3), "o", s]));
  o("\x1b[1;32malice@vm1\x1b[0m:\x1b[1;34m~\x1b[0m$ ");
  for (const c of "echo recorded-marker") o(c);
  o("\r\nrecorded-marker\r\n", 0.3);
  o("\x1b[1;32malice@vm1\x1b[0m:\x1b[1;34m~\x1b[0m$ ");
  for (const c of "exit") o(c);
  o("\r\nlogout\r\n", 0.3);
  recordings.set("demo0001", { meta: { session: "demo0001", user: "alice", target: "vm1", start: "2025-11-22T10:00:00.000Z", bytes: 300 }, lines });
}

server.listen(port, "127.0.0.1", () => console.log(`mock gateway on http://127.0.0.1:${port}/`));
