// #/rdp/<target> : a remote desktop in the browser with the IronRDP web client. The gateway's
// RDCleanPath endpoint (/v1/rdp) does the X.224 and TLS parts with the server; the browser gets a
// one-time ticket (POST /api/rdp/ticket) and passes it as the RDCleanPath `proxy_auth`.
import * as api from "../api.js";
import { h } from "../dom.js";
import { Backend, displayControl, loadBackend } from "../ironrdp.js";
import { describeError, desktopSize } from "../rdp.js";

export const rdpPage = {
  id: "rdp",
  title: ({ target }) => `${target} (desktop) · Portcullis`,
  mount(app, ctx, { target }, gen) {
    return mountDesktop(app, ctx, target, gen);
  },
};

function mountDesktop(app, ctx, name, gen) {
  const status = h("span", { id: "status", role: "status", "aria-live": "polite", dataset: { state: "idle" } }, "Loading…");
  const reconnect = h("button", { id: "reconnect", type: "button", hidden: true, onclick: () => onReconnect() }, "Connect");
  const cad = h("button", { id: "rdp-cad", type: "button", hidden: true, title: "Send Ctrl+Alt+Del", onclick: () => ui?.ctrlAltDel() }, "Ctrl+Alt+Del");
  const screen = h("div", { id: "rdp-screen", class: "rdp-screen", "aria-label": `Remote desktop of ${name}` });
  const toolbar = h(
    "div",
    { class: "term-toolbar" },
    h("a", { href: "#/targets", class: "back" }, "← Targets"),
    h("strong", { class: "term-target" }, name),
    status,
    cad,
    reconnect,
  );

  // Credentials for the remote desktop: the gateway only carries them inside the RDP session.
  const user = h("input", { id: "rdp-user", name: "username", type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true });
  const password = h("input", { id: "rdp-password", name: "password", type: "password", autocomplete: "current-password" });
  const error = h("p", { id: "rdp-error", class: "error", role: "alert", hidden: true });
  const submit = h("button", { id: "rdp-submit", type: "submit", class: "primary" }, "Connect");
  const cancel = h("button", { id: "rdp-cancel", type: "button", onclick: () => dialog.close("cancel") }, "Cancel");
  const dialog = h(
    "dialog",
    { id: "rdp-dialog", "aria-labelledby": "rdp-title" },
    h(
      "form",
      { method: "dialog", onsubmit: (ev) => onSubmit(ev) },
      h("h2", { id: "rdp-title" }, `Open the desktop of ${name}`),
      h("p", { class: "muted" }, "Your account on that server. The credentials go to the server inside the remote desktop session. Servers that run xrdp then show their own login screen too: sign in there as well."),
      error,
      h("label", { for: "rdp-user" }, "Username"),
      user,
      h("label", { for: "rdp-password" }, "Password"),
      password,
      h("div", { class: "actions" }, cancel, submit),
    ),
  );
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "connect" && !running && !disposed) setStatus("idle", "Not connected");
    dialog.returnValue = "";
  });

  app.append(h("section", { class: "term-page rdp-page" }, toolbar, screen, dialog));

  let disposed = false;
  let target = null; // {name, protocol, …} from the session
  let element = null; // <iron-remote-desktop>
  let ui = null; // its UserInteraction API, after its "ready" event
  let uiReady = null;
  let running = false; // a session is connecting or connected
  let attempt = 0; // ignores late results of an abandoned connect
  let lastUser = "";
  let sessionExpired = false;
  let connectedOnce = false;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    const done = state === "ended" || state === "error" || state === "lost" || state === "idle";
    reconnect.hidden = !done || !target || dialog.open;
    reconnect.textContent = sessionExpired ? "Sign in again" : connectedOnce ? "Reconnect" : "Connect";
    cad.hidden = state !== "connected";
  }

  function canvas() {
    return element?.shadowRoot?.querySelector("canvas") ?? null;
  }

  // The web component: created once the target is known (its clipboard policy is set before the
  // component starts its clipboard handling, on its "ready" event).
  function createElement(clipboard) {
    element = document.createElement("iron-remote-desktop");
    element.id = "rdp-desktop";
    element.setAttribute("scale", "fit");
    element.setAttribute("flexcenter", "true");
    element.setAttribute("verbose", "false");
    element.module = Backend;
    uiReady = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the remote desktop component did not start")), 15000);
      element.addEventListener(
        "ready",
        (ev) => {
          clearTimeout(timer);
          ui = ev.detail.irgUserInteraction;
          ui.setEnableClipboard(clipboard);
          ui.setEnableAutoClipboard(clipboard);
          ui.onWarningCallback((w) => console.warn(`remote desktop: ${w}`));
          resolve(ui);
        },
        { once: true },
      );
    });
    uiReady.catch(() => {});
    screen.append(element);
    window.portcullis.rdp = { element, canvas };
  }

  // ---- sizing: the remote desktop follows the window (display control), the canvas scales to fit
  let resizeTimer = null;
  let lastSize = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (disposed || !running || !ui || status.dataset.state !== "connected") return;
      const size = desktopSize(screen.clientWidth, screen.clientHeight);
      // Layout jitter of a few pixels is not worth a new desktop.
      if (lastSize && Math.abs(size.width - lastSize.width) < 8 && Math.abs(size.height - lastSize.height) < 8) return;
      lastSize = size;
      screen.dataset.desktop = `${size.width}x${size.height}`;
      ui.resize(size.width, size.height);
    }, 400);
  }
  const observer = new ResizeObserver(onResize);
  observer.observe(screen);

  // ---- connection ---------------------------------------------------------------------------
  async function connect(username, pass) {
    const my = ++attempt;
    const stale = () => disposed || my !== attempt;
    running = true;
    setStatus("connecting", `Connecting to ${name}…`);
    try {
      await Promise.all([loadBackend(), uiReady]);
      if (stale()) return;
      const ticket = await api.rdpTicket(name);
      if (stale()) return;
      const size = desktopSize(screen.clientWidth, screen.clientHeight);
      lastSize = size;
      screen.dataset.desktop = `${size.width}x${size.height}`;
      const config = ui
        .configBuilder()
        .withUsername(username)
        .withPassword(pass)
        .withDestination(ticket.destination)
        .withProxyAddress(api.rdpProxyUrl(ticket.path))
        .withAuthToken(ticket.ticket)
        .withDesktopSize(size)
        .withExtension(displayControl(true))
        .build();
      const session = await ui.connect(config);
      if (stale()) {
        ui.shutdown();
        return;
      }
      connectedOnce = true;
      ui.setVisibility(true);
      setStatus("connected", `Connected to ${name}`);
      canvas()?.focus({ preventScroll: true });
      let end;
      try {
        const info = await session.run();
        end = { state: "ended", text: `Session ended${reasonOf(info)}` };
      } catch (e) {
        end = { state: "lost", text: `Connection lost: ${describeError(e).message}` };
      }
      if (stale()) return;
      running = false;
      setStatus(end.state, end.text);
    } catch (e) {
      if (stale()) return;
      running = false;
      if (e instanceof api.ApiError) return ticketFailed(e);
      const d = describeError(e);
      console.warn(`remote desktop: ${d.detail}`);
      setStatus("error", `Could not connect to ${name}: ${d.message}`);
    }
  }

  function reasonOf(info) {
    try {
      const r = info?.reason?.();
      return r ? `: ${r}` : "";
    } catch {
      return "";
    }
  }

  function ticketFailed(e) {
    if (e.status === 401) {
      sessionExpired = true;
      setStatus("error", "Your sign-in has expired. Sign in again to reconnect.");
    } else if (e.status === 403) {
      target = null;
      setStatus("error", `${name} is no longer available to you.`);
    } else {
      setStatus("error", `Could not connect to ${name}: ${e.message}`);
    }
  }

  function onReconnect() {
    if (sessionExpired) {
      ctx.returnTo = `#/rdp/${encodeURIComponent(name)}`;
      ctx.notice = "Your sign-in has expired. Please sign in again.";
      ctx.navigate("#/");
      return;
    }
    openDialog();
  }

  function openDialog() {
    error.hidden = true;
    user.value = lastUser;
    password.value = "";
    setStatus("idle", `Waiting for your credentials for ${name}`);
    if (!dialog.open) dialog.showModal();
    reconnect.hidden = true;
    (lastUser ? password : user).focus();
  }

  function onSubmit(ev) {
    ev.preventDefault();
    const username = user.value.trim();
    if (!username) {
      error.textContent = "Enter a username.";
      error.hidden = false;
      user.focus();
      return;
    }
    const pass = password.value;
    lastUser = username;
    password.value = "";
    dialog.close("connect");
    connect(username, pass);
  }

  // ---- start --------------------------------------------------------------------------------
  ctx
    .requireSession()
    .then((s) => {
      if (!s || disposed || !ctx.current(gen)) return;
      const t = s.targets.find((x) => x.name === name);
      if (!t) {
        setStatus("error", `There is no target named ${name} that you may reach.`);
        return;
      }
      if (String(t.protocol).toLowerCase() !== "rdp") {
        setStatus("error", `${name} is not a remote desktop (RDP) target.`);
        return;
      }
      target = t;
      // Copy and paste only when the gateway says the policy allows them.
      createElement(t.clipboard === true);
      loadBackend().catch((e) => {
        if (!disposed && !running) setStatus("error", `Cannot start the remote desktop client: ${e.message}`);
      });
      openDialog();
    })
    .catch((e) => {
      if (!disposed) setStatus("error", `Cannot load your session: ${e.message}`);
    });

  return () => {
    disposed = true;
    attempt++;
    clearTimeout(resizeTimer);
    observer.disconnect();
    if (ui) {
      try {
        ui.shutdown();
      } catch {
        /* no session */
      }
    }
    if (dialog.open) dialog.close();
    window.portcullis.rdp = null;
  };
}
