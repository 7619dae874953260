// Entry point: hash router and the shared top bar. Routes (API.md): #/ sign-in, #/targets,
// #/ssh/<target>, #/rdp/<target>, #/recordings, #/replay/<session-id>, #/device/<code>,
// #/security, #/sessions, #/audit and #/links (administrators), #/link/<id>.<secret> (a
// shared link: the secret stays in the fragment, never in a request line).
import "./style.css";
import * as api from "./api.js";
import { loginPage } from "./pages/login.js";
import { targetsPage } from "./pages/targets.js";
import { terminalPage } from "./pages/terminal.js";
import { rdpPage } from "./pages/rdp.js";
import { recordingsPage } from "./pages/recordings.js";
import { replayPage } from "./pages/replay.js";
import { devicePage } from "./pages/device.js";
import { securityPage } from "./pages/security.js";
import { sessionsPage } from "./pages/sessions.js";
import { auditPage } from "./pages/audit.js";
import { linksPage, linkOpenPage } from "./pages/links.js";
import { watchPage } from "./pages/watch.js";

// `portcullis login` sends the user to /device?code=…: the same app, on its approval page.
if (location.pathname === "/device") {
  const code = new URLSearchParams(location.search).get("code") || "";
  history.replaceState(null, "", `/#/device/${encodeURIComponent(code)}`);
}

// For tests: the active xterm Terminal (live terminal or replay), null elsewhere; on the remote
// desktop page, `rdp` is {element, canvas()} (the <iron-remote-desktop> and its canvas).
window.portcullis = { term: null, rdp: null };

const app = document.getElementById("app");
const topbar = document.getElementById("topbar");
let cleanup = null;
let generation = 0;

const ctx = {
  /** Where to go after signing in (the page that asked for a session). */
  returnTo: null,
  /** One-shot message for the sign-in page ("your session has ended", "signed out"). */
  notice: null,
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  /** The session, or null after sending the user to sign in. */
  async requireSession() {
    try {
      const s = await api.session();
      showTopbar(s);
      return s;
    } catch (e) {
      if (e.status === 401) {
        ctx.returnTo = location.hash;
        ctx.notice = "Please sign in to continue.";
        ctx.navigate("#/");
        return null;
      }
      throw e;
    }
  },
  showTopbar,
  hideTopbar() {
    topbar.hidden = true;
  },
  /** True while the page that called it is still the current one. */
  current(gen) {
    return gen === generation;
  },
};

function showTopbar(s) {
  topbar.hidden = false;
  document.getElementById("whoami").textContent = s.user ? `Signed in as ${s.user}` : "";
  document.getElementById("nav-recordings").hidden = !s.can_replay;
  document.getElementById("nav-sessions").hidden = !s.admin;
  document.getElementById("nav-audit").hidden = !s.admin;
  document.getElementById("nav-links").hidden = !s.admin;
}

document.getElementById("signout").addEventListener("click", async () => {
  const btn = document.getElementById("signout");
  btn.disabled = true;
  try {
    if (cleanup) {
      cleanup();
      cleanup = null;
    }
    await api.logout();
    ctx.notice = "You have signed out.";
  } catch (e) {
    ctx.notice = `Sign-out failed: ${e.message}`;
  } finally {
    btn.disabled = false;
    ctx.returnTo = null;
    topbar.hidden = true;
    ctx.navigate("#/");
  }
});

function parse(hash) {
  const path = hash.replace(/^#/, "") || "/";
  const parts = path.split("/").filter(Boolean);
  const arg = (i) => {
    try {
      return decodeURIComponent(parts[i] ?? "");
    } catch {
      return parts[i] ?? "";
    }
  };
  if (parts.length === 0) return { page: loginPage, params: {} };
  if (parts[0] === "targets" && parts.length === 1) return { page: targetsPage, params: {} };
  if (parts[0] === "ssh" && parts.length === 2) return { page: terminalPage, params: { target: arg(1) } };
  if (parts[0] === "rdp" && parts.length === 2) return { page: rdpPage, params: { target: arg(1) } };
  if (parts[0] === "recordings" && parts.length === 1) return { page: recordingsPage, params: {} };
  if (parts[0] === "replay" && parts.length === 2) return { page: replayPage, params: { session: arg(1) } };
  if (parts[0] === "device" && parts.length <= 2) return { page: devicePage, params: { code: arg(1) } };
  if (parts[0] === "security" && parts.length === 1) return { page: securityPage, params: {} };
  if (parts[0] === "sessions" && parts.length === 1) return { page: sessionsPage, params: {} };
  if (parts[0] === "audit" && parts.length === 1) return { page: auditPage, params: {} };
  if (parts[0] === "links" && parts.length === 1) return { page: linksPage, params: {} };
  if (parts[0] === "watch" && parts.length === 2) return { page: watchPage, params: { session: arg(1) } };
  if (parts[0] === "link" && parts.length === 2) return { page: linkOpenPage, params: { link: arg(1) } };
  return null;
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  window.portcullis.term = null;
  window.portcullis.rdp = null;
  const gen = ++generation;
  const match = parse(location.hash);
  if (!match) {
    location.replace("#/targets");
    return;
  }
  document.body.dataset.page = match.page.id;
  document.title = match.page.title(match.params);
  app.replaceChildren();
  const result = match.page.mount(app, ctx, match.params, gen);
  cleanup = typeof result === "function" ? result : null;
}

window.addEventListener("hashchange", route);
route();
