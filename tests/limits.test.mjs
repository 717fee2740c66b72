// Limits and failure behaviour (DESIGN invariants 4 and 5; README "Limits and failure
// behaviour"): each limit is reached and refused as specified while other sessions carry
// on; a flooding client is throttled then closed; a receiver that stops reading does not
// grow the gateway's memory without bound; SIGTERM with 100 clients exits cleanly in time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { io as ioV4 } from 'socket.io-client';
import { startGateway } from './lib/gateway.mjs';
import { eventually, metricValue, withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));


/** Resolves with the payload of the next `event` on `socket`. */
const next = (socket, event, ms = 5000) =>
  withTimeout(new Promise((resolve) => socket.once(event, resolve)), ms, `${event}`);

async function chat(url, opts = {}) {
  const s = ioV4(url, { forceNew: true, reconnection: false, transports: ['websocket'], ...opts });
  await withTimeout(new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); }), 5000, 'connect');
  return s;
}

async function webrtc(url) {
  const s = ioV2(url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  await next(s, 'connect');
  return s;
}

/** A chatroom member that joined `room` as `name`. The joiner hears nothing back, so a relay
 * to itself confirms the join (joins of different sockets are not ordered with each other). */
async function member(url, room, name) {
  const s = await chat(url);
  s.emit('join', { id: `u-${name}`, username: name, roomname: room });
  const echo = next(s, 'icecandidate');
  s.emit('icecandidate', { remoteConnectorId: 'self', memberId: s.id, candidate: { joined: true } });
  await echo;
  return s;
}


function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

/** A pair in room `room` relaying `n` numbered candidates; resolves with what arrived. */
async function relayPair(url, room, n, perSecond) {
  const a = await member(url, room, 'pa');
  const got = [];
  const getOffer = next(a, 'getOffer');
  const b = await member(url, room, 'pb');
  await getOffer;
  const done = new Promise((resolve) => {
    b.on('icecandidate', (d) => { got.push(d.candidate.n); if (got.length === n) resolve(); });
  });
  for (let i = 0; i < n; i++) {
    a.emit('icecandidate', { remoteConnectorId: 'c', memberId: b.id, candidate: { n: i } });
    if (perSecond) await sleep(1000 / perSecond);
  }
  await withTimeout(done, 15_000, `${n} relays`);
  a.close(); b.close();
  return got;
}

test('an event over limits.max_payload is refused with error {type:"limit"}; others unaffected', async () => {
  const gw = await startGateway({ sets: ['limits.max_payload=4096'] });
  try {
    const a = await member(gw.urls.chatroom, 'big', 'a');
    const getOffer = next(a, 'getOffer');
    const b = await member(gw.urls.chatroom, 'big', 'b');
    await getOffer;
    const error = next(a, 'error');
    a.emit('offer', { connectorId: 'c', memberId: b.id, offer: { sdp: 'x'.repeat(10_000) }, streamType: 'user' });
    assert.equal((await error).type, 'limit');
    // A normal-sized offer still goes through on the same connection.
    const offer = next(b, 'offer');
    a.emit('offer', { connectorId: 'c', memberId: b.id, offer: { sdp: 'v=0' }, streamType: 'user' });
    assert.equal((await offer).memberId, a.id);
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'payload_size' }), 1);
    a.close(); b.close();
  } finally {
    await gw.stop();
  }
});

test('limits.max_connections refuses the next connection with connect_error', async () => {
  const gw = await startGateway({ sets: ['chatroom.limits.max_connections=2'] });
  try {
    const a = await chat(gw.urls.chatroom);
    const b = await chat(gw.urls.chatroom);
    await assert.rejects(chat(gw.urls.chatroom), /full/);
    // The two admitted ones still work.
    a.emit('join', { id: 'ua', username: 'a', roomname: 'r' });
    const echo = next(a, 'icecandidate');
    a.emit('icecandidate', { remoteConnectorId: 'self', memberId: a.id, candidate: {} });
    await echo;
    const getOffer = next(a, 'getOffer');
    b.emit('join', { id: 'ub', username: 'b', roomname: 'r' });
    await getOffer;
    // A slot frees up when one leaves.
    b.close();
    await sleep(200);
    const c = await chat(gw.urls.chatroom);
    c.close(); a.close();
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'max_connections' }), 1);
  } finally {
    await gw.stop();
  }
});

test('limits.max_rooms and max_name_length refuse joins in both protocols', async () => {
  const gw = await startGateway({ sets: ['limits.max_rooms=1', 'limits.max_name_length=8'] });
  try {
    const a = await member(gw.urls.chatroom, 'one', 'a');
    const b = await chat(gw.urls.chatroom);
    let error = next(b, 'error');
    b.emit('join', { id: 'ub', username: 'b', roomname: 'two' });
    assert.equal((await error).type, 'limit');
    error = next(b, 'error');
    b.emit('join', { id: 'ub', username: 'b'.repeat(9), roomname: 'one' });
    assert.equal((await error).type, 'limit');
    // Within the limits, the same client joins.
    const getOffer = next(a, 'getOffer');
    b.emit('join', { id: 'ub', username: 'b', roomname: 'one' });
    assert.equal((await getOffer).memberId, b.id);

    const w = await webrtc(gw.urls.webrtcroom);
    let created = false;
    w.on('created', () => { created = true; });
    w.emit('createAndJoinRoom', { room: 'a-very-long-room-name' });
    await sleep(300);
    assert.equal(created, false, 'a room name over the limit is refused (nothing on the wire)');
    w.emit('createAndJoinRoom', { room: 'w1' });
    assert.equal((await next(w, 'created')).room, 'w1');
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason: 'name_length' }), 1);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'max_rooms' }), 1);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'name_length' }), 1);
    a.close(); b.close(); w.close();
  } finally {
    await gw.stop();
  }
});

test('a flooding client is throttled, then disconnected; another pair relays all, in order', async () => {
  const gw = await startGateway({
    sets: ['chatroom.limits.rate=200', 'chatroom.limits.burst=200', 'chatroom.limits.flood_disconnect=1000'],
  });
  try {
    const flooder = await member(gw.urls.chatroom, 'flood', 'f');
    const getOffer = next(flooder, 'getOffer');
    const victim = await member(gw.urls.chatroom, 'flood', 'v');
    await getOffer;
    let limitErrors = 0;
    flooder.on('error', (e) => { if (e.type === 'limit') limitErrors++; });
    const closed = next(flooder, 'disconnect', 20_000);
    const pair = relayPair(gw.urls.chatroom, 'calm', 300, 150);
    const start = Date.now();
    while (flooder.connected && Date.now() - start < 15_000) {
      for (let i = 0; i < 200; i++) {
        flooder.emit('icecandidate', { remoteConnectorId: 'c', memberId: victim.id, candidate: { i } });
      }
      await sleep(5);
    }
    // The server closes it; the close packet may not get past the flooder's own full buffer.
    assert.ok(['io server disconnect', 'transport close'].includes(await closed));
    assert.ok(limitErrors > 0, 'the flooder was told it hit the limit before being closed');
    const got = await pair;
    assert.deepEqual(got, [...Array(300).keys()], 'the calm pair got every relay, in order');
    const m = await gw.metrics();
    assert.ok(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'rate' }) > 0);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'flood_disconnect' }), 1);
    victim.close();
  } finally {
    await gw.stop();
  }
});

test('a receiver that stops reading is dropped to, counted, then closed; memory stays bounded', async () => {
  const gw = await startGateway({
    sets: ['webrtcroom.engine.send_buffer=256', 'limits.slow_consumer_drops=256'],
  });
  try {
    const url = new URL(gw.urls.webrtcroom);
    // The slow receiver: a raw WebSocket client that joins, then stops reading its socket.
    const slow = new WebSocket(`ws://${url.host}/socket.io/?EIO=3&transport=websocket`);
    const slowId = await withTimeout(new Promise((resolve) => {
      slow.on('message', (data) => {
        const text = data.toString();
        if (text.startsWith('0')) resolve(JSON.parse(text.slice(1)).sid);
      });
    }), 5000, 'slow client open');
    await sleep(100);
    slow.send('42["createAndJoinRoom",{"room":"slow"}]');
    await sleep(200);
    slow.pause();
    slow._socket.pause();

    const sender = await webrtc(gw.urls.webrtcroom);
    sender.emit('createAndJoinRoom', { room: 'slow' });
    await next(sender, 'created');
    const before = rssKiB(gw.child.pid);
    const pair = relayPairWebrtc(gw.urls.webrtcroom, 200);
    const sdp = 'a'.repeat(16 * 1024);
    for (let i = 0; i < 5000; i++) {
      sender.emit('offer', { from: sender.id, to: slowId, room: 'slow', sdp, i });
      if (i % 100 === 0) await sleep(1);
    }
    assert.deepEqual(await pair, [...Array(200).keys()], 'another room relays everything meanwhile');
    await sleep(500);
    const after = rssKiB(gw.child.pid);
    const m = await gw.metrics();
    const full = metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'send_buffer_full' });
    const closed = metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'slow_consumer_disconnect' });
    console.log(`slow consumer: ${full} drops counted, closed ${closed} time(s); RSS ${before} KiB -> ${after} KiB`);
    assert.ok(full >= 256, `drops counted (${full})`);
    assert.equal(closed, 1, 'the slow receiver was closed');
    // 5000 x 16 KiB = 80 MiB sent at it; the gateway may hold a bounded buffer, not all of it.
    assert.ok(after - before < 64 * 1024, `RSS grew by ${after - before} KiB`);
    sender.close();
    slow.terminate();
  } finally {
    await gw.stop();
  }
});

/** A WebRtcRoom pair relaying `n` numbered candidates; resolves with what arrived. */
async function relayPairWebrtc(url, n) {
  const a = await webrtc(url);
  a.emit('createAndJoinRoom', { room: 'other-room' });
  await next(a, 'created');
  const b = await webrtc(url);
  b.emit('createAndJoinRoom', { room: 'other-room' });
  await next(b, 'created');
  const got = [];
  const done = new Promise((resolve) => {
    a.on('candidate', (d) => { got.push(d.candidate.n); if (got.length === n) resolve(); });
  });
  for (let i = 0; i < n; i++) {
    b.emit('candidate', { from: b.id, to: a.id, room: 'other-room', candidate: { n: i } });
  }
  await withTimeout(done, 15_000, 'pair relays');
  a.close(); b.close();
  return got;
}

test('SIGTERM with 100 connected clients: closes them and exits 0 within shutdown.grace', async () => {
  const gw = await startGateway({ sets: ['shutdown.grace=3s', 'log.level=info'] });
  const clients = [];
  const disconnected = [];
  for (let i = 0; i < 100; i++) {
    const chatroom = i % 2 === 0;
    const s = chatroom ? await chat(gw.urls.chatroom) : await webrtc(gw.urls.webrtcroom);
    if (chatroom) s.emit('join', { id: `u${i}`, username: `n${i}`, roomname: `room${i % 10}` });
    else s.emit('createAndJoinRoom', { room: `room${i % 10}` });
    disconnected.push(next(s, 'disconnect', 10_000));
    clients.push(s);
  }
  await sleep(300);
  const start = Date.now();
  const code = await gw.stop();
  const took = Date.now() - start;
  console.log(`SIGTERM with 100 clients: exit ${code} after ${took} ms`);
  assert.equal(code, 0);
  assert.ok(took < 4000, `exited within the grace (${took} ms)`);
  const reasons = await Promise.all(disconnected);
  assert.equal(reasons.length, 100);
  assert.match(gw.stderr(), /shutting down: closing what is open/);
});
