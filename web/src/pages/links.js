// #/links : shared links (administrators): make a link that lets someone without an account open
// one session to one target in the browser, for a set time and optionally once; list and revoke
// them. #/link/<id>.<secret> : what the person with a link opens.
import * as api from "../api.js";
import { formatDate, h } from "../dom.js";

export const linksPage = {
  id: "links",
  title: () => "Shared links · Portcullis",
  mount(app, ctx, _params, gen) {
    const target = h("select", { id: "link-target", required: true });
    const minutes = h("input", { id: "link-minutes", type: "number", min: "1", max: "10080", value: "60", required: true });
    const once = h("input", { id: "link-once", type: "checkbox", checked: true });
    const submit = h("button", { type: "submit", id: "link-create" }, "Make link");
    const made = h("p", { id: "link-made", class: "muted", role: "status" });
    const form = h(
      "form",
      { class: "audit-filters" },
      h("label", {}, "Target", target),
      h("label", {}, "Valid for (minutes)", minutes),
      h("label", { class: "inline" }, once, " Single use"),
      submit,
    );
    const status = h("p", { class: "muted", role: "status", id: "links-status" });
    const body = h("tbody", { id: "links" });
    const table = h(
      "table",
      { class: "sessions", "aria-labelledby": "links-title" },
      h("thead", {}, h("tr", {}, ...["Target", "Made by", "Made", "Expires", "Single use", ""].map((t) => h("th", { scope: "col" }, t)))),
      body,
    );
    app.append(h("section", { class: "page" }, h("h1", { id: "links-title" }, "Shared links"), form, made, status, table));

    const load = async () => {
      const { links, targets } = await api.links();
      if (!ctx.current(gen)) return;
      if (!target.options.length) target.replaceChildren(...targets.map((t) => h("option", { value: t }, t)));
      body.replaceChildren(...links.map((l) => row(l, load, status)));
      status.textContent = `${links.length} live link${links.length === 1 ? "" : "s"}.`;
    };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      try {
        const link = await api.createLink(target.value, Number(minutes.value) * 60, once.checked);
        // The URL carries the secret: shown now, never again.
        const url = h("input", { id: "link-url", type: "text", readonly: true, value: link.url, size: "80" });
        made.className = "muted";
        made.replaceChildren("Send this link (shown once): ", url);
        url.select();
        await load();
      } catch (e) {
        made.className = "error";
        made.textContent = `Cannot make the link: ${e.message}`;
      } finally {
        submit.disabled = false;
      }
    };
    ctx
      .requireSession()
      .then((s) => {
        if (!s || !ctx.current(gen)) return;
        if (!s.admin) {
          status.textContent = "Only administrators make shared links.";
          submit.disabled = true;
          return;
        }
        return load();
      })
      .catch((e) => {
        status.className = "error";
        status.textContent = `Cannot load links: ${e.message}`;
      });
  },
};

function row(l, load, status) {
  const revoke = h("button", { type: "button", class: "secondary", dataset: { revokeLink: String(l.id) } }, "Revoke");
  revoke.onclick = async () => {
    revoke.disabled = true;
    try {
      await api.revokeLink(l.id);
      await load();
    } catch (e) {
      status.className = "error";
      status.textContent = `Cannot revoke: ${e.message}`;
      revoke.disabled = false;
    }
  };
  return h(
    "tr",
    { dataset: { link: String(l.id) } },
    h("td", {}, String(l.target)),
    h("td", {}, String(l.created_by)),
    h("td", {}, formatDate(l.created)),
    h("td", {}, formatDate(l.expires)),
    h("td", {}, l.once ? "yes" : "no"),
    h("td", {}, revoke),
  );
}

export const linkOpenPage = {
  id: "link",
  title: () => "Shared link · Portcullis",
  mount(app, ctx, params, gen) {
    // The secret leaves the address bar (and the history) at once.
    const link = String(params.link || "");
    history.replaceState(null, "", "/#/link");
    const status = h("p", { id: "link-status", role: "status" }, "Opening the shared link…");
    app.append(h("section", { class: "page" }, h("h1", {}, "Shared link"), status));
    api
      .openLink(link)
      .then(({ target, protocol }) => {
        if (!ctx.current(gen)) return;
        const kind = String(protocol).toLowerCase() === "rdp" ? "rdp" : "ssh";
        ctx.navigate(`#/${kind}/${encodeURIComponent(target)}`);
      })
      .catch((e) => {
        if (!ctx.current(gen)) return;
        status.className = "error";
        status.textContent = e.status === 403 ? "This link is not valid: it expired, was used already or was revoked." : `Cannot open the link: ${e.message}`;
      });
  },
};
