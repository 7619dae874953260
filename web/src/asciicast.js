// asciicast v2 parsing and timed playback. No DOM: the player drives any object with
// write(string), resize(cols, rows) and reset(); unit-tested in test/asciicast.test.mjs.

/**
 * Parses an asciicast v2 file. Returns `{header, events, duration}` where events are
 * `{t, type, data}` sorted by time. "o" (output) and "r" (resize, "COLSxROWS") events are kept;
 * "i" (input), "m" (marker) and unknown types are skipped. A truncated last line (a recording
 * still being written, or cut by a full disk) is ignored rather than failing the whole replay.
 */
export function parseAsciicast(text) {
  const lines = text.split("\n");
  let first = 0;
  while (first < lines.length && !lines[first].trim()) first++;
  let header;
  try {
    header = JSON.parse(lines[first] ?? "");
  } catch {
    throw new Error("not an asciicast file (the first line is not a JSON header)");
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw new Error("not an asciicast file (no header)");
  if (header.version !== 2) throw new Error(`unsupported asciicast version ${JSON.stringify(header.version)} (expected 2)`);
  const width = posInt(header.width, 80);
  const height = posInt(header.height, 24);
  const events = [];
  for (let i = first + 1; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      if (i >= lines.length - 2) break; // truncated tail
      throw new Error(`asciicast line ${i + 1} is not valid JSON`);
    }
    if (!Array.isArray(ev) || ev.length < 3 || typeof ev[0] !== "number" || !Number.isFinite(ev[0]) || typeof ev[2] !== "string") continue;
    const [t, type, data] = ev;
    if (type === "o") events.push({ t: Math.max(0, t), type, data });
    else if (type === "r") {
      const m = /^(\d+)x(\d+)$/.exec(data);
      if (m) events.push({ t: Math.max(0, t), type, data, cols: posInt(+m[1], width), rows: posInt(+m[2], height) });
    }
  }
  events.sort((a, b) => a.t - b.t); // stable: equal times keep file order
  const limit = typeof header.idle_time_limit === "number" && header.idle_time_limit > 0 ? header.idle_time_limit : Infinity;
  if (limit !== Infinity) {
    let shift = 0;
    let prev = 0;
    for (const ev of events) {
      const gap = ev.t - prev;
      prev = ev.t;
      if (gap > limit) shift += gap - limit;
      ev.t -= shift;
    }
  }
  const duration = events.length ? events[events.length - 1].t : 0;
  return { header: { ...header, width, height }, events, duration };
}

function posInt(v, fallback) {
  return Number.isInteger(v) && v > 0 && v <= 10000 ? v : fallback;
}

/**
 * Plays parsed events into `sink` with their original timing, scaled by `speed`.
 * `onChange(player)` is called when the state (playing, speed, position, finished) changes and on
 * progress. `clock` and timer functions can be swapped for tests.
 */
export class Player {
  constructor(cast, sink, { onChange = () => {}, now = () => performance.now(), setTimer = (f, ms) => setTimeout(f, ms), clearTimer = (id) => clearTimeout(id) } = {}) {
    this.cast = cast;
    this.sink = sink;
    this.onChange = onChange;
    this.now = now;
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
    this.speed = 1;
    this.playing = false;
    this.finished = cast.events.length === 0;
    this.index = 0; // next event to play
    this.base = 0; // recording time (s) at `wallStart`
    this.wallStart = 0;
    this.timer = null;
  }

  /** Current position in recording seconds. */
  get position() {
    if (!this.playing) return this.base;
    return Math.min(this.cast.duration, this.base + ((this.now() - this.wallStart) / 1000) * this.speed);
  }

  play() {
    if (this.playing) return;
    if (this.finished) this.restart(false);
    this.playing = true;
    this.wallStart = this.now();
    this.tick();
    this.onChange(this);
  }

  pause() {
    if (!this.playing) return;
    this.base = this.position;
    this.playing = false;
    this.cancel();
    this.onChange(this);
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  setSpeed(speed) {
    if (!(speed > 0) || speed === this.speed) return;
    if (this.playing) {
      this.base = this.position;
      this.wallStart = this.now();
    }
    this.speed = speed;
    if (this.playing) {
      this.cancel();
      this.tick();
    }
    this.onChange(this);
  }

  /** Back to the start; keeps playing if it was. */
  restart(notify = true) {
    this.cancel();
    this.sink.reset();
    this.sink.resize(this.cast.header.width, this.cast.header.height);
    this.index = 0;
    this.base = 0;
    this.wallStart = this.now();
    this.finished = this.cast.events.length === 0;
    if (this.playing) this.tick();
    if (notify) this.onChange(this);
  }

  stop() {
    this.cancel();
    this.playing = false;
  }

  cancel() {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
  }

  tick() {
    this.timer = null;
    if (!this.playing) return;
    const pos = this.position;
    const { events } = this.cast;
    let out = "";
    while (this.index < events.length && events[this.index].t <= pos) {
      const ev = events[this.index++];
      if (ev.type === "o") out += ev.data;
      else if (ev.type === "r") {
        if (out) this.sink.write(out);
        out = "";
        this.sink.resize(ev.cols, ev.rows);
      }
    }
    if (out) this.sink.write(out);
    if (this.index >= events.length) {
      this.base = this.cast.duration;
      this.playing = false;
      this.finished = true;
      this.onChange(this);
      return;
    }
    const wait = ((events[this.index].t - pos) / this.speed) * 1000;
    // Wake at the next event, but at least every 250 ms so the position display moves.
    this.timer = this.setTimer(() => {
      this.tick();
      this.onChange(this);
    }, Math.max(0, Math.min(wait, 250)));
  }
}

/** "m:ss" (or "h:mm:ss") for a number of seconds. */
export function formatTime(s) {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
