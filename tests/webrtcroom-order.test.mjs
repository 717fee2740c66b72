// Per-sender order under load: one sender's numbered candidates reach its partner all present
// and in the order sent, while other pairs relay concurrently through the same gateway.
// (socketioxide runs each incoming message in its own task; without the adapter's in-order
// handling a multi-threaded runtime reorders a large share of such a burst.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { startTestGateway, socketIoV2Factory, connectClient, metricValue, withTimeout } from './lib/scenario.mjs';

const P = { protocol: 'webrtcroom' };

async function pair(mk, room, i) {
  const s = await connectClient(mk, `s${i}`);
  const r = await connectClient(mk, `r${i}`);
  s.emit('createAndJoinRoom', { room });
  await s.queue.next(5000, 'created');
  r.emit('createAndJoinRoom', { room });
  assert.equal((await s.queue.next(5000, 'joined'))[0], 'joined');
  assert.equal((await r.queue.next(5000, 'created'))[0], 'created');
  return { s, r };
}

/** Collects `count` candidates at `client`, checking the sequence as they come. */
function expectSequence(client, from, count, label) {
  let next = 0;
  let resolve;
  let reject;
  const done = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  client.onEvent((event, [msg]) => {
    if (event !== 'candidate' || msg?.from !== from) return reject(new Error(`${label}: unexpected ${event} ${JSON.stringify(msg)?.slice(0, 200)}`));
    if (msg.seq !== next) return reject(new Error(`${label}: expected #${next}, got #${msg.seq} (order broken or message lost)`));
    if (msg.candidate.sdp !== `candidate:${next} 1 udp 2122260223 10.0.0.1 ${10000 + (next % 50000)} typ host`) return reject(new Error(`${label}: #${next} payload altered`));
    next += 1;
    if (next === count) resolve(next);
  });
  return { done, received: () => next };
}

/** Emits `count` numbered candidates from `s` to `r`, `chunk` per turn of the event loop. */
async function burst(s, r, room, count, chunk) {
  for (let i = 0; i < count; i += 1) {
    s.emit('candidate', {
      from: s.id,
      to: r.id,
      room,
      candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: `candidate:${i} 1 udp 2122260223 10.0.0.1 ${10000 + (i % 50000)} typ host` },
      seq: i,
    });
    if (i % chunk === chunk - 1) await tick();
  }
}

async function run({ transports, count, loadPairs, loadCount, chunk, timeoutMs }) {
  const gw = await startTestGateway();
  const all = [];
  try {
    const mk = socketIoV2Factory(gw.urls.webrtcroom, { transports });
    const pairs = [];
    for (let i = 0; i <= loadPairs; i += 1) {
      const p = await pair(mk, `load-${i}`, i);
      all.push(p.s, p.r);
      pairs.push(p);
    }
    const checks = pairs.map((p, i) => ({ p, i, n: i === 0 ? count : loadCount }));
    // Load pairs relay both ways; the measured pair (index 0) one way.
    const waits = [];
    const sends = [];
    for (const { p, i, n } of checks) {
      const fwd = expectSequence(p.r, p.s.id, n, `pair ${i} ${p.s.name}->${p.r.name}`);
      waits.push(fwd);
      sends.push(burst(p.s, p.r, `load-${i}`, n, chunk));
      if (i > 0) {
        const back = expectSequence(p.s, p.r.id, n, `pair ${i} ${p.r.name}->${p.s.name}`);
        waits.push(back);
        sends.push(burst(p.r, p.s, `load-${i}`, n, chunk));
      }
    }
    await Promise.all(sends);
    await withTimeout(Promise.all(waits.map((w) => w.done)), timeoutMs, 'all sequences complete').catch((e) => {
      throw new Error(`${e.message}; received so far: ${waits.map((w) => w.received()).join(', ')}`);
    });
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_dropped_total', P), 0, 'nothing dropped');
    assert.equal(metricValue(m, 'gateway_relayed_total', { ...P, event: 'candidate' }), count + 2 * loadPairs * loadCount);
  } finally {
    for (const c of all) c.close();
    await gw.stop();
  }
}

test('5,000 numbered candidates arrive in order over websocket while 3 other pairs relay both ways', async () => {
  await run({ transports: ['websocket'], count: 5000, loadPairs: 3, loadCount: 3000, chunk: 200, timeoutMs: 30_000 });
});

test('1,000 numbered candidates arrive in order over long-polling while another pair relays', async () => {
  await run({ transports: ['polling'], count: 1000, loadPairs: 1, loadCount: 500, chunk: 100, timeoutMs: 20_000 });
});
