// #/recordings : recorded browser SSH sessions (GET /api/recordings), newest first.
import * as api from "../api.js";
import { formatBytes, formatDate, h } from "../dom.js";

export const recordingsPage = {
  id: "recordings",
  title: () => "Recordings · Portcullis",
  mount(app, ctx, _params, gen) {
    const status = h("p", { class: "muted", role: "status" }, "Loading recordings…");
    const list = h("ul", { id: "recordings", class: "recordings", "aria-labelledby": "recordings-title" });
    app.append(h("section", { class: "page" }, h("h1", { id: "recordings-title" }, "Recordings"), status, list));

    ctx
      .requireSession()
      .then(async (s) => {
        if (!s || !ctx.current(gen)) return;
        if (!s.can_replay) {
          status.textContent = "You are not allowed to replay recordings.";
          return;
        }
        const recs = await api.recordings();
        if (!ctx.current(gen)) return;
        recs.sort((a, b) => String(b.start).localeCompare(String(a.start)));
        status.textContent = recs.length ? `${recs.length} recorded session${recs.length === 1 ? "" : "s"}.` : "No recordings yet.";
        for (const r of recs) list.append(item(r));
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        status.className = "error";
        status.textContent = `Cannot load recordings: ${e.message}`;
      });
  },
};

function item(r) {
  const id = String(r.session);
  return h(
    "li",
    {},
    h(
      "a",
      { href: `#/replay/${encodeURIComponent(id)}`, dataset: { session: id } },
      h("span", { class: "rec-target" }, String(r.target ?? "")),
      h("span", { class: "rec-user" }, String(r.user ?? "")),
      h("time", { datetime: String(r.start ?? "") }, formatDate(r.start)),
      h("span", { class: "rec-size" }, formatBytes(r.bytes)),
    ),
  );
}
