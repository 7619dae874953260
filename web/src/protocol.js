// The terminal WebSocket's control messages (text frames carrying JSON), see ../API.md.
// Pure functions: no DOM, unit-tested with node's test runner (test/protocol.test.mjs).

export const resizeMessage = (cols, rows) => JSON.stringify({ type: "resize", cols, rows });
export const closeMessage = () => JSON.stringify({ type: "close" });

/** `auth` message for targets whose credentials come from the user: a password or a private key. */
export function authMessage({ username, password, privateKey }) {
  const m = { type: "auth", username };
  if (privateKey && privateKey.trim()) m.private_key = privateKey.trim().replace(/\r\n/g, "\n") + "\n";
  else m.password = password ?? "";
  return JSON.stringify(m);
}

/**
 * Parses a text frame from the gateway. Returns one of
 * `{type:"ready", clipboard}`, `{type:"exit", status?, signal?}`, `{type:"error", message}`,
 * `{type:"watched", watchers}`,
 * or `{type:"unknown", raw}` for anything else (ignored by the app, never fatal).
 */
export function parseControl(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return { type: "unknown", raw: text };
  }
  if (!m || typeof m !== "object") return { type: "unknown", raw: text };
  switch (m.type) {
    case "ready":
      // Copy and paste stay allowed unless the gateway says `clipboard:false`; files move only
      // when it says `file_transfer:true`.
      return {
        type: "ready",
        clipboard: m.clipboard !== false,
        file_transfer: m.file_transfer === true,
        max_file_size: Number.isSafeInteger(m.max_file_size) ? m.max_file_size : 0,
      };
    case "fileprogress":
      return { type: "fileprogress", bytes: Number(m.bytes) || 0 };
    case "filedata":
      return { type: "filedata", data: typeof m.data === "string" ? m.data : "" };
    case "filedone":
      return { type: "filedone", direction: String(m.direction), path: String(m.path), size: Number(m.size) || 0, sha256: String(m.sha256 ?? "") };
    case "fileerror":
      return { type: "fileerror", message: typeof m.message === "string" ? m.message : "the file transfer failed" };
    case "exit": {
      const out = { type: "exit" };
      if (Number.isInteger(m.status)) out.status = m.status;
      if (typeof m.signal === "string" && m.signal) out.signal = m.signal;
      return out;
    }
    case "error":
      return { type: "error", message: typeof m.message === "string" && m.message ? m.message : "the gateway reported an error" };
    case "watched":
      // How many administrators watch the session now (0: nobody any more).
      return { type: "watched", watchers: Number.isInteger(m.watchers) && m.watchers > 0 ? m.watchers : 0 };
    default:
      return { type: "unknown", raw: text };
  }
}

/** Human text for an `exit` message. */
export function describeExit(m) {
  if (m.signal) return `Session ended: killed by signal ${m.signal}`;
  if (m.status !== undefined) return `Session ended: exit status ${m.status}`;
  return "Session ended";
}

/** Human text for a WebSocket close that came without an `exit` or `error` message before it. */
export function describeClose(code, reason) {
  const why = reason ? `: ${reason}` : "";
  switch (code) {
    case 1000:
      return `Session closed by the gateway${why}`;
    case 1001:
      return `Disconnected: idle timeout or gateway shutting down${why}`;
    case 1008:
      return `Closed by policy${why}`;
    case 1011:
      return `Connection failed${why}`;
    case 1006:
      return "Connection lost";
    default:
      return `Connection lost (code ${code})${why}`;
  }
}
