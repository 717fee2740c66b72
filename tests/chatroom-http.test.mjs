// The chatroom endpoint's HTTP side: serving the built client (static files with SPA fallback,
// /api/checkUsername and /socket.io/ on one origin, as when the gateway replaces the client's
// dev proxy) and CORS on the Engine.IO transport for a client served from another origin.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ROOT } from './lib/gateway.mjs';
import { startTestGateway, withTimeout, EventQueue } from './lib/scenario.mjs';
import { untilJoined } from './lib/chatroom-scenario.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');

const STATIC_DIR = path.join(ROOT, 'tests', 'fixtures', 'chatroom-static');
const INDEX = fs.readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8');
const APP_JS = fs.readFileSync(path.join(STATIC_DIR, 'assets', 'app.js'), 'utf8');
const INDEX_MARKER = 'CHATROOM-STATIC-FIXTURE-INDEX';
const APP_MARKER = 'CHATROOM-STATIC-FIXTURE-APP';

async function get(url, headers = {}, method = 'GET') {
  const res = await withTimeout(fetch(url, { method, headers, redirect: 'manual' }), 5000, `${method} ${url}`);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** GET with the request target sent exactly as given (no URL normalisation). */
function rawGet(base, target) {
  const { hostname, port } = new URL(base);
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method: 'GET', path: target }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end();
  }), 5000, `GET ${target}`);
}

/** A socket.io-client 4.x socket with every event queued; resolves once connected. */
async function client(url, name, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: 5000, ...opts });
  const queue = new EventQueue(name);
  socket.onAny((event, ...args) => queue.push(event, args));
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', (e) => reject(new Error(`${name}: connect_error ${e?.message ?? e}`)));
    }),
    6000,
    `${name} connecting to ${url}`,
  );
  return { socket, queue };
}

describe('chatroom serving the built client (static_dir)', () => {
  let gw;
  let base;
  before(async () => {
    assert.ok(INDEX.includes(INDEX_MARKER) && APP_JS.includes(APP_MARKER), 'fixture files carry their markers');
    gw = await startTestGateway([`chatroom.static_dir=${STATIC_DIR}`]);
    base = gw.urls.chatroom;
  });
  after(async () => {
    const code = await gw?.stop();
    assert.equal(code, 0, 'gateway exit code after SIGTERM');
  });

  test('GET / is index.html', async () => {
    const r = await get(`${base}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /text\/html/);
    assert.equal(r.text, INDEX);
  });

  test('client-side routes fall back to index.html (SPA)', async () => {
    for (const p of ['/some/client/route', '/room/abc', '/index', '/login?next=%2Froom']) {
      const r = await get(`${base}${p}`);
      assert.equal(r.status, 200, p);
      assert.match(r.headers.get('content-type') ?? '', /text\/html/, p);
      assert.ok(r.text.includes(INDEX_MARKER), `${p} serves index.html`);
    }
  });

  test('assets are served as files', async () => {
    const r = await get(`${base}/assets/app.js`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /javascript/);
    assert.equal(r.text, APP_JS);
    const idx = await get(`${base}/index.html`);
    assert.equal(idx.status, 200);
    assert.ok(idx.text.includes(INDEX_MARKER));
  });

  test('files outside the directory are not served', async () => {
    // Sent as raw request targets (fetch would normalise the dots away before sending).
    // tests/fixtures/test.toml sits next to the static directory.
    for (const p of ['/../test.toml', '/assets/../../test.toml', '/%2e%2e/test.toml', '/assets/%2e%2e/%2e%2e/test.toml', '/..%2ftest.toml', '/assets/..%5c..%5ctest.toml']) {
      const r = await rawGet(base, p);
      assert.ok(!r.text.includes('reconnect_grace'), `${p} must not reveal a file outside static_dir (status ${r.status})`);
    }
  });

  test('/api/checkUsername and /checkUsername answer JSON on the same origin (not index.html)', async () => {
    for (const p of ['/api/checkUsername', '/checkUsername']) {
      const r = await get(`${base}${p}?username=x&roomname=y`);
      assert.equal(r.status, 200, p);
      assert.match(r.headers.get('content-type') ?? '', /application\/json/, p);
      assert.equal(r.text, '{"success":true,"isRepeat":false}', p);
      const bad = await get(`${base}${p}`);
      assert.equal(bad.status, 400, `${p} without parameters`);
      assert.match(bad.headers.get('content-type') ?? '', /application\/json/);
      assert.equal(JSON.parse(bad.text).success, false);
    }
  });

  test('/socket.io/ is Engine.IO, not index.html', async () => {
    const r = await get(`${base}/socket.io/?EIO=4&transport=polling`);
    assert.equal(r.status, 200);
    assert.match(r.text, /^0\{"sid":"/);
    assert.ok(!r.text.includes(INDEX_MARKER));
  });

  test('socket.io-client 4.x on the same origin joins, and /api/checkUsername sees it', async () => {
    // The client connects to its page's origin with default options, as io(location.host) does.
    const a = await client(base, 'A');
    const b = await client(base, 'B');
    try {
      a.socket.emit('join', { id: 'static-uA', username: 'alice', roomname: 'static-room' });
      await untilJoined(base, 'alice', 'static-room');
      b.socket.emit('join', { id: 'static-uB', username: 'bob', roomname: 'static-room' });
      const ev = await a.queue.next(5000, 'getOffer for B');
      assert.deepStrictEqual(ev, ['getOffer', { memberId: b.socket.id }]);
      const r = await get(`${base}/api/checkUsername?username=alice&roomname=static-room`);
      assert.equal(r.text, '{"success":true,"isRepeat":true}');
      a.socket.emit('offer', { connectorId: 'cAB', memberId: b.socket.id, offer: { type: 'offer', sdp: 'v=0\r\n' }, streamType: 'user' });
      const offer = await b.queue.next(5000, 'offer from A');
      assert.equal(JSON.stringify(offer), JSON.stringify(['offer', { remoteConnectorId: 'cAB', offer: { type: 'offer', sdp: 'v=0\r\n' }, memberId: a.socket.id, streamType: 'user' }]));
      assert.deepStrictEqual(a.queue.drain(), [], 'A got nothing else');
      assert.deepStrictEqual(b.queue.drain(), [], 'B got nothing else');
    } finally {
      a.socket.disconnect();
      b.socket.disconnect();
    }
  });
});

describe('chatroom CORS on the Engine.IO transport', () => {
  let gw;
  let base;
  const ORIGIN = 'http://page.example:5173';
  before(async () => {
    gw = await startTestGateway([]);
    base = gw.urls.chatroom;
  });
  after(async () => {
    await gw?.stop();
  });

  const acceptable = (h, origin) => {
    const allow = h.get('access-control-allow-origin');
    return allow === '*' || allow === origin;
  };

  test('a cross-origin polling handshake, POST and poll carry an Access-Control-Allow-Origin the browser accepts', async () => {
    const hs = await get(`${base}/socket.io/?EIO=4&transport=polling&t=abc`, { Origin: ORIGIN });
    assert.equal(hs.status, 200);
    assert.ok(acceptable(hs.headers, ORIGIN), `handshake ACAO: ${hs.headers.get('access-control-allow-origin')}`);
    const open = JSON.parse(hs.text.slice(1));
    assert.equal(typeof open.sid, 'string');
    const url = `${base}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(open.sid)}`;

    // The browser preflights the POST (its Content-Type is text/plain;charset=UTF-8, but
    // socket.io-client may add headers); the preflight must allow it.
    const pre = await get(url, { Origin: ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' }, 'OPTIONS');
    assert.ok(pre.status >= 200 && pre.status < 300, `preflight status ${pre.status}`);
    assert.ok(acceptable(pre.headers, ORIGIN), 'preflight ACAO');
    assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/i, 'preflight allows POST');
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /content-type|\*/i, 'preflight allows Content-Type');

    const post = await withTimeout(fetch(url, { method: 'POST', headers: { Origin: ORIGIN, 'Content-Type': 'text/plain;charset=UTF-8' }, body: '40' }), 5000, 'POST 40');
    assert.equal(post.status, 200);
    assert.ok(acceptable(post.headers, ORIGIN), 'POST ACAO');
    assert.equal(await post.text(), 'ok');
    const poll = await get(url, { Origin: ORIGIN });
    assert.equal(poll.status, 200);
    assert.ok(acceptable(poll.headers, ORIGIN), 'poll ACAO');
    // A v4 polling payload holds packets separated by \x1e (the gateway may put a ping first).
    const packets = poll.text.split('\x1e');
    assert.ok(packets.some((p) => /^40\{"sid":"[^"]+"\}$/.test(p)), `CONNECT answered: ${JSON.stringify(poll.text)}`);
    // Credentials: if the origin is echoed with credentials allowed, that is fine too; a
    // wildcard must not be combined with credentials (the browser would refuse it).
    if (hs.headers.get('access-control-allow-origin') === '*') {
      assert.notEqual(hs.headers.get('access-control-allow-credentials'), 'true');
    }
  });

  test('socket.io-client 4.x with an Origin header connects and joins over polling', async () => {
    const a = await client(base, 'A', { transports: ['polling'], extraHeaders: { Origin: ORIGIN } });
    const b = await client(base, 'B', { transports: ['polling'], extraHeaders: { Origin: ORIGIN } });
    try {
      a.socket.emit('join', { id: 'cors-uA', username: 'a', roomname: 'cors' });
      await untilJoined(base, 'a', 'cors');
      b.socket.emit('join', { id: 'cors-uB', username: 'b', roomname: 'cors' });
      assert.deepStrictEqual(await a.queue.next(5000, 'getOffer'), ['getOffer', { memberId: b.socket.id }]);
    } finally {
      a.socket.disconnect();
      b.socket.disconnect();
    }
  });
});
