// latchkey's OAuth endpoints as a Node client sees them: openid-client
// (v6) discovers the server by its RFC 8414 metadata and does the talking;
// jose verifies the access tokens offline against the published JWKS.
//
// Run by tests/oauth_token.rs with the server and the clients it
// registered in the environment:
//
//   LATCHKEY_ISSUER                          the server's public URL
//   BASIC_CLIENT_ID / BASIC_CLIENT_SECRET    a client_secret_basic client
//   POST_CLIENT_ID / POST_CLIENT_SECRET      a client_secret_post client
//   PKJWT_CLIENT_ID / PKJWT_KID / PKJWT_PRIVATE_KEY_PEM
//                                            a private_key_jwt client (EC P-256)
//
// It prints one JSON document of what it saw (never a secret or a token)
// and exits non-zero when a library threw.

import * as client from 'openid-client';
import * as jose from 'jose';

const issuer = new URL(process.env.LATCHKEY_ISSUER);
const options = { algorithm: 'oauth2', execute: [client.allowInsecureRequests] };

async function discover(clientId, auth) {
  return client.discovery(issuer, clientId, undefined, auth, options);
}

async function verifyOffline(config, accessToken, clientId) {
  const meta = config.serverMetadata();
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(accessToken, jwks, {
    issuer: meta.issuer,
    audience: meta.issuer,
    subject: clientId,
    typ: 'at+jwt',
    algorithms: ['EdDSA', 'ES256', 'RS256'],
    requiredClaims: ['exp', 'iat', 'jti', 'client_id', 'scope'],
  });
  return {
    alg: protectedHeader.alg,
    typ: protectedHeader.typ,
    iss: payload.iss,
    aud: payload.aud,
    sub: payload.sub,
    client_id: payload.client_id,
    scope: payload.scope,
    org_id: payload.org_id,
    lifetime: payload.exp - payload.iat,
    jti: payload.jti,
  };
}

// client_credentials, offline verification, introspection, revocation.
async function run(clientId, auth) {
  const config = await discover(clientId, auth);
  const tokens = await client.clientCredentialsGrant(config, { scope: 'documents.read' });
  const { access_token, ...fields } = tokens;
  const claims = await verifyOffline(config, access_token, clientId);
  const before = await client.tokenIntrospection(config, access_token);
  await client.tokenRevocation(config, access_token, { token_type_hint: 'access_token' });
  const after = await client.tokenIntrospection(config, access_token);
  const { jti, ...shown } = claims;
  return {
    token: { token_type: fields.token_type, expires_in: fields.expires_in, scope: fields.scope },
    claims: shown,
    introspection: {
      active: before.active,
      client_id: before.client_id,
      sub: before.sub,
      scope: before.scope,
      token_type: before.token_type,
      iss: before.iss,
      aud: before.aud,
    },
    introspection_jti_matches: before.jti === jti,
    after_revoke: after,
  };
}

async function main() {
  const out = {};
  const basicId = process.env.BASIC_CLIENT_ID;
  out.basic = await run(basicId, client.ClientSecretBasic(process.env.BASIC_CLIENT_SECRET));
  out.metadata_issuer = (await discover(basicId, client.None())).serverMetadata().issuer;
  out.post = await run(
    process.env.POST_CLIENT_ID,
    client.ClientSecretPost(process.env.POST_CLIENT_SECRET),
  );

  const key = await jose.importPKCS8(process.env.PKJWT_PRIVATE_KEY_PEM, 'ES256');
  out.pkjwt = await run(
    process.env.PKJWT_CLIENT_ID,
    client.PrivateKeyJwt({ key, kid: process.env.PKJWT_KID }),
  );

  // A wrong secret. A 401 that challenges (RFC 6749 §5.2: Basic was
  // tried, so Basic is challenged) is thrown as the challenge, the RFC
  // 6749 error body left on the response.
  try {
    const config = await discover(basicId, client.ClientSecretBasic('lk_cs_wrong'));
    await client.clientCredentialsGrant(config);
    out.wrong_secret = null;
  } catch (e) {
    if (!(e instanceof client.WWWAuthenticateChallengeError)) throw e;
    const body = await e.response.json();
    out.wrong_secret = {
      status: e.status,
      challenge_scheme: e.cause[0]?.scheme,
      challenge_realm: e.cause[0]?.parameters?.realm,
      error: body.error,
    };
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
