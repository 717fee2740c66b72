// The operators' endpoint: metrics and the rooms API follow a scripted sequence of joins,
// relays, leaves and drops with exact counts; the bearer token is enforced when set; member
// and connection ids are never listed (a chatroom user id takes the member over); a request
// whose Host is not the admin's own (DNS rebinding) is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import { io as ioV4 } from 'socket.io-client';
import { startGateway } from './lib/gateway.mjs';
import { eventually, metricValue, withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const next = (s, event) => withTimeout(new Promise((resolve) => s.once(event, resolve)), 5000, event);


async function api(gw, path, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(`${gw.urls.admin}${path}`, { headers });
  return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text() };
}


test('metrics and /api/rooms follow a scripted WebRtcRoom session exactly', async () => {
  const gw = await startGateway();
  try {
    const a = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
    const b = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['polling'] });
    await Promise.all([next(a, 'connect'), next(b, 'connect')]);
    a.emit('createAndJoinRoom', { room: 'r1' });
    await next(a, 'created');
    b.emit('createAndJoinRoom', { room: 'r1' });
    await next(b, 'created');

    const room = await api(gw, '/api/rooms/webrtcroom/r1');
    assert.equal(room.status, 200);
    // Members are told apart by a short tag, never by their socket id (which is what another
    // client would need to act on a member's session).
    const tags = room.body.members.map((m) => m.id);
    assert.equal(tags.length, 2);
    for (const tag of tags) assert.match(tag, /^[0-9a-f]{8}$/);
    assert.notEqual(tags[0], tags[1]);
    assert.deepEqual((await api(gw, '/api/rooms/webrtcroom/r1')).body.members.map((m) => m.id), tags, 'tags are stable');
    const all = JSON.stringify((await api(gw, '/api/rooms')).body);
    for (const sid of [a.id, b.id]) assert.ok(!all.includes(sid), `/api/rooms does not list ${sid}`);
    assert.deepEqual(room.body.members.map((m) => [m.state, m.engine_io, m.transport]), [
      ['connected', 3, 'websocket'],
      ['connected', 3, 'polling'],
    ]);
    assert.ok(!Number.isNaN(Date.parse(room.body.members[0].joined_at)));

    const offers = [];
    const threeOffers = withTimeout(new Promise((resolve) => {
      a.on('offer', (o) => { offers.push(o.sdp); if (offers.length === 3) resolve(); });
    }), 5000, 'three offers');
    for (let i = 0; i < 3; i++) b.emit('offer', { from: b.id, to: a.id, room: 'r1', sdp: `s${i}` });
    b.emit('candidate', { from: a.id, to: a.id, room: 'r1', candidate: {} }); // spoofed from
    b.emit('answer', { from: b.id, to: 'nobody', room: 'r1', sdp: 'x' }); // unknown target
    b.emit('exit'); // no payload
    await threeOffers;
    assert.deepEqual(offers, ['s0', 's1', 's2']);
    b.emit('exit', { from: b.id, room: 'r1' });
    await next(a, 'exit');

    const m = await eventually(async () => {
      const m = await gw.metrics();
      return metricValue(m, 'gateway_leaves_total', { protocol: 'webrtcroom' }) === 1 && m;
    }, 5000, 'leave counted');
    assert.equal(metricValue(m, 'gateway_joins_total', { protocol: 'webrtcroom' }), 2);
    assert.equal(metricValue(m, 'gateway_relayed_total', { protocol: 'webrtcroom', event: 'offer' }), 3);
    assert.equal(metricValue(m, 'gateway_relayed_total', { protocol: 'webrtcroom', event: 'candidate' }), 0);
    assert.equal(metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'spoofed_from' }), 1);
    assert.equal(metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'unknown_target' }), 1);
    assert.equal(metricValue(m, 'gateway_bad_input_total', { protocol: 'webrtcroom', kind: 'missing_payload' }), 1);
    assert.equal(metricValue(m, 'gateway_rooms', { protocol: 'webrtcroom' }), 1);
    assert.equal(metricValue(m, 'gateway_members', { protocol: 'webrtcroom' }), 1);
    assert.equal(metricValue(m, 'gateway_connections', { protocol: 'webrtcroom', engine_io: '3', transport: 'websocket' }), 1);
    assert.equal(metricValue(m, 'gateway_connections', { protocol: 'webrtcroom', engine_io: '3', transport: 'polling' }), 1);
    assert.ok(metricValue(m, 'gateway_handling_seconds_count', { protocol: 'webrtcroom' }) >= 9);

    a.close();
    b.close();
    await eventually(async () => {
      const all = await api(gw, '/api/rooms');
      return all.body.webrtcroom.rooms.length === 0 && all.body.webrtcroom.member_count === 0;
    }, 5000, 'rooms released');
    assert.equal((await api(gw, '/api/rooms/webrtcroom/r1')).status, 404);
  } finally {
    await gw.stop();
  }
});

test('/api/rooms shows chatroom usernames and members away during the grace period', async () => {
  const gw = await startGateway({ sets: ['chatroom.reconnect_grace=30s'] });
  try {
    const open = () => ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
    const a = open();
    const b = open();
    await Promise.all([next(a, 'connect'), next(b, 'connect')]);
    a.emit('join', { id: 'user-alice-5d1e', username: 'alice', roomname: 'x' });
    // The joiner hears nothing back: a relay to itself confirms alice is in before bob joins.
    const echo = next(a, 'icecandidate');
    a.emit('icecandidate', { remoteConnectorId: 'self', memberId: a.id, candidate: {} });
    await echo;
    b.emit('join', { id: 'user-bob-77c0', username: 'bob', roomname: 'x' });
    await next(a, 'getOffer');
    b.close();
    const room = await eventually(async () => {
      const r = await api(gw, '/api/rooms/chatroom/x');
      return r.body.members?.[1]?.state === 'away' && r.body;
    }, 5000, 'bob away');
    assert.deepEqual(room.members.map((m) => m.name), ['alice', 'bob']);
    // A user id is the member's only credential (`reconnect {id}`): operators' views never show it.
    const views = [JSON.stringify((await api(gw, '/api/rooms')).body), JSON.stringify(room)];
    const res = await fetch(`${gw.urls.admin}/api/events`);
    const reader = res.body.getReader();
    views.push(new TextDecoder().decode((await withTimeout(reader.read(), 5000, 'dashboard event')).value));
    await reader.cancel();
    for (const view of views) {
      assert.match(view, /alice/);
      for (const secret of ['user-alice-5d1e', 'user-bob-77c0', a.id, b.id]) {
        assert.ok(!view.includes(secret), `operators' view does not show ${secret}`);
      }
    }
    assert.equal(room.members[0].engine_io, 4);
    assert.equal(room.members[1].transport, undefined, 'no transport while away');
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_members', { protocol: 'chatroom' }), 2, 'kept during the grace');
    a.close();
  } finally {
    await gw.stop();
  }
});

test('with admin.token set, every route but /healthz needs the bearer token', async () => {
  const gw = await startGateway({ sets: ['admin.token=s3cret'] });
  try {
    for (const path of ['/metrics', '/api/rooms', '/readyz', '/api/rooms/chatroom/x', '/api/events']) {
      assert.equal((await api(gw, path)).status, 401, `${path} without a token`);
      assert.equal((await api(gw, path, 'wrong')).status, 401, `${path} with a wrong token`);
    }
    assert.equal((await api(gw, '/metrics', 's3cret')).status, 200);
    assert.equal((await api(gw, '/api/rooms', 's3cret')).status, 200);
    assert.equal((await api(gw, '/readyz', 's3cret')).body.status, 'ready');
    assert.equal((await api(gw, '/healthz')).status, 200);
    // The dashboard page is static and holds no data: it opens without a token and passes
    // its own ?token= to the event stream.
    const page = await fetch(`${gw.urls.admin}/`);
    assert.equal(page.status, 200);
    assert.doesNotMatch(await page.text(), /s3cret/);
    const res = await fetch(`${gw.urls.admin}/api/events?token=s3cret`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /text\/event-stream/);
    const reader = res.body.getReader();
    const { value } = await withTimeout(reader.read(), 5000, 'first event');
    const text = new TextDecoder().decode(value);
    assert.match(text, /^data: \{"realms":/m);
    await reader.cancel();
  } finally {
    await gw.stop();
  }
});

/** GET `path` on the admin endpoint with the given Host header; resolves to the status. */
function withHost(gw, path, host) {
  const u = new URL(gw.urls.admin);
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.get({ host: u.hostname, port: u.port, path, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
  }), 5000, `GET ${path} with Host ${host}`);
}

test('the admin endpoint refuses a Host that is not its own (DNS rebinding)', async () => {
  const gw = await startGateway({ sets: ['admin.allowed_hosts=["ops.example"]'] });
  try {
    const port = new URL(gw.urls.admin).port;
    for (const path of ['/api/rooms', '/metrics', '/', '/api/events', '/healthz']) {
      assert.equal(await withHost(gw, path, 'evil.example'), 421, `${path} with Host evil.example`);
      assert.equal(await withHost(gw, path, `evil.example:${port}`), 421, `${path} with Host evil.example:${port}`);
    }
    assert.equal(await withHost(gw, '/api/rooms', 'localhost.evil.example'), 421);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'localhost', `[::1]:${port}`, 'ops.example', `ops.example:${port}`]) {
      assert.equal(await withHost(gw, '/api/rooms', host), 200, `Host ${host}`);
    }
  } finally {
    await gw.stop();
  }
});
