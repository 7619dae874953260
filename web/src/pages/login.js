// #/ : sign in with user + password, or with a control-plane token (JWT).
import * as api from "../api.js";
import * as webauthn from "../webauthn.js";
import { h } from "../dom.js";

export const loginPage = {
  id: "login",
  title: () => "Sign in · Portcullis",
  mount(app, ctx, _params, gen) {
    ctx.hideTopbar();
    const error = h("p", { id: "login-error", class: "error", role: "alert", hidden: true });
    const notice = h("p", { id: "login-notice", class: "notice", role: "status", hidden: !ctx.notice }, ctx.notice || "");
    ctx.notice = null;
    let lockTimer = null;

    const user = h("input", { id: "login-user", name: "username", type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true });
    const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
    const submit = h("button", { id: "login-submit", type: "submit", class: "primary" }, "Sign in");
    const token = h("textarea", { id: "login-token", name: "token", rows: 4, autocomplete: "off", spellcheck: "false", required: true, placeholder: "eyJhbGciOiJFZERTQSIs…" });
    const tokenSubmit = h("button", { id: "login-token-submit", type: "submit", class: "primary" }, "Sign in with token");

    const showError = (msg) => {
      error.textContent = msg;
      error.hidden = !msg;
      if (msg) notice.hidden = true;
    };

    const busy = (on) => {
      for (const el of [user, password, submit, token, tokenSubmit]) el.disabled = on;
    };

    async function attempt(fn, retryField) {
      showError("");
      busy(true);
      try {
        // `false`: another step is shown (the second factor), not signed in yet.
        if ((await fn()) === false) return;
        if (!ctx.current(gen)) return;
        const next = ctx.returnTo && ctx.returnTo !== "#/" ? ctx.returnTo : "#/targets";
        ctx.returnTo = null;
        ctx.navigate(next);
      } catch (e) {
        if (!ctx.current(gen)) return;
        busy(false);
        showError(e.message || "sign-in failed");
        const wait = e.body && Number.isFinite(e.body.retry_after) ? Math.ceil(e.body.retry_after) : 0;
        if (e.status === 429 && wait > 0) lockFor(wait);
        else if (e.status === 401) {
          retryField.value = "";
          retryField.focus();
        }
      }
    }

    // After a 429 the buttons stay disabled for `retry_after` seconds, with a countdown.
    function lockFor(seconds) {
      clearInterval(lockTimer);
      const until = Date.now() + seconds * 1000;
      const label = submit.textContent;
      const tokenLabel = tokenSubmit.textContent;
      const update = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        if (left <= 0 || !ctx.current(gen)) {
          clearInterval(lockTimer);
          submit.disabled = tokenSubmit.disabled = false;
          submit.textContent = label;
          tokenSubmit.textContent = tokenLabel;
          return;
        }
        submit.disabled = tokenSubmit.disabled = true;
        submit.textContent = `${label} (wait ${left} s)`;
        tokenSubmit.textContent = `${tokenLabel} (wait ${left} s)`;
      };
      update();
      lockTimer = setInterval(update, 1000);
    }

    const form = h(
      "form",
      {
        id: "login-form",
        onsubmit: (ev) => {
          ev.preventDefault();
          attempt(async () => {
            const r = await api.login(user.value.trim(), password.value);
            if (r && typeof r.pending === "string") {
              showCodeStep(r.pending, Array.isArray(r.methods) ? r.methods : [r.mfa]);
              return false;
            }
            return true;
          }, password);
        },
      },
      h("label", { for: "login-user" }, "User"),
      user,
      h("label", { for: "login-password" }, "Password"),
      password,
      submit,
    );

    // The second step: a code from the authenticator app, or a recovery code.
    const code = h("input", { id: "login-code", name: "code", type: "text", inputmode: "numeric", autocomplete: "one-time-code", spellcheck: "false", required: true });
    const codeSubmit = h("button", { id: "login-code-submit", type: "submit", class: "primary" }, "Verify");
    let pendingToken = null;
    const codeForm = h(
      "form",
      {
        id: "login-code-form",
        hidden: true,
        onsubmit: (ev) => {
          ev.preventDefault();
          showError("");
          codeSubmit.disabled = code.disabled = true;
          attempt(() => api.loginCode(pendingToken, code.value.trim()), code).finally(() => {
            codeSubmit.disabled = code.disabled = false;
          });
        },
      },
      h("label", { for: "login-code" }, "Code from your authenticator app (or a recovery code)"),
      code,
      codeSubmit,
    );
    // A passkey or security key, when one is enrolled.
    const passkey = h("button", { id: "login-passkey", type: "button", class: "primary", hidden: true }, "Use your passkey or security key");
    passkey.addEventListener("click", () => {
      passkey.disabled = true;
      attempt(async () => {
        const options = await api.loginPasskeyBegin(pendingToken);
        const answer = await webauthn.get(options).catch((e) => {
          throw new Error(`the authenticator did not answer (${e.name || e.message})`);
        });
        await api.loginPasskey(pendingToken, answer);
        return true;
      }, code).finally(() => {
        passkey.disabled = false;
      });
    });
    function showCodeStep(pending, methods) {
      pendingToken = pending;
      busy(false);
      form.hidden = true;
      codeForm.hidden = false;
      passkey.hidden = !methods.includes("webauthn");
      // Without a TOTP app, the code field still takes a recovery code.
      code.value = "";
      if (methods.includes("webauthn")) passkey.focus();
      else code.focus();
    }

    const tokenForm = h(
      "form",
      {
        id: "login-token-form",
        onsubmit: (ev) => {
          ev.preventDefault();
          attempt(() => api.loginWithToken(token.value.trim()), token);
        },
      },
      h("label", { for: "login-token" }, "Token from your control plane"),
      token,
      tokenSubmit,
    );

    // Single sign-on: one button per provider (a full-page redirect to it and back).
    const sso = h("div", { id: "login-sso", class: "sso", hidden: true });
    api.oidcProviders().then((providers) => {
      if (!ctx.current(gen) || !providers.length) return;
      sso.replaceChildren(
        ...providers.map((p) =>
          h(
            "button",
            { type: "button", class: "sso-button", id: `oidc-${p.id}`, onclick: () => (location.href = `/api/oidc/${encodeURIComponent(p.id)}/start`) },
            `Sign in with ${p.name}`,
          ),
        ),
        h("p", { class: "muted" }, "or with a local account:"),
      );
      sso.hidden = false;
    });

    app.append(
      h(
        "section",
        { class: "card login", "aria-labelledby": "login-title" },
        h("h1", { id: "login-title" }, "Portcullis"),
        h("p", { class: "muted" }, "Sign in to reach your servers."),
        notice,
        error,
        sso,
        form,
        passkey,
        codeForm,
        h("details", { id: "login-token-details" }, h("summary", {}, "Sign in with a token"), tokenForm),
      ),
    );
    user.focus();

    // Already signed in (a valid cookie): go straight on.
    api
      .session()
      .then(() => {
        if (ctx.current(gen) && !user.value && !password.value) {
          const next = ctx.returnTo && ctx.returnTo !== "#/" ? ctx.returnTo : "#/targets";
          ctx.returnTo = null;
          ctx.navigate(next);
        }
      })
      .catch(() => {});

    return () => clearInterval(lockTimer);
  },
};
