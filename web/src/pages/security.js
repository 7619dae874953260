// #/security : the user's second factor: enrol an authenticator app (QR code or secret), confirm
// it with a first code, and keep the recovery codes shown once.
import * as api from "../api.js";
import * as webauthn from "../webauthn.js";
import { h } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";

/** The QR code as SVG elements (no markup parsed): `modules` is size*size of "0"/"1", row by row. */
function qrSvg(qr) {
  const size = Number(qr.size);
  const border = 4;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${size + 2 * border} ${size + 2 * border}`);
  svg.setAttribute("width", "220");
  svg.setAttribute("height", "220");
  svg.setAttribute("id", "mfa-qr");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code to scan with an authenticator app");
  const bg = document.createElementNS(SVG, "rect");
  bg.setAttribute("width", "100%");
  bg.setAttribute("height", "100%");
  bg.setAttribute("fill", "#fff");
  svg.append(bg);
  let d = "";
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (qr.modules[y * size + x] === "1") d += `M${x + border},${y + border}h1v1h-1z`;
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "#000");
  svg.append(path);
  return svg;
}

export const securityPage = {
  id: "security",
  title: () => "Security · Portcullis",
  mount(app, ctx, _params, gen) {
    const status = h("p", { class: "muted", role: "status", id: "mfa-status" }, "Loading…");
    const body = h("div", { class: "security" });
    app.append(h("section", { class: "page" }, h("h1", {}, "Second factor"), status, body));

    const begin = async () => {
      status.className = "muted";
      status.textContent = "Scan the code with your authenticator app, then type the code it shows.";
      let e;
      try {
        e = await api.totpBegin();
      } catch (err) {
        status.className = "error";
        status.textContent = `Cannot start: ${err.message}`;
        return;
      }
      if (!ctx.current(gen)) return;
      const code = h("input", { id: "mfa-code", inputmode: "numeric", autocomplete: "one-time-code", "aria-label": "Code" });
      const confirm = h("button", { type: "submit", id: "mfa-confirm", class: "primary" }, "Confirm");
      const form = h(
        "form",
        {
          onsubmit: async (ev) => {
            ev.preventDefault();
            confirm.disabled = true;
            try {
              const r = await api.totpConfirm(code.value.trim());
              if (!ctx.current(gen)) return;
              status.className = "";
              status.textContent = "The authenticator app is set up. Keep these recovery codes somewhere safe: each works once, and they are not shown again.";
              body.replaceChildren(
                h("ul", { id: "mfa-recovery", class: "recovery" }, (r.recovery_codes || []).map((c) => h("li", {}, h("code", {}, String(c))))),
                h("button", { type: "button", onclick: () => ctx.navigate("#/targets") }, "Done"),
              );
            } catch (err) {
              if (!ctx.current(gen)) return;
              confirm.disabled = false;
              status.className = "error";
              status.textContent = err.message;
              code.value = "";
              code.focus();
            }
          },
        },
        h("label", { for: "mfa-code" }, "Code"),
        code,
        confirm,
      );
      body.replaceChildren(
        e.qr ? qrSvg(e.qr) : "",
        h("p", {}, "Or enter this key by hand: ", h("code", { id: "mfa-secret" }, String(e.secret))),
        form,
      );
      code.focus();
    };

    ctx
      .requireSession()
      .then((s) => {
        if (!s || !ctx.current(gen)) return;
        const m = s.mfa;
        status.textContent = m.enrolled
          ? `An authenticator app is set up (${m.recovery_codes_left} recovery codes left).`
          : m.required
            ? "Your access requires a second factor: set up an authenticator app to continue."
            : "Protect your account with an authenticator app (TOTP).";
        const label = (m.methods || []).includes("totp") ? "Replace the authenticator app" : "Set up an authenticator app";
        const addPasskey = async () => {
          status.className = "muted";
          status.textContent = "Follow your browser's prompt to create a passkey or touch your security key.";
          try {
            const options = await api.passkeyBegin();
            const answer = await webauthn.create(options);
            const r = await api.passkeyConfirm(answer);
            if (!ctx.current(gen)) return;
            status.className = "";
            const codes = r.recovery_codes || [];
            status.textContent = codes.length
              ? "Passkey added. Keep these recovery codes somewhere safe: each works once, and they are not shown again."
              : "Passkey added.";
            body.replaceChildren(
              h("ul", { id: "mfa-recovery", class: "recovery" }, codes.map((c) => h("li", {}, h("code", {}, String(c))))),
              h("p", { id: "passkey-added" }, "Passkey added."),
              h("button", { type: "button", onclick: () => ctx.navigate("#/targets") }, "Done"),
            );
          } catch (err) {
            if (!ctx.current(gen)) return;
            status.className = "error";
            status.textContent = `Cannot add the passkey: ${err.message || err.name}`;
          }
        };
        body.replaceChildren(
          h("button", { type: "button", id: "mfa-begin", class: "primary", onclick: begin }, label),
          m.passkeys_available ? " " : "",
          m.passkeys_available ? h("button", { type: "button", id: "passkey-begin", onclick: addPasskey }, "Add a passkey or security key") : "",
        );
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        status.className = "error";
        status.textContent = `Cannot load: ${e.message}`;
      });
  },
};
