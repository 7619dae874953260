// Remote desktop helpers with no DOM and no wasm: desktop sizes and the texts shown for IronRDP
// errors. Unit-tested with node's test runner (test/rdp.test.mjs).

// MS-RDPEDISP: a monitor is 200..8192 pixels each way and its width is even.
const MIN = 200;
const MAX = 8192;

/** The remote desktop size for a container of `width` x `height` CSS pixels. */
export function desktopSize(width, height) {
  const clamp = (v) => Math.min(MAX, Math.max(MIN, Math.floor(Number.isFinite(v) ? v : 0)));
  const w = clamp(width);
  return { width: w - (w % 2), height: clamp(height) };
}

// IronErrorKind of @devolutions/iron-remote-desktop.
export const ErrorKind = {
  General: 0,
  WrongPassword: 1,
  LogonFailure: 2,
  AccessDenied: 3,
  RDCleanPath: 4,
  ProxyConnect: 5,
  NegotiationFailure: 6,
};

const HTTP = {
  400: "the gateway could not read the connection request",
  401: "the one-time ticket was refused (expired or already used): try again",
  403: "you may not open this desktop",
  404: "the gateway does not know this desktop",
  408: "the connection request came too late",
  502: "the remote desktop server did not answer",
};

/**
 * `{kind, message, http?, tls?}` from what IronRDP threw: an IronError (`kind()`, `backtrace()`,
 * `rdcleanpathDetails()`), an Error, or anything else.
 */
export function describeError(e) {
  const call = (f) => {
    try {
      return typeof f === "function" ? f.call(e) : undefined;
    } catch {
      return undefined;
    }
  };
  const kind = call(e?.kind);
  const detail = String(call(e?.backtrace) ?? e?.message ?? e ?? "unknown error");
  const firstLine = detail.split("\n")[0].trim();
  const details = call(e?.rdcleanpathDetails);
  const http = details?.httpStatusCode;
  const tls = details?.tlsAlertCode;
  let message;
  switch (kind) {
    case ErrorKind.WrongPassword:
    case ErrorKind.LogonFailure:
      message = "wrong username or password";
      break;
    case ErrorKind.AccessDenied:
      message = "access denied by the remote desktop server";
      break;
    case ErrorKind.RDCleanPath:
      if (http) message = HTTP[http] ?? `the gateway refused the connection (HTTP ${http})`;
      else if (tls === 42) message = "the server's certificate does not match the one pinned for this desktop";
      else if (tls) message = `TLS with the remote desktop server failed (alert ${tls})`;
      else message = `the gateway refused the connection: ${firstLine}`;
      break;
    case ErrorKind.ProxyConnect:
      message = "cannot reach the gateway's remote desktop endpoint";
      break;
    case ErrorKind.NegotiationFailure:
      message = "the remote desktop server refused the security negotiation";
      break;
    default:
      message = firstLine || "unknown error";
  }
  const out = { kind: kind ?? null, message, detail };
  if (http) out.http = http;
  if (tls) out.tls = tls;
  return out;
}
