// Unit tests of src/rdp.js: remote desktop sizes and the texts shown for IronRDP errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorKind, describeError, desktopSize } from "../src/rdp.js";

test("desktop sizes are whole, even-width and within MS-RDPEDISP limits", () => {
  assert.deepEqual(desktopSize(1100, 634), { width: 1100, height: 634 });
  assert.deepEqual(desktopSize(1101.7, 633.9), { width: 1100, height: 633 });
  assert.deepEqual(desktopSize(50, 10), { width: 200, height: 200 });
  assert.deepEqual(desktopSize(20000, 9000), { width: 8192, height: 8192 });
  assert.deepEqual(desktopSize(NaN, undefined), { width: 200, height: 200 });
});

// An IronError as the wasm module gives it: methods, not fields.
const ironError = (kind, backtrace, details) => ({
  kind: () => kind,
  backtrace: () => backtrace,
  rdcleanpathDetails: () => details,
});

test("RDCleanPath errors name what the gateway refused", () => {
  const http = (status) => describeError(ironError(ErrorKind.RDCleanPath, "received an RDCleanPath error", { httpStatusCode: status }));
  assert.match(http(401).message, /ticket was refused/);
  assert.equal(http(401).http, 401);
  assert.match(http(403).message, /may not open/);
  assert.match(http(502).message, /did not answer/);
  assert.match(http(418).message, /HTTP 418/);
  const pinned = describeError(ironError(ErrorKind.RDCleanPath, "x", { tlsAlertCode: 42 }));
  assert.match(pinned.message, /certificate does not match/);
  assert.equal(pinned.tls, 42);
  assert.match(describeError(ironError(ErrorKind.RDCleanPath, "x", { tlsAlertCode: 40 })).message, /alert 40/);
});

test("other IronRDP errors", () => {
  assert.equal(describeError(ironError(ErrorKind.WrongPassword, "bad")).message, "wrong username or password");
  assert.equal(describeError(ironError(ErrorKind.LogonFailure, "bad")).message, "wrong username or password");
  assert.match(describeError(ironError(ErrorKind.ProxyConnect, "failed to connect")).message, /cannot reach the gateway/);
  const general = describeError(ironError(ErrorKind.General, "first line\nsecond line"));
  assert.equal(general.message, "first line");
  assert.equal(general.detail, "first line\nsecond line");
});

test("plain errors and odd values", () => {
  assert.equal(describeError(new Error("boom")).message, "boom");
  assert.equal(describeError("text").message, "text");
  assert.equal(describeError(undefined).message, "unknown error");
  const throwing = { kind() { throw new Error("freed"); }, message: "still readable" };
  assert.equal(describeError(throwing).message, "still readable");
});
