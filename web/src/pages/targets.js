// #/targets : the targets this user may reach (GET /api/session). SSH targets open a terminal,
// RDP targets a remote desktop (`button[data-rdp-target]`), others need the native client.
import { h } from "../dom.js";
import { rdpFile } from "../api.js";

const nativeHint = () => ["Use the native client: see below."];

/** The commands that reach target `t` with the native client (no token in them: `portcullis
 * login` once, then the CLI fetches its own). */
export function nativeCommands(t, origin = window.location.origin) {
  const name = String(t.name);
  const protocol = String(t.protocol || "").toLowerCase();
  const login = `portcullis login ${origin}`;
  if (protocol === "ssh") return [login, `portcullis ssh-config ${origin} >> ~/.ssh/config`, `ssh ${name}`];
  const port = protocol === "rdp" ? 13389 : 10022;
  const tunnel = `portcullis tunnel ${origin} --target ${name} --local 127.0.0.1:${port}`;
  if (protocol === "rdp")
    return [
      "mstsc, Remmina, xfreerdp: open a downloaded .rdp file (through the RD Gateway), or:",
      login,
      tunnel,
      `xfreerdp /v:127.0.0.1:${port}   (or mstsc, Remmina: 127.0.0.1:${port})`,
    ];
  return [login, tunnel, `then connect to 127.0.0.1:${port}`];
}

function nativeBlock(t) {
  // Kept to the browser (`native = false`): the gateway enforces the target's policy here only.
  if (t.native === false) return null;
  const rdp = String(t.protocol || "").toLowerCase() === "rdp";
  return h(
    "details",
    { class: "native-commands", dataset: { nativeTarget: String(t.name) } },
    h("summary", {}, "Connect with a native client"),
    rdp ? rdpDownload(String(t.name)) : null,
    h("pre", {}, nativeCommands(t).join("\n")),
  );
}

/** "Download .rdp file": mstsc and other RDP clients open it and go through the RD Gateway. The
 * file holds a single-use token valid for five minutes: download it when you connect. */
function rdpDownload(name) {
  const note = h("span", { class: "muted", role: "status" }, " Single use, valid for 5 minutes.");
  const button = h("button", { type: "button", class: "secondary", dataset: { rdpFile: name } }, "Download .rdp file");
  button.onclick = async () => {
    button.disabled = true;
    try {
      const { name: file, blob } = await rdpFile(name);
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: file });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      note.className = "muted";
      note.textContent = " Downloaded: open it now (single use, valid for 5 minutes).";
    } catch (e) {
      note.className = "error";
      note.textContent = ` Cannot get the file: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  };
  return h("p", {}, button, note);
}

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
        if (s.mfa.required && !s.mfa.verified) {
          status.replaceChildren("Your access requires a second factor: ", h("a", { href: "#/security", id: "mfa-required" }, "set up an authenticator app"), " first.");
          return;
        }
        // Targets that open here (SSH terminals, RDP desktops) first, then the others; by name
        // within each group.
        const here = (t) => (["ssh", "rdp"].includes(String(t.protocol).toLowerCase()) ? 0 : 1);
        const targets = [...s.targets].sort((a, b) => here(a) - here(b) || String(a.name).localeCompare(String(b.name)));
        status.textContent = targets.length
          ? "Pick a server to open a terminal or a remote desktop in this browser."
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
      nativeBlock(t),
    );
  }
  if (protocol === "rdp") {
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "target",
          title: "Open desktop",
          dataset: { target: name, rdpTarget: name },
          onclick: () => (location.hash = `#/rdp/${encodeURIComponent(name)}`),
        },
        h("span", { class: "target-name" }, name),
        h("span", { class: "badge" }, "RDP"),
      ),
      h("span", { class: "muted" }, "Open desktop: a remote desktop in this browser. You will be asked for your username and password on that server."),
      nativeBlock(t),
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
    nativeBlock(t),
  );
}
