// Hostile load (issue 15): what one client can do to the gateway's memory, log and state, and
// what the others see meanwhile. Each test asserts what a user or an operator sees: sockets
// closed, peers told, RSS bounded, stderr size, rooms listed by /api/rooms.
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
const MiB = 1024;

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

/** Samples a process's RSS every 20 ms until `stop()`; resolves with the peak in KiB. */
function rssPeak(pid) {
  let peak = rssKiB(pid);
  const timer = setInterval(() => { try { peak = Math.max(peak, rssKiB(pid)); } catch { /* gone */ } }, 20);
  return { stop: () => { clearInterval(timer); return peak; }, peak: () => peak };
}

const next = (socket, event, ms = 5000) =>
  withTimeout(new Promise((resolve) => socket.once(event, resolve)), ms, `${event}`);

async function webrtc(url) {
  const s = ioV2(url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  await next(s, 'connect');
  return s;
}

/** A raw WebSocket WebRtcRoom client (EIO 3) that joins `room` then stops reading. */
async function pausedReceiver(url, room) {
  const ws = new WebSocket(`ws://${url.host}/socket.io/?EIO=3&transport=websocket`, { perMessageDeflate: false });
  const sid = await withTimeout(new Promise((resolve, reject) => {
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.startsWith('0')) resolve(JSON.parse(text.slice(1)).sid);
    });
    ws.on('error', reject);
  }), 5000, 'paused receiver open');
  let closed = false;
  const closedP = new Promise((resolve) => ws.on('close', () => { closed = true; resolve(); }));
  ws.on('error', () => {});
  await sleep(100);
  ws.send(`42["createAndJoinRoom",{"room":"${room}"}]`);
  await sleep(200);
  ws.pause();
  ws._socket.pause();
  return { ws, sid, closed: () => closed, closedP };
}

test('paused receivers of 250 KB events: RSS stays within the send budget, each is closed and its peers told within a second, memory returns', async () => {
  const budgetMiB = 8; // limits.send_budget default
  const gw = await startGateway();
  const peakWatch = rssPeak(gw.child.pid);
  const clients = [];
  try {
    const url = new URL(gw.urls.webrtcroom);
    const receivers = [];
    for (let i = 0; i < 3; i++) receivers.push(await pausedReceiver(url, 'big'));
    const senders = [];
    for (let i = 0; i < 2; i++) {
      const s = await webrtc(gw.urls.webrtcroom);
      clients.push(s);
      s.emit('createAndJoinRoom', { room: 'big' });
      await next(s, 'created');
      senders.push(s);
    }
    const exits = senders.map((s) => {
      const seen = new Map();
      s.on('exit', (d) => seen.set(d.from, Date.now()));
      return seen;
    });
    await sleep(300);
    const before = rssKiB(gw.child.pid);
    const sdp = 'v'.repeat(250_000);
    // 2 senders x 3 receivers x 100 events of 250 KB: 150 MB aimed at readers that never read.
    for (let i = 0; i < 100; i++) {
      for (const s of senders) {
        for (const r of receivers) s.emit('offer', { from: s.id, to: r.sid, room: 'big', sdp, i });
      }
      await sleep(5);
    }
    // The senders' own buffers drain: their last message has reached the gateway once a
    // relay through the same path comes back.
    const [a, b] = senders;
    const echo = next(b, 'candidate', 30_000);
    a.emit('candidate', { from: a.id, to: b.id, room: 'big', candidate: 'done' });
    await echo;
    const sent = Date.now();
    await sleep(1000);
    const peak = peakWatch.peak();
    console.log(`paused receivers: RSS ${before} KiB before, peak ${peak} KiB (+${peak - before} KiB), budget ${budgetMiB} MiB each`);
    for (const seen of exits) {
      for (const r of receivers) {
        assert.ok(seen.has(r.sid), `a sender was told that receiver ${r.sid} left (exit)`);
        assert.ok(seen.get(r.sid) <= sent + 1000, 'within a second');
      }
    }
    assert.ok(peak - before < (3 * budgetMiB + 32) * MiB, `RSS peak grew by ${peak - before} KiB`);
    // The server shut each receiver's connection: once it reads what the kernel holds, it
    // finds the end of the stream.
    for (const r of receivers) { r.ws._socket.resume(); r.ws.resume(); }
    await withTimeout(Promise.all(receivers.map((r) => r.closedP)), 5000, 'receivers closed by the server');
    const m = await gw.metrics();
    const closedCount = metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'slow_consumer_disconnect' });
    assert.equal(closedCount, 3, 'each receiver closed once');
    await sleep(2000);
    const after = rssKiB(gw.child.pid);
    console.log(`paused receivers: RSS ${after} KiB after they were closed`);
    assert.ok(after - before < 16 * MiB, `RSS went back down (+${after - before} KiB)`);
  } finally {
    peakWatch.stop();
    for (const c of clients) c.close();
    await gw.stop();
  }
});

/** Opens a raw WebSocket client, sends `frames` as soon as the server lets it, then kills
 * the connection without a goodbye, in the same tick as the last frame. */
function joinAndVanish(url, eio, frames) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${url.host}/socket.io/?EIO=${eio}&transport=websocket`, { perMessageDeflate: false });
    const timer = setTimeout(() => { ws.terminate(); resolve(); }, 5000);
    ws.on('error', () => {});
    ws.on('close', () => { clearTimeout(timer); resolve(); });
    ws.on('message', (data) => {
      const text = data.toString();
      // EIO4 needs the namespace connect first; EIO3 is connected to "/" with its open packet.
      if (eio === 4 && text.startsWith('0')) { ws.send('40'); return; }
      if ((eio === 4 && text.startsWith('40')) || (eio === 3 && text.startsWith('40'))) {
        for (const f of frames) ws.send(f);
        ws._socket.destroy();
      }
    });
  });
}

test('joins racing their own disconnect leave no ghost member: /api/rooms and metrics show 0 members', async () => {
  const gw = await startGateway();
  try {
    const w = new URL(gw.urls.webrtcroom);
    const c = new URL(gw.urls.chatroom);
    for (let round = 0; round < 6; round++) {
      const batch = [];
      for (let i = 0; i < 50; i++) {
        const n = round * 50 + i;
        batch.push(joinAndVanish(w, 3, [`42["createAndJoinRoom",{"room":"race-${n % 7}"}]`]));
        batch.push(joinAndVanish(c, 4, [
          `42["join",{"id":"race-${n}","username":"u${n}","roomname":"race-${n % 7}"}]`,
          `42["offer",{"remoteConnectorId":"x","connectorId":"y","memberId":"nobody","offer":{},"streamType":"user"}]`,
        ]));
      }
      await Promise.all(batch);
    }
    // chatroom keeps a dropped member for reconnect_grace (2 s in the test config).
    await eventually(async () => {
      const rooms = await (await fetch(`${gw.urls.admin}/api/rooms`)).json();
      const m = await gw.metrics();
      const left = {
        webrtcroom: rooms.webrtcroom.member_count,
        chatroom: rooms.chatroom.member_count,
        webrtcroomGauge: metricValue(m, 'gateway_members', { protocol: 'webrtcroom' }),
        chatroomGauge: metricValue(m, 'gateway_members', { protocol: 'chatroom' }),
      };
      assert.deepEqual(left, { webrtcroom: 0, chatroom: 0, webrtcroomGauge: 0, chatroomGauge: 0 }, 'no member outlives its connection');
      return true;
    }, 10_000, 'no members left');
    const m = await gw.metrics();
    console.log(`join/disconnect race: ${metricValue(m, 'gateway_joins_total', { protocol: 'webrtcroom' })} + ${metricValue(m, 'gateway_joins_total', { protocol: 'chatroom' })} joins accepted`);
  } finally {
    await gw.stop();
  }
});

async function chat(url) {
  const s = ioV4(url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  await withTimeout(new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); }), 5000, 'connect');
  return s;
}

/** Two chatroom members of `room`; B's join reaches A as getOffer. */
async function chatPair(url, room) {
  const a = await chat(url);
  a.emit('join', { id: `${room}-a`, username: 'a', roomname: room });
  const getOffer = next(a, 'getOffer');
  const b = await chat(url);
  b.emit('join', { id: `${room}-b`, username: 'b', roomname: room });
  await getOffer;
  return [a, b];
}

test('chatroom links: long streamType/connectorId and links beyond limits.max_links are refused with error limit; RSS stays flat', async () => {
  const gw = await startGateway({ sets: ['limits.max_links=50'] });
  const clients = [];
  try {
    const [a, b] = await chatPair(gw.urls.chatroom, 'links');
    clients.push(a, b);
    const errors = [];
    a.on('error', (e) => errors.push(e));
    let offers = 0;
    b.on('offer', () => { offers += 1; });
    const before = rssKiB(gw.child.pid);
    const filler = 'x'.repeat(100_000);
    for (let i = 0; i < 1500; i++) {
      a.emit('offer', { remoteConnectorId: 'r', connectorId: `c${i}`, memberId: b.id, offer: { sdp: '' }, streamType: `${i}${filler}` });
      if (i % 50 === 0) await sleep(1);
    }
    // One more relay through the same path marks the end of the flood.
    const done = next(b, 'icecandidate', 30_000);
    a.emit('icecandidate', { remoteConnectorId: 'r', memberId: b.id, candidate: 'end' });
    await done;
    await sleep(500);
    const after = rssKiB(gw.child.pid);
    console.log(`1,500 offers with 100 KB streamType values: ${errors.length} refused, ${offers} relayed; RSS ${before} -> ${after} KiB`);
    assert.equal(offers, 0, 'no offer with a 100 KB streamType was relayed');
    assert.equal(errors.length, 1500, 'each was refused');
    assert.equal(errors[0].type, 'limit');
    assert.ok(after - before < 16 * MiB, `RSS stayed flat (+${after - before} KiB)`);

    // Distinct short stream kinds: links beyond max_links are refused, the rest relayed.
    errors.length = 0;
    for (let i = 0; i < 80; i++) {
      a.emit('offer', { remoteConnectorId: 'r', connectorId: `k${i}`, memberId: b.id, offer: { sdp: '' }, streamType: `kind${i}` });
    }
    const end = next(b, 'icecandidate', 10_000);
    a.emit('icecandidate', { remoteConnectorId: 'r', memberId: b.id, candidate: 'end' });
    await end;
    await sleep(200);
    assert.equal(offers, 50, 'the first max_links links were relayed');
    assert.equal(errors.length, 30, 'the others refused');
    assert.match(errors[0].message, /too many links/);
    // An offer that replaces a link (same stream kind) still goes through.
    const again = next(b, 'offer');
    a.emit('offer', { remoteConnectorId: 'r', connectorId: 'k0b', memberId: b.id, offer: { sdp: '' }, streamType: 'kind0' });
    await again;
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});

test('a flood of dropped messages writes a few log lines, while the drop counter counts every one', async () => {
  const gw = await startGateway({
    sets: ['webrtcroom.engine.send_buffer=16', 'limits.slow_consumer_drops=0'],
  });
  const clients = [];
  try {
    const url = new URL(gw.urls.webrtcroom);
    const slow = await pausedReceiver(url, 'drops');
    let received = 0;
    slow.ws.on('message', (data) => { if (data.toString().startsWith('42["offer"')) received += 1; });
    const sender = await webrtc(gw.urls.webrtcroom);
    clients.push(sender);
    sender.emit('createAndJoinRoom', { room: 'drops' });
    await next(sender, 'created');
    const linesBefore = gw.stderr().split('\n').length;
    const sdp = 's'.repeat(16 * 1024);
    const sent = 2000;
    for (let i = 0; i < sent; i++) {
      sender.emit('offer', { from: sender.id, to: slow.sid, room: 'drops', sdp, i });
      if (i % 100 === 0) await sleep(1);
    }
    const dropped = async () => metricValue(await gw.metrics(), 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'send_buffer_full' });
    // The flood is over once the drop count stops moving.
    let last = -1;
    await eventually(async () => { const d = await dropped(); const still = d === last; last = d; await sleep(300); return still && d > 0; }, 20_000, 'drops settle');
    const lines = gw.stderr().split('\n').length - linesBefore;
    console.log(`drop flood: ${last} drops counted, ${lines} log lines`);
    assert.ok(last > 500, `the flood made drops (${last})`);
    assert.ok(lines <= 10, `stderr stayed small: ${lines} lines for ${last} drops`);
    // Exact count: what the receiver gets once it reads again, plus what was counted as
    // dropped, is everything that was sent to it.
    slow.ws._socket.resume(); slow.ws.resume();
    await eventually(async () => received + (await dropped()) === sent, 15_000, `received ${received} + dropped = ${sent}`);
    slow.ws.terminate();
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});

test('chatroom join-then-drop flood at max_rooms: a fresh client from 127.0.0.2 still joins a new room', async () => {
  const gw = await startGateway({ sets: ['chatroom.limits.max_rooms=30', 'chatroom.reconnect_grace=60s'] });
  const clients = [];
  try {
    const url = new URL(gw.urls.chatroom);
    // One source fills every room slot with members that join and drop at once: they stay
    // away for the whole grace period.
    for (let round = 0; round < 3; round++) {
      const batch = [];
      for (let i = 0; i < 30; i++) {
        const n = round * 30 + i;
        batch.push(joinAndVanish(url, 4, [`42["join",{"id":"flood-${n}","username":"f${n}","roomname":"flood-${n}"}]`]));
      }
      await Promise.all(batch);
    }
    await eventually(async () => (await (await fetch(`${gw.urls.admin}/api/rooms`)).json()).chatroom.room_count === 30, 5000, 'max_rooms filled');
    const fresh = ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false, transports: ['websocket'], localAddress: '127.0.0.2' });
    clients.push(fresh);
    await withTimeout(new Promise((resolve, reject) => { fresh.once('connect', resolve); fresh.once('connect_error', reject); }), 5000, 'connect');
    const refused = new Promise((resolve) => fresh.once('error', resolve));
    fresh.emit('join', { id: 'fresh', username: 'fresh', roomname: 'live-room' });
    // The joiner hears nothing on success; a relay to itself confirms it is a member.
    const echo = next(fresh, 'icecandidate');
    fresh.emit('icecandidate', { remoteConnectorId: 'self', memberId: fresh.id, candidate: { joined: true } });
    const outcome = await Promise.race([echo.then(() => 'joined'), refused.then((e) => `refused: ${JSON.stringify(e)}`)]);
    assert.equal(outcome, 'joined');
    const rooms = await (await fetch(`${gw.urls.admin}/api/rooms`)).json();
    assert.ok(rooms.chatroom.room_count <= 30, 'max_rooms still holds');
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});
