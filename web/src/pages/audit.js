// #/audit : search this node's audit log (administrators): sign-ins, sessions, denials and admin
// actions by kind, user, target, time and outcome (GET /api/admin/audit), newest first.
import * as api from "../api.js";
import { formatDate, h } from "../dom.js";

export const auditPage = {
  id: "audit",
  title: () => "Audit · Portcullis",
  mount(app, ctx, _params, gen) {
    const field = (label, input) => h("label", {}, label, input);
    const kind = h(
      "select",
      { id: "audit-event" },
      ...[
        ["", "Any"],
        ["identity", "Sign-ins and tokens"],
        ["session", "Sessions"],
        ["denied", "Denials"],
        ["admin", "Admin actions"],
        ["file", "File transfers"],
      ].map(([v, t]) => h("option", { value: v }, t)),
    );
    const user = h("input", { id: "audit-user", type: "text", maxlength: "128", autocomplete: "off" });
    const target = h("input", { id: "audit-target", type: "text", maxlength: "128", autocomplete: "off" });
    const outcome = h("select", { id: "audit-outcome" }, ...[["", "Any"], ["ok", "Went through"], ["refused", "Refused"]].map(([v, t]) => h("option", { value: v }, t)));
    const from = h("input", { id: "audit-from", type: "datetime-local" });
    const to = h("input", { id: "audit-to", type: "datetime-local" });
    const submit = h("button", { type: "submit", id: "audit-search" }, "Search");
    const form = h("form", { class: "audit-filters" }, field("Kind", kind), field("User", user), field("Target", target), field("Outcome", outcome), field("From", from), field("To", to), submit);
    const status = h("p", { class: "muted", role: "status", id: "audit-status" });
    const body = h("tbody", { id: "audit-records" });
    const table = h(
      "table",
      { class: "sessions audit", "aria-labelledby": "audit-title" },
      h("thead", {}, h("tr", {}, ...["Time", "Kind", "User", "Target", "Outcome", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    );
    app.append(h("section", { class: "page" }, h("h1", { id: "audit-title" }, "Audit log"), form, status, table));

    // datetime-local is the browser's local time: sent as UTC.
    const utc = (v) => (v ? new Date(v).toISOString().replace(/\.\d{3}Z$/, "Z") : "");
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      status.className = "muted";
      status.textContent = "Searching…";
      try {
        const found = await api.auditSearch({ event: kind.value, user: user.value, target: target.value, outcome: outcome.value, from: utc(from.value), to: utc(to.value) });
        if (!ctx.current(gen)) return;
        const records = Array.isArray(found.records) ? found.records : [];
        body.replaceChildren(...records.map(row));
        status.textContent = `${records.length} record${records.length === 1 ? "" : "s"}${found.complete ? "" : " (the newest part of the log only)"}.`;
      } catch (e) {
        status.className = "error";
        status.textContent = `Cannot search: ${e.message}`;
      } finally {
        submit.disabled = false;
      }
    };
    ctx
      .requireSession()
      .then((s) => {
        if (!s || !ctx.current(gen)) return;
        if (!s.admin) {
          status.textContent = "Only administrators search the audit log.";
          submit.disabled = true;
          return;
        }
        form.requestSubmit();
      })
      .catch((e) => {
        status.className = "error";
        status.textContent = e.message;
      });
  },
};

function row(r) {
  const kind = String(r.event ?? "");
  const refused =
    kind === "denied" || r.action === "sign_in_failed" || r.action === "device_denied" || (kind === "admin" && Number(r.status) >= 400) || (kind === "file" && r.outcome !== "ok");
  const time = String(r.time ?? r.end ?? r.start ?? "");
  const target = String(r.target ?? r.path ?? "");
  const detail = [r.action, r.method, r.direction, r.outcome, r.ended, r.reason, r.detail, r.status && kind !== "session" ? `status ${r.status}` : null, r.client ? `from ${r.client}` : null]
    .filter((x) => x !== undefined && x !== null && x !== "")
    .map(String)
    .join(" · ");
  return h(
    "tr",
    { dataset: { event: kind } },
    h("td", {}, h("time", { datetime: time }, formatDate(time))),
    h("td", {}, kind),
    h("td", {}, String(r.user ?? r.admin ?? "")),
    h("td", {}, target),
    h("td", { class: refused ? "error" : "" }, refused ? "refused" : "ok"),
    h("td", {}, detail),
  );
}
