// #/replay/<session-id> : plays an asciicast v2 recording in a read-only terminal.
import { Terminal } from "@xterm/xterm";
import * as api from "../api.js";
import { Player, formatTime, parseAsciicast } from "../asciicast.js";
import { formatDate, h } from "../dom.js";
import { TERMINAL_OPTIONS } from "./terminal.js";

export const replayPage = {
  id: "replay",
  title: () => "Replay · Portcullis",
  mount(app, ctx, { session }, gen) {
    let player = null;
    let term = null;
    const info = h("p", { id: "replay-info", class: "muted", role: "status" }, "Loading recording…");
    const play = h("button", { id: "replay-play", type: "button", class: "primary", disabled: true, onclick: () => player?.toggle() }, "Play");
    const restart = h("button", { id: "replay-restart", type: "button", disabled: true, onclick: () => player?.restart() }, "Restart");
    const speed = h(
      "select",
      { id: "replay-speed", disabled: true, onchange: () => player?.setSpeed(Number(speed.value)) },
      h("option", { value: "1", selected: true }, "1×"),
      h("option", { value: "2" }, "2×"),
      h("option", { value: "4" }, "4×"),
    );
    const clock = h("span", { id: "replay-time", class: "mono" }, "0:00 / 0:00");
    const progress = h("progress", { id: "replay-progress", max: 1, value: 0, "aria-label": "Position" });
    const container = h("div", { id: "replay", class: "replay-term", "aria-label": "Recorded terminal (read only)" });

    app.append(
      h(
        "section",
        { class: "page replay-page" },
        h("p", {}, h("a", { href: "#/recordings" }, "← Recordings")),
        h("h1", {}, "Replay"),
        info,
        h("div", { class: "replay-controls" }, play, restart, h("label", { for: "replay-speed" }, "Speed"), speed, progress, clock),
        container,
      ),
    );

    const update = (p) => {
      play.textContent = p.playing ? "Pause" : p.finished ? "Play again" : "Play";
      clock.textContent = `${formatTime(p.position)} / ${formatTime(p.cast.duration)}`;
      progress.value = p.cast.duration ? p.position / p.cast.duration : p.finished ? 1 : 0;
    };

    ctx
      .requireSession()
      .then(async (s) => {
        if (!s || !ctx.current(gen)) return;
        const [text, list] = await Promise.all([api.recording(session), api.recordings().catch(() => [])]);
        if (!ctx.current(gen)) return;
        const cast = parseAsciicast(text);
        const meta = list.find((r) => String(r.session) === session);
        const when = meta?.start || (cast.header.timestamp ? new Date(cast.header.timestamp * 1000).toISOString() : "");
        info.textContent = [meta ? `${meta.user} on ${meta.target}` : cast.header.title || `Session ${session}`, when && formatDate(when), `${cast.header.width}×${cast.header.height}`]
          .filter(Boolean)
          .join(" · ") + (cast.events.length ? "" : " · this recording has no terminal output");
        term = new Terminal({ ...TERMINAL_OPTIONS, cols: cast.header.width, rows: cast.header.height, disableStdin: true, cursorBlink: false, scrollback: 1000 });
        term.open(container);
        window.portcullis.term = term;
        player = new Player(cast, { write: (d) => term.write(d), resize: (c, r) => term.resize(c, r), reset: () => term.reset() }, { onChange: update });
        for (const el of [play, restart, speed]) el.disabled = false;
        update(player);
        player.play();
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        info.className = "error";
        info.textContent = `Cannot replay this recording: ${e.message}`;
      });

    return () => {
      player?.stop();
      term?.dispose();
    };
  },
};
