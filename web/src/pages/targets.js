// #/targets : the targets this user may reach (GET /api/session).
import { h } from "../dom.js";

const nativeHint = () => ["Use the native client for now: ", h("code", {}, "portcullis tunnel"), " or ", h("code", {}, "portcullis connect"), "."];

export const targetsPage = {
  id: "targets",
  title: () => "Targets · Portcullis",
  mount(app, ctx, _params, gen) {
    const status = h("p", { class: "muted", role: "status" }, "Loading targets…");
    const list = h("ul", { id: "targets", class: "targets", "aria-labelledby": "targets-title" });
    app.append(h("section", { class: "page" }, h("h1", { id: "targets-title" }, "Targets"), status, list));

    ctx
      .requireSession()
      .then((s) => {
        if (!s || !ctx.current(gen)) return;
        // SSH targets (which open here) first, then the others; by name within each group.
        const ssh = (t) => (String(t.protocol).toLowerCase() === "ssh" ? 0 : 1);
        const targets = [...s.targets].sort((a, b) => ssh(a) - ssh(b) || String(a.name).localeCompare(String(b.name)));
        status.textContent = targets.length
          ? "Pick a server to open a terminal in this browser."
          : "No targets are available to you. Ask an administrator to grant access.";
        for (const t of targets) list.append(item(t));
        list.querySelector("button:not([disabled])")?.focus();
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        status.className = "error";
        status.textContent = `Cannot load targets: ${e.message}`;
      });
  },
};

function item(t) {
  const name = String(t.name);
  const protocol = String(t.protocol || "").toLowerCase();
  if (protocol === "ssh") {
    return h(
      "li",
      {},
      h(
        "button",
        { type: "button", class: "target", dataset: { target: name }, onclick: () => (location.hash = `#/ssh/${encodeURIComponent(name)}`) },
        h("span", { class: "target-name" }, name),
        h("span", { class: "badge" }, "SSH"),
      ),
      h("span", { class: "muted" }, t.credentials === "user" ? "You will be asked for a username and password or key." : "Opens a terminal in this browser."),
    );
  }
  return h(
    "li",
    { class: "native" },
    h(
      "button",
      { type: "button", class: "target", dataset: { target: name }, disabled: true, "aria-describedby": `native-${name}` },
      h("span", { class: "target-name" }, name),
      h("span", { class: "badge" }, protocol ? protocol.toUpperCase() : "?"),
    ),
    h("span", { class: "muted", id: `native-${name}` }, nativeHint()),
  );
}
