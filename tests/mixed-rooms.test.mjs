// Cross-protocol ("mixed") rooms, over the wire: scripted socket.io 2.x clients (as the
// WebRtcRoom apps) and socket.io-client 4.x clients (as the chatroom client) in one room,
// asserting the exact events each side receives (protocols/*/SPEC.md "Mixed rooms").
//
// Clients named W… speak WebRtcRoom on the gateway's webrtcroom listener, C… chatroom on its
// chatroom listener. Every join order (W then C, C then W, W C W, C W C); departures both
// ways (exit and disconnect reach chatroom members as `leave`; a chatroom `leave` and a grace
// expiry reach WebRtcRoom members as `exit`); a chatroom member's return on a new socket; the
// screen-share refusal; counted drops; a room size limit across protocols; and, with the
// feature off or a room name outside `cross_protocol.rooms`, rooms that stay apart.
//
// Same-protocol pairs in a mixed room get exactly what they get in a room of their own (a
// WebRtcRoom relay is forwarded byte for byte, extra fields included).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  replay, startTestGateway, socketIoV2Factory, metricValue, eventually,
} from './lib/scenario.mjs';
import path from 'node:path';
import { ROOT } from './lib/gateway.mjs';
import { loadScenarios } from './lib/scenario.mjs';
import { chatroomFactory, assertReleased } from './lib/chatroom-scenario.mjs';
import { startClusterWithRedis as startCluster } from './lib/cluster.mjs';

const STEP_TIMEOUT_MS = 10_000;
const GRACE_MS = 2_000; // chatroom.reconnect_grace in tests/fixtures/test.toml

/**
 * Clients named W… on the WebRtcRoom listener, C… on the chatroom listener (of gateway
 * `cgw` when given: another cluster node).
 */
function mixedFactory(gw, transports, cgw = gw) {
  const w = socketIoV2Factory(gw.urls.webrtcroom, { transports });
  const c = chatroomFactory(cgw, { transports });
  return (name) => (name.startsWith('W') ? w(name) : c(name));
}

const SDP_O = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
const SDP_A = 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
const CAND = 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host';
const CAND2 = 'candidate:2 1 udp 2122260223 127.0.0.1 50002 typ host';
// Chatroom ids are unique per room: a closed client's member stays away for the grace period.
const join = (c, room) => ({ client: c, emit: ['join', { id: `uid-${c}-${room}`, username: c, roomname: room }] });
// A chatroom joiner gets no answer: before another client acts on a join, the scenario asks
// /checkUsername (of the joiner's node) until the name is taken.
const joined = (c, room) => [
  { client: 'http', emit: ['GET', '/checkUsername', {}, { query: { username: c, roomname: room }, until: { success: true, isRepeat: true } }] },
  { client: 'http', expect: ['response', 200, { success: true, isRepeat: true }] },
];
const create = (w, room) => ({ client: w, emit: ['createAndJoinRoom', { room }] });
const wConn = (w) => `webrtcroom:<id:${w}>`;

/** A chatroom client C offers to WebRtcRoom client W (connector k), W answers. */
function chatroomOffersTo(c, w, k, room) {
  return [
    { client: c, emit: ['offer', { connectorId: k, memberId: `<id:${w}>`, offer: { type: 'offer', sdp: SDP_O }, streamType: 'user' }] },
    { client: w, expect: ['offer', { from: `<id:${c}>`, to: `<id:${w}>`, room, sdp: SDP_O }] },
    { client: w, emit: ['answer', { from: `<id:${w}>`, to: `<id:${c}>`, room, sdp: SDP_A }] },
    { client: c, expect: ['answer', { remoteConnectorId: wConn(w), connectorId: k, answer: { type: 'answer', sdp: SDP_A }, memberId: `<id:${w}>` }] },
  ];
}

/** WebRtcRoom client W offers to chatroom client C, C answers with connector k. */
function webrtcroomOffersTo(w, c, k, room) {
  return [
    { client: w, emit: ['offer', { from: `<id:${w}>`, to: `<id:${c}>`, room, sdp: SDP_O }] },
    { client: c, expect: ['offer', { remoteConnectorId: wConn(w), offer: { type: 'offer', sdp: SDP_O }, memberId: `<id:${w}>`, streamType: 'user' }] },
    { client: c, emit: ['answer', { remoteConnectorId: wConn(w), connectorId: k, memberId: `<id:${w}>`, answer: { type: 'answer', sdp: SDP_A }, streamType: 'user' }] },
    { client: w, expect: ['answer', { from: `<id:${c}>`, to: `<id:${w}>`, room, sdp: SDP_A }] },
  ];
}

/** Candidates both ways once the link is set up (chatroom connector k). */
function candidatesBothWays(w, c, k, room) {
  return [
    { client: c, emit: ['icecandidate', { remoteConnectorId: wConn(w), memberId: `<id:${w}>`, candidate: { candidate: CAND, sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'abcd' } }] },
    { client: w, expect: ['candidate', { from: `<id:${c}>`, to: `<id:${w}>`, room, candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: CAND } }] },
    { client: w, emit: ['candidate', { from: `<id:${w}>`, to: `<id:${c}>`, room, candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: CAND2 } }] },
    { client: c, expect: ['icecandidate', { connectorId: k, candidate: { candidate: CAND2, sdpMid: '0', sdpMLineIndex: 0 } }] },
  ];
}

/** The clients a scenario's steps use without connecting them: connected before the first step. */
function withClients(scenario) {
  if (scenario.clients) return scenario;
  const later = new Set(scenario.steps.filter((s) => s.connect).map((s) => s.client));
  const names = [...new Set(scenario.steps.map((s) => s.client).filter((c) => c && !later.has(c)))];
  return { ...scenario, clients: names };
}

const SCENARIOS = [
  {
    name: 'W then C: the chatroom joiner offers; candidates both ways; screen share refused; exit reaches C as leave',
    steps: [
      create('W1', 'mix'),
      { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [] }] },
      join('C1', 'mix'),
      { client: 'W1', expect: ['joined', { id: '<id:C1>', room: 'mix' }] },
      { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ...chatroomOffersTo('C1', 'W1', 'k1', 'mix'),
      ...candidatesBothWays('W1', 'C1', 'k1', 'mix'),
      { note: 'a screen offer to a WebRtcRoom member is refused; the camera call goes on' },
      { client: 'C1', emit: ['offer', { connectorId: 'k-screen', memberId: '<id:W1>', offer: { type: 'offer', sdp: SDP_O }, streamType: 'display' }] },
      { client: 'C1', expect: ['error', { type: 'unsupported', message: '<text>' }] },
      { quiet: 200 },
      { client: 'W1', emit: ['candidate', { from: '<id:W1>', to: '<id:C1>', room: 'mix', candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: CAND } }] },
      { client: 'C1', expect: ['icecandidate', { connectorId: 'k1', candidate: { candidate: CAND, sdpMid: '0', sdpMLineIndex: 0 } }] },
      { client: 'W1', emit: ['exit', { from: '<id:W1>', room: 'mix' }] },
      { client: 'C1', expect: ['leave', { connectorId: 'k1', memberId: '<id:W1>' }] },
    ],
  },
  {
    name: 'C then W: the WebRtcRoom joiner offers to the chatroom member; early candidates wait for no one; leave reaches W as exit',
    clients: ['http', 'C1', 'W1'],
    steps: [
      join('C1', 'mix'),
      { quiet: 150 },
      ...joined('C1', 'mix'),
      create('W1', 'mix'),
      { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [{ id: '<id:C1>' }] }] },
      { quiet: 150 },
      { note: "before C1 answers, W1's candidate has no chatroom connector to go to: dropped and counted" },
      { client: 'W1', emit: ['offer', { from: '<id:W1>', to: '<id:C1>', room: 'mix', sdp: SDP_O }] },
      { client: 'C1', expect: ['offer', { remoteConnectorId: wConn('W1'), offer: { type: 'offer', sdp: SDP_O }, memberId: '<id:W1>', streamType: 'user' }] },
      { client: 'W1', emit: ['candidate', { from: '<id:W1>', to: '<id:C1>', room: 'mix', candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: CAND } }] },
      { quiet: 150 },
      { client: 'C1', emit: ['answer', { remoteConnectorId: wConn('W1'), connectorId: 'k1', memberId: '<id:W1>', answer: { type: 'answer', sdp: SDP_A }, streamType: 'user' }] },
      { client: 'W1', expect: ['answer', { from: '<id:C1>', to: '<id:W1>', room: 'mix', sdp: SDP_A }] },
      ...candidatesBothWays('W1', 'C1', 'k1', 'mix'),
      { client: 'C1', emit: ['leave', [{ remoteConnectorId: wConn('W1'), memberId: '<id:W1>' }]] },
      { client: 'W1', expect: ['exit', { from: '<id:C1>', room: 'mix' }] },
    ],
  },
  {
    name: 'W C W: the second WebRtcRoom joiner offers to both; same-protocol relays unchanged; its disconnect reaches both',
    steps: [
      create('W1', 'mix'),
      { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [] }] },
      join('C1', 'mix'),
      { client: 'W1', expect: ['joined', { id: '<id:C1>', room: 'mix' }] },
      { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ...chatroomOffersTo('C1', 'W1', 'k1', 'mix'),
      { client: 'W2', connect: true },
      create('W2', 'mix'),
      { client: 'W1', expect: ['joined', { id: '<id:W2>', room: 'mix' }] },
      { client: 'W2', expect: ['created', { id: '<id:W2>', room: 'mix', peers: [{ id: '<id:W1>' }, { id: '<id:C1>' }] }] },
      { quiet: 150 },
      { note: 'WebRtcRoom to WebRtcRoom: forwarded byte for byte, extra fields and all' },
      { client: 'W2', emit: ['offer', { sdp: SDP_O, from: '<id:W2>', room: 'mix', to: '<id:W1>', extra: [1, 2.50] }] },
      { client: 'W1', expect: ['offer', { sdp: SDP_O, from: '<id:W2>', room: 'mix', to: '<id:W1>', extra: [1, 2.5] }] },
      ...webrtcroomOffersTo('W2', 'C1', 'k2', 'mix'),
      { client: 'W2', disconnect: true },
      { client: 'W1', expect: ['exit', { from: '<id:W2>', room: '' }] },
      { client: 'C1', expect: ['leave', { connectorId: 'k2', memberId: '<id:W2>' }] },
    ],
  },
  {
    name: 'C W C: the second chatroom joiner is asked to offer to the WebRtcRoom member; its grace expiry reaches both',
    steps: [
      join('C1', 'mix'),
      ...joined('C1', 'mix'),
      { client: 'W1', connect: true },
      create('W1', 'mix'),
      { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [{ id: '<id:C1>' }] }] },
      ...webrtcroomOffersTo('W1', 'C1', 'k1', 'mix'),
      { client: 'C2', connect: true },
      join('C2', 'mix'),
      { client: 'C1', expect: ['getOffer', { memberId: '<id:C2>' }] },
      { client: 'W1', expect: ['joined', { id: '<id:C2>', room: 'mix' }] },
      { client: 'C2', expect: ['getOffer', { memberId: '<id:W1>' }] },
      { note: 'chatroom to chatroom: as in a room of their own' },
      { client: 'C1', emit: ['offer', { connectorId: 'k12', memberId: '<id:C2>', offer: { type: 'offer', sdp: SDP_O }, streamType: 'user' }] },
      { client: 'C2', expect: ['offer', { remoteConnectorId: 'k12', offer: { type: 'offer', sdp: SDP_O }, memberId: '<id:C1>', streamType: 'user' }] },
      { client: 'C2', emit: ['answer', { remoteConnectorId: 'k12', connectorId: 'k21', memberId: '<id:C1>', answer: { type: 'answer', sdp: SDP_A }, streamType: 'user' }] },
      { client: 'C1', expect: ['answer', { remoteConnectorId: 'k21', connectorId: 'k12', answer: { type: 'answer', sdp: SDP_A }, memberId: '<id:C2>' }] },
      ...chatroomOffersTo('C2', 'W1', 'k2w', 'mix'),
      { note: 'C2 drops; nobody hears anything during the grace period, then both sides do' },
      { client: 'C2', disconnect: true },
      { quiet: GRACE_MS / 2 },
      { client: 'C1', expect: ['leave', { connectorId: 'k12', memberId: '<id:C2>' }] },
      { client: 'W1', expect: ['exit', { from: '<id:C2>', room: '' }] },
    ],
  },
  {
    name: 'a chatroom member back on a new socket starts over with the WebRtcRoom member',
    steps: [
      create('W1', 'mix'),
      { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [] }] },
      join('C1', 'mix'),
      { client: 'W1', expect: ['joined', { id: '<id:C1>', room: 'mix' }] },
      { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ...chatroomOffersTo('C1', 'W1', 'k1', 'mix'),
      { client: 'C1', disconnect: true },
      { client: 'C1b', connect: true },
      { client: 'C1b', emit: ['reconnect', { id: 'uid-C1-mix', username: 'C1', roomname: 'mix' }] },
      { client: 'W1', expect: ['exit', { from: '<id:C1>', room: '' }] },
      { client: 'W1', expect: ['joined', { id: '<id:C1b>', room: 'mix' }] },
      { client: 'C1b', expect: ['reconnect', { type: 'leave', memberId: '<id:W1>' }] },
      { client: 'C1b', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ...chatroomOffersTo('C1b', 'W1', 'k1b', 'mix'),
    ],
  },
];

describe('cross-protocol rooms on', () => {
  let gw;
  before(async () => {
    gw = await startTestGateway(['cross_protocol.enabled=true', 'cross_protocol.rooms=["mix*", "other"]']);
  });
  after(async () => {
    await gw?.stop();
  });

  for (const transports of [['websocket'], ['polling']]) {
    for (const scenario of SCENARIOS) {
      test(`${transports[0]}: ${scenario.name}`, { timeout: 60_000 }, async () => {
        // Each scenario in a room of its own (names matching "mix*"), so runs do not meet.
        const room = `mix-${transports[0]}-${SCENARIOS.indexOf(scenario)}`;
        const steps = JSON.parse(JSON.stringify(scenario.steps)
          .replaceAll('"mix"', JSON.stringify(room))
          .replaceAll('uid-', `uid-${room}-`));
        await replay(withClients({ ...scenario, steps, file: scenario.name }), mixedFactory(gw, transports), { stepTimeoutMs: STEP_TIMEOUT_MS });
      });
    }
  }

  test('drops and refusals across protocols are counted', async () => {
    const m = await gw.metrics();
    assert.ok(metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'mixed_no_connector' }) >= 2, 'early candidates');
    assert.ok(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'mixed_display' }) >= 2, 'screen offers');
    assert.ok(metricValue(m, 'gateway_relayed_total', { protocol: 'chatroom', event: 'icecandidate' }) >= 2);
    assert.ok(metricValue(m, 'gateway_relayed_total', { protocol: 'webrtcroom', event: 'candidate' }) >= 2);
  });

  test('a room name outside cross_protocol.rooms stays two rooms', async () => {
    await replay(withClients({
      file: 'non-matching room',
      steps: [
        create('W1', 'solo'),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'solo', peers: [] }] },
        join('C1', 'solo'),
        { quiet: 200 },
        { client: 'W1', emit: ['offer', { from: '<id:W1>', to: '<id:C1>', room: 'solo', sdp: SDP_O }] },
        { client: 'C1', emit: ['offer', { connectorId: 'k', memberId: '<id:W1>', offer: { type: 'offer', sdp: SDP_O }, streamType: 'user' }] },
        { client: 'C1', expect: ['error', { type: 'unknown_member', message: '<text>' }] },
        { note: 'an exact pattern ("other") shares that name only' },
        create('W1', 'other'),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'other', peers: [] }] },
        join('C2', 'other'),
        { client: 'W1', expect: ['joined', { id: '<id:C2>', room: 'other' }] },
        { client: 'C2', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ],
    }), mixedFactory(gw, ['websocket']), { stepTimeoutMs: STEP_TIMEOUT_MS });
  });

  test('operators see a shared room in both protocols, each with its own members', async () => {
    await replay(withClients({
      file: 'operators view',
      steps: [
        create('W1', 'mix-view'),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix-view', peers: [] }] },
        join('C1', 'mix-view'),
        { client: 'W1', expect: ['joined', { id: '<id:C1>', room: 'mix-view' }] },
        { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
      ],
    }), mixedFactory(gw, ['websocket']), {
      stepTimeoutMs: STEP_TIMEOUT_MS,
      async beforeClose() {
        const rooms = await (await fetch(`${gw.urls.admin}/api/rooms`)).json();
        const room = (protocol) => rooms[protocol].rooms.find((r) => r.name === 'mix-view');
        assert.equal(room('webrtcroom')?.members.length, 1, 'webrtcroom lists its one member');
        assert.deepEqual(room('chatroom')?.members.map((m) => m.name), ['C1'], 'chatroom lists its one member');
        assert.ok(!JSON.stringify(rooms).match(/"[wcx]:/), 'no internal key prefixes');
      },
    });
  });
});

describe('cross-protocol rooms with a room size limit', () => {
  let gw;
  before(async () => {
    gw = await startTestGateway(['cross_protocol.enabled=true', 'webrtcroom.max_room_size=2', 'chatroom.max_room_size=2']);
  });
  after(async () => {
    await gw?.stop();
  });

  test('the limit counts the members of both protocols', async () => {
    await replay(withClients({
      file: 'room size across protocols',
      steps: [
        create('W1', 'full'),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'full', peers: [] }] },
        join('C1', 'full'),
        { client: 'W1', expect: ['joined', { id: '<id:C1>', room: 'full' }] },
        { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
        { note: 'a third member of either protocol is refused, in its own words' },
        join('C2', 'full'),
        { client: 'C2', expect: ['error', { type: 'limit', message: '<text>' }] },
        create('W2', 'full'),
        { quiet: 300 },
      ],
    }), mixedFactory(gw, ['websocket']), { stepTimeoutMs: STEP_TIMEOUT_MS });
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'webrtcroom', reason: 'room_full' }), 1);
    assert.equal(metricValue(m, 'gateway_refused_total', { protocol: 'chatroom', reason: 'room_full' }), 1);
  });
});

describe('cross-protocol rooms off (the default)', () => {
  let gw;
  before(async () => {
    gw = await startTestGateway([]);
  });
  after(async () => {
    await gw?.stop();
  });

  test('the same room name is two rooms: nobody sees the other protocol', async () => {
    await replay(withClients({
      file: 'feature off',
      steps: [
        create('W1', 'mix'),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room: 'mix', peers: [] }] },
        join('C1', 'mix'),
        { quiet: 200 },
        ...joined('C1', 'mix'),
        create('W2', 'mix'),
        { client: 'W1', expect: ['joined', { id: '<id:W2>', room: 'mix' }] },
        { client: 'W2', expect: ['created', { id: '<id:W2>', room: 'mix', peers: [{ id: '<id:W1>' }] }] },
        join('C2', 'mix'),
        { client: 'C1', expect: ['getOffer', { memberId: '<id:C2>' }] },
        { client: 'W1', emit: ['offer', { from: '<id:W1>', to: '<id:C1>', room: 'mix', sdp: SDP_O }] },
        { client: 'C1', emit: ['offer', { connectorId: 'k', memberId: '<id:W1>', offer: { type: 'offer', sdp: SDP_O }, streamType: 'user' }] },
        { client: 'C1', expect: ['error', { type: 'unknown_member', message: '<text>' }] },
        { quiet: 200 },
      ],
    }), mixedFactory(gw, ['websocket']), { stepTimeoutMs: STEP_TIMEOUT_MS });
    await eventually(async () => {
      const m = await gw.metrics();
      return metricValue(m, 'gateway_dropped_total', { protocol: 'webrtcroom', reason: 'unknown_target' }) === 1;
    }, 3000, 'the WebRtcRoom offer to a chatroom socket was dropped as unknown_target');
  });
});

describe('cross-protocol rooms across two cluster nodes', () => {
  let cluster;
  before(async () => {
    cluster = await startCluster(2, ['cross_protocol.enabled=true'], 'mixed-wire');
  });
  after(async () => {
    await cluster?.stop();
  });

  // WebRtcRoom clients on node 0, chatroom clients on node 1: every translated message
  // crosses from one node to the other.
  for (const scenario of SCENARIOS) {
    test(`two nodes: ${scenario.name}`, { timeout: 60_000 }, async () => {
      const room = `mix-cluster-${SCENARIOS.indexOf(scenario)}`;
      const steps = JSON.parse(JSON.stringify(scenario.steps)
        .replaceAll('"mix"', JSON.stringify(room))
        .replaceAll('uid-', `uid-${room}-`));
      const [a, b] = cluster.nodes;
      await replay(withClients({ ...scenario, steps, file: scenario.name }), mixedFactory(a, ['websocket'], b), { stepTimeoutMs: STEP_TIMEOUT_MS });
    });
  }
});

describe('cross-protocol rooms when a cluster node dies', () => {
  let cluster;
  before(async () => {
    // A long chatroom grace: a WebRtcRoom member of a dead node must not wait for it.
    cluster = await startCluster(2, ['cross_protocol.enabled=true', 'chatroom.reconnect_grace=60s', 'cluster.node_timeout=2s'], 'mixed-death');
  });
  after(async () => {
    await cluster?.stop();
  });

  test("a WebRtcRoom member of a dead node leaves at once: its chatroom peer on another node gets leave", { timeout: 60_000 }, async () => {
    const [a, b] = cluster.nodes;
    const room = 'mix-death';
    const { ids } = await replay(withClients({
      file: 'node death',
      steps: [
        create('W1', room),
        { client: 'W1', expect: ['created', { id: '<id:W1>', room, peers: [] }] },
        join('C1', room),
        { client: 'W1', expect: ['joined', { id: '<id:C1>', room }] },
        { client: 'C1', expect: ['getOffer', { memberId: '<id:W1>' }] },
        ...chatroomOffersTo('C1', 'W1', 'k1', room),
      ],
    }), mixedFactory(a, ['websocket'], b), {
      stepTimeoutMs: STEP_TIMEOUT_MS,
      async beforeClose(clients) {
        const t0 = Date.now();
        a.child.kill('SIGKILL');
        const leave = await clients.C1.queue.next(15_000, 'leave after node death');
        assert.deepEqual(leave, ['leave', { connectorId: 'k1', memberId: clients.W1.id }]);
        const took = Date.now() - t0;
        console.log(`node death: the chatroom peer heard leave ${took} ms after the kill`);
        assert.ok(took < 10_000, `within the node timeout and a pass, not the 60 s chatroom grace (${took} ms)`);
      },
    });
    assert.ok(ids.W1);
  });
});

// Same-protocol pairs in a mixed room get exactly what they got before: every conformance
// scenario of both protocols, replayed with every room shared (websocket; the protocol
// suites cover the other transports with the feature off).
describe('with every room shared, each protocol\'s own conformance scenarios are unchanged', () => {
  const MIXED = ['cross_protocol.enabled=true'];
  for (const scenario of loadScenarios(path.join(ROOT, 'protocols', 'webrtcroom', 'scenarios'))) {
    test(`webrtcroom ${scenario.file}`, { timeout: 60_000 }, async () => {
      const gw = await startTestGateway([...MIXED, ...(scenario.gateway?.set ?? [])]);
      try {
        await replay(scenario, socketIoV2Factory(gw.urls.webrtcroom, { transports: ['websocket'] }), { stepTimeoutMs: STEP_TIMEOUT_MS });
        await eventually(async () => {
          const m = await gw.metrics();
          return metricValue(m, 'gateway_members', { protocol: 'webrtcroom' }) === 0 && metricValue(m, 'gateway_rooms', { protocol: 'webrtcroom' }) === 0;
        }, 5000, 'rooms and members back to 0');
      } finally {
        assert.equal(await gw.stop(), 0);
      }
    });
  }
  for (const scenario of loadScenarios(path.join(ROOT, 'protocols', 'chatroom', 'scenarios'))) {
    test(`chatroom ${scenario.file}`, { timeout: 60_000 }, async () => {
      const gw = await startTestGateway([...MIXED, ...(scenario.gateway?.set ?? [])]);
      try {
        await replay(scenario, chatroomFactory(gw, { transports: ['websocket'] }), { stepTimeoutMs: STEP_TIMEOUT_MS });
        await assertReleased(gw, 6000);
      } finally {
        assert.equal(await gw.stop(), 0);
      }
    });
  }
});
