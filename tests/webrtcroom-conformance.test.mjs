// WebRtcRoom conformance: every scenario in protocols/webrtcroom/scenarios/ replayed with
// socket.io-client 2.x (the apps' Engine.IO v3 client) over WebSocket only, long-polling only
// and the default (polling, then upgrade to WebSocket). Each replay gets a fresh gateway, and
// afterwards the gateway must have released every room and member and must stop cleanly.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT } from './lib/gateway.mjs';
import { loadScenarios, replay, socketIoV2Factory, startTestGateway, metricValue, eventually } from './lib/scenario.mjs';

const SCENARIOS = loadScenarios(path.join(ROOT, 'protocols', 'webrtcroom', 'scenarios'));
const MODES = {
  websocket: ['websocket'],
  polling: ['polling'],
  default: undefined,
};
const P = { protocol: 'webrtcroom' };

test('the scenario directory holds the scenarios this suite promises', () => {
  const names = SCENARIOS.map((s) => s.file);
  for (const required of [
    'three-clients.json',
    'room-number.json',
    'non-ascii-room.json',
    'idempotent-join.json',
    'switch-room.json',
    'exit-rejoin.json',
    'disconnect-scope.json',
    'ignored-input.json',
    'room-full.json',
  ]) {
    assert.ok(names.includes(required), `missing scenario ${required}`);
  }
});

for (const [mode, transports] of Object.entries(MODES)) {
  describe(`webrtcroom scenarios, socket.io-client 2.x, transport ${mode}`, () => {
    for (const scenario of SCENARIOS) {
      test(scenario.file, async () => {
        const gw = await startTestGateway(scenario.gateway?.set ?? []);
        try {
          await replay(scenario, socketIoV2Factory(gw.urls.webrtcroom, { transports }), {
            beforeClose: async (clients) => {
              if (mode !== 'default') return;
              // The default mode must really have upgraded, or it tested polling twice.
              // (Clients that disconnected during the scenario are skipped.)
              for (const c of Object.values(clients)) {
                if (!c.socket.connected) continue;
                await eventually(() => c.transport() === 'websocket', 5000, `client ${c.name} upgraded to websocket`);
              }
            },
          });
          // Every member and room is released once the clients are gone (nothing leaks).
          await eventually(async () => {
            const m = await gw.metrics();
            return metricValue(m, 'gateway_members', P) === 0 && metricValue(m, 'gateway_rooms', P) === 0 && metricValue(m, 'gateway_connections', P) === 0;
          }, 5000, 'rooms, members and connections back to 0');
          const m = await gw.metrics();
          assert.equal(metricValue(m, 'gateway_dropped_total', { ...P, reason: 'send_buffer_full' }), 0, 'no message lost to a full send buffer');
          assert.equal(gw.child.exitCode, null, 'gateway still running');
        } finally {
          const code = await gw.stop();
          assert.equal(code, 0, `gateway exit code after SIGTERM; stderr:\n${gw.stderr().slice(-3000)}`);
        }
      });
    }
  });
}

test('max_room_size: a third joiner is refused, counted once as room_full', async () => {
  const scenario = SCENARIOS.find((s) => s.file === 'room-full.json');
  const gw = await startTestGateway(['webrtcroom.max_room_size=2']);
  try {
    const before = await gw.metrics();
    assert.equal(metricValue(before, 'gateway_refused_total', { ...P, reason: 'room_full' }), 0);
    // Same steps as the scenario up to the refusal and its quiet period; the rest of the
    // scenario (C joining r2, then r1 after B left) must not add refusals.
    await replay(scenario, socketIoV2Factory(gw.urls.webrtcroom, { transports: ['websocket'] }));
    const after = await gw.metrics();
    assert.equal(metricValue(after, 'gateway_refused_total', { ...P, reason: 'room_full' }), 1);
    assert.equal(metricValue(after, 'gateway_refused_total', P), 1, 'no refusal of any other kind');
    // Joins: A, B, C into r2, C into r1; the refused attempt is not a join.
    assert.equal(metricValue(after, 'gateway_joins_total', P), 4);
  } finally {
    await gw.stop();
  }
});
