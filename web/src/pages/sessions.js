// #/sessions : every live session of the fleet, for administrators (GET /api/admin/sessions),
// refreshed every two seconds; each can be ended with a reason (POST
// /api/admin/sessions/terminate), which the audit log keeps.
import * as api from "../api.js";
import { formatBytes, formatDate, h } from "../dom.js";

const REFRESH_MS = 2000;

export const sessionsPage = {
  id: "sessions",
  title: () => "Sessions · Portcullis",
  mount(app, ctx, _params, gen) {
    const status = h("p", { class: "muted", role: "status", id: "sessions-status" }, "Loading sessions…");
    const body = h("tbody", { id: "sessions" });
    const table = h(
      "table",
      { class: "sessions", "aria-labelledby": "sessions-title" },
      h(
        "thead",
        {},
        h("tr", {}, ...["User", "Target", "Protocol", "Route", "Client", "Node", "Started", "Up", "Down", ""].map((t) => h("th", { scope: "col" }, t))),
      ),
      body,
    );
    app.append(h("section", { class: "page" }, h("h1", { id: "sessions-title" }, "Live sessions"), status, table));

    let timer = null;
    let stopped = false;
    const refresh = async () => {
      try {
        const { sessions, partial } = await api.liveSessions();
        if (stopped || !ctx.current(gen)) return;
        const list = Array.isArray(sessions) ? sessions : [];
        status.className = partial ? "error" : "muted";
        status.textContent = `${list.length} live session${list.length === 1 ? "" : "s"}${partial ? ` (${partial})` : ""}.`;
        // Rows are replaced, except one whose termination form is open.
        const open = body.querySelector("tr[data-ending]");
        body.replaceChildren(...list.map((s) => (open && open.dataset.session === String(s.id) ? open : row(s))));
      } catch (e) {
        if (stopped || !ctx.current(gen)) return;
        status.className = "error";
        status.textContent = e.status === 403 ? "Only administrators see the live sessions." : `Cannot load sessions: ${e.message}`;
        if (e.status === 403 || e.status === 401) return;
      }
      if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
    };
    ctx
      .requireSession()
      .then((s) => {
        if (!s || !ctx.current(gen)) return;
        if (!s.admin) {
          status.textContent = "Only administrators see the live sessions.";
          return;
        }
        refresh();
      })
      .catch((e) => {
        status.className = "error";
        status.textContent = `Cannot load sessions: ${e.message}`;
      });
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  },
};

function row(s) {
  const id = String(s.id);
  const tr = h(
    "tr",
    { dataset: { session: id } },
    h("td", {}, String(s.user ?? "")),
    h("td", {}, String(s.target ?? "")),
    h("td", {}, String(s.protocol ?? "")),
    h("td", {}, String(s.via ?? "")),
    h("td", {}, String(s.client ?? "")),
    h("td", {}, String(s.node ?? "")),
    h("td", {}, h("time", { datetime: String(s.start ?? "") }, formatDate(s.start))),
    h("td", {}, formatBytes(Number(s.bytes_client_to_target))),
    h("td", {}, formatBytes(Number(s.bytes_target_to_client))),
  );
  const cell = h("td", {});
  // Browser terminals of this node can be watched, read-only.
  if (s.via === "web_terminal") cell.append(h("a", { href: `#/watch/${encodeURIComponent(id)}`, class: "button secondary", dataset: { watch: id } }, "Watch"), " ");
  const end = h("button", { type: "button", class: "secondary", dataset: { terminate: id } }, "Terminate");
  end.onclick = () => {
    tr.dataset.ending = "1";
    const reason = h("input", { type: "text", maxlength: "200", required: true, placeholder: "Reason (audited)", "aria-label": "Reason", dataset: { reason: id } });
    const confirm = h("button", { type: "submit", dataset: { confirmTerminate: id } }, "End session");
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const note = h("span", { class: "error", role: "status" });
    const form = h("form", { class: "terminate" }, reason, confirm, cancel, note);
    cancel.onclick = () => {
      delete tr.dataset.ending;
      cell.replaceChildren(end);
    };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      confirm.disabled = true;
      try {
        await api.terminateSession(id, reason.value);
        delete tr.dataset.ending;
        note.className = "muted";
        // The next refresh shows it gone.
        note.textContent = "Ending…";
      } catch (e) {
        note.textContent = e.message;
        confirm.disabled = false;
      }
    };
    cell.replaceChildren(form);
    reason.focus();
  };
  cell.append(end);
  tr.append(cell);
  return tr;
}
