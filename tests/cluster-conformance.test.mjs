// Cluster mode (issue 10): every conformance scenario of both protocols
// (protocols/*/scenarios/*.json), replayed with the same replayer and client factories as
// tests/*-conformance.test.mjs, but with the clients spread over three gateway nodes that share
// one Redis: the i-th socket client of a scenario (in the order it connects) is served by node
// i % 3, so every relay, notice and reconnect of the scenarios crosses nodes. Pseudo-clients
// (chatroom "http*" and "metrics*") are spread the same way, in their own order.
//
// Same transports as the single-node conformance tests: WebSocket only, long-polling only,
// and the default (polling, then the upgrade, which must happen). The no-EIO legacy polling
// path is not part of those tests (tests/webrtcroom-legacy-http.test.mjs covers it on one node,
// tests/cluster-nginx.test.mjs through a round-robin balancer).
//
// One cluster (three nodes) per protocol and transport runs that protocol's scenarios one
// after another, and after each scenario every room, member and connection must be released
// (so a scenario also checks that the previous one left nothing in Redis); a scenario with its
// own "gateway": {"set": [...]} gets a cluster of its own. The transports run concurrently.
//
// What differs from one node, and why:
// - The gauges gateway_members / gateway_rooms count the whole cluster and are refreshed from
//   Redis every second, so the "metrics" pseudo-client reads them 1.5 s after it is asked.
// No scenario step depends on a single node (none restarts or kills the server), so no step is
// skipped.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT } from './lib/gateway.mjs';
import { loadScenarios, replay, socketIoV2Factory, metricValue, eventually, withTimeout } from './lib/scenario.mjs';
import { chatroomFactory } from './lib/chatroom-scenario.mjs';
import { startRedis, startCluster, redisMissing } from './lib/cluster.mjs';

const skip = redisMissing();
const MODES = { websocket: ['websocket'], polling: ['polling'], default: undefined };
const PROTOCOLS = {
  webrtcroom: loadScenarios(path.join(ROOT, 'protocols', 'webrtcroom', 'scenarios')),
  chatroom: loadScenarios(path.join(ROOT, 'protocols', 'chatroom', 'scenarios')),
};
const STEP_TIMEOUT_MS = 10_000;
// chatroom.reconnect_grace (2 s in tests/fixtures/test.toml) + the supervisor's pass + slack.
const RELEASE_MS = 8000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let redis;
before(async () => {
  if (!skip) redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

/** A client factory that serves the i-th client of its kind from node i % n. */
function spread(protocol, cluster, transports) {
  const counts = { socket: 0, http: 0, metrics: 0 };
  const n = cluster.nodes.length;
  const pick = (kind) => cluster.nodes[counts[kind]++ % n];
  const v2 = cluster.nodes.map((g) => socketIoV2Factory(g.urls.webrtcroom, { transports }));
  const v4 = cluster.nodes.map((g) => chatroomFactory(g, { transports }));
  return async (name) => {
    if (protocol === 'webrtcroom') return v2[counts.socket++ % n](name);
    if (name.startsWith('metrics')) return clusterMetricsClient(name, pick('metrics'));
    if (name.startsWith('http')) return v4[cluster.nodes.indexOf(pick('http'))](name);
    return v4[counts.socket++ % n](name);
  };
}

/**
 * Like chatroom-scenario.mjs's metrics pseudo-client, for cluster-wide gauges refreshed from
 * Redis every second: the value is read 1.5 s after the request (a refresh has happened by then).
 */
function clusterMetricsClient(name, gw) {
  let sink = () => {};
  let closed = false;
  return {
    name,
    id: null,
    emit(kind, metric, labels = {}) {
      (async () => {
        await gw.metrics();
        await sleep(1500);
        const m = await gw.metrics();
        if (!closed) sink(kind, [metric, metricValue(m, metric, { protocol: 'chatroom', ...labels })]);
      })().catch((e) => {
        if (!closed) sink('metrics_error', [String(e?.message ?? e)]);
      });
    },
    onEvent(cb) { sink = cb; },
    disconnect() {},
    close() { closed = true; },
  };
}

/** Every room, member (cluster-wide gauges) and connection (each node's) released. */
async function assertReleased(protocol, cluster) {
  const P = { protocol };
  let last;
  try {
    await eventually(async () => {
      const all = await Promise.all(cluster.nodes.map((g) => g.metrics()));
      last = {
        members: all.map((m) => metricValue(m, 'gateway_members', P)),
        rooms: all.map((m) => metricValue(m, 'gateway_rooms', P)),
        connections: all.map((m) => metricValue(m, 'gateway_connections', P)),
      };
      return [...last.members, ...last.rooms, ...last.connections].every((v) => v === 0);
    }, RELEASE_MS, `${protocol}: rooms, members and connections back to 0 on every node`);
  } catch (e) {
    let view = 'unavailable';
    try {
      const body = await (await withTimeout(fetch(`${cluster.nodes[0].urls.admin}/api/rooms`), 3000, '/api/rooms')).json();
      view = JSON.stringify(body[protocol] ?? body).slice(0, 1500);
    } catch (err) {
      view = `unavailable (${err.message})`;
    }
    e.message += `\nlast gauges per node: ${JSON.stringify(last)}\n/api/rooms: ${view}\nRedis keys: ${redis.keys(`${cluster.name}:*`).sort().join(' ')}`;
    throw e;
  }
}

async function runScenario(protocol, cluster, scenario, mode, transports) {
  try {
    await replay(scenario, spread(protocol, cluster, transports), {
      stepTimeoutMs: STEP_TIMEOUT_MS,
      beforeClose: async (clients) => {
        if (mode !== 'default') return;
        // The default mode must really have upgraded, or it tested polling twice.
        for (const c of Object.values(clients)) {
          if (!c.socket?.connected) continue;
          await eventually(() => c.transport() === 'websocket', 5000, `client ${c.name} upgraded to websocket`);
        }
      },
    });
    await assertReleased(protocol, cluster);
    for (const [i, g] of cluster.nodes.entries()) {
      const m = await g.metrics();
      assert.equal(metricValue(m, 'gateway_dropped_total', { protocol, reason: 'send_buffer_full' }), 0, `node ${i}: no message lost to a full send buffer`);
      assert.equal(g.child.exitCode, null, `node ${i} still running`);
    }
  } catch (e) {
    e.message += `\n${cluster.logs(1500)}`;
    throw e;
  }
}

for (const [protocol, scenarios] of Object.entries(PROTOCOLS)) {
  // Scenarios grouped by their gateway settings: one cluster per group and transport.
  const groups = new Map();
  for (const s of scenarios) {
    const key = JSON.stringify(s.gateway?.set ?? []);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  describe(`cluster of 3: ${protocol} scenarios`, { skip, concurrency: true }, () => {
    for (const [mode, transports] of Object.entries(MODES)) {
      for (const [key, group] of groups) {
        const sets = JSON.parse(key);
        const label = `transport ${mode}${sets.length ? `, ${sets.join(' ')}` : ''}`;
        describe(label, { concurrency: 1 }, () => {
          let cluster;
          before(async () => {
            cluster = await startCluster({ redis, n: 3, sets });
            // The cluster-wide gauges are refreshed only once someone asks for them.
            await Promise.all(cluster.nodes.map((g) => g.metrics()));
          });
          after(async () => {
            const codes = await cluster?.stop();
            assert.deepEqual(codes, [0, 0, 0], `every node exits 0 on SIGTERM\n${cluster?.logs()}`);
          });
          for (const scenario of group) {
            test(scenario.file, { timeout: 60_000 }, () => runScenario(protocol, cluster, scenario, mode, transports));
          }
        });
      }
    }
  });
}
