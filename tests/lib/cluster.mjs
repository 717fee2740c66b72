// Cluster mode for the over-the-wire tests (issue 10): a redis-server of the test's own on a
// free loopback port, and N gateway nodes sharing it (each started with startGateway from
// gateway.mjs, so every node is the real binary with tests/fixtures/test.toml).
//
//   const redis = await startRedis();                  // --save '' --appendonly no
//   const cluster = await startCluster({ redis, n: 3, nodeTimeout: '2s' });
//   cluster.nodes[0].urls.chatroom ...                   // node i: nodes[i]
//   await cluster.kill(1);                               // SIGKILL node 1
//   await redis.kill(); await redis.start();             // Redis gone, then back empty, same port
//   await cluster.stop(); await redis.stop();
//
// Several clusters may share one Redis: each gets its own `cluster.name` (the key prefix).
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { startGateway } from './gateway.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

/** Why redis-server cannot run here, or `false`. In CI a missing program is a failure. */
export function redisMissing() {
  if (process.env.CI) return false;
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? false : 'redis-server not found (bash tests/run.sh installs it)';
}

/**
 * A redis-server of the test's own: loopback, no persistence (a restart comes back empty).
 * @returns {Promise<{port: number, url: string, child: () => import('node:child_process').ChildProcess|null,
 *   start: () => Promise<void>, kill: () => Promise<void>, stop: () => Promise<void>, cli: (...args: string[]) => string}>}
 */
export async function startRedis({ port } = {}) {
  port ??= await freePort();
  let child = null;
  let log = '';
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}/`,
    child: () => child,
    log: () => log,
    /** Starts (or starts again, on the same port, empty). */
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (d) => { log = (log + d).slice(-20_000); });
      child.stderr.on('data', (d) => { log = (log + d).slice(-20_000); });
      const deadline = Date.now() + 10_000;
      while (!(await accepts(port))) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on ${port}:\n${log}`);
        await sleep(50);
      }
    },
    /** SIGKILL; resolves once it has exited and the port is closed. */
    async kill() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
    /** Runs redis-cli against this server; returns its stdout (raw, one item a line). */
    cli(...args) {
      const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--raw', ...args], { encoding: 'utf8', timeout: 5000 });
      if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
    /** Every key (SCAN, not KEYS), optionally matching `pattern`. */
    keys(pattern = '*') {
      return redis.cli('--scan', '--pattern', pattern).split('\n').filter(Boolean);
    },
  };
  await redis.start();
  return redis;
}

let clusters = 0;

/**
 * Starts `n` gateway nodes sharing `redis`, node i with `cluster.node_id` = `${name}-n${i}`.
 * @param {{redis: {url: string}, n?: number, name?: string, nodeTimeout?: string, sets?: string[], nodeSets?: string[][], env?: Record<string,string>}} opts
 */
export async function startCluster({ redis, n = 3, name, nodeTimeout, sets = [], nodeSets = [], env = {} }) {
  name ??= `t${process.pid}x${++clusters}`;
  const common = [...sets];
  if (nodeTimeout) common.push(`cluster.node_timeout=${nodeTimeout}`);
  const ids = Array.from({ length: n }, (_, i) => `${name}-n${i}`);
  const start = (i) => startGateway({
    sets: [...common, ...(nodeSets[i] ?? [])],
    env: { ...env, GATEWAY_CLUSTER__REDIS_URL: redis.url, GATEWAY_CLUSTER__NAME: name, GATEWAY_CLUSTER__NODE_ID: ids[i] },
  });
  const nodes = [];
  try {
    // One at a time: a node registers itself at start, and a failure names the node.
    for (let i = 0; i < n; i++) nodes.push(await start(i));
  } catch (e) {
    await Promise.all(nodes.map((g) => g.stop()));
    throw e;
  }
  return {
    name,
    ids,
    nodes,
    /** SIGKILL node i; resolves once it has exited. */
    async kill(i) {
      const { child } = nodes[i];
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    /** SIGTERM node i (graceful stop); resolves with its exit code. */
    term: (i) => nodes[i].stop(),
    /** Stops every node still running; resolves with their exit codes (null: was killed). */
    stop: () => Promise.all(nodes.map((g) => (g.child.exitCode !== null || g.child.signalCode !== null ? null : g.stop()))),
    /** The nodes' logs, for failure messages. */
    logs: (chars = 2000) => nodes.map((g, i) => `--- node ${ids[i]} ---\n${g.stderr().slice(-chars)}`).join('\n'),
  };
}

/**
 * A redis-server and `n` nodes on it, each with `sets`, stopped together: for tests that need
 * a cluster and nothing else of Redis.
 */
export async function startClusterWithRedis(n, sets = [], name = undefined) {
  const redis = await startRedis();
  let cluster;
  try {
    cluster = await startCluster({ redis, n, sets, name });
  } catch (e) {
    await redis.stop();
    throw e;
  }
  return {
    ...cluster,
    async stop() {
      await cluster.stop();
      await redis.stop();
    },
  };
}
