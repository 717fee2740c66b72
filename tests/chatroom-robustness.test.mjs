// Chatroom robustness (issue 3, item 5): bad input of every shape is answered with an `error`
// event and changes nothing; garbage Socket.IO frames on a raw WebSocket harm nobody else;
// afterwards a fresh trio still completes a call, and the counters show what was refused.
// Also max_room_size with its counters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ROOT } from './lib/gateway.mjs';
import { loadScenarios, replay, startTestGateway, metricValue, withTimeout, EventQueue } from './lib/scenario.mjs';
import { chatroomFactory, assertReleased, untilJoined } from './lib/chatroom-scenario.mjs';

const require = createRequire(import.meta.url);
const { io } = require('socket.io-client');
const WebSocket = require('ws');

const SCENARIOS = Object.fromEntries(loadScenarios(path.join(ROOT, 'protocols', 'chatroom', 'scenarios')).map((s) => [s.file, s]));
const P = { protocol: 'chatroom' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function sioClient(url, name) {
  const socket = io(url, { forceNew: true, reconnection: false, transports: ['websocket'], timeout: 5000 });
  const queue = new EventQueue(name);
  socket.onAny((event, ...args) => queue.push(event, args));
  await withTimeout(new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  }), 6000, `${name} connects`);
  return { socket, queue, id: socket.id };
}

/**
 * Opens a raw Engine.IO v4 WebSocket, connects to namespace `/` ("40") and returns a handle
 * whose `frames` collects every text frame after the open packet.
 */
async function rawSocket(base) {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  let waiter = null;
  const state = { closed: false };
  ws.on('message', (data, isBinary) => {
    frames.push(isBinary ? '<binary>' : String(data));
    if (waiter) waiter();
  });
  ws.on('close', () => {
    state.closed = true;
    if (waiter) waiter();
  });
  ws.on('error', () => {});
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), 5000, 'raw websocket opens');
  const until = (pred, ms, what) => withTimeout(new Promise((resolve) => {
    const check = () => {
      if (pred()) {
        waiter = null;
        resolve();
      }
    };
    waiter = check;
    check();
  }), ms, what);
  await until(() => frames.some((f) => f.startsWith('0{')), 3000, 'open packet');
  ws.send('40');
  await until(() => frames.some((f) => f.startsWith('40{')), 3000, 'CONNECT answer');
  return { ws, frames, state, until };
}

/** Events ("42[...]" frames, parsed) a raw socket received. */
const eventsOf = (frames) => frames.filter((f) => f.startsWith('42')).map((f) => JSON.parse(f.slice(2)));

const GARBAGE = [
  ['event packet without data', '42'],
  ['event packet with non-JSON data', '42garbage'],
  ['empty event array', '42[]'],
  ['event name not a string', '42[1,2]'],
  ['event data an object', '42{"a":1}'],
  ['truncated JSON', '42["join",{"id":"g1"'],
  ['trailing garbage', '42["join",{"id":"g2","username":"g2","roomname":"garbage"}]xyz'],
  ['bare message type', '4'],
  ['unknown Socket.IO packet type', '49'],
  ['ack without id', '43'],
  ['binary event without attachments', '45'],
  ['binary event whose attachment never comes', '451-["join",{"_placeholder":true,"num":0}]'],
  ['CONNECT to an unknown namespace', '40/nope,'],
  ['event to a namespace never connected', '42/nope,["join",{"id":"g3","username":"g3","roomname":"garbage"}]'],
  ['event with an ack id', '4217["hello"]'],
  ['deeply nested payload', `42["join",${'['.repeat(5000)}${']'.repeat(5000)}]`],
  ['Engine.IO open packet from the client', '0'],
  ['Engine.IO upgrade without probe', '5'],
  ['Engine.IO noop', '6'],
  ['not Engine.IO at all', 'hello world'],
  ['NUL byte', '\u0000'],
  ['invalid UTF-16 surrogate in a string', '42["join",{"id":"\\ud800","username":"\\udfff","roomname":"garbage"}]'],
  ['binary frame', Buffer.from([0xff, 0x00, 0x42])],
];

test('bad input changes nothing, garbage frames harm nobody, and a fresh trio still completes a call', async () => {
  const gw = await startTestGateway([]);
  try {
    const before = await gw.metrics();

    // 1. Every bad input of the scenario, each answered by its error (the scenario checks
    //    types, that nothing else arrives anywhere, and the room state afterwards).
    await replay(SCENARIOS['bad-input.json'], chatroomFactory(gw, { transports: ['websocket'] }), { stepTimeoutMs: 10000 });

    // Two watchers in their own room for the rest of the test: garbage must not disturb them.
    const w1 = await sioClient(gw.urls.chatroom, 'W1');
    const w2 = await sioClient(gw.urls.chatroom, 'W2');
    w1.socket.emit('join', { id: 'watch-1', username: 'w1', roomname: 'watch' });
    await untilJoined(gw.urls.chatroom, 'w1', 'watch');
    w2.socket.emit('join', { id: 'watch-2', username: 'w2', roomname: 'watch' });
    assert.deepStrictEqual(await w1.queue.next(5000, 'getOffer'), ['getOffer', { memberId: w2.id }]);

    // 2. Garbage frames on raw WebSockets, each on its own connection. The connection may be
    //    closed by the gateway or stay usable; either way the gateway lives on.
    const outcomes = [];
    for (const [what, frame] of GARBAGE) {
      const raw = await rawSocket(gw.urls.chatroom);
      const seen = raw.frames.length;
      raw.ws.send(frame);
      await sleep(150);
      if (!raw.state.closed) {
        // Still open: it must still be a working Socket.IO connection.
        raw.ws.send('42["hello",{}]');
        await raw.until(() => raw.state.closed || eventsOf(raw.frames.slice(seen)).some(([e, p]) => e === 'error' && p?.type === 'unknown_event'), 3000, `after "${what}": answer to a probe event or close`);
      }
      outcomes.push(`${what}: ${raw.state.closed ? 'closed' : 'open'}`);
      for (const [e, p] of eventsOf(raw.frames.slice(seen))) {
        assert.equal(e, 'error', `after "${what}" the only events may be errors, got ${e}`);
        assert.equal(typeof p?.type, 'string');
        assert.ok(p.message.length > 0);
      }
      raw.ws.terminate();
      assert.equal(gw.child.exitCode, null, `gateway alive after "${what}"`);
    }

    // A raw client that joined a room and then sends garbage: its room-mates are unaffected.
    const raw = await rawSocket(gw.urls.chatroom);
    raw.ws.send('42["join",{"id":"raw-1","username":"raw","roomname":"watch"}]');
    assert.deepStrictEqual(await w1.queue.next(5000, 'getOffer for the raw client'), ['getOffer', { memberId: JSON.parse(raw.frames.find((f) => f.startsWith('40{')).slice(2)).sid }]);
    assert.equal((await w2.queue.next(5000, 'getOffer for the raw client'))[0], 'getOffer');
    raw.ws.send('42[1,2,3');
    raw.ws.send(Buffer.from([0, 1, 2]));
    await sleep(200);
    raw.ws.terminate();

    // The watchers still talk to each other, in order, with exact payloads.
    for (let i = 0; i < 5; i++) {
      w1.socket.emit('icecandidate', { remoteConnectorId: 'cW2', memberId: w2.id, candidate: { candidate: `c${i}`, sdpMid: '0', sdpMLineIndex: 0 } });
    }
    for (let i = 0; i < 5; i++) {
      const ev = await w2.queue.next(5000, `candidate ${i}`);
      assert.equal(JSON.stringify(ev), JSON.stringify(['icecandidate', { connectorId: 'cW2', candidate: { candidate: `c${i}`, sdpMid: '0', sdpMLineIndex: 0 } }]));
    }
    assert.deepStrictEqual(w1.queue.drain(), [], `W1 got nothing unexpected (${outcomes.join('; ')})`);
    assert.deepStrictEqual(w2.queue.drain(), [], 'W2 got nothing unexpected');

    // 3. A fresh trio completes a full call setup.
    await replay(SCENARIOS['call-setup.json'], chatroomFactory(gw, { transports: ['websocket'] }), { stepTimeoutMs: 10000 });

    // 4. The counters rose for each kind of refusal, and relays were counted.
    const after = await gw.metrics();
    const rose = (name, labels) => metricValue(after, name, { ...P, ...labels }) - metricValue(before, name, { ...P, ...labels });
    // A colliding id is a refusal by rule, counted as refused{member_id_in_use} below, not as bad input.
    for (const kind of ['invalid', 'not_joined', 'unknown_member', 'unknown_event', 'reconnect', 'malformed_frame']) {
      assert.ok(rose('gateway_bad_input_total', { kind }) > 0, `gateway_bad_input_total{kind="${kind}"} rose`);
    }
    assert.ok(rose('gateway_refused_total', { reason: 'member_id_in_use' }) >= 2, 'colliding ids counted as refused');
    assert.ok(rose('gateway_dropped_total', { reason: 'not_joined' }) > 0, 'silently dropped leave of a never-joined socket counted');
    assert.ok(rose('gateway_dropped_total', { reason: 'no_target' }) > 0, 'reconnectWork without memberId counted');
    for (const event of ['offer', 'answer', 'icecandidate', 'leave']) {
      assert.ok(rose('gateway_relayed_total', { event }) > 0, `gateway_relayed_total{event="${event}"} rose`);
    }
    assert.equal(metricValue(after, 'gateway_dropped_total', { ...P, reason: 'send_buffer_full' }), 0);

    w1.socket.disconnect();
    w2.socket.disconnect();
    // Everything is released once the grace periods have run out.
    await assertReleased(gw, 6000);
    assert.equal(gw.child.exitCode, null, 'gateway still running');
  } finally {
    const code = await gw.stop();
    assert.equal(code, 0, `gateway exit code after SIGTERM; stderr:\n${gw.stderr().slice(-3000)}`);
  }
});

test('max_room_size: the third joiner is refused with error limit, counted once as room_full', async () => {
  const gw = await startTestGateway(['chatroom.max_room_size=2']);
  try {
    await replay(SCENARIOS['room-full.json'], chatroomFactory(gw, { transports: ['websocket'] }), { stepTimeoutMs: 10000 });
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { ...P, reason: 'room_full' }), 1);
    // One refused join is one refusal: counted once, under one reason.
    assert.equal(metricValue(m, 'gateway_refused_total', P), 1, `no refusal of any other kind, and no double count: ${JSON.stringify(Object.entries(m).filter(([k]) => k.startsWith('gateway_refused_total')))}`);
    assert.equal(metricValue(m, 'gateway_bad_input_total', P), 1, 'the only bad input is the relay of the refused joiner (not_joined)');
  } finally {
    await gw.stop();
  }
});

test('without max_room_size a room takes many members, each announced to all before it', async () => {
  const gw = await startTestGateway([]);
  const clients = [];
  try {
    const N = 12;
    for (let i = 0; i < N; i++) {
      const c = await sioClient(gw.urls.chatroom, `M${i}`);
      clients.push(c);
      c.socket.emit('join', { id: `many-${i}`, username: `m${i}`, roomname: 'many' });
      if (i === 0) await untilJoined(gw.urls.chatroom, 'm0', 'many');
      for (const earlier of clients.slice(0, i)) {
        assert.deepStrictEqual(await earlier.queue.next(5000, `getOffer for M${i}`), ['getOffer', { memberId: c.id }]);
      }
    }
    await sleep(100);
    for (const c of clients) assert.deepStrictEqual(c.queue.drain(), []);
    assert.equal(metricValue(await gw.metrics(), 'gateway_members', P), N);
  } finally {
    for (const c of clients) c.socket.disconnect();
    await gw.stop();
  }
});
