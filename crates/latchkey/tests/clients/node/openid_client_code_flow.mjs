// latchkey's authorization code flow as a Node web app sees it:
// openid-client (v6) discovers the server, builds the authorization URL
// (PKCE S256, state), and after the script has played the user's browser
// with fetch (keeping the cookies itself), exchanges the code (checking
// RFC 9207 `iss` and `state` itself), refreshes (rotation), introspects
// and revokes; jose verifies the access tokens offline against the JWKS.
//
// Run by tests/oauth_flow.rs with, in the environment:
//
//   LATCHKEY_ISSUER                        the server's public URL
//   FLOW_CLIENT_ID / FLOW_CLIENT_SECRET    a client_secret_basic client
//   FLOW_REDIRECT_URI                      its redirect URI
//   FLOW_EMAIL / FLOW_PASSWORD             the user who signs in
//
// It prints one JSON document of what it saw (never a secret or a token)
// and exits non-zero when a library threw.

import * as client from 'openid-client';
import * as jose from 'jose';

const issuer = new URL(process.env.LATCHKEY_ISSUER);
const clientId = process.env.FLOW_CLIENT_ID;
const redirectUri = process.env.FLOW_REDIRECT_URI;
const scope = 'documents.read profile offline_access';

// A browser: a cookie jar, no redirect followed.
const jar = new Map();
async function browse(url, init = {}) {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return res;
}

function unescape(s) {
  return s
    .replace(/&#(\d+);/g, (_, d) => String.fromCharCode(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// The first form of a page: its action (absolute) and its hidden fields.
function formOf(html, base) {
  const form = html.match(/<form[^>]*action="([^"]*)"/);
  if (!form) throw new Error('no form on the page');
  const fields = new URLSearchParams();
  for (const m of html.matchAll(/<input[^>]*>/g)) {
    const tag = m[0];
    const name = tag.match(/name="([^"]*)"/);
    const value = tag.match(/value="([^"]*)"/);
    if (name && /type="hidden"/.test(tag)) fields.set(unescape(name[1]), unescape(value ? value[1] : ''));
  }
  return { action: new URL(unescape(form[1]), base), fields };
}

async function signInAndAllow(url) {
  let res = await browse(url);
  if (res.status !== 200) throw new Error(`the sign-in page answered ${res.status}`);
  let { action, fields } = formOf(await res.text(), url);
  fields.set('email', process.env.FLOW_EMAIL);
  fields.set('password', process.env.FLOW_PASSWORD);
  res = await browse(action, { method: 'POST', body: fields });
  if (res.status === 200) {
    ({ action, fields } = formOf(await res.text(), url));
    fields.set('decision', 'allow');
    res = await browse(action, { method: 'POST', body: fields });
  }
  if (res.status !== 303) throw new Error(`expected a redirect, got ${res.status}`);
  return new URL(res.headers.get('location'));
}

async function verifyOffline(config, accessToken) {
  const meta = config.serverMetadata();
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(accessToken, jwks, {
    issuer: meta.issuer,
    audience: meta.issuer,
    typ: 'at+jwt',
    algorithms: ['EdDSA', 'ES256', 'RS256'],
    requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id', 'scope'],
  });
  const { iss, aud, sub, client_id, scope, org_id, gid } = payload;
  return { alg: protectedHeader.alg, typ: protectedHeader.typ, iss, aud, sub, client_id, scope, org_id, gid };
}

async function main() {
  const config = await client.discovery(
    issuer,
    clientId,
    undefined,
    client.ClientSecretBasic(process.env.FLOW_CLIENT_SECRET),
    { algorithm: 'oauth2', execute: [client.allowInsecureRequests] },
  );
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
  });
  const currentUrl = await signInAndAllow(url);
  if (`${currentUrl.origin}${currentUrl.pathname}` !== redirectUri) {
    throw new Error('the redirect is not to the client redirect URI');
  }
  const out = {
    state_matches: currentUrl.searchParams.get('state') === expectedState,
    iss: currentUrl.searchParams.get('iss'),
  };

  const tokens = await client.authorizationCodeGrant(config, currentUrl, {
    pkceCodeVerifier,
    expectedState,
  });
  out.token = {
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    scope: tokens.scope,
    has_refresh_token: Boolean(tokens.refresh_token),
  };
  out.claims = await verifyOffline(config, tokens.access_token);

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  out.refresh_rotated =
    Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token;
  out.refreshed_claims = await verifyOffline(config, refreshed.access_token);

  const i = await client.tokenIntrospection(config, refreshed.access_token);
  out.introspection = {
    active: i.active,
    client_id: i.client_id,
    sub: i.sub,
    scope: i.scope,
    iss: i.iss,
    aud: i.aud,
  };
  await client.tokenRevocation(config, refreshed.refresh_token, {
    token_type_hint: 'refresh_token',
  });
  out.after_revoke = await client.tokenIntrospection(config, refreshed.refresh_token);
  // Revoking the refresh token revoked its grant: the access token too.
  out.access_after_revoke = await client.tokenIntrospection(config, refreshed.access_token);
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
