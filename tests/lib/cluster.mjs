// A small cluster for a test: a redis-server of the test's own on a free loopback port (no
// persistence) and gateway processes that share it (GATEWAY_CLUSTER__REDIS_URL, one
// GATEWAY_CLUSTER__NODE_ID each).
import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway } from './gateway.mjs';

/** A free loopback TCP port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts redis-server; resolves once it accepts connections. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('redis-server did not start in 15 s');
    }
    await sleep(100);
  }
  return { port, url: `redis://127.0.0.1:${port}/`, stop: () => child.kill('SIGKILL') };
}

/**
 * Starts redis-server and `n` gateway nodes on it, each with `sets`.
 * @returns {Promise<{nodes: Awaited<ReturnType<typeof startGateway>>[], stop: () => Promise<void>}>}
 */
export async function startCluster(n, sets = [], name = 'test') {
  const redis = await startRedis();
  const nodes = [];
  try {
    for (let i = 0; i < n; i++) {
      nodes.push(await startGateway({
        sets,
        env: { GATEWAY_CLUSTER__REDIS_URL: redis.url, GATEWAY_CLUSTER__NODE_ID: `node-${i}`, GATEWAY_CLUSTER__NAME: name },
      }));
    }
  } catch (e) {
    for (const node of nodes) await node.stop();
    redis.stop();
    throw e;
  }
  return {
    nodes,
    async stop() {
      for (const node of nodes) await node.stop();
      redis.stop();
    },
  };
}
