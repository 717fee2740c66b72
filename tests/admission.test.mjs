// Per-source admission (README "Limits and failure behaviour": what one source address can
// and cannot do): floods of handshakes from one address do not starve clients from another,
// per-source limits refuse with a clear connect_error and close what they refuse, abandoned
// polling handshakes give their slot back, and only trusted proxies name the client.
//
// Two loopback source addresses play two machines: 127.0.0.1 (the flooder) and 127.0.0.2.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import { io as ioV4 } from 'socket.io-client';
import { startGateway } from './lib/gateway.mjs';
import { eventually, metricValue, withTimeout } from './lib/scenario.mjs';
import { handshake, poll, pollUntil, post } from './lib/engine-raw.mjs';
import { startFlood } from './lib/handshake-flood.mjs';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const OTHER = '127.0.0.2';

/** An HTTP agent whose connections leave from `from`. */
const agents = [];
const agentFrom = (from) => {
  const agent = new http.Agent({ localAddress: from, keepAlive: true });
  agents.push(agent);
  return agent;
};
// Kept-alive sockets of the clients' agents would keep the test process alive after the last
// test; close them all.
after(() => { for (const a of agents) a.destroy(); });

/** socket.io-client 4.x; resolves with the socket once connected, rejects with the connect_error. */
function chat(url, { from = '127.0.0.1', headers, transports = ['polling', 'websocket'] } = {}) {
  const s = ioV4(url, { forceNew: true, reconnection: false, transports, agent: agentFrom(from), extraHeaders: headers });
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => { s.close(); reject(e); });
  }), 5000, 'chatroom connect');
}

/** socket.io-client 2.x (the WebRtcRoom apps); rejects with the `error` payload. */
function webrtc(url, { from = '127.0.0.1', transports = ['polling', 'websocket'], query } = {}) {
  const s = ioV2(url, { forceNew: true, reconnection: false, transports, agent: agentFrom(from), query });
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    // socket.io-client 2.x emits a refused connect as `error` with the server's payload.
    s.once('error', (e) => reject(Object.assign(new Error(e?.message ?? String(e)), { socket: s })));
  }), 5000, 'webrtcroom connect');
}

/** A chatroom member joins `room`; resolves when the join took effect (a relay to itself). */
async function chatJoin(s, room, name) {
  const echo = new Promise((resolve) => s.once('icecandidate', resolve));
  s.emit('join', { id: `u-${name}`, username: name, roomname: room });
  s.emit('icecandidate', { remoteConnectorId: 'self', memberId: s.id, candidate: { joined: true } });
  await withTimeout(echo, 5000, 'join echo');
}

/** A WebRtcRoom client creates/joins `room`; resolves with `created`. */
function webrtcJoin(s, room) {
  const created = new Promise((resolve) => s.once('created', resolve));
  s.emit('createAndJoinRoom', { room });
  return withTimeout(created, 5000, 'created');
}

/** Polls a session until the server says it is gone; resolves with the time that took. */
async function closedWithin(base, sid, eio, ms) {
  const t0 = Date.now();
  await eventually(async () => {
    const r = await poll(base, sid, { eio, ms: 3000 }).catch((e) => ({ status: 0, body: String(e) }));
    return r.status === 400 && /Session ID unknown/.test(r.body);
  }, ms, `session ${sid} closed by the server`);
  return Date.now() - t0;
}

test('a handshake flood from one address does not keep a client from another address out (2.x and 4.x)', async (t) => {
  // Small global caps so that the flood fills them quickly even on a loaded machine: without
  // a per-source limit, 127.0.0.1 alone would hold every slot of both protocols.
  const gw = await startGateway({
    sets: [
      'limits.max_connections=60',
      'limits.max_connections_per_ip=20',
      'limits.handshake_timeout=5s',
    ],
  });
  const floods = [
    startFlood(gw.urls.webrtcroom, { eio: 3, ms: 20_000, max: 20_000 }),
    startFlood(gw.urls.chatroom, { eio: 4, ms: 20_000, max: 20_000 }),
  ];
  try {
    // Wait until the flood has run into a limit in both protocols (per source now; the global
    // cap on a build without per-source limits).
    const hitLimit = async (protocol) => {
      const m = await gw.metrics();
      return metricValue(m, 'gateway_refused_total', { protocol, reason: 'max_connections_per_ip' })
        + metricValue(m, 'gateway_refused_total', { protocol, reason: 'max_connections' }) > 20;
    };
    await eventually(async () => (await hitLimit('webrtcroom')) && hitLimit('chatroom'), 15_000, 'the flood reached a limit');
    // Mid-flood, fresh clients from another address connect and join.
    let t0 = Date.now();
    const c = await chat(gw.urls.chatroom, { from: OTHER });
    await chatJoin(c, 'r', 'fresh');
    const chatMs = Date.now() - t0;
    t0 = Date.now();
    const w = await webrtc(gw.urls.webrtcroom, { from: OTHER });
    const created = await webrtcJoin(w, 'room1');
    const webrtcMs = Date.now() - t0;
    assert.equal(created.id, w.id);
    for (const f of floods) f.stop();
    const [f3, f4] = await Promise.all(floods.map((f) => f.done));
    t.diagnostic(`flood v3 ${JSON.stringify(f3)}, v4 ${JSON.stringify(f4)}; chatroom ${chatMs} ms, WebRtcRoom ${webrtcMs} ms`);
    c.close(); w.close();
    // Generous for a loaded shared machine; bench/admission-flood.mjs measures the real figure.
    assert.ok(chatMs < 3000, `chatroom client connected and joined in ${chatMs} ms`);
    assert.ok(webrtcMs < 3000, `WebRtcRoom client connected and joined in ${webrtcMs} ms`);
  } finally {
    for (const f of floods) f.stop();
    await Promise.allSettled(floods.map((f) => f.done));
    await gw.stop();
  }
});

test('abandoned polling handshakes (v3 and v4) give their connection slot back within handshake_timeout', async () => {
  const gw = await startGateway({
    sets: ['limits.max_connections=1', 'limits.handshake_timeout=2s'],
  });
  try {
    const h3 = await handshake(gw.urls.webrtcroom, { eio: 3 });
    const h4 = await handshake(gw.urls.chatroom, { eio: 4 });
    await post(gw.urls.chatroom, h4.sid, '40');
    // The only slot of each protocol is taken...
    await assert.rejects(chat(gw.urls.chatroom, { transports: ['websocket'] }), /full/);
    await assert.rejects(webrtc(gw.urls.webrtcroom, { transports: ['websocket'] }), /full/);
    // ...and given back once the sessions have not polled for 2 s (30 s and 20 s before).
    await sleep(2500);
    const c = await chat(gw.urls.chatroom, { transports: ['websocket'] });
    const w = await webrtc(gw.urls.webrtcroom, { transports: ['websocket'] });
    c.close(); w.close();
    await closedWithin(gw.urls.webrtcroom, h3.sid, 3, 2000);
    await closedWithin(gw.urls.chatroom, h4.sid, 4, 2000);
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { reason: 'abandoned_handshake' }), 2);
  } finally {
    await gw.stop();
  }
});

test('a real polling client that stays connected without joining is not closed by handshake_timeout', async () => {
  const gw = await startGateway({ sets: ['limits.handshake_timeout=1s'] });
  try {
    const w = await webrtc(gw.urls.webrtcroom, { transports: ['polling'] });
    const c = await chat(gw.urls.chatroom, { transports: ['polling'] });
    let gone = 0;
    w.on('disconnect', () => { gone += 1; });
    c.on('disconnect', () => { gone += 1; });
    await sleep(2500);
    assert.equal(gone, 0);
    assert.equal((await webrtcJoin(w, 'later')).room, 'later');
    await chatJoin(c, 'later', 'late');
    w.close(); c.close();
  } finally {
    await gw.stop();
  }
});

// The connect (and with it the check for an abandoned handshake) may be handled after the
// client's upgrade request; a session that then finishes its upgrade never polls again.
test('a session that upgrades to WebSocket while its connect is handled is not closed by handshake_timeout', async () => {
  const gw = await startGateway({ sets: ['limits.handshake_timeout=1s'] });
  let ws;
  try {
    const base = gw.urls.chatroom;
    const h = await handshake(base, { eio: 4 });
    await poll(base, h.sid, { eio: 4 }); // the server's first ping
    ws = new WebSocket(`${base.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket&sid=${h.sid}`);
    const frames = [];
    let closed = false;
    ws.on('message', (d) => frames.push(String(d)));
    ws.on('close', () => { closed = true; });
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.send('2probe');
    await eventually(() => frames.includes('3probe'), 3000, '3probe');
    // The connect arrives on the polling transport, the upgrade completes after it.
    await post(base, h.sid, '40');
    ws.send('5');
    await eventually(() => frames.some((f) => f.startsWith('40{')), 3000, 'the connect answered on the WebSocket');
    await sleep(2000);
    assert.equal(closed, false, `the upgraded session was closed: ${JSON.stringify(frames)}`);
    ws.send('42["join",{"id":"u-up","username":"up","roomname":"r"}]');
    await sleep(200);
    assert.equal(closed, false, `closed after a join: ${JSON.stringify(frames)}`);
    const r = await (await fetch(`${base}/checkUsername?username=up&roomname=r`)).json();
    assert.deepEqual(r, { success: true, isRepeat: true });
  } finally {
    ws?.terminate();
    await gw.stop();
  }
});

test('limits.max_connections_per_ip refuses with a clear connect_error, closes the refused session, and spares other addresses', async () => {
  const gw = await startGateway({ sets: ['limits.max_connections_per_ip=2'] });
  try {
    const a = await chat(gw.urls.chatroom);
    const b = await chat(gw.urls.chatroom);
    await assert.rejects(chat(gw.urls.chatroom), /too many connections from your address/);
    const other = await chat(gw.urls.chatroom, { from: OTHER });
    await chatJoin(other, 'r', 'other');

    const w1 = await webrtc(gw.urls.webrtcroom);
    const w2 = await webrtc(gw.urls.webrtcroom);
    const refused = await webrtc(gw.urls.webrtcroom).then(() => null, (e) => e);
    assert.match(refused.message, /too many connections from your address/);
    // The 2.x client does not close on an error packet; the server closes its session.
    const engine = refused.socket.io.engine;
    await eventually(() => engine.readyState === 'closed', 3000, 'refused 2.x session closed');
    refused.socket.close();

    // A raw v4 session over the limit: connect_error, then the session is gone.
    const h = await handshake(gw.urls.chatroom, { eio: 4 });
    await post(gw.urls.chatroom, h.sid, '40');
    const tooMany = /(^|\x1e)44\{"message":"too many connections from your address/;
    // (the server's first ping may come first, alone or in the same payload)
    assert.match(await pollUntil(gw.urls.chatroom, h.sid, tooMany, { eio: 4 }), tooMany);
    await closedWithin(gw.urls.chatroom, h.sid, 4, 3000);

    // A slot frees when one leaves (once the server has seen the close).
    const open = async () => Object.entries(await gw.metrics())
      .filter(([k]) => k.startsWith('gateway_connections{') && k.includes('protocol="chatroom"'))
      .reduce((n, [, v]) => n + v, 0);
    const before = await open();
    a.close();
    await eventually(async () => (await open()) === before - 1, 3000, 'the server saw the close');
    const again = await chat(gw.urls.chatroom);
    for (const s of [b, other, w1, w2, again]) s.close();
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'max_connections_per_ip' }), 2);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason: 'max_connections_per_ip' }), 1);
    // One log line, not one per refusal.
    const lines = gw.stderr().split('\n').filter((l) => l.includes('connection refused'));
    assert.ok(lines.length <= 2, lines.join('\n'));
  } finally {
    await gw.stop();
  }
});

test('the per-source limit also counts legacy WebSocket-only clients with a query (the in-process proxy path)', async () => {
  const gw = await startGateway({ sets: ['limits.max_connections_per_ip=1'] });
  try {
    const opts = { transports: ['websocket'], query: { app: 'legacy' } };
    const a = await webrtc(gw.urls.webrtcroom, opts);
    const refused = await webrtc(gw.urls.webrtcroom, opts).then(() => null, (e) => e);
    assert.match(refused?.message ?? 'connected', /too many connections from your address/);
    const engine = refused.socket.io.engine;
    await eventually(() => engine.readyState === 'closed', 3000, 'refused session closed');
    refused.socket.close();
    const other = await webrtc(gw.urls.webrtcroom, { ...opts, from: OTHER });
    a.close(); other.close();
  } finally {
    await gw.stop();
  }
});

test('a connection refused for limits.max_connections is closed by the server', async () => {
  const gw = await startGateway({ sets: ['webrtcroom.limits.max_connections=1'] });
  try {
    const w = await webrtc(gw.urls.webrtcroom);
    const h = await handshake(gw.urls.webrtcroom, { eio: 3 });
    const full = /44\{"message":"the server is full/;
    assert.match(await pollUntil(gw.urls.webrtcroom, h.sid, full, { eio: 3 }), full);
    await closedWithin(gw.urls.webrtcroom, h.sid, 3, 3000);
    w.close();
  } finally {
    await gw.stop();
  }
});

test('behind a trusted proxy the per-source limit counts the forwarded address; an untrusted peer\'s header is ignored', async () => {
  const gw = await startGateway({
    sets: ['limits.max_connections_per_ip=1', 'limits.trusted_proxies=["127.0.0.1/32"]'],
  });
  try {
    const xff = (ip) => ({ 'X-Forwarded-For': ip });
    const a = await chat(gw.urls.chatroom, { headers: xff('198.51.100.1') });
    const b = await chat(gw.urls.chatroom, { headers: xff('198.51.100.2') });
    await assert.rejects(chat(gw.urls.chatroom, { headers: xff('198.51.100.1') }), /too many connections/);
    const fwd = await chat(gw.urls.chatroom, { headers: { Forwarded: 'for=198.51.100.3;proto=http' } });
    // 127.0.0.2 is not a trusted proxy: its header names nobody, it is counted as itself.
    const c = await chat(gw.urls.chatroom, { from: OTHER, headers: xff('198.51.100.4') });
    await assert.rejects(chat(gw.urls.chatroom, { from: OTHER, headers: xff('198.51.100.5') }), /too many connections/);
    for (const s of [a, b, fwd, c]) s.close();
  } finally {
    await gw.stop();
  }
});

test('limits.connect_rate refuses new sessions beyond the burst from one address only', async () => {
  const gw = await startGateway({ sets: ['limits.connect_rate=1', 'limits.connect_burst=3'] });
  try {
    const statuses = [];
    for (let i = 0; i < 4; i += 1) statuses.push((await handshake(gw.urls.chatroom, { eio: 4 })).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    assert.equal((await handshake(gw.urls.chatroom, { eio: 4, from: OTHER })).status, 200);
    // The bucket refills at the rate.
    await sleep(1200);
    assert.equal((await handshake(gw.urls.chatroom, { eio: 4 })).status, 200);
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { reason: 'connect_rate' }), 1);
  } finally {
    await gw.stop();
  }
});
