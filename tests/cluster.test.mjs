// Cluster mode (issue 10) over the wire: several gateway processes sharing every room through
// a Redis of the test's own (tests/lib/cluster.mjs). What a user sees when the members of one
// call are served by different nodes, when a node dies or stops, and when Redis goes away and
// comes back empty. "node 1..3" below are cluster.nodes[0..2].
//
// The conformance scenarios over three nodes are in cluster-conformance.test.mjs, the
// round-robin balancer (nginx) and a browser call in cluster-nginx.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { ROOT, startGateway } from './lib/gateway.mjs';
import { loadScenarios, replay, socketIoV2Factory, socketIoV4Factory, connectClient, metricValue, eventually, withTimeout } from './lib/scenario.mjs';
import { chatroomFactory, untilJoined } from './lib/chatroom-scenario.mjs';
import { startRedis, startCluster, redisMissing } from './lib/cluster.mjs';

const skip = redisMissing();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const W = { protocol: 'webrtcroom' };

/** A test's own Redis and cluster, stopped when the test ends (even on failure). */
async function setup(t, opts = {}) {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const cluster = await startCluster({ redis, n: 3, ...opts });
  t.after(() => cluster.stop());
  const clients = [];
  t.after(() => { for (const c of clients) try { c.close(); } catch { /* closed */ } });
  const v2 = async (i, name, transports = ['websocket']) => {
    const c = await connectClient(socketIoV2Factory(cluster.nodes[i].urls.webrtcroom, { transports }), name);
    clients.push(c);
    return c;
  };
  const v4 = async (i, name, transports = ['websocket']) => {
    const c = await connectClient(socketIoV4Factory(cluster.nodes[i].urls.chatroom, { transports }), name);
    clients.push(c);
    return c;
  };
  return { redis, cluster, v2, v4, clients };
}

/** WebRtcRoom join of `client` into `room` whose members are `members` (in join order). */
async function joinV2(client, room, members) {
  client.emit('createAndJoinRoom', { room });
  for (const m of members) assert.deepEqual(await m.queue.next(5000, `joined ${client.name}`), ['joined', { id: client.id, room }]);
  assert.deepEqual(await client.queue.next(5000, 'created'), ['created', { id: client.id, room, peers: members.map((m) => ({ id: m.id })) }]);
}

const cand = (from, to, room, i) => ({ from, to, room, candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: `candidate:${i} 1 udp 2122260223 10.0.0.1 ${10000 + i} typ host` }, seq: i });

/**
 * Closed-loop numbered candidates from `s` to `r`: `window` in flight, the next window sent
 * when the previous one has arrived. Resolves when all `count` arrived in order.
 */
async function closedLoop(s, r, room, count, window, ms) {
  let next = 0;
  let fail;
  let wake = () => {};
  r.onEvent((event, [msg]) => {
    if (event !== 'candidate' || msg?.from !== s.id) fail ??= new Error(`${r.name}: unexpected ${event} ${JSON.stringify(msg)?.slice(0, 200)}`);
    else if (msg.seq !== next) fail ??= new Error(`${r.name}: expected #${next} from ${s.name}, got #${msg.seq} (order broken or message lost)`);
    else if (msg.candidate.sdp !== cand(0, 0, 0, next).candidate.sdp) fail ??= new Error(`#${next} payload altered`);
    else next += 1;
    wake();
  });
  const deadline = Date.now() + ms;
  for (let sent = 0; sent < count;) {
    const upto = Math.min(count, sent + window);
    for (; sent < upto; sent += 1) s.emit('candidate', cand(s.id, r.id, room, sent));
    await tick();
    while (next < upto && !fail) {
      if (Date.now() > deadline) throw new Error(`${s.name}->${r.name}: ${next} of ${count} arrived within ${ms} ms`);
      await new Promise((res) => { wake = res; setTimeout(res, 100); });
    }
    if (fail) throw fail;
  }
  return next;
}

test('cluster: per-sender order across nodes under closed-loop load; rooms stay isolated, cross-room relays dropped and counted by the node that dropped them', { skip, timeout: 90_000 }, async (t) => {
  const { cluster, v2 } = await setup(t);
  // r1: a (node 1, websocket), b (node 2, websocket), p (node 3, polling). r2: x on node 3.
  const a = await v2(0, 'a');
  const b = await v2(1, 'b');
  const p = await v2(2, 'p', ['polling']);
  const x = await v2(2, 'x');
  await joinV2(a, 'r1', []);
  await joinV2(b, 'r1', [a]);
  await joinV2(p, 'r1', [a, b]);
  await joinV2(x, 'r2', []);
  const before = await Promise.all(cluster.nodes.map((g) => g.metrics()));

  // a -> b (node 1 -> node 2) 2,000 candidates, while b -> p (node 2 -> node 3, polling)
  // 500 and p -> a (node 3 -> node 1) 500 relay at the same time.
  const got = await Promise.all([
    closedLoop(a, b, 'r1', 2000, 200, 40_000),
    closedLoop(b, p, 'r1', 500, 100, 40_000),
    closedLoop(p, a, 'r1', 500, 100, 40_000),
  ]);
  assert.deepEqual(got, [2000, 500, 500], 'every candidate arrived, in the order sent');

  // A relay to a member of another room (x, in r2 on node 3), from each of r1's nodes: never
  // delivered, counted once each as other_room by the sender's node, which refused it.
  const xEvents = [];
  x.onEvent((event, args) => xEvents.push([event, ...args]));
  for (const [s, n] of [[a, 3], [b, 2], [p, 1]]) {
    for (let i = 0; i < n; i++) s.emit('offer', { from: s.id, to: x.id, room: 'r1', sdp: 'v=0\r\n' });
    for (let i = 0; i < n; i++) s.emit('candidate', cand(s.id, x.id, 'r2', i));
  }
  const dropped = (m) => metricValue(m, 'gateway_dropped_total', { ...W, reason: 'other_room' });
  await eventually(async () => {
    const now = await Promise.all(cluster.nodes.map((g) => g.metrics()));
    return now.map((m, i) => dropped(m) - dropped(before[i])).join() === '6,4,2';
  }, 5000, 'other_room drops 6, 4, 2 on nodes 1, 2, 3 (each sender\'s own node)');
  await sleep(300);
  assert.deepEqual(xEvents, [], 'the member of r2 got none of r1\'s messages (load, nor the cross-room relays)');
  const after = await Promise.all(cluster.nodes.map((g) => g.metrics()));
  for (const [i, m] of after.entries()) {
    for (const reason of ['send_buffer_full', 'not_joined', 'unknown_target', 'target_away', 'spoofed_from']) {
      assert.equal(metricValue(m, 'gateway_dropped_total', { ...W, reason }), metricValue(before[i], 'gateway_dropped_total', { ...W, reason }), `node ${i + 1}: no ${reason} drop`);
    }
  }
});

// Full mesh A (node 1), B (node 2), C (node 3) in room y: A-B linked by A's offer (cAB/cBA),
// B-C by B's offer (cBC/cCB).
async function chatMesh(cluster, v4, prefix = '') {
  const A = await v4(0, 'A');
  const B = await v4(1, 'B');
  const C = await v4(2, 'C');
  A.emit('join', { id: `${prefix}uA`, username: 'a', roomname: 'y' });
  await untilJoined(cluster.nodes[2].urls.chatroom, 'a', 'y');
  B.emit('join', { id: `${prefix}uB`, username: 'b', roomname: 'y' });
  assert.deepEqual(await A.queue.next(5000, 'getOffer B'), ['getOffer', { memberId: B.id }]);
  C.emit('join', { id: `${prefix}uC`, username: 'c', roomname: 'y' });
  assert.deepEqual(await A.queue.next(5000, 'getOffer C'), ['getOffer', { memberId: C.id }]);
  assert.deepEqual(await B.queue.next(5000, 'getOffer C'), ['getOffer', { memberId: C.id }]);
  const link = async (from, to, c1, c2) => {
    from.emit('offer', { connectorId: c1, memberId: to.id, offer: { type: 'offer', sdp: 'v=0\r\n' }, streamType: 'user' });
    assert.deepEqual(await to.queue.next(5000, 'offer'), ['offer', { remoteConnectorId: c1, offer: { type: 'offer', sdp: 'v=0\r\n' }, memberId: from.id, streamType: 'user' }]);
    to.emit('answer', { remoteConnectorId: c1, connectorId: c2, memberId: from.id, answer: { type: 'answer', sdp: 'v=0\r\n' }, streamType: 'user' });
    assert.deepEqual(await from.queue.next(5000, 'answer'), ['answer', { remoteConnectorId: c2, connectorId: c1, answer: { type: 'answer', sdp: 'v=0\r\n' }, memberId: to.id }]);
  };
  await link(A, B, 'cAB', 'cBA');
  await link(B, C, 'cBC', 'cCB');
  return { A, B, C };
}

test('cluster chatroom: a member dropped on node 2 reconnects on node 3 within the grace period and resumes as on one node', { skip, timeout: 60_000 }, async (t) => {
  const { cluster } = await setup(t);
  // The single-node scenario, with B's transport killed under it (app killed) on node 2 and
  // B2 on node 3: A, B, C on nodes 1, 2, 3; B2 on node 3; http and metrics on node 1.
  const [scenario] = loadScenarios(path.join(ROOT, 'protocols', 'chatroom', 'scenarios')).filter((s) => s.file === 'reconnect-in-grace.json');
  const steps = scenario.steps.map((s) => (s.client === 'B' && s.disconnect ? { client: 'B', drop: true } : s));
  assert.ok(steps.some((s) => s.client === 'B' && s.drop), 'the scenario closes B');
  const at = { A: 0, B: 1, C: 2, B2: 2, http: 0 };
  const factories = cluster.nodes.map((g) => chatroomFactory(g, { transports: ['websocket'] }));
  const factory = async (name) => {
    if (name === 'metrics') {
      // Cluster-wide gauges are refreshed from Redis every second (see cluster-conformance).
      const g = cluster.nodes[0];
      let sink = () => {};
      return { name, id: null, onEvent(cb) { sink = cb; }, disconnect() {}, close() {},
        emit(kind, metric) { g.metrics().then(() => sleep(1500)).then(() => g.metrics()).then((m) => sink(kind, [metric, metricValue(m, metric, { protocol: 'chatroom' })])); } };
    }
    assert.ok(name in at, `client ${name} placed`);
    return factories[at[name]](name);
  };
  const { ids } = await replay({ ...scenario, steps }, factory, { stepTimeoutMs: 10_000 });
  assert.notEqual(ids.B, ids.B2);
});

test('cluster chatroom: the node holding a member is SIGKILLed; its linked peers on other nodes get leave exactly once, after about the grace period', { skip, timeout: 60_000 }, async (t) => {
  const GRACE = 2000;
  const TIMEOUT = 2000;
  const { cluster, v4 } = await setup(t, { nodeTimeout: `${TIMEOUT / 1000}s` });
  const { A, B, C } = await chatMesh(cluster, v4);
  const t0 = Date.now();
  await cluster.kill(1);
  const [la, lc] = await Promise.all([
    A.queue.next(GRACE + TIMEOUT + 4000, 'leave of B'),
    C.queue.next(GRACE + TIMEOUT + 4000, 'leave of B'),
  ]);
  const elapsed = Date.now() - t0;
  assert.deepEqual(la, ['leave', { connectorId: 'cAB', memberId: B.id }]);
  assert.deepEqual(lc, ['leave', { connectorId: 'cCB', memberId: B.id }]);
  assert.ok(elapsed >= GRACE - 300, `leave not before the grace period has run (${elapsed} ms)`);
  assert.ok(elapsed <= GRACE + TIMEOUT + 2500, `leave within grace + node_timeout (+ slack): ${elapsed} ms`);
  await sleep(1500);
  assert.deepEqual([...A.queue.drain(), ...C.queue.drain()], [], 'leave exactly once, nothing else');
  // B's name is free again: a new member may take it, on a surviving node.
  const r = await (await fetch(`${cluster.nodes[0].urls.chatroom}/checkUsername?username=b&roomname=y`)).json();
  assert.deepEqual(r, { success: true, isRepeat: false });
});

/** Three rooms, each with one member on every node; returns [room][node] clients. */
async function spanningRooms(v2, transportsOf = () => ['websocket']) {
  const rooms = [];
  for (const room of ['s1', 's2', 's3']) {
    const members = [];
    for (let i = 0; i < 3; i++) {
      const c = await v2(i, `${room}@${i + 1}`, transportsOf(i));
      await joinV2(c, room, members);
      members.push(c);
    }
    rooms.push(members);
  }
  return rooms;
}

/** Every survivor (not on node `dead`) gets exit {from: dead member, room: ""} exactly once. */
async function survivorsHearExit(rooms, dead, ms) {
  await Promise.all(rooms.flatMap((members) => members.filter((_, i) => i !== dead).map(async (c) => {
    assert.deepEqual(await c.queue.next(ms, `exit of ${members[dead].name}`), ['exit', { from: members[dead].id, room: '' }], `${c.name}`);
  })));
}

test('cluster webrtcroom: SIGKILL of a node; within node_timeout (+1 s) every survivor hears exit of its dead peer exactly once; Redis forgets the node and its members', { skip, timeout: 60_000 }, async (t) => {
  const TIMEOUT = 2000;
  const { redis, cluster, v2 } = await setup(t, { nodeTimeout: `${TIMEOUT / 1000}s` });
  const rooms = await spanningRooms(v2, (i) => (i === 2 ? ['polling'] : ['websocket']));
  const deadIds = rooms.map((m) => m[1].id);
  assert.ok(redis.keys().some((k) => k.includes(cluster.ids[1])), 'node 2 has keys in Redis while alive');
  const t0 = Date.now();
  await cluster.kill(1);
  await survivorsHearExit(rooms, 1, TIMEOUT + 1000 + 500);
  const elapsed = Date.now() - t0;
  console.log(`exit of the dead node's members after ${elapsed} ms (node_timeout ${TIMEOUT} ms)`);
  await sleep(1000);
  for (const members of rooms) for (const c of members) if (c !== members[1]) assert.deepEqual(c.queue.drain(), [], `${c.name}: exit exactly once`);
  // The survivors still relay to each other across nodes.
  const [m1, , m3] = rooms[0];
  m1.emit('offer', { from: m1.id, to: m3.id, room: 's1', sdp: 'v=0\r\n' });
  assert.deepEqual(await m3.queue.next(5000, 'offer'), ['offer', { from: m1.id, to: m3.id, room: 's1', sdp: 'v=0\r\n' }]);
  // No key names the dead node or any of its members.
  await eventually(() => {
    const left = redis.keys().filter((k) => k.includes(cluster.ids[1]) || deadIds.some((id) => k.includes(id)));
    if (left.length) throw new Error(`keys left: ${left.join(' ')}`);
    return true;
  }, 3000, 'no Redis key names the dead node or its members');
  const names = redis.cli('SMEMBERS', `${cluster.name}:nodes`).split('\n').filter(Boolean).join(' ');
  assert.ok(!names.includes(cluster.ids[1]), `dead node forgotten from the node set: ${names}`);
});

test('cluster webrtcroom: SIGTERM of a node; survivors hear the departures at once, without waiting for node_timeout', { skip, timeout: 60_000 }, async (t) => {
  const TIMEOUT = 10_000; // the default
  const { redis, cluster, v2 } = await setup(t);
  const rooms = await spanningRooms(v2);
  const deadIds = rooms.map((m) => m[2].id);
  const t0 = Date.now();
  const code = await cluster.term(2);
  assert.equal(code, 0, 'graceful stop exits 0');
  await survivorsHearExit(rooms, 2, 3000);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed < TIMEOUT / 2, `departures after ${elapsed} ms, well before node_timeout`);
  await sleep(1000);
  for (const members of rooms) for (const c of members.slice(0, 2)) assert.deepEqual(c.queue.drain(), [], `${c.name}: exit exactly once`);
  await eventually(() => !redis.keys().some((k) => k.includes(cluster.ids[2]) || deadIds.some((id) => k.includes(id))), 3000, 'no Redis key names the stopped node or its members');
});

test('cluster: Redis killed and restarted empty; no node crashes, /readyz follows Redis, joins are refused as unavailable, members are restored', { skip, timeout: 90_000 }, async (t) => {
  const { redis, cluster, v4 } = await setup(t, { nodeTimeout: '2s' });
  const { A, B } = await chatMesh(cluster, v4, 'r');
  const ready = (g) => fetch(`${g.urls.admin}/readyz`).then((r) => r.status);
  assert.deepEqual(await Promise.all(cluster.nodes.map(ready)), [200, 200, 200]);

  await redis.kill();
  await eventually(async () => (await Promise.all(cluster.nodes.map(ready))).every((s) => s === 503), 8000, '/readyz 503 on every node while Redis is down');
  const D = await v4(2, 'D');
  D.emit('join', { id: 'uD', username: 'd', roomname: 'y' });
  const refused = await D.queue.next(10_000, 'join refused');
  assert.equal(refused[0], 'error');
  assert.equal(refused[1]?.type, 'unavailable', `join during the outage: ${JSON.stringify(refused)}`);
  assert.equal(typeof refused[1]?.message, 'string');
  D.close();

  await redis.start();
  await eventually(async () => (await Promise.all(cluster.nodes.map(ready))).every((s) => s === 200), 10_000, '/readyz 200 on every node after Redis is back');
  for (const [i, g] of cluster.nodes.entries()) assert.equal(g.child.exitCode, null, `node ${i + 1} still running`);

  // A (node 1) and B (node 2), connected all along, can relay again within a few seconds.
  A.queue.drain();
  B.queue.drain();
  const offer = (n) => ({ connectorId: 'cAB', memberId: B.id, offer: { type: 'offer', sdp: `v=0\r\no=- ${n}\r\n` }, streamType: 'user' });
  const t0 = Date.now();
  let n = 0;
  await eventually(async () => {
    A.emit('offer', offer(++n));
    const got = await B.queue.next(400, 'offer').catch(() => null);
    return got?.[0] === 'offer' && got[1].memberId === A.id;
  }, 10_000, 'a relay from A (node 1) to B (node 2) works again');
  console.log(`relay restored ${Date.now() - t0} ms after Redis came back (attempt ${n})`);

  // The admin view lists the restored room with its members, each with its node.
  let room;
  await eventually(async () => {
    const body = await (await fetch(`${cluster.nodes[2].urls.admin}/api/rooms`)).json();
    room = body.chatroom.rooms.find((r) => r.name === 'y' || r.room === 'y');
    return room && room.members.length === 3;
  }, 8000, `/api/rooms lists room y with its 3 members (last: ${JSON.stringify(room)})`);
  assert.deepEqual(room.members.map((m) => m.node).sort(), [...cluster.ids].sort(), `each member with its node: ${JSON.stringify(room.members)}`);
});

test('single node: with no cluster.redis_url the gateway connects nowhere (no Redis needed)', { timeout: 30_000 }, async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const c = await connectClient(socketIoV4Factory(gw.urls.chatroom, { transports: ['websocket'] }), 'A');
  t.after(() => c.close());
  c.emit('join', { id: 'u', username: 'u', roomname: 'r' });
  await sleep(300);
  assert.equal((await fetch(`${gw.urls.admin}/readyz`)).status, 200);
  assert.equal((await fetch(`${gw.urls.admin}/api/cluster`)).status, 404, 'cluster mode off');
  // Every established TCP connection of the process is one a client opened to a listener.
  const ports = new Set(Object.values(gw.urls).map((u) => new URL(u).port));
  const r = spawnSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const mine = r.stdout.split('\n').filter((l) => l.includes(`pid=${gw.child.pid},`));
  assert.ok(mine.length >= 1, 'the client connection is seen');
  for (const line of mine) {
    const local = line.trim().split(/\s+/)[2];
    assert.ok(ports.has(local.slice(local.lastIndexOf(':') + 1)), `an outgoing connection: ${line}`);
  }
  const syn = spawnSync('ss', ['-tnpH', 'state', 'syn-sent'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(`pid=${gw.child.pid},`));
  assert.deepEqual(syn, [], 'no connection attempt');
});
