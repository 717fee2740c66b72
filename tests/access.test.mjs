// Access control over the wire (issue 14): JWT connection tokens with real socket.io clients
// (2.x with ?token=, 4.x with auth {token}), the rooms and names their claims allow, the
// origin allowlist on raw polling requests and WebSocket upgrades, the admin token rules,
// and TURN credentials checked by a real coturn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { io as ioV4 } from 'socket.io-client';
import WebSocket from 'ws';
import { startGateway, BIN, ROOT } from './lib/gateway.mjs';
import { metricValue, withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const next = (s, event, ms = 5000) => withTimeout(new Promise((resolve) => s.once(event, resolve)), ms, event);

const SECRET = 'test-signing-key';
const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT, signed here with node's crypto (no JWT library on the client side). */
export function jwt(claims, key = SECRET) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = crypto.createHmac('sha256', key).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);

const TOKEN_SETS = [
  `webrtcroom.token.secret=${SECRET}`, 'webrtcroom.token.required=true',
  `chatroom.token.secret=${SECRET}`, 'chatroom.token.required=true',
];

/** Connects a socket.io 2.x client; resolves 'connected' or the refusal's message. */
function v2Outcome(url, query) {
  const s = ioV2(url, { forceNew: true, reconnection: false, transports: ['websocket'], query });
  return withTimeout(new Promise((resolve) => {
    s.once('connect', () => resolve({ s, outcome: 'connected' }));
    s.once('error', (e) => { s.close(); resolve({ s, outcome: String(e?.message ?? e) }); });
    s.once('connect_error', (e) => { s.close(); resolve({ s, outcome: `connect_error ${e?.message ?? e}` }); });
  }), 8000, 'v2 connect outcome');
}

/** Connects a socket.io-client 4.x client with `auth`; resolves 'connected' or the message. */
function v4Outcome(url, auth, transports = ['websocket']) {
  const s = ioV4(url, { forceNew: true, reconnection: false, transports, auth });
  return withTimeout(new Promise((resolve) => {
    s.once('connect', () => resolve({ s, outcome: 'connected' }));
    s.once('connect_error', (e) => { s.close(); resolve({ s, outcome: String(e?.message ?? e) }); });
  }), 8000, 'v4 connect outcome');
}

test('tokens: socket.io 2.x (?token=) and 4.x (auth {token}) are refused with a message saying why', { timeout: 60_000 }, async () => {
  const gw = await startGateway({ sets: TOKEN_SETS });
  try {
    const cases = [
      ['valid', jwt({ exp: now() + 600, room: 'r' }), /^connected$/],
      ['missing', undefined, /token missing/],
      ['malformed', 'not.a.jwt', /token malformed/],
      ['expired', jwt({ exp: now() - 3600 }), /token expired/],
      ['wrong signature', jwt({ exp: now() + 600 }, 'another-key'), /token signature invalid/],
    ];
    for (const [what, token, expected] of cases) {
      const v2 = await v2Outcome(gw.urls.webrtcroom, token === undefined ? undefined : { token });
      assert.match(v2.outcome, expected, `webrtcroom 2.x, ${what}`);
      v2.s.close();
      const v4 = await v4Outcome(gw.urls.chatroom, token === undefined ? undefined : { token });
      assert.match(v4.outcome, expected, `chatroom 4.x, ${what}`);
      v4.s.close();
      assert.ok(!v2.outcome.includes(SECRET) && !v4.outcome.includes(SECRET), 'the key is never echoed');
    }
    const m = await gw.metrics();
    for (const reason of ['token_missing', 'token_malformed', 'token_expired', 'token_bad_signature']) {
      assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason }), 1, `chatroom ${reason}`);
      assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason }), 1, `webrtcroom ${reason}`);
    }
    const text = await (await fetch(`${gw.urls.admin}/metrics`)).text();
    assert.ok(!text.includes('eyJ'), 'no token in metrics');
    assert.ok(!gw.stderr().includes('eyJ'), 'no token in logs');
  } finally {
    await gw.stop();
  }
});

test('tokens: claims restrict joins: chatroom answers error {type:"forbidden"}, WebRtcRoom stays silent', { timeout: 60_000 }, async () => {
  const gw = await startGateway({ sets: [...TOKEN_SETS, 'log.level=info'] });
  try {
    // chatroom 4.x: token for room "allowed" as "ann".
    const { s: c, outcome } = await v4Outcome(gw.urls.chatroom, { token: jwt({ room: ['allowed', 'other'], name: 'ann', sub: 'u-ann' }) });
    assert.equal(outcome, 'connected');
    let error = next(c, 'error');
    c.emit('join', { id: 'ann-id', username: 'ann', roomname: 'elsewhere' });
    assert.deepEqual(await error, { type: 'forbidden', message: 'your token does not allow this room' });
    error = next(c, 'error');
    c.emit('join', { id: 'ann-id', username: 'bob', roomname: 'allowed' });
    assert.deepEqual(await error, { type: 'forbidden', message: 'your token does not allow this name' });
    // Within the claims the join works: a second member makes the first one get getOffer.
    c.emit('join', { id: 'ann-id', username: 'ann', roomname: 'allowed' });
    const { s: c2 } = await v4Outcome(gw.urls.chatroom, { token: jwt({ room: 'allowed' }) });
    const getOffer = next(c, 'getOffer');
    c2.emit('join', { id: 'c2-id', username: 'zed', roomname: 'allowed' });
    await getOffer;

    // WebRtcRoom 2.x, with the token in the query string.
    const { s: w, outcome: wOutcome } = await v2Outcome(gw.urls.webrtcroom, { token: jwt({ room: 'ok' }) });
    assert.equal(wOutcome, 'connected');
    const seen = [];
    w.on('created', (d) => seen.push(['created', d]));
    w.on('joined', (d) => seen.push(['joined', d]));
    w.emit('createAndJoinRoom', { room: 'forbidden-room' });
    await sleep(500);
    assert.deepEqual(seen, [], 'nothing on the wire for a refused join');
    const created = next(w, 'created');
    w.emit('createAndJoinRoom', { room: 'ok' });
    await created;

    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason: 'token_room' }), 1);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'token_room' }), 1);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'token_name' }), 1);
    const rooms = await (await fetch(`${gw.urls.admin}/api/rooms`)).text();
    assert.ok(!rooms.includes('eyJ'), 'no token in the rooms API');
    assert.ok(!gw.stderr().includes('eyJ'), 'no token in logs');
    for (const s of [c, c2, w]) s.close();
  } finally {
    await gw.stop();
  }
});

test('tokens: even at log.level=debug no token reaches the logs', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: [...TOKEN_SETS, 'log.level=debug'] });
  try {
    const v4 = await v4Outcome(gw.urls.chatroom, { token: jwt({ room: 'r' }) });
    assert.equal(v4.outcome, 'connected');
    const v2 = await v2Outcome(gw.urls.webrtcroom, { token: jwt({ room: 'r' }) });
    assert.equal(v2.outcome, 'connected');
    const refused = await v4Outcome(gw.urls.chatroom, { token: jwt({}, 'bad') });
    assert.match(refused.outcome, /signature/);
    v4.s.close(); v2.s.close();
    await sleep(300);
    assert.ok(gw.stderr().length > 0, 'debug logging is on');
    assert.ok(!gw.stderr().includes('eyJ'), 'a token was logged');
  } finally {
    await gw.stop();
  }
});

test('tokens: socket.io 2.x on a non-root namespace sends ?token= in the handshake; it is checked there', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: [...TOKEN_SETS, 'webrtcroom.namespace=/rooms'] });
  try {
    const url = `${gw.urls.webrtcroom}/rooms`;
    for (const transports of [['websocket'], ['polling']]) {
      const ok = ioV2(url, { forceNew: true, reconnection: false, transports, query: { token: jwt({ room: 'r' }) } });
      await next(ok, 'connect', 8000);
      const created = next(ok, 'created');
      ok.emit('createAndJoinRoom', { room: 'r' });
      await created; // the join within the token's room claim goes through
      ok.close();
      const bad = await v2Outcome(url, { token: jwt({}, 'wrong') });
      assert.match(bad.outcome, /token signature invalid/, transports[0]);
    }
  } finally {
    await gw.stop();
  }
});

test('tokens: a chatroom reconnect into a room outside the new connection\'s claims is refused', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: TOKEN_SETS });
  try {
    const { s: a } = await v4Outcome(gw.urls.chatroom, { token: jwt({ room: 'a' }) });
    a.emit('join', { id: 'ua', username: 'ann', roomname: 'a' });
    const { s: b } = await v4Outcome(gw.urls.chatroom, { token: jwt({ room: 'b' }) });
    const error = next(b, 'error');
    b.emit('reconnect', { id: 'ua', username: 'ann', roomname: 'a' });
    assert.deepEqual(await error, { type: 'forbidden', message: 'your token does not allow this room' });
    a.close(); b.close();
  } finally {
    await gw.stop();
  }
});

test('tokens: with a key but required=false, tokenless clients connect unrestricted and bad tokens are still refused', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: [`chatroom.token.secret=${SECRET}`] });
  try {
    const plain = await v4Outcome(gw.urls.chatroom, undefined, ['polling']);
    assert.equal(plain.outcome, 'connected');
    plain.s.close();
    const bad = await v4Outcome(gw.urls.chatroom, { token: jwt({}, 'nope') }, ['polling']);
    assert.match(bad.outcome, /token signature invalid/);
  } finally {
    await gw.stop();
  }
});

/** One raw HTTP request to the gateway; resolves {status, headers}. */
async function httpGet(base, pathAndQuery, headers = {}) {
  const res = await fetch(new URL(pathAndQuery, base), { headers });
  await res.arrayBuffer();
  return { status: res.status, headers: res.headers };
}

/** A raw WebSocket upgrade; resolves 'open' or the refusal's HTTP status. */
function wsOutcome(base, query, origin) {
  const url = new URL(`/socket.io/?${query}`, base);
  url.protocol = 'ws:';
  const ws = new WebSocket(url, { origin, headers: origin ? {} : undefined });
  return withTimeout(new Promise((resolve) => {
    ws.on('open', () => { ws.close(); resolve('open'); });
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode); ws.terminate(); });
    ws.on('error', () => resolve('error'));
  }), 5000, 'websocket outcome');
}

test('origins: polling and WebSocket from an unlisted origin get 403; listed, same-site and native pass; CORS echoes only allowed origins', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: ['webrtcroom.allowed_origins=["https://*.example.com"]', 'chatroom.allowed_origins=["http://app.test:8080"]'] });
  try {
    const v3 = '/socket.io/?EIO=3&transport=polling';
    const v4 = '/socket.io/?EIO=4&transport=polling';
    const w = gw.urls.webrtcroom; const c = gw.urls.chatroom;
    assert.equal((await httpGet(w, v3, { Origin: 'https://evil.test' })).status, 403);
    assert.equal((await httpGet(c, v4, { Origin: 'https://evil.test' })).status, 403);
    assert.equal((await httpGet(w, v3, { Origin: 'https://example.com' })).status, 403, 'bare domain is not *.example.com');
    const ok = await httpGet(w, v3, { Origin: 'https://app.example.com' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example.com');
    const okc = await httpGet(c, v4, { Origin: 'http://app.test:8080' });
    assert.equal(okc.status, 200);
    assert.equal(okc.headers.get('access-control-allow-origin'), 'http://app.test:8080');
    assert.equal((await httpGet(c, v4)).status, 200, 'no Origin (a native app) passes');
    const host = new URL(c).host;
    assert.equal((await httpGet(c, v4, { Origin: `http://${host}` })).status, 200, 'a page served by the listener itself passes');
    // CORS preflight from an unlisted origin: no allow-origin header.
    const pre = await fetch(new URL('/checkUsername?username=x&roomname=y', c), { headers: { Origin: 'https://evil.test' } });
    assert.equal(pre.headers.get('access-control-allow-origin'), null);

    assert.equal(await wsOutcome(w, 'EIO=3&transport=websocket', 'https://evil.test'), 403);
    assert.equal(await wsOutcome(c, 'EIO=4&transport=websocket', 'https://evil.test'), 403);
    assert.equal(await wsOutcome(w, 'EIO=3&transport=websocket', 'https://a.example.com'), 'open');
    assert.equal(await wsOutcome(c, 'EIO=4&transport=websocket', undefined), 'open');

    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason: 'origin_not_allowed' }), 3);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'origin_not_allowed' }), 2);
    const logged = gw.stderr().split('\n').filter((l) => l.includes('origin') && l.includes('evil.test') && l.includes('chatroom'));
    assert.equal(logged.length, 1, `one log line per origin per minute:\n${logged.join('\n')}`);
  } finally {
    await gw.stop();
  }
});

test('origins: require_origin refuses requests with no Origin', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: ['chatroom.allowed_origins=["http://app.test"]', 'chatroom.require_origin=true'] });
  try {
    assert.equal((await httpGet(gw.urls.chatroom, '/socket.io/?EIO=4&transport=polling')).status, 403);
    assert.equal((await httpGet(gw.urls.chatroom, '/socket.io/?EIO=4&transport=polling', { Origin: 'http://app.test' })).status, 200);
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'origin_missing' }), 1);
  } finally {
    await gw.stop();
  }
});

async function adminGet(gw, p, headers = {}) {
  const res = await fetch(`${gw.urls.admin}${p}`, { headers });
  await res.arrayBuffer().catch(() => {});
  return res.status;
}

test('admin: Bearer in any case, ?token= only for the dashboard\'s event stream', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ sets: ['admin.token=adm1n'] });
  try {
    assert.equal(await adminGet(gw, '/metrics', { Authorization: 'bearer adm1n' }), 200);
    assert.equal(await adminGet(gw, '/metrics', { Authorization: 'BEARER adm1n' }), 200);
    assert.equal(await adminGet(gw, '/metrics?token=adm1n'), 401, 'query token refused on the API');
    assert.equal(await adminGet(gw, '/api/rooms?token=adm1n'), 401, 'query token refused on the API');
    assert.equal(await adminGet(gw, '/metrics', { Authorization: 'Bearer adm1' }), 401, 'a prefix is not the token');
    assert.equal(await adminGet(gw, '/readyz?token=adm1n'), 401, 'query token refused outside the event stream');
    assert.equal(await adminGet(gw, '/'), 200, 'the dashboard page is static and public');
    const ctl = new AbortController();
    const res = await fetch(`${gw.urls.admin}/api/events?token=adm1n`, { signal: ctl.signal });
    assert.equal(res.status, 200);
    ctl.abort();
  } finally {
    await gw.stop();
  }
});

test('admin: an empty token and a public listener without a token are configuration errors', { timeout: 30_000 }, async () => {
  const config = path.join(ROOT, 'tests', 'fixtures', 'test.toml');
  const run = (env, sets) => spawnSync(BIN, ['--config', config, '--check-config', ...sets.flatMap((s) => ['--set', s])], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10_000 });
  let r = run({ GATEWAY_ADMIN__TOKEN: '' }, []);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /admin\.token/);
  r = run({}, ['admin.listen=0.0.0.0:0']);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /admin\.listen/);
  r = run({}, ['admin.listen=0.0.0.0:0', 'admin.token=very-secret-value', `chatroom.token.secret=${SECRET}`, 'turn.secret=turn-secret-value', 'turn.uris=["turn:127.0.0.1:3478"]']);
  assert.equal(r.status, 0, r.stderr);
  for (const s of ['very-secret-value', SECRET, 'turn-secret-value']) assert.ok(!r.stdout.includes(s), `--check-config prints ${s}`);
  assert.match(r.stdout, /<redacted>/);
});

// ---- TURN -------------------------------------------------------------------------------

const TURN_SECRET = 'coturn-shared-secret';

function freePort(type = 'tcp') {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

const haveCoturn = spawnSync('sh', ['-c', 'command -v turnserver && command -v turnutils_uclient'], { encoding: 'utf8' }).status === 0;

/** Starts coturn on loopback with use-auth-secret; resolves when it listens. */
async function startCoturn(port) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coturn-'));
  const args = ['-n', '--no-cli', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(port),
    '--use-auth-secret', `--static-auth-secret=${TURN_SECRET}`, '--realm', 'gateway.test', '--no-tls', '--no-dtls',
    '--min-port', '49152', '--max-port', '65535', '--allow-loopback-peers', '--log-file', 'stdout', '--simple-log',
    '--pidfile', path.join(dir, 'pid'), '--userdb', path.join(dir, 'db.sqlite')];
  const child = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (open) return { child, dir, log: () => out };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`coturn did not start:\n${out}`);
}

/** One TURN allocation with turnutils_uclient; true when it got a relayed address. */
function allocate(port, user, credential) {
  const peer = spawnSync('turnutils_uclient', ['-t', '-y', '-n', '1', '-m', '1', '-l', '100', '-p', String(port), '-u', user, '-w', credential, '-e', '127.0.0.1', '127.0.0.1'],
    { encoding: 'utf8', timeout: 20_000 });
  const text = `${peer.stdout}\n${peer.stderr}`;
  // Success: exit 0 and messages echoed through the relay; a refused allocation prints
  // "ERROR: Cannot complete Allocation" and exits non-zero.
  return { ok: peer.status === 0 && /tot_recv_msgs=[1-9]/.test(text) && !/ERROR/.test(text), text };
}

test('turn: coturn (use-auth-secret) allocates with /turn credentials and refuses expired or altered ones', { skip: haveCoturn ? false : 'coturn not installed (tests/run.sh installs it)', timeout: 90_000 }, async () => {
  const port = await freePort();
  const turn = await startCoturn(port);
  const gw = await startGateway({ sets: [`turn.secret=${TURN_SECRET}`, `turn.uris=["turn:127.0.0.1:${port}?transport=tcp"]`, 'turn.ttl=10m'] });
  try {
    for (const base of [gw.urls.webrtcroom, gw.urls.chatroom]) {
      for (const p of ['/turn', '/api/turn']) {
        const res = await fetch(new URL(p, base));
        assert.equal(res.status, 200, `${base}${p}`);
        const body = await res.json();
        assert.deepEqual(Object.keys(body).sort(), ['credential', 'ttl', 'uris', 'username']);
        assert.equal(body.ttl, 600);
        assert.deepEqual(body.uris, [`turn:127.0.0.1:${port}?transport=tcp`]);
        const [expiry, user] = body.username.split(':');
        assert.ok(Math.abs(Number(expiry) - (now() + 600)) < 30, body.username);
        assert.match(user, /^[0-9a-f]{32}$/, 'a random user id without a token');
      }
    }
    const { username, credential } = await (await fetch(new URL('/turn', gw.urls.webrtcroom))).json();
    const good = allocate(port, username, credential);
    assert.ok(good.ok, `allocation with /turn credentials:\n${good.text}\n${turn.log()}`);
    const altered = allocate(port, username, credential.replace(/^./, (ch) => (ch === 'A' ? 'B' : 'A')));
    assert.ok(!altered.ok, `altered credential must fail:\n${altered.text}`);
    const past = `${now() - 60}:someone`;
    const expiredCred = crypto.createHmac('sha1', TURN_SECRET).update(past).digest('base64');
    const expired = allocate(port, past, expiredCred);
    assert.ok(!expired.ok, `expired credential must fail:\n${expired.text}`);
  } finally {
    await gw.stop();
    turn.child.kill('SIGTERM');
    fs.rmSync(turn.dir, { recursive: true, force: true });
  }
});

test('turn: /turn is 404 when not configured, and needs a token when tokens are required', { timeout: 30_000 }, async () => {
  let gw = await startGateway();
  try {
    assert.equal((await fetch(new URL('/turn', gw.urls.chatroom))).status, 404);
  } finally {
    await gw.stop();
  }
  gw = await startGateway({ sets: [...TOKEN_SETS, `turn.secret=${TURN_SECRET}`, 'turn.uris=["stun:127.0.0.1:3478"]'] });
  try {
    const url = new URL('/api/turn', gw.urls.chatroom);
    assert.equal((await fetch(url)).status, 401);
    assert.equal((await fetch(url, { headers: { Authorization: `Bearer ${jwt({ exp: now() - 100 })}` } })).status, 401);
    const res = await fetch(url, { headers: { Authorization: `Bearer ${jwt({ sub: 'alice', exp: now() + 60 })}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.match(body.username, /^\d+:alice$/);
    assert.equal(body.credential, crypto.createHmac('sha1', TURN_SECRET).update(body.username).digest('base64'));
    const q = await fetch(new URL(`/turn?token=${jwt({ sub: 'bob' })}`, gw.urls.webrtcroom));
    assert.match((await q.json()).username, /^\d+:bob$/);
  } finally {
    await gw.stop();
  }
});
