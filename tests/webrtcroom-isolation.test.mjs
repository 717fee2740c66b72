// Isolation: nothing crosses rooms, and a `from` that is not the sender is never delivered.
// Clients a1, a2, a3 are in room rA; b1, b2 in rB; o is connected but in no room. Every
// combination below is refused; each refusal must be counted as a drop, and the clients
// addressed must receive nothing at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestGateway, socketIoV2Factory, connectClient, metricValue } from './lib/scenario.mjs';

const P = { protocol: 'webrtcroom' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const EVENTS = ['offer', 'answer', 'candidate'];
const REASONS = ['not_joined', 'unknown_target', 'other_room', 'target_away', 'spoofed_from'];

function body(event, from, to, room, extra) {
  const base = { from, to, room };
  if (event === 'candidate') base.candidate = { sdpMid: '0', sdpMLineIndex: 0, sdp: 'candidate:1 1 udp 1 10.0.0.1 9 typ host' };
  else base.sdp = 'v=0\r\n';
  return { ...base, ...extra };
}

async function join(client, room, members) {
  client.emit('createAndJoinRoom', { room });
  for (const m of members) assert.deepEqual(await m.queue.next(3000, `joined ${client.name}`), ['joined', { id: client.id, room }]);
  assert.deepEqual(await client.queue.next(3000, 'created'), ['created', { id: client.id, room, peers: members.map((m) => ({ id: m.id })) }]);
}

test('no relay crosses rooms and no spoofed from is delivered, whatever to/from say', async () => {
  const gw = await startTestGateway();
  const clients = [];
  try {
    const mk = socketIoV2Factory(gw.urls.webrtcroom, { transports: ['websocket'] });
    const c = {};
    for (const name of ['a1', 'a2', 'a3', 'b1', 'b2', 'o']) clients.push((c[name] = await connectClient(mk, name)));
    const { a1, a2, a3, b1, b2, o } = c;
    await join(a1, 'rA', []);
    await join(a2, 'rA', [a1]);
    await join(a3, 'rA', [a1, a2]);
    await join(b1, 'rB', []);
    await join(b2, 'rB', [b1]);

    const before = await gw.metrics();
    // [sender, payload, the reason it must be refused for, or 'either' when two rules apply]
    const sends = [];
    const fromsA = [a1.id, a2.id, a3.id, b1.id, b2.id, o.id, '', 'x', 'rA', 'rB', `/#${a1.id}`];
    for (const event of EVENTS) {
      // a1 -> members of rB, with every from.
      for (const to of [b1.id, b2.id]) {
        for (const from of fromsA) {
          sends.push([a1, event, body(event, from, to, 'rB'), from === a1.id ? 'other_room' : 'either']);
          sends.push([a1, event, body(event, from, to, 'rA'), from === a1.id ? 'other_room' : 'either']);
        }
      }
      // Room names, other spellings of ids, unknown ids and prototype keys never address a socket.
      for (const to of ['rA', 'rB', '', 'x', `/#${b1.id}`, b1.id.toLowerCase() === b1.id ? `${b1.id}X` : b1.id.toLowerCase(), ` ${b1.id}`, '__proto__', 'constructor', 'toString']) {
        sends.push([a1, event, body(event, a1.id, to, 'rA'), 'unknown_target']);
      }
      // Inside rA: a from that is not the sender is dropped, whoever it names.
      for (const from of [a3.id, b1.id, b2.id, o.id, '', 'x', a2.id]) {
        sends.push([a1, event, body(event, from, a2.id, 'rA'), 'spoofed_from']);
      }
      // rB -> rA, with rB's own and A's ids as from.
      for (const from of [b1.id, a2.id, a1.id]) {
        sends.push([b1, event, body(event, from, a1.id, 'rA'), from === b1.id ? 'other_room' : 'either']);
        sends.push([b1, event, body(event, from, a2.id, 'rB'), from === b1.id ? 'other_room' : 'either']);
      }
      // A client in no room reaches nobody.
      for (const [from, to] of [[o.id, a1.id], [o.id, b1.id], [a2.id, a1.id], [b2.id, b1.id]]) {
        sends.push([o, event, body(event, from, to, 'rA'), from === o.id ? 'not_joined' : 'either']);
      }
    }
    // Exit with a spoofed from: nobody is told, nobody leaves.
    sends.push([a1, 'exit', { from: b1.id, room: 'rB' }, 'spoofed_from']);
    sends.push([a1, 'exit', { from: a2.id, room: 'rA' }, 'spoofed_from']);
    sends.push([b1, 'exit', { from: a1.id, room: 'rA' }, 'spoofed_from']);
    sends.push([o, 'exit', { from: a1.id, room: 'rA' }, 'either']);
    sends.push([o, 'exit', { from: o.id, room: 'rA' }, 'not_joined']);

    for (const [sender, event, payload] of sends) sender.emit(event, payload);

    // Sentinels: one sender's messages are handled in order, so once a sender's sentinel is
    // delivered everything it sent before has been handled.
    const sentinelA = body('offer', a1.id, a2.id, 'rA', { sentinel: 'a1' });
    a1.emit('offer', sentinelA);
    const sentinelB = body('offer', b1.id, b2.id, 'rB', { sentinel: 'b1' });
    b1.emit('offer', sentinelB);
    assert.deepEqual(await a2.queue.next(3000, 'a1 sentinel'), ['offer', sentinelA], 'a2 gets nothing spoofed, only the sentinel');
    assert.deepEqual(await b2.queue.next(3000, 'b1 sentinel'), ['offer', sentinelB], 'b2 gets nothing from rA, only the sentinel');
    o.emit('createAndJoinRoom', { room: 'rO' });
    assert.deepEqual(await o.queue.next(3000, 'o created'), ['created', { id: o.id, room: 'rO', peers: [] }]);
    await sleep(300);
    for (const cl of clients) assert.deepEqual(cl.queue.drain(), [], `${cl.name} received nothing`);

    // Counters: every refusal counted once as a drop; unambiguous ones under their reason.
    const after = await gw.metrics();
    const delta = (name, labels) => metricValue(after, name, { ...P, ...labels }) - metricValue(before, name, { ...P, ...labels });
    const want = {};
    for (const [, , , reason] of sends) want[reason] = (want[reason] ?? 0) + 1;
    const total = REASONS.reduce((n, r) => n + delta('gateway_dropped_total', { reason: r }), 0);
    assert.equal(total, sends.length, `drops counted: ${JSON.stringify(Object.fromEntries(REASONS.map((r) => [r, delta('gateway_dropped_total', { reason: r })])))}; expected ${JSON.stringify(want)}`);
    for (const reason of REASONS) {
      assert.ok(delta('gateway_dropped_total', { reason }) >= (want[reason] ?? 0), `at least ${want[reason]} drops as ${reason}`);
    }
    assert.equal(delta('gateway_dropped_total', { reason: 'send_buffer_full' }), 0);
    assert.equal(delta('gateway_relayed_total', {}), 2, 'only the two sentinels were relayed');
    assert.equal(delta('gateway_bad_input_total', {}), 0, 'well-formed messages are drops, not bad input');
    assert.equal(delta('gateway_leaves_total', {}), 0, 'no spoofed exit made anyone leave');
  } finally {
    for (const cl of clients) cl.close();
    await gw.stop();
  }
});

test('a client that switched rooms cannot be reached from its old room, nor reach it', async () => {
  const gw = await startTestGateway();
  const clients = [];
  try {
    const mk = socketIoV2Factory(gw.urls.webrtcroom, { transports: ['websocket'] });
    const [x, y, z] = await Promise.all(['x', 'y', 'z'].map((n) => connectClient(mk, n)));
    clients.push(x, y, z);
    await join(x, 'r1', []);
    await join(y, 'r1', [x]);
    await join(z, 'r2', []);
    y.emit('createAndJoinRoom', { room: 'r2' });
    assert.deepEqual(await x.queue.next(3000, 'exit'), ['exit', { from: y.id, room: 'r1' }]);
    assert.deepEqual(await z.queue.next(3000, 'joined'), ['joined', { id: y.id, room: 'r2' }]);
    assert.deepEqual(await y.queue.next(3000, 'created'), ['created', { id: y.id, room: 'r2', peers: [{ id: z.id }] }]);
    const before = await gw.metrics();
    for (const event of EVENTS) {
      x.emit(event, body(event, x.id, y.id, 'r1'));
      y.emit(event, body(event, y.id, x.id, 'r1'));
    }
    const s = body('offer', y.id, z.id, 'r2', { sentinel: true });
    y.emit('offer', s);
    assert.deepEqual(await z.queue.next(3000, 'sentinel'), ['offer', s]);
    await sleep(250);
    for (const cl of clients) assert.deepEqual(cl.queue.drain(), [], `${cl.name} received nothing`);
    const after = await gw.metrics();
    const d = metricValue(after, 'gateway_dropped_total', { ...P, reason: 'other_room' }) - metricValue(before, 'gateway_dropped_total', { ...P, reason: 'other_room' });
    assert.equal(d, 6);
  } finally {
    for (const cl of clients) cl.close();
    await gw.stop();
  }
});
