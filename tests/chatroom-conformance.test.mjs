// Chatroom conformance: every scenario in protocols/chatroom/scenarios/ replayed with
// socket.io-client 4.x (the chatroom front-end's client) over WebSocket only, long-polling only
// and the default (polling, then upgrade to WebSocket). Each replay gets a fresh gateway
// (tests/fixtures/test.toml: chatroom.reconnect_grace = "2s", plus the scenario's own
// "gateway": {"set": [...]}). Afterwards every member and room must be released once the
// grace period of the closed clients has run out, and the gateway must stop cleanly.
//
// The three transports of one scenario run concurrently, and two scenarios at a time (each
// replay has its own gateway), so the grace periods are not waited for one after another.
// No check depends on that: every wait is for an event or for a quiet period, bounded.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT } from './lib/gateway.mjs';
import { loadScenarios, replay, startTestGateway, metricValue, eventually } from './lib/scenario.mjs';
import { chatroomFactory, assertReleased } from './lib/chatroom-scenario.mjs';

const SCENARIOS = loadScenarios(path.join(ROOT, 'protocols', 'chatroom', 'scenarios'));
const MODES = {
  websocket: ['websocket'],
  polling: ['polling'],
  default: undefined,
};
const P = { protocol: 'chatroom' };
// Grace (2 s) + slack: members of clients that closed at the end are released by then.
const RELEASE_MS = 6000;
// Longest wait for an expected event. Generous, so that a busy machine does not fail a
// replay; expected events normally arrive within milliseconds (or the 2 s grace period).
const STEP_TIMEOUT_MS = 10000;

test('the scenario directory holds the scenarios this suite promises', () => {
  const names = SCENARIOS.map((s) => s.file);
  for (const required of [
    'three-members.json',
    'screen-share.json',
    'relay-fields.json',
    'check-username.json',
    'reconnect-in-grace.json',
    'reconnect-after-grace.json',
    'reconnect-then-peer-expires.json',
    'reconnect-peer-gone.json',
    'reconnect-out-of-order.json',
    'bad-input.json',
    'room-full.json',
    'call-setup.json',
  ]) {
    assert.ok(names.includes(required), `missing scenario ${required}`);
  }
  for (const s of SCENARIOS) {
    assert.equal(typeof s.description, 'string', `${s.file}: description`);
    assert.ok(Array.isArray(s.steps) && s.steps.length > 0, `${s.file}: steps`);
  }
});

/** `replay`, with the gateway's log (warnings and errors) added to a failure's message. */
async function replayWithLog(gw, scenario, factory, opts) {
  try {
    return await replay(scenario, factory, opts);
  } catch (e) {
    const log = gw.stderr().trim();
    if (log) e.message += `\n--- gateway log (last 3000 characters) ---\n${log.slice(-3000)}`;
    throw e;
  }
}

async function runScenario(scenario, mode, transports) {
  const gw = await startTestGateway(scenario.gateway?.set ?? []);
  try {
    await replayWithLog(gw, scenario, chatroomFactory(gw, { transports }), {
      stepTimeoutMs: STEP_TIMEOUT_MS,
      beforeClose: async (clients) => {
        if (mode !== 'default') return;
        // The default mode must really have upgraded, or it tested polling twice.
        for (const c of Object.values(clients)) {
          if (!c.socket?.connected) continue;
          await eventually(() => c.transport() === 'websocket', 3000, `client ${c.name} upgraded to websocket`);
        }
      },
    });
    await assertReleased(gw, RELEASE_MS);
    const m = await gw.metrics();
    assert.equal(metricValue(m, 'gateway_dropped_total', { ...P, reason: 'send_buffer_full' }), 0, 'no message lost to a full send buffer');
    assert.equal(gw.child.exitCode, null, 'gateway still running');
  } finally {
    const code = await gw.stop();
    assert.equal(code, 0, `gateway exit code after SIGTERM; stderr:\n${gw.stderr().slice(-3000)}`);
  }
}

describe('chatroom scenarios, socket.io-client 4.x', { concurrency: 2 }, () => {
  for (const scenario of SCENARIOS) {
    describe(scenario.file, { concurrency: true }, () => {
      for (const [mode, transports] of Object.entries(MODES)) {
        test(`transport ${mode}`, () => runScenario(scenario, mode, transports));
      }
    });
  }
});
