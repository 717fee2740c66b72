// Session takeover (issue 15.8): another client must not act as, or knock out, a member whose
// identifiers it has learned.
// - WebRtcRoom: a member's id is its Engine.IO session id, told to every member of the room.
//   A polling victim (socket.io-client 2.x, as the iOS app polls) and a raw HTTP attacker
//   from another loopback address (127.0.0.2): the attacker's POST on the victim's session
//   must not reach the peer, its GET must not disconnect the victim, its WebSocket upgrade
//   must not take the session, and the victim keeps working.
// - chatroom: `reconnect {id}` from another source while the member's connection is alive
//   is refused with `error {type:"reconnect"}`, and none of the peer's messages reach the
//   attacker; operators' views list no user ids; the admin endpoint refuses a foreign Host.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import {
  startTestGateway, socketIoV2Factory, socketIoV4Factory, connectClient, withTimeout,
} from './lib/scenario.mjs';

import { startGateway } from './lib/gateway.mjs';
import { handshake as rawHandshake, post as rawPost } from './lib/engine-raw.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

const ATTACKER = '127.0.0.2';
const QUIET_MS = 1500;

/** One raw HTTP exchange from `localAddress`; resolves {status, body}. */
function request(base, method, path, { body, localAddress = ATTACKER, ms = 5000 } = {}) {
  const u = new URL(base);
  const headers = { connection: 'close' };
  if (body !== undefined) {
    headers['content-type'] = 'text/plain;charset=UTF-8';
    headers['content-length'] = Buffer.byteLength(body);
  }
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path, headers, localAddress }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  }), ms, `${method} ${path} from ${localAddress}`);
}

/** Resolves to what a WebSocket upgrade from `localAddress` got: 'open' or the HTTP status. */
function upgrade(url, localAddress = ATTACKER) {
  return withTimeout(new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress });
    ws.on('open', () => { ws.terminate(); resolve('open'); });
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode); res.resume(); });
    ws.on('error', (e) => resolve(`error ${e.message}`));
  }), 5000, `upgrade ${url}`);
}

/** The events `client` receives during `ms` (drained from its queue). */
async function quiet(client, ms = QUIET_MS) {
  await new Promise((r) => setTimeout(r, ms));
  return client.queue.drain();
}

const v3 = (packet) => `${packet.length}:${packet}`;

let gw;
before(async () => {
  gw = await startTestGateway();
});
after(async () => {
  await gw?.stop();
});

test('webrtcroom: a polling session answers only the address that opened it', async () => {
  const url = gw.urls.webrtcroom;
  const victim = await connectClient(socketIoV2Factory(url, { transports: ['polling'] }), 'victim');
  const peer = await connectClient(socketIoV2Factory(url), 'peer');
  try {
    const room = 'takeover-1';
    victim.emit('createAndJoinRoom', { room });
    const [, created] = await victim.queue.next(5000, 'created');
    assert.equal(created.id, victim.id);
    peer.emit('createAndJoinRoom', { room });
    await peer.queue.next(5000, 'created');
    await victim.queue.next(5000, 'joined');
    const sid = victim.id;

    // A spoofed offer "from" the victim, posted on its session from another address.
    const spoof = `42${JSON.stringify(['offer', { from: sid, to: peer.id, room, sdp: 'spoofed' }])}`;
    const post = await request(url, 'POST', `/socket.io/?EIO=3&transport=polling&sid=${sid}`, { body: v3(spoof) });
    assert.equal(post.status, 400, `attacker's POST refused (got ${post.status} ${post.body})`);
    assert.deepEqual(JSON.parse(post.body), { code: 1, message: 'Session ID unknown' });
    // A poll on the victim's session from another address (Engine.IO closes a session polled twice).
    const get = await request(url, 'GET', `/socket.io/?EIO=3&transport=polling&sid=${sid}`);
    assert.equal(get.status, 400, `attacker's GET refused (got ${get.status} ${get.body})`);
    // An upgrade of the victim's session to a WebSocket of the attacker's.
    const ws = await upgrade(`${url.replace('http', 'ws')}/socket.io/?EIO=3&transport=websocket&sid=${sid}`);
    assert.equal(ws, 400, `attacker's upgrade refused (got ${ws})`);

    const seen = await quiet(peer);
    assert.deepEqual(seen.filter(([e]) => e === 'offer'), [], 'no spoofed offer reached the peer');
    assert.equal(victim.socket.connected, true, 'the victim is still connected');
    assert.equal(victim.transport(), 'polling');
    assert.deepEqual((await quiet(victim, 0)).filter(([e]) => e === 'exit'), []);

    // The victim keeps working both ways.
    victim.emit('offer', { from: sid, to: peer.id, room, sdp: 'real' });
    const [event, offer] = await peer.queue.next(5000, "the victim's own offer");
    assert.deepEqual([event, offer.sdp, offer.from], ['offer', 'real', sid]);
    peer.emit('answer', { from: peer.id, to: sid, room, sdp: 'back' });
    const [event2, answer] = await victim.queue.next(5000, "the peer's answer");
    assert.deepEqual([event2, answer.sdp], ['answer', 'back']);
  } finally {
    victim.close();
    peer.close();
  }
});

test('webrtcroom: the same address still polls and upgrades its own session', async () => {
  const url = gw.urls.webrtcroom;
  // A client that polls, then upgrades (the Html page's default), from 127.0.0.1.
  const client = await connectClient(socketIoV2Factory(url), 'own');
  try {
    await withTimeout((async () => {
      while (client.transport() !== 'websocket') await new Promise((r) => setTimeout(r, 50));
    })(), 5000, 'upgrade to websocket');
    client.emit('createAndJoinRoom', { room: 'takeover-2' });
    const [event] = await client.queue.next(5000, 'created');
    assert.equal(event, 'created');
  } finally {
    client.close();
  }
});

/** A chatroom client (socket.io-client 4.x over WebSocket) from `localAddress`. */
function chatroomClient(url, name, localAddress = '127.0.0.1') {
  return connectClient(socketIoV4Factory(url, { transports: ['websocket'], options: { localAddress } }), name);
}

/** The next event of `client` named `event` (others are skipped). */
async function nextNamed(client, event, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const item = await client.queue.next(Math.max(1, deadline - Date.now()), event);
    if (item[0] === event) return item;
  }
}

/** V and P in one room with a link (V offered to P, P answered). */
async function linkedPair(url, room, victimId) {
  const victim = await chatroomClient(url, 'victim');
  const peer = await chatroomClient(url, 'peer');
  victim.emit('join', { id: victimId, username: 'v', roomname: room });
  // A relay to itself proves V is in before P joins.
  victim.emit('icecandidate', { remoteConnectorId: 'self', memberId: victim.id, candidate: {} });
  await nextNamed(victim, 'icecandidate');
  peer.emit('join', { id: `${victimId}-peer`, username: 'p', roomname: room });
  assert.deepEqual(await nextNamed(victim, 'getOffer'), ['getOffer', { memberId: peer.id }]);
  victim.emit('offer', { connectorId: 'cVP', memberId: peer.id, offer: { sdp: 'v=0' }, streamType: 'user' });
  await nextNamed(peer, 'offer');
  peer.emit('answer', { remoteConnectorId: 'cVP', connectorId: 'cPV', memberId: victim.id, answer: { sdp: 'v=0' }, streamType: 'user' });
  await nextNamed(victim, 'answer');
  return { victim, peer };
}

// Heartbeat of 1 s + 1 s: a parked reconnect is decided within 4 s.
const FAST_HEARTBEAT = ['chatroom.engine.ping_interval=1s', 'chatroom.engine.ping_timeout=1s'];
const PARK_LIMIT_MS = 4000;

test('chatroom: reconnect with a connected member\'s id from another address is refused', async () => {
  const gw2 = await startTestGateway(FAST_HEARTBEAT);
  const clients = [];
  try {
    const url = gw2.urls.chatroom;
    const { victim, peer } = await linkedPair(url, 'takeover-3', 'victim-user-7f3a');
    clients.push(victim, peer);
    const attacker = await chatroomClient(url, 'attacker', ATTACKER);
    clients.push(attacker);
    attacker.emit('reconnect', { id: 'victim-user-7f3a', username: 'v', roomname: 'takeover-3' });
    // Meanwhile the peer keeps talking to the victim.
    for (let n = 0; n < 10; n++) {
      peer.emit('icecandidate', { remoteConnectorId: 'cVP', memberId: victim.id, candidate: { n } });
    }
    const [, error] = await nextNamed(attacker, 'error', PARK_LIMIT_MS + 4000);
    assert.equal(error.type, 'reconnect');
    assert.equal(typeof error.message, 'string');
    for (let n = 0; n < 10; n++) {
      const [, c] = await nextNamed(victim, 'icecandidate');
      assert.deepEqual(c, { connectorId: 'cVP', candidate: { n } }, `peer's message ${n} reached the victim`);
    }
    // After the refusal too: the victim is still the member, the attacker reaches nobody.
    peer.emit('icecandidate', { remoteConnectorId: 'cVP', memberId: victim.id, candidate: { n: 10 } });
    assert.equal((await nextNamed(victim, 'icecandidate'))[1].candidate.n, 10);
    attacker.emit('icecandidate', { remoteConnectorId: 'x', memberId: peer.id, candidate: {} });
    assert.equal((await nextNamed(attacker, 'error'))[1].type, 'not_joined');
    const leaked = attacker.queue.drain().filter(([e]) => e !== 'error');
    assert.deepEqual(leaked, [], 'the attacker received nothing of the room');
    const peerSaw = peer.queue.drain().filter(([e]) => e === 'getOffer' || e === 'reconnect' || e === 'leave');
    assert.deepEqual(peerSaw, [], 'the peer was never asked to renegotiate with the attacker');
  } finally {
    for (const c of clients) c.close();
    await gw2.stop();
  }
});

test('chatroom: a member whose old connection is silently dead returns from a new address', async () => {
  const gw2 = await startTestGateway(FAST_HEARTBEAT);
  const clients = [];
  try {
    const url = gw2.urls.chatroom;
    const { victim, peer } = await linkedPair(url, 'takeover-4', 'moving-user-91c2');
    clients.push(victim, peer);
    // The old connection goes silent (a network switch): it no longer reads, so no pong.
    victim.socket.io.engine.transport.ws._socket.pause();
    const moved = await chatroomClient(url, 'moved', ATTACKER);
    clients.push(moved);
    moved.emit('reconnect', { id: 'moving-user-91c2', username: 'v', roomname: 'takeover-4' });
    // Once the gateway notices the old connection is gone, the member is bound to the new one.
    const [, again] = await nextNamed(peer, 'reconnect', PARK_LIMIT_MS + 4000);
    assert.deepEqual(again, { type: 'getOffer', connectorId: 'cPV' });
    peer.emit('icecandidate', { remoteConnectorId: 'cVP', memberId: moved.id, candidate: { n: 1 } });
    assert.deepEqual((await nextNamed(moved, 'icecandidate'))[1], { connectorId: 'cVP', candidate: { n: 1 } });
    assert.deepEqual(moved.queue.drain().filter(([e]) => e === 'error'), []);
  } finally {
    for (const c of clients) c.close();
    await gw2.stop();
  }
});

test('behind a trusted proxy a polling session is bound to the client the proxy names, not to the proxy', async () => {
  // Both "clients" reach the gateway through the same proxy address (127.0.0.1), which is
  // trusted and names each client in X-Forwarded-For.
  const gw = await startGateway({ sets: ['limits.trusted_proxies=["127.0.0.1"]'] });
  try {
    const victim = { 'x-forwarded-for': '198.51.100.7' };
    const attacker = { 'x-forwarded-for': '198.51.100.66' };
    const h = await rawHandshake(gw.urls.chatroom, { eio: 4, headers: victim });
    assert.ok(h.sid, 'handshake opened a session');
    const refused = await rawPost(gw.urls.chatroom, h.sid, '40', { eio: 4, headers: attacker });
    assert.equal(refused.status, 400, `another client behind the proxy is refused: ${refused.body}`);
    assert.match(refused.body, /Session ID unknown/);
    const own = await rawPost(gw.urls.chatroom, h.sid, '40', { eio: 4, headers: victim });
    assert.equal(own.status, 200, `the client itself still posts: ${own.body}`);
  } finally {
    await gw.stop();
  }
});
