// The [cluster] keys are checked at start with errors naming the key; a node whose Redis cannot
// be reached at start says so and exits (rather than serving as a silent single node); the
// default (empty redis_url) starts one node that needs no Redis. Cluster behaviour itself is in
// cluster.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { io as ioV4 } from 'socket.io-client';
import { startGateway, BIN, ROOT } from './lib/gateway.mjs';

const CONFIG = path.join(ROOT, 'tests', 'fixtures', 'test.toml');
const run = (env, args = []) => spawnSync(BIN, ['--config', CONFIG, ...args], {
  env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10_000,
});

test('cluster: --check-config shows the [cluster] keys and their defaults', { timeout: 30_000 }, () => {
  const r = run({}, ['--check-config']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\[cluster\]\nredis_url = ""\nname = "gateway"\nnode_id = ""\nadvertise_host = ""\nnode_timeout = "10s"/);
});

test('cluster: an unreachable Redis at start stops the node with a clear error; no silent single node', { timeout: 30_000 }, () => {
  let r = run({ GATEWAY_CLUSTER__REDIS_URL: 'redis://:secret@127.0.0.1:1/' });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cluster: cannot reach Redis at redis:\/\/:REDACTED@127\.0\.0\.1:1\/: Connection refused/);
  assert.doesNotMatch(r.stderr + r.stdout, /secret/);
  assert.doesNotMatch(r.stdout, /listening on/);
  r = run({ GATEWAY_CLUSTER__REDIS_URL: 'redis://127.0.0.1:1/' }, ['--set', 'chatroom.listen=0.0.0.0:0']);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /cluster\.advertise_host: required in cluster mode: chatroom\.listen = 0\.0\.0\.0:0/);
  r = run({ GATEWAY_CLUSTER__NODE_ID: 'bad:id' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /cluster\.node_id/);
});

test('cluster: by default one node serves with no Redis configured', { timeout: 30_000 }, async () => {
  const gw = await startGateway({ env: { GATEWAY_CLUSTER__NAME: 'other' } });
  try {
    const a = ioV4(gw.urls.chatroom, { transports: ['websocket'], forceNew: true });
    await new Promise((resolve, reject) => { a.once('connect', resolve); a.once('connect_error', reject); });
    a.close();
  } finally {
    await gw.stop();
  }
});
