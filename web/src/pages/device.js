// #/device/<code> : approve a `portcullis login` (the CLI sends the user to /device?code=…).
// Shows where the request came from, so that a user sent someone else's code notices.
import * as api from "../api.js";
import { formatDate, h } from "../dom.js";

export const devicePage = {
  id: "device",
  title: () => "Approve a login · Portcullis",
  mount(app, ctx, params, gen) {
    const status = h("p", { class: "muted", role: "status", id: "device-status" }, "Loading…");
    const form = h("div", { class: "device" });
    app.append(h("section", { class: "page" }, h("h1", {}, "Approve a command-line login"), status, form));

    const ask = () => {
      const input = h("input", { id: "device-code", autocomplete: "off", placeholder: "BCDF-GHJK", "aria-label": "Code" });
      const go = h("button", { type: "submit" }, "Continue");
      const f = h("form", { onsubmit: (e) => (e.preventDefault(), ctx.navigate(`#/device/${encodeURIComponent(input.value.trim())}`)) }, input, go);
      status.textContent = "Enter the code your terminal shows.";
      form.replaceChildren(f);
      input.focus();
    };

    ctx
      .requireSession()
      .then(async (s) => {
        if (!s || !ctx.current(gen)) return;
        if (!params.code) return ask();
        let pending;
        try {
          pending = await api.deviceRequest(params.code);
        } catch (e) {
          if (!ctx.current(gen)) return;
          status.className = "error";
          status.textContent = e.status === 404 ? "This code is unknown or has expired. Run portcullis login again." : `Cannot check the code: ${e.message}`;
          return;
        }
        if (!ctx.current(gen)) return;
        const when = formatDate(new Date(Number(pending.requested) * 1000).toISOString());
        status.textContent = "";
        const answer = async (approve) => {
          for (const b of form.querySelectorAll("button")) b.disabled = true;
          try {
            await api.answerDevice(pending.code, approve);
            if (!ctx.current(gen)) return;
            form.replaceChildren();
            status.className = "";
            status.textContent = approve
              ? `Approved: the terminal is now logged in as ${s.user}. You can close this page.`
              : "Denied: the terminal is not logged in.";
          } catch (e) {
            if (!ctx.current(gen)) return;
            status.className = "error";
            status.textContent = `Cannot answer: ${e.message}`;
          }
        };
        form.replaceChildren(
          h("p", {}, "A terminal asked to log in as ", h("strong", {}, s.user), ` from ${pending.client} at ${when}.`),
          pending.same_address === false
            ? h("p", { class: "error", id: "device-elsewhere" }, `This request came from ${pending.client}, not from the address you are browsing from. Approve only if you started it yourself (for example on another machine).`)
            : "",
          h("p", {}, "Approve only if your terminal shows this code:"),
          h("p", { class: "device-code", id: "device-shown-code" }, String(pending.code)),
          h("button", { type: "button", id: "device-approve", onclick: () => answer(true) }, "Approve"),
          " ",
          h("button", { type: "button", id: "device-deny", class: "secondary", onclick: () => answer(false) }, "Deny"),
        );
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        status.className = "error";
        status.textContent = `Cannot load: ${e.message}`;
      });
  },
};
