import { test } from "node:test";
import assert from "node:assert/strict";
import { authMessage, closeMessage, describeClose, describeExit, parseControl, resizeMessage } from "../src/protocol.js";
import { sshUrl } from "../src/api.js";

test("browser -> gateway messages match API.md", () => {
  assert.deepEqual(JSON.parse(resizeMessage(120, 40)), { type: "resize", cols: 120, rows: 40 });
  assert.deepEqual(JSON.parse(closeMessage()), { type: "close" });
  assert.deepEqual(JSON.parse(authMessage({ username: "root", password: "pw" })), { type: "auth", username: "root", password: "pw" });
  const key = "-----BEGIN OPENSSH PRIVATE KEY-----\r\nabc\r\n-----END OPENSSH PRIVATE KEY-----\r\n\r\n";
  assert.deepEqual(JSON.parse(authMessage({ username: "root", password: "", privateKey: key })), {
    type: "auth",
    username: "root",
    private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
  });
});

test("gateway -> browser messages", () => {
  const ready = (clipboard, file_transfer = false, max_file_size = 0) => ({ type: "ready", clipboard, file_transfer, max_file_size });
  assert.deepEqual(parseControl('{"type":"ready","clipboard":true}'), ready(true));
  assert.deepEqual(parseControl('{"type":"ready","clipboard":false}'), ready(false));
  assert.deepEqual(parseControl('{"type":"ready"}'), ready(true));
  assert.deepEqual(parseControl('{"type":"ready","clipboard":true,"file_transfer":true,"max_file_size":1024}'), ready(true, true, 1024));
  assert.deepEqual(parseControl('{"type":"fileprogress","bytes":8192}'), { type: "fileprogress", bytes: 8192 });
  assert.deepEqual(parseControl('{"type":"filedone","direction":"upload","path":"a.txt","size":3,"sha256":"ab"}'), {
    type: "filedone",
    direction: "upload",
    path: "a.txt",
    size: 3,
    sha256: "ab",
  });
  assert.deepEqual(parseControl('{"type":"fileerror"}'), { type: "fileerror", message: "the file transfer failed" });
  assert.deepEqual(parseControl('{"type":"exit","status":0}'), { type: "exit", status: 0 });
  assert.deepEqual(parseControl('{"type":"exit","signal":"KILL"}'), { type: "exit", signal: "KILL" });
  assert.deepEqual(parseControl('{"type":"error","message":"host key for vm1 does not match the pinned key"}'), {
    type: "error",
    message: "host key for vm1 does not match the pinned key",
  });
  assert.equal(parseControl("nope").type, "unknown");
  assert.equal(parseControl('{"type":"future"}').type, "unknown");
  assert.equal(parseControl("null").type, "unknown");
});

test("status texts", () => {
  assert.equal(describeExit({ type: "exit", status: 0 }), "Session ended: exit status 0");
  assert.equal(describeExit({ type: "exit", signal: "KILL" }), "Session ended: killed by signal KILL");
  assert.match(describeClose(1001, "idle timeout"), /idle timeout/);
  assert.match(describeClose(1008, "max lifetime"), /policy: max lifetime/);
  assert.equal(describeClose(1006, ""), "Connection lost");
});

test("WebSocket URL", () => {
  assert.equal(sshUrl("vm1", 80, 24, { protocol: "https:", host: "bastion:8443" }), "wss://bastion:8443/v1/ssh/vm1?cols=80&rows=24");
  assert.equal(sshUrl("a b", 1, 2, { protocol: "http:", host: "127.0.0.1:8089" }), "ws://127.0.0.1:8089/v1/ssh/a%20b?cols=1&rows=2");
});
