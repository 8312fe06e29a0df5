import { test } from 'node:test';
import assert from 'node:assert/strict';

import { EdgeClient, memoryStore } from '../edge-client.mjs';

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });

function fakeEdge({ expiresIn = 900 } = {}) {
  const calls = [];
  let counter = 0;
  const issued = () => {
    counter += 1;
    return { device_id: 'dev-1', user: 'anna', access_token: `access-${counter}`, refresh_token: `dev-1.r${counter}`,
      expires_at: Math.floor(Date.now() / 1000) + expiresIn };
  };
  const edge = {
    calls,
    respond: null,
    async fetch(url, init = {}) {
      const path = new URL(url).pathname;
      const auth = init.headers ? new Headers(init.headers).get('Authorization') : null;
      calls.push({ path, auth, method: init.method || 'GET' });
      if (path === '/sync/_enrol') return json(201, issued());
      if (path === '/sync/_token') return json(200, issued());
      return edge.respond ? edge.respond(path, auth) : json(200, { ok: true });
    },
  };
  return edge;
}

test('enrols, attaches the bearer token and records the contact', async () => {
  const edge = fakeEdge();
  const client = new EdgeClient({ url: 'http://edge.test/', fetch: edge.fetch });
  const result = await client.enrol({ user: 'anna', password: 'pw' }, { name: 'phone', platform: 'android' });
  assert.deepEqual(result, { device_id: 'dev-1', user: 'anna' });
  const response = await client.fetch('http://edge.test/sync/');
  assert.equal(response.status, 200);
  assert.equal(edge.calls.at(-1).auth, 'Bearer access-1');
  assert.equal(client.state, 'active');
  assert.ok(client.lastContactAt > 0);
});

test('an expired access token is refreshed once, even by concurrent requests', async () => {
  const edge = fakeEdge();
  const client = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch });
  await client.enrol({ code: 'ABCDE-FGHIJ' });
  edge.respond = (path, auth) =>
    auth === 'Bearer access-1' ? json(401, { error: 'unauthorized', code: 'token_expired' }) : json(200, { ok: true });
  const responses = await Promise.all([1, 2, 3].map(() => client.fetch('http://edge.test/sync/_changes')));
  assert.deepEqual(responses.map((r) => r.status), [200, 200, 200]);
  assert.equal(edge.calls.filter((c) => c.path === '/sync/_token').length, 1);
  assert.equal(client.session.refresh_token, 'dev-1.r2');
});

test('a token close to its expiry is refreshed before the request', async () => {
  const edge = fakeEdge({ expiresIn: 10 });
  const client = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch, refreshSkewMs: 30000 });
  await client.enrol({ user: 'anna', password: 'pw' });
  await client.fetch('http://edge.test/sync/');
  assert.equal(edge.calls.at(-2).path, '/sync/_token');
  assert.equal(edge.calls.at(-1).auth, 'Bearer access-2');
});

test('device_revoked stops the client: no further request reaches the edge', async () => {
  const edge = fakeEdge();
  const client = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch });
  await client.enrol({ user: 'anna', password: 'pw' });
  const seen = [];
  client.on('revoked', (code) => seen.push(code));
  edge.respond = () => json(401, { error: 'unauthorized', reason: 'revoked', code: 'device_revoked' });
  assert.equal((await client.fetch('http://edge.test/sync/_changes')).status, 401);
  const before = edge.calls.length;
  const again = await client.fetch('http://edge.test/sync/_changes');
  assert.equal(again.status, 401);
  assert.equal((await again.json()).code, 'device_revoked');
  assert.equal(edge.calls.length, before);
  assert.deepEqual(seen, ['device_revoked']);
  assert.equal(client.state, 'revoked');
});

test('wipe_required is reported once with its mode, from a refusal or from the header on uploads', async () => {
  const edge = fakeEdge();
  const client = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch });
  await client.enrol({ user: 'anna', password: 'pw' });
  const modes = [];
  client.on('wipe_required', (mode) => modes.push(mode));
  edge.respond = () => json(200, {}, { 'X-Sync-Wipe-Required': 'push_then_wipe' });
  await client.fetch('http://edge.test/sync/_revs_diff', { method: 'POST', body: '{}' });
  edge.respond = () => json(401, { error: 'unauthorized', code: 'wipe_required', mode: 'push_then_wipe' });
  await client.fetch('http://edge.test/sync/_changes');
  assert.deepEqual(modes, ['push_then_wipe']);
  edge.respond = () => json(200, { ok: true, device_id: 'dev-1', wiped_at: 'now' });
  await client.confirmWipe();
  assert.equal(client.state, 'wiped');
  assert.equal(client.session, null);
});

test('a saved session survives a restart through the store', async () => {
  const edge = fakeEdge();
  const store = memoryStore();
  const first = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch, store });
  await first.enrol({ user: 'anna', password: 'pw' });
  const second = await new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch, store }).load();
  assert.equal(second.deviceId, 'dev-1');
  assert.equal(second.state, 'active');
  await second.fetch('http://edge.test/sync/');
  assert.equal(edge.calls.at(-1).auth, 'Bearer access-1');
});

test('a token the gateway no longer accepts is refreshed; a refused refresh stops the device', async () => {
  const edge = fakeEdge();
  const client = new EdgeClient({ url: 'http://edge.test', fetch: edge.fetch });
  await client.enrol({ user: 'anna', password: 'pw' });
  edge.respond = (path, auth) =>
    auth === 'Bearer access-1' ? json(401, { error: 'unauthorized', code: 'token_invalid' }) : json(200, { ok: true });
  assert.equal((await client.fetch('http://edge.test/sync/')).status, 200);
  assert.equal(edge.calls.filter((c) => c.path === '/sync/_token').length, 1);
  const original = edge.fetch;
  edge.fetch = async (url, init) =>
    new URL(url).pathname === '/sync/_token' ? json(401, { error: 'unauthorized', code: 'refresh_token_reused' })
      : original(url, init);
  const stopped = new EdgeClient({ url: 'http://edge.test', fetch: (u, i) => edge.fetch(u, i) });
  await stopped.enrol({ user: 'anna', password: 'pw' });
  edge.respond = () => json(401, { error: 'unauthorized', code: 'token_expired' });
  assert.equal((await stopped.fetch('http://edge.test/sync/')).status, 401);
  assert.equal(stopped.state, 'revoked');
  assert.equal(stopped.stopCode, 'refresh_token_reused');
});

test('enrols with an OIDC ID token: the token goes as id_token, a refusal keeps the device unenrolled', async () => {
  const bodies = [];
  let answer = json(201, { device_id: 'dev-7', user: 'olga', access_token: 'access-1', refresh_token: 'dev-7.r1',
    expires_at: Math.floor(Date.now() / 1000) + 900 });
  const fetchFn = async (url, init = {}) => {
    bodies.push({ path: new URL(url).pathname, body: JSON.parse(init.body) });
    return answer;
  };
  const refused = new EdgeClient({ url: 'http://edge.test', fetch: fetchFn });
  const saved = answer;
  answer = json(401, { error: 'unauthorized', reason: 'the ID token has expired', code: 'oidc_token_expired' });
  await assert.rejects(refused.enrol({ idToken: 'old.id.token' }), (err) => err.code === 'oidc_token_expired');
  assert.equal(refused.state, 'unenrolled');
  assert.equal(refused.session, null);

  answer = saved;
  const client = new EdgeClient({ url: 'http://edge.test', fetch: fetchFn });
  const result = await client.enrol({ idToken: 'header.claims.signature' }, { name: 'Olga phone', platform: 'ios' });
  assert.deepEqual(result, { device_id: 'dev-7', user: 'olga' });
  assert.equal(client.state, 'active');
  assert.deepEqual(bodies.at(-1), { path: '/sync/_enrol', body: { device_name: 'Olga phone', platform: 'ios',
    app_version: '', id_token: 'header.claims.signature' } });
  assert.ok(!('password' in bodies.at(-1).body) && !('user' in bodies.at(-1).body));
});
