// #/watch/<session> : an administrator watches a live browser terminal, read-only
// (GET /v1/watch/<session>, WebSocket: binary frames = what the terminal shows, text frames =
// {"type":"watching"|"resize", …}). The watched user sees a notice meanwhile.
import { Terminal } from "@xterm/xterm";
import { h } from "../dom.js";

export const watchPage = {
  id: "watch",
  title: () => "Watching · Portcullis",
  mount(app, ctx, params, gen) {
    const id = String(params.session || "");
    const status = h("span", { id: "status", role: "status", dataset: { state: "connecting" } }, "Connecting…");
    const container = h("div", { id: "terminal", class: "terminal", "aria-label": "Watched terminal (read-only)" });
    app.append(
      h(
        "section",
        { class: "term-page" },
        h("div", { class: "term-toolbar" }, h("a", { href: "#/sessions", class: "back" }, "← Sessions"), h("strong", { class: "term-target", id: "watch-title" }, "Watching"), status),
        container,
      ),
    );
    const term = new Terminal({ disableStdin: true, cursorBlink: false, convertEol: false, scrollback: 5000 });
    term.open(container);
    window.portcullis.watchTerm = term;
    const setStatus = (state, text) => {
      status.dataset.state = state;
      status.textContent = text;
    };
    const ws = new WebSocket(`wss://${location.host}/v1/watch/${encodeURIComponent(id)}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (!ctx.current(gen)) return;
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m.type === "watching") {
        document.getElementById("watch-title").textContent = `Watching ${m.user} on ${m.target} (read-only)`;
        setStatus("connected", "Live");
      } else if (m.type === "resize" && Number.isInteger(m.cols) && Number.isInteger(m.rows)) {
        term.resize(Math.max(1, m.cols), Math.max(1, m.rows));
      }
    };
    ws.onclose = (ev) => {
      if (!ctx.current(gen)) return;
      setStatus("ended", ev.reason ? `Watch ended: ${ev.reason}` : "Watch ended");
    };
    return () => {
      ws.close();
      term.dispose();
    };
  },
};
