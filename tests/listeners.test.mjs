// How every listener (both protocols and admin) binds, accepts and serves (README "Limits and
// failure behaviour"): a taken port stops the start at once with one line; silent, slow and
// idle connections are closed after limits.header_timeout; with descriptors exhausted a fresh
// client is still served or refused at once and /metrics answers; the legacy WebSocket relay
// has the direct path's frame limits; a long-polling client whose pending poll is aborted is
// gone for its peers at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { io as ioV4 } from 'socket.io-client';
import { BIN, ROOT, startGateway } from './lib/gateway.mjs';
import { withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hostPort = (url) => { const u = new URL(url); return { host: u.hostname, port: Number(u.port) }; };

/** Resolves with the payload of the next `event` on `socket`. */
const next = (socket, event, ms = 5000) =>
  withTimeout(new Promise((resolve) => socket.once(event, resolve)), ms, `${event}`);

/** Resolves when `socket` is closed by the other side (false if still open after `ms`). */
const closedWithin = (socket, ms) => new Promise((resolve) => {
  if (socket.destroyed) return resolve(true);
  const timer = setTimeout(() => resolve(false), ms);
  socket.once('close', () => { clearTimeout(timer); resolve(true); });
});

/** Opens `n` TCP connections to `url` that send nothing. */
async function silent(url, n) {
  const { host, port } = hostPort(url);
  const sockets = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port });
    s.on('error', () => {});
    s.on('data', () => {});
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => new Promise((r) => { s.once('connect', r); s.once('close', r); })));
  return sockets;
}

/** One HTTP GET on a fresh connection; resolves with the status (bounded by `ms`). */
function get(url, ms) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
  }), ms, `GET ${url}`);
}

for (const key of ['webrtcroom.listen', 'chatroom.listen', 'admin.listen']) {
  test(`a taken port for ${key}: exit code 2 and one line naming it within 2 s`, async () => {
    const blocker = net.createServer();
    await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
    const addr = `127.0.0.1:${blocker.address().port}`;
    try {
      const child = spawn(BIN, ['--config', `${ROOT}/tests/fixtures/test.toml`, '--set', `${key}=${addr}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { err += d; });
      const code = await withTimeout(new Promise((r) => child.on('exit', r)), 2000, 'exit').catch((e) => { child.kill('SIGKILL'); throw e; });
      assert.equal(code, 2, `exit code; stderr: ${err}`);
      const lines = err.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${err}`);
      assert.match(lines[0], new RegExp(`^signal-gateway: ${key.replace('.', '\\.')} ${addr}: address already in use`));
      assert.doesNotMatch(out, /listening on/, 'no listener was announced as serving');
    } finally {
      blocker.close();
    }
  });
}

/** A connection to `url` that sends one request for `path` and resolves once it is answered. */
async function keptAlive(url, path) {
  const s = net.connect(hostPort(url));
  s.on('error', () => {});
  let answered = '';
  await withTimeout(new Promise((resolve) => {
    s.on('data', (d) => { answered += d; if (answered.includes('\r\n\r\n')) resolve(); });
    s.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  }), 3000, `GET ${path}`);
  assert.match(answered, /^HTTP\/1.1 200/);
  return s;
}

/** Writes `text` to `socket` one byte every 200 ms; returns a stop function. */
function drip(socket, text) {
  let i = 0;
  const timer = setInterval(() => { if (!socket.destroyed) socket.write(text[i++ % text.length]); }, 200);
  return () => clearInterval(timer);
}

test('silent and slowloris connections go after limits.header_timeout, idle kept-alive ones after limits.idle_timeout, admin too', async () => {
  const gw = await startGateway({ sets: ['limits.header_timeout=1s', 'limits.idle_timeout=3s'] });
  const stops = [];
  const all = [];
  try {
    const quiet = [];
    for (const url of [gw.urls.webrtcroom, gw.urls.chatroom, gw.urls.admin]) quiet.push(...await silent(url, 5));
    // Slowloris on a fresh connection: a request head one byte every 200 ms.
    const head = 'GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Padding: ' + 'a'.repeat(200);
    const slow = net.connect(hostPort(gw.urls.chatroom));
    slow.on('error', () => {});
    stops.push(drip(slow, head));
    // Idle after one answered request (admin and a protocol listener), and a kept-alive
    // connection whose next head then comes one byte at a time.
    const idle = [await keptAlive(gw.urls.admin, '/healthz'), await keptAlive(gw.urls.chatroom, '/socket.io/?EIO=4&transport=polling')];
    const answeredAt = Date.now();
    const kaSlow = await keptAlive(gw.urls.admin, '/healthz');
    stops.push(drip(kaSlow, head));
    all.push(...quiet, slow, ...idle, kaSlow);

    const early = await Promise.all([...quiet, slow, kaSlow].map((s) => closedWithin(s, 2500)));
    assert.equal(early.filter((c) => !c).length, 0, 'silent and slow-header connections closed after header_timeout');
    assert.ok(idle.every((s) => !s.destroyed), 'idle kept-alive connections are still open before idle_timeout');
    const late = await Promise.all(idle.map((s) => closedWithin(s, 4000)));
    assert.deepEqual(late, [true, true], 'idle kept-alive connections closed after idle_timeout');
    assert.ok(Date.now() - answeredAt >= 2500, `not before idle_timeout (${Date.now() - answeredAt} ms)`);
  } finally {
    for (const stop of stops) stop();
    for (const s of all) s.destroy();
    await gw.stop();
  }
});

test('a TLS listener closes connections that never finish the handshake after limits.header_timeout', async () => {
  const gw = await startGateway({ sets: ['limits.header_timeout=1s', 'webrtcroom.tls=self-signed'] });
  try {
    assert.match(gw.urls.webrtcroom, /^https:/);
    const quiet = await silent(gw.urls.webrtcroom, 5);
    const t0 = Date.now();
    const closed = await Promise.all(quiet.map((s) => closedWithin(s, 4000)));
    assert.equal(closed.filter((c) => !c).length, 0, 'every silent TLS connection was closed');
    assert.ok(Date.now() - t0 >= 500, 'not before the timeout');
  } finally {
    await gw.stop();
  }
});

test('descriptors exhausted: a fresh client is served or refused at once, /metrics answers, silent sockets go after the timeout', async () => {
  const gw = await startGateway({ prefix: ['prlimit', '--nofile=256:256', '--'], sets: ['limits.header_timeout=2s'] });
  let quiet = [];
  try {
    quiet = await silent(gw.urls.chatroom, 300);
    quiet.push(...await silent(gw.urls.webrtcroom, 50));
    await sleep(200);
    // A fresh client: an answer (served, or a clear 503) within a second, not a hang.
    const t0 = Date.now();
    const status = await get(`${gw.urls.chatroom}/socket.io/?EIO=4&transport=polling`, 1000);
    assert.ok(status === 200 || status === 503, `status ${status}`);
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(await get(`${gw.urls.admin}/metrics`, 1000), 200, '/metrics answers while descriptors are exhausted');
    // The silent sockets are closed after the timeout; then real clients are served again.
    const closed = await Promise.all(quiet.map((s) => closedWithin(s, 5000)));
    assert.equal(closed.filter((c) => !c).length, 0, 'every silent socket was closed');
    const c = ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
    await next(c, 'connect', 3000);
    c.close();
    assert.match(gw.stderr(), /connection refused: descriptor budget full|out of file descriptors/, 'hitting the limit is logged');
  } finally {
    for (const s of quiet) s.destroy();
    await gw.stop();
  }
});

/** The soft and hard "Max open files" of process `pid`. */
function nofile(pid) {
  const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const [soft, hard] = line.slice('Max open files'.length).trim().split(/\s+/).map(Number);
  return { soft, hard };
}

test('the soft descriptor limit is raised at start to what max_connections need, with a warning when the hard limit is lower', async () => {
  let gw = await startGateway({ prefix: ['prlimit', '--nofile=256:4096', '--'], sets: ['limits.max_connections=1000'] });
  try {
    assert.deepEqual(nofile(gw.child.pid), { soft: 2 * 1000 + 96, hard: 4096 });
    assert.doesNotMatch(gw.stderr(), /file descriptor limit/);
  } finally {
    await gw.stop();
  }
  gw = await startGateway({ prefix: ['prlimit', '--nofile=256:4096', '--'] });
  try {
    assert.deepEqual(nofile(gw.child.pid), { soft: 4096, hard: 4096 });
    assert.match(gw.stderr(), /file descriptor limit 4096 \(hard 4096\) is below the 40096 that limits\.max_connections need; at most 4000 connections/);
  } finally {
    await gw.stop();
  }
});

/** A raw WebSocket on the legacy relay path (EIO 3, websocket only, an application query). */
async function legacyWs(gw) {
  const url = `${gw.urls.webrtcroom.replace('http', 'ws')}/socket.io/?EIO=3&transport=websocket&token=abc`;
  const ws = new WebSocket(url, { maxPayload: 100e6 });
  ws.on('error', () => {});
  await withTimeout(new Promise((r) => ws.once('message', r)), 3000, 'open packet');
  return ws;
}
const wsClosed = (ws, ms) => new Promise((resolve) => {
  if (ws.readyState === WebSocket.CLOSED) return resolve(true);
  const timer = setTimeout(() => resolve(false), ms);
  ws.once('close', () => { clearTimeout(timer); resolve(true); });
});

test('legacy WebSocket relay: a 2 MB frame or a 2 MB fragmented message is refused like on the direct path', async () => {
  const gw = await startGateway();
  try {
    const a = await legacyWs(gw);
    a.send(`4${'x'.repeat(2_000_000)}`);
    assert.ok(await wsClosed(a, 2000), 'closed after a 2 MB frame');
    // The same 2 MB as 1 MB fragments of an unfinished message: refused as soon as it passes
    // engine.max_payload, not buffered up to tungstenite's 64 MiB.
    const b = await legacyWs(gw);
    b.send('4', { fin: false });
    b.send('x'.repeat(1_000_000), { fin: false });
    b.send('x'.repeat(1_000_000), { fin: false });
    assert.ok(await wsClosed(b, 2000), 'closed during a 2 MB fragmented message');
    const c = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'], query: { token: 'abc' } });
    await next(c, 'connect', 3000);
    c.close();
  } finally {
    await gw.stop();
  }
});

/** A raw Engine.IO polling client (an app that can be killed mid-poll). */
class RawPoller {
  constructor(base, eio) { this.base = base; this.eio = eio; this.agent = new http.Agent({ keepAlive: true, maxSockets: 4 }); }
  request(method, body) {
    const u = new URL(`${this.base}/socket.io/?EIO=${this.eio}&transport=polling${this.sid ? `&sid=${this.sid}` : ''}`);
    return new Promise((resolve, reject) => {
      const headers = body === undefined ? {} : { 'content-type': 'text/plain;charset=UTF-8', 'content-length': Buffer.byteLength(body) };
      const req = http.request(u, { method, agent: this.agent, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve(text));
        res.on('error', reject);
      });
      req.on('error', reject);
      this.pending = req;
      if (body !== undefined) req.write(body);
      req.end();
    });
  }
  /** Packets of one poll (v3 `len:packet` or v4 `\x1e`-separated). */
  async poll() {
    const text = await withTimeout(this.request('GET'), 5000, 'poll');
    if (this.eio === 4) return text.split('\x1e');
    const out = [];
    for (let rest = text; rest.length;) {
      const c = rest.indexOf(':');
      const n = Number(rest.slice(0, c));
      out.push(rest.slice(c + 1, c + 1 + n));
      rest = rest.slice(c + 1 + n);
    }
    return out;
  }
  send(packet) {
    return withTimeout(this.request('POST', this.eio === 4 ? packet : `${packet.length}:${packet}`), 5000, 'post');
  }
  async open() {
    const [open] = await this.poll();
    this.sid = JSON.parse(open.slice(1)).sid;
  }
  /** Polls until a packet starting with `prefix` arrives. */
  async until(prefix) {
    for (let i = 0; i < 10; i++) {
      const found = (await this.poll()).find((p) => p.startsWith(prefix));
      if (found) return found;
    }
    throw new Error(`no ${prefix} packet`);
  }
  /** The app dies mid-poll: its pending GET's connection goes away, nothing else is sent. */
  async dieMidPoll() {
    this.request('GET').catch(() => {});
    await sleep(300);
    this.pending.destroy();
    this.agent.destroy();
  }
}

test('WebRtcRoom: a polling client whose pending poll is aborted: its peer gets exit {from, room:""} within 1 s', async () => {
  const gw = await startGateway();
  try {
    const peer = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
    await next(peer, 'connect');
    peer.emit('createAndJoinRoom', { room: 'r1' });
    await next(peer, 'created');
    const app = new RawPoller(gw.urls.webrtcroom, 3);
    await app.open();
    await app.until('40');
    const joined = next(peer, 'joined');
    await app.send('42["createAndJoinRoom",{"room":"r1"}]');
    const created = JSON.parse((await app.until('42["created"')).slice(2))[1];
    await joined;
    // A poll that the server answers does not end the session.
    peer.emit('offer', { from: peer.id, to: created.id, room: 'r1', sdp: 'v=0' });
    assert.ok(await app.until('42["offer"'), 'the offer reached the polling client');
    const exit = next(peer, 'exit', 1000);
    await app.dieMidPoll();
    assert.deepEqual(await exit, { from: created.id, room: '' });
    peer.close();
  } finally {
    await gw.stop();
  }
});

test('chatroom: a v4 polling member whose pending poll is aborted is away at once (relays to it are refused)', async () => {
  const gw = await startGateway();
  try {
    const peer = ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
    await next(peer, 'connect');
    peer.emit('join', { id: 'u-peer', username: 'peer', roomname: 'c1' });
    const app = new RawPoller(gw.urls.chatroom, 4);
    await app.open();
    await app.send('40');
    const memberId = JSON.parse((await app.until('40')).slice(2)).sid;
    await app.send('42["join",{"id":"u-app","username":"app","roomname":"c1"}]');
    await sleep(300);
    // While it polls, a relay to it is delivered (no error).
    const errors = [];
    peer.on('error', (e) => errors.push(e));
    peer.emit('icecandidate', { remoteConnectorId: 'c', memberId, candidate: { n: 1 } });
    assert.ok(await app.until('42["icecandidate"'), 'the relay reached the polling member');
    assert.deepEqual(errors, []);
    await app.dieMidPoll();
    const t0 = Date.now();
    for (;;) {
      peer.emit('icecandidate', { remoteConnectorId: 'c', memberId, candidate: { n: 2 } });
      await sleep(100);
      if (errors.some((e) => e?.type === 'unknown_member')) break;
      assert.ok(Date.now() - t0 < 1000, `still treated as present after 1 s: ${JSON.stringify(errors)}`);
    }
    peer.close();
  } finally {
    await gw.stop();
  }
});
