import { test } from "node:test";
import assert from "node:assert/strict";
import { Player, formatTime, parseAsciicast } from "../src/asciicast.js";

const cast = [
  '{"version":2,"width":100,"height":30,"timestamp":1700000000}',
  '[0.5,"o","hello "]',
  '[0.5,"i","x"]',
  '[1.0,"r","120x40"]',
  '[2.0,"o","world"]',
  '[2.5,"m","marker"]',
  "",
].join("\n");

test("parses header and keeps o and r events", () => {
  const c = parseAsciicast(cast);
  assert.equal(c.header.width, 100);
  assert.equal(c.header.height, 30);
  assert.deepEqual(c.events.map((e) => e.type), ["o", "r", "o"]);
  assert.equal(c.events[1].cols, 120);
  assert.equal(c.events[1].rows, 40);
  assert.equal(c.duration, 2);
});

test("rejects other versions and non-JSON headers", () => {
  assert.throws(() => parseAsciicast('{"version":1}\n'), /version/);
  assert.throws(() => parseAsciicast("hello\n"), /not an asciicast/);
});

test("ignores a truncated last line", () => {
  const c = parseAsciicast('{"version":2,"width":80,"height":24}\n[0.1,"o","a"]\n[0.2,"o","b');
  assert.equal(c.events.length, 1);
});

test("honours idle_time_limit", () => {
  const c = parseAsciicast('{"version":2,"width":80,"height":24,"idle_time_limit":1}\n[0.5,"o","a"]\n[10.5,"o","b"]\n');
  assert.equal(c.events[1].t, 1.5);
});

function fakeClock() {
  let now = 0;
  let timers = [];
  return {
    now: () => now,
    setTimer: (f, ms) => {
      const t = { f, at: now + ms };
      timers.push(t);
      return t;
    },
    clearTimer: (t) => (timers = timers.filter((x) => x !== t)),
    advance(ms) {
      const end = now + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const t = timers[0];
        if (!t || t.at > end) break;
        timers.shift();
        now = t.at;
        t.f();
      }
      now = end;
    },
  };
}

function sink() {
  const s = { out: "", sizes: [], resets: 0 };
  s.write = (d) => (s.out += d);
  s.resize = (c, r) => s.sizes.push(`${c}x${r}`);
  s.reset = () => {
    s.resets++;
    s.out = "";
  };
  return s;
}

test("plays with the original timing and speed", () => {
  const clock = fakeClock();
  const out = sink();
  const p = new Player(parseAsciicast(cast), out, clock);
  p.play();
  assert.equal(out.out, "");
  clock.advance(600);
  assert.equal(out.out, "hello ");
  clock.advance(500);
  assert.deepEqual(out.sizes, ["120x40"]);
  p.setSpeed(4); // 0.9 s of recording left: 225 ms
  clock.advance(200);
  assert.equal(out.out, "hello ");
  clock.advance(30);
  assert.equal(out.out, "hello world");
  assert.equal(p.finished, true);
  assert.equal(p.playing, false);
});

test("pause stops the clock; play after the end restarts", () => {
  const clock = fakeClock();
  const out = sink();
  const p = new Player(parseAsciicast(cast), out, clock);
  p.play();
  clock.advance(600);
  p.pause();
  clock.advance(10000);
  assert.equal(out.out, "hello ");
  p.play();
  clock.advance(1500);
  assert.equal(out.out, "hello world");
  p.play();
  assert.equal(out.resets, 1);
  assert.deepEqual(out.sizes.at(-1), "100x30");
  clock.advance(600);
  assert.equal(out.out, "hello ");
});

test("formatTime", () => {
  assert.equal(formatTime(0), "0:00");
  assert.equal(formatTime(65.9), "1:05");
  assert.equal(formatTime(3725), "1:02:05");
});
