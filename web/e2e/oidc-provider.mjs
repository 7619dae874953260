// A real OpenID provider for the single sign-on tests: `oidc-provider` (an OpenID Certified
// server implementation) over HTTPS on loopback, with one client (the gateway) and accounts whose
// `preferred_username` is their login and whose groups come from the settings. Its own
// development login page takes any login and password; the browser script signs in there.
//
// OIDC_CONFIG (JSON): {port, cert, key (PEM paths), client_id, client_secret, redirect_uri,
//                      groups: {login: [group, …]}}
// Prints {"listening": "https://127.0.0.1:PORT"} on stdout once it accepts connections.
import fs from "node:fs";
import https from "node:https";
import Provider from "oidc-provider";

const c = JSON.parse(process.env.OIDC_CONFIG);
const issuer = `https://127.0.0.1:${c.port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: [c.redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, groups: c.groups[id] || [] };
      },
    };
  },
  claims: { openid: ["sub"], profile: ["preferred_username"], groups: ["groups"] },
  scopes: ["openid", "profile", "groups"],
  // The claims go into the ID token (the gateway reads no userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["portcullis-test-cookie-key"] },
  // Consent is implied for this first-party client.
  loadExistingGrant: async (ctx) => {
    const grant = new provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid profile groups");
    await grant.save();
    return grant;
  },
});
provider.on("server_error", (_ctx, err) => console.error("provider error:", err));
const server = https.createServer({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) }, provider.callback());
server.listen(c.port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ listening: issuer }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
