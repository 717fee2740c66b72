// Bad input of every shape: the process survives, other sessions carry on, a fresh pair still
// completes a join and a relay, and the adapter counts what it ignored.
// The original server died on a missing payload, on `null`, and on `__proto__` as a room or `to`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { startTestGateway, socketIoV2Factory, connectClient, metricValue, withTimeout, eventually } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');
const P = { protocol: 'webrtcroom' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function join(client, room, members) {
  client.emit('createAndJoinRoom', { room });
  for (const m of members) assert.deepEqual(await m.queue.next(3000, `joined ${client.name}`), ['joined', { id: client.id, room }]);
  assert.deepEqual(await client.queue.next(3000, `created ${room}`), ['created', { id: client.id, room, peers: members.map((m) => ({ id: m.id })) }]);
}

async function relayWorks(from, to, room, tag) {
  const offer = { from: from.id, to: to.id, room, sdp: `v=0\r\ns=${tag}\r\n` };
  from.emit('offer', offer);
  assert.deepEqual(await to.queue.next(3000, `offer ${tag}`), ['offer', offer]);
}

/** Opens a raw Engine.IO v3 WebSocket, waits for `0{...}` and `40`, sends `frames`, closes. */
async function rawWebSocket(base, frames, { binary = false } = {}) {
  const url = `${base.replace(/^http/, 'ws')}/socket.io/?EIO=3&transport=websocket`;
  const ws = new WebSocket(url);
  const received = [];
  let closed = false;
  const closedP = new Promise((r) => ws.on('close', () => { closed = true; r(); }));
  ws.on('error', () => {});
  ws.on('message', (d, isBinary) => received.push(isBinary ? d : d.toString()));
  await withTimeout(new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); }), 3000, 'raw websocket open');
  await eventually(() => received.includes('40'), 3000, 'raw websocket got 40');
  for (const f of frames) if (!closed) ws.send(f, { binary });
  await sleep(50);
  ws.close();
  await withTimeout(closedP, 3000, 'raw websocket closed');
  return received;
}

test('bad input of every shape changes nothing and is counted; the process and other sessions carry on', async () => {
  const gw = await startTestGateway();
  const clients = [];
  const track = (c) => (clients.push(c), c);
  try {
    const base = gw.urls.webrtcroom;
    const ws = socketIoV2Factory(base, { transports: ['websocket'] });
    const polling = socketIoV2Factory(base, { transports: ['polling'] });

    // An unrelated pair, connected before the abuse, one of them on long-polling.
    const u1 = track(await connectClient(ws, 'u1'));
    const u2 = track(await connectClient(polling, 'u2'));
    await join(u1, 'calm', []);
    await join(u2, 'calm', [u1]);

    // The abuser is a member of a room with a partner, so relays get past membership checks.
    const x = track(await connectClient(ws, 'x'));
    const xp = track(await connectClient(ws, 'xp'));
    await join(x, 'abuse', []);
    await join(xp, 'abuse', [x]);
    const before = await gw.metrics();

    // Each entry: [what the gateway must do with it, event, ...args]. 'bad' = ignored and
    // counted as bad input; 'drop' = well-formed but refused (counted as a drop).
    const objectsWhereStringsBelong = [{}, [], { a: 1 }, ['x'], null, 5, true, 1.5, -0];
    const emits = [];
    for (const event of ['createAndJoinRoom', 'offer', 'answer', 'candidate', 'exit']) {
      emits.push(['bad', event]); // no payload
      for (const v of [null, 0, 42, -1.5, 1e308, '', 'text', '{"room":"r"}', [], [1, 2], [{ room: 'r' }], true, false]) emits.push(['bad', event, v]);
      emits.push(['bad', event, null, { room: 'r' }, 'extra']);
    }
    // (A number is a valid room, as in the original; everything else that is not a string is not.)
    for (const room of [{}, [], { a: 1 }, ['x'], null, true, false]) emits.push(['bad', 'createAndJoinRoom', { room }]);
    emits.push(['bad', 'createAndJoinRoom', { room: '' }], ['bad', 'createAndJoinRoom', {}], ['bad', 'createAndJoinRoom', { Room: 'r' }]);
    for (const event of ['offer', 'answer', 'candidate']) {
      for (const bad of objectsWhereStringsBelong) {
        emits.push(['bad', event, { from: x.id, to: bad, room: 'abuse', sdp: 'v=0' }]);
        emits.push(['bad', event, { from: bad, to: xp.id, room: 'abuse', sdp: 'v=0' }]);
      }
      emits.push(['bad', event, { from: x.id, room: 'abuse', sdp: 'v=0' }]); // no to
      emits.push(['bad', event, { to: xp.id, room: 'abuse', sdp: 'v=0' }]); // no from
      emits.push(['drop', event, { from: x.id, to: '__proto__', room: 'abuse', sdp: 'v=0' }]);
      emits.push(['drop', event, { from: x.id, to: 'constructor', room: '__proto__', sdp: 'v=0' }]);
      emits.push(['drop', event, { from: '__proto__', to: xp.id, room: 'abuse', sdp: 'v=0' }]);
      emits.push(['drop', event, { __proto__: { polluted: true }, from: x.id, to: 'prototype', room: 'abuse' }]);
    }
    for (const bad of objectsWhereStringsBelong) emits.push(['bad', 'exit', { from: bad, room: 'abuse' }]);
    emits.push(['drop', 'exit', { from: '__proto__', room: '__proto__' }]);
    for (const name of ['hello', 'created', 'joined', 'Offer', 'OFFER', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '', ' ', '房间', 'x'.repeat(10_000)]) {
      emits.push(['bad', name, { from: x.id, to: xp.id, room: 'abuse', sdp: 'v=0' }]);
    }
    for (const [, event, ...args] of emits) x.emit(event, ...args);
    // Binary payloads (a binary event packet with an attachment).
    x.emit('offer', Buffer.from([0, 1, 2, 3]));
    x.emit('offer', { from: x.id, to: xp.id, room: 'abuse', sdp: Buffer.from('v=0') });
    x.emit('createAndJoinRoom', { room: Buffer.from('r') });
    const badCount = emits.filter(([k]) => k === 'bad').length + 3;
    const dropCount = emits.filter(([k]) => k === 'drop').length;
    // The abuser is still a member and its later, valid messages still work, in order.
    await relayWorks(x, xp, 'abuse', 'after-abuse');
    assert.deepEqual(xp.queue.drain(), [], 'the partner got nothing but the valid offer');

    // `__proto__` and `constructor` are ordinary room names.
    const p1 = track(await connectClient(ws, 'p1'));
    const p2 = track(await connectClient(polling, 'p2'));
    await join(p1, '__proto__', []);
    await join(p2, '__proto__', [p1]);
    await relayWorks(p2, p1, '__proto__', 'proto-room');
    await join(p1, 'constructor', []);
    assert.deepEqual(await p2.queue.next(3000, 'exit'), ['exit', { from: p1.id, room: '__proto__' }]);
    await join(p2, 'constructor', [p1]);

    // 1 MB fields, from clients in a room of their own: the engine may close the sender
    // (max_payload). Whether the limit holds is the next test's business; here only the
    // survival of everything else matters.
    const big = track(await connectClient(ws, 'big'));
    const bigPartner = track(await connectClient(ws, 'bigPartner'));
    await join(big, 'big', []);
    await join(bigPartner, 'big', [big]);
    big.emit('offer', { from: big.id, to: bigPartner.id, room: 'big', sdp: 'a'.repeat(1024 * 1024) });
    big.emit('createAndJoinRoom', { room: 'b'.repeat(1024 * 1024) });
    const bigPolling = track(await connectClient(polling, 'bigp'));
    bigPolling.emit('createAndJoinRoom', { room: 'c'.repeat(1024 * 1024) });
    await sleep(300);

    // Garbage Engine.IO / Socket.IO frames over raw WebSockets, one connection per frame so
    // that each one reaches the parser even if an earlier one closed its connection.
    const garbage = [
      '42[', '4{', '42["offer"', '42["offer",{"from":', '42', '4', '42[]', '42{}', '42null', '42[null]', '42[1,2]',
      '42[{"a":1}]', '42["createAndJoinRoom",{"room":1e999}]', '42["createAndJoinRoom",{"room":"\\ud800"}]',
      '42["offer",{"from":"a","to":"b"}', '43["offer"]', '45-["offer",{"_placeholder":true,"num":0}]',
      '49', '4-1', '0/nonexistent,', '40/nonexistent,', '40/nonexistent?x=1,', '41/nonexistent,', '44"x"',
      '2probe', '3', '5', '6', '9', 'x', '', '\u0000', '4\u0000', '42["\u0000",{}]', '42["exit",{"from":"' + 'y'.repeat(200_000) + '"}]',
    ];
    const garbageSent = [];
    for (const frame of garbage) {
      garbageSent.push(frame);
      await rawWebSocket(base, [frame]);
    }
    await rawWebSocket(base, [randomBytes(64), randomBytes(1), Buffer.alloc(0)], { binary: true });
    await rawWebSocket(base, garbage.slice(0, 12)); // several in one session too

    // Garbage polling payloads (Engine.IO v3 framing), one session each.
    for (const payload of ['abc', '5:42[', '999:42["x"]', '1:', ':::', '2:4', '3:42[', '-1:2', '38:42["createAndJoinRoom",{"room":"房间1"}', '1:2x']) {
      await garbagePoll(base, payload);
    }

    // Still alive, and every session that was not itself abusive still works.
    assert.equal(gw.child.exitCode, null, 'gateway process is still running');
    await relayWorks(u1, u2, 'calm', 'u1-after');
    await relayWorks(u2, u1, 'calm', 'u2-after');
    assert.deepEqual(u1.queue.drain(), [], 'u1 got nothing unexpected');
    assert.deepEqual(u2.queue.drain(), [], 'u2 got nothing unexpected');

    // A fresh pair completes create/join and an offer relay, over each transport.
    const f1 = track(await connectClient(ws, 'f1'));
    const f2 = track(await connectClient(polling, 'f2'));
    await join(f1, 'fresh', []);
    await join(f2, 'fresh', [f1]);
    await relayWorks(f1, f2, 'fresh', 'fresh');
    await relayWorks(f2, f1, 'fresh', 'fresh-back');

    // The adapter counted what it ignored.
    const after = await gw.metrics();
    const delta = (labels) => metricValue(after, 'gateway_bad_input_total', { ...P, ...labels }) - metricValue(before, 'gateway_bad_input_total', { ...P, ...labels });
    const byKind = {};
    for (const [k] of Object.entries(after)) {
      const m = /^gateway_bad_input_total\{.*kind="([^"]+)"/.exec(k);
      if (m && k.includes('protocol="webrtcroom"')) byKind[m[1]] = delta({ kind: m[1] });
    }
    const kinds = JSON.stringify(byKind);
    for (const kind of ['missing_payload', 'not_an_object', 'bad_room', 'bad_field', 'unknown_event', 'binary']) {
      assert.ok(delta({ kind }) > 0, `bad_input ${kind} counted (${kinds})`);
    }
    // Every bad event x emitted reached the adapter (x stayed connected) and was counted; the
    // raw garbage adds more, so this is a lower bound.
    assert.ok(delta({}) >= badCount, `at least ${badCount} bad inputs counted (${kinds})`);
    assert.equal(metricValue(after, 'gateway_dropped_total', { ...P, reason: 'send_buffer_full' }), 0);
    // `__proto__` / `constructor` as `to` or `from` are unknown members or spoofs (dropped).
    const drops = ['unknown_target', 'spoofed_from'].reduce((n, reason) => n + metricValue(after, 'gateway_dropped_total', { ...P, reason }) - metricValue(before, 'gateway_dropped_total', { ...P, reason }), 0);
    assert.ok(drops >= dropCount, `at least ${dropCount} drops for prototype-named targets and froms, got ${drops}`);
    assert.equal(Object.prototype.polluted, undefined);
  } finally {
    for (const c of clients) c.close();
    const code = await gw.stop();
    assert.equal(code, 0, `gateway exit code after SIGTERM; stderr tail:\n${gw.stderr().slice(-2000)}`);
  }
});

function garbagePoll(base, payload) {
  const u = new URL(base);
  const req = (method, path, body) =>
    withTimeout(
      new Promise((resolve, reject) => {
        const headers = body === undefined ? {} : { 'content-type': 'text/plain;charset=UTF-8', 'content-length': Buffer.byteLength(body) };
        const r = http.request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
        });
        r.on('error', reject);
        if (body !== undefined) r.write(body);
        r.end();
      }),
      3000,
      `${method} ${path}`,
    );
  return (async () => {
    const hs = await req('GET', '/socket.io/?EIO=3&transport=polling');
    assert.equal(hs.status, 200);
    const sid = /"sid":"([^"]+)"/.exec(hs.body)[1];
    const res = await req('POST', `/socket.io/?EIO=3&transport=polling&sid=${sid}`, payload);
    assert.ok(res.status < 500, `garbage POST ${JSON.stringify(payload)} answered ${res.status}`);
    // Close the session if it is still open.
    await req('POST', `/socket.io/?EIO=3&transport=polling&sid=${sid}`, '1:1').catch(() => {});
  })();
}

async function sizedRelay(s, r, room, size) {
  const offer = { from: s.id, to: r.id, room, sdp: 'a'.repeat(size) };
  s.emit('offer', offer);
  const [event, msg] = await r.queue.next(3000, `offer with a ${size}-character sdp`);
  assert.equal(event, 'offer');
  assert.equal(msg.sdp, offer.sdp, 'relayed intact');
}

/** After an over-limit send: the partner heard no offer (at most the sender's disconnect). */
async function nothingRelayed(s, r, label) {
  await sleep(500);
  for (const [event, msg] of r.queue.drain()) {
    assert.notEqual(event, 'offer', `${label}: a ${msg?.sdp?.length}-character sdp was relayed`);
    assert.deepEqual([event, msg], ['exit', { from: s.id, room: '' }], `${label}: only the sender's disconnect may be heard`);
  }
  const mine = s.queue.drain();
  assert.deepEqual(mine.map(([e, m]) => [e, typeof m?.room === 'string' ? m.room.length : m?.room]), [], `${label}: no answer to an over-limit join`);
}

test('limits.max_payload and max_name_length: an event over the size limit or a room over the name limit is refused and counted', async () => {
  // Defaults (256 KiB per event, 256-character names); tests/fixtures/test.toml leaves them.
  const gw = await startTestGateway(['limits.max_payload=262144', 'limits.max_name_length=256']);
  const clients = [];
  try {
    for (const transports of [['websocket'], ['polling']]) {
      const t = transports[0];
      const mk = socketIoV2Factory(gw.urls.webrtcroom, { transports });
      const s = await connectClient(mk, `s-${t}`);
      const r = await connectClient(mk, `r-${t}`);
      clients.push(s, r);
      await join(s, `lim-${t}`, []);
      await join(r, `lim-${t}`, [s]);
      const before = await gw.metrics();
      await sizedRelay(s, r, `lim-${t}`, 200_000);
      s.emit('offer', { from: s.id, to: r.id, room: `lim-${t}`, sdp: 'a'.repeat(300_000) });
      s.emit('createAndJoinRoom', { room: 'n'.repeat(257) });
      await nothingRelayed(s, r, t);
      // The sender is still a member of its room and may go on.
      await sizedRelay(s, r, `lim-${t}`, 10);
      const name = `${t}-`.padEnd(256, 'n');
      s.emit('createAndJoinRoom', { room: name });
      assert.deepEqual((await r.queue.next(3000, 'exit'))[0], 'exit');
      assert.deepEqual(await s.queue.next(3000, 'created'), ['created', { id: s.id, room: name, peers: [] }], 'a 256-character room is fine');
      const after = await gw.metrics();
      const refused = (reason) => metricValue(after, 'gateway_refused_total', { ...P, reason }) - metricValue(before, 'gateway_refused_total', { ...P, reason });
      assert.equal(refused('payload_size'), 1, `${t}: the oversized event is counted`);
      assert.equal(refused('name_length'), 1, `${t}: the overlong room is counted`);
    }
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});

test('engine.max_payload bounds one request or frame, over websocket as over long-polling', async () => {
  // webrtcroom.engine.max_payload is "the largest Engine.IO payload accepted from a client".
  // The event-size limit is raised above it so that only the engine limit is in play.
  const gw = await startTestGateway(['webrtcroom.engine.max_payload=1000000', 'limits.max_payload=4000000']);
  const clients = [];
  try {
    for (const transports of [['websocket'], ['polling']]) {
      const t = transports[0];
      const mk = socketIoV2Factory(gw.urls.webrtcroom, { transports });
      const s = await connectClient(mk, `s-${t}`);
      const r = await connectClient(mk, `r-${t}`);
      clients.push(s, r);
      await join(s, `max-${t}`, []);
      await join(r, `max-${t}`, [s]);
      await sizedRelay(s, r, `max-${t}`, 900_000); // under the limit: relayed intact
      s.emit('offer', { from: s.id, to: r.id, room: `max-${t}`, sdp: 'a'.repeat(1024 * 1024) });
      await nothingRelayed(s, r, `${t}, 1 MiB offer with engine.max_payload = 1,000,000`);
    }
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});
