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
