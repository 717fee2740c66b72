// Cluster mode (issue 10) behind a plain round-robin balancer: the Debian nginx running
// deploy/nginx-cluster.conf (the documented configuration, with only its upstream servers and
// listen ports replaced by the test's loopback ones), in front of three nodes sharing a Redis.
// No sticky sessions, so consecutive long-polling requests of one session reach different
// nodes: the nodes must forward them to the session's owner.
//
// - an iOS-style client (raw Engine.IO v3 long-polling, no EIO parameter in the URL, as
//   Socket.IO-Client-Swift 13 speaks it; see tests/webrtcroom-legacy-http.test.mjs) and a
//   socket.io-client 2.x polling-only client make whole WebRtcRoom sessions: join, offer /
//   answer / candidates both ways, exit;
// - two socket.io-client 4.x polling-only chatroom clients: join, offer / answer;
// - and, without nginx, one real call in Chromium between two tabs served by different nodes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './lib/gateway.mjs';
import { socketIoV2Factory, socketIoV4Factory, connectClient, withTimeout, EventQueue } from './lib/scenario.mjs';
import { startRedis, startCluster, redisMissing, freePort } from './lib/cluster.mjs';
import { untilJoined } from './lib/chatroom-scenario.mjs';
import { browserMissing, launchBrowser, demoUrl, openTab, waitAll, meshConnected } from './lib/browser.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nginxMissing = spawnSync('nginx', ['-v']).status === 0 || process.env.CI ? false : 'nginx not found (bash tests/run.sh installs it)';
const skip = redisMissing() || nginxMissing;

let redis;
let cluster;
let nginx;
let dir;
let ports;

/** deploy/nginx-cluster.conf with the test's nodes and listen ports. */
function renderClusterConf(template, nodes, { webPort, chatPort }) {
  const upstream = (name, key) => {
    const re = new RegExp(`(upstream ${name} \\{\\n)((?:\\s*server [^;]+;\\n)+)(\\})`);
    assert.match(template, re, `template has upstream ${name} with server lines`);
    const servers = nodes.map((g) => `    server ${new URL(g.urls[key]).host};\n`).join('');
    return (t) => t.replace(re, `$1${servers}$3`);
  };
  let conf = upstream('signal_gateway_webrtcroom', 'webrtcroom')(template);
  conf = upstream('signal_gateway_chatroom', 'chatroom')(conf);
  const directives = conf.split('\n').map((l) => l.replace(/#.*/, '')).join('\n');
  assert.ok(!/\b(ip_hash|hash|sticky)\b/.test(directives), 'no sticky sessions in the documented configuration');
  for (const [from, to] of [['listen 8443;', `listen 127.0.0.1:${webPort};`], ['listen 80;', `listen 127.0.0.1:${chatPort};`]]) {
    assert.ok(conf.includes(from), `template has "${from}"`);
    conf = conf.replace(from, to);
  }
  return conf;
}

before(async () => {
  if (skip) return;
  redis = await startRedis();
  cluster = await startCluster({ redis, n: 3 });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-cluster-nginx-'));
  ports = { webPort: await freePort(), chatPort: await freePort() };
  const site = renderClusterConf(fs.readFileSync(path.join(ROOT, 'deploy', 'nginx-cluster.conf'), 'utf8'), cluster.nodes, ports);
  fs.writeFileSync(path.join(dir, 'site.conf'), site);
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `${user}daemon off;\nworker_processes 1;\npid ${dir}/nginx.pid;\n`
    + `error_log ${dir}/error.log;\nevents { worker_connections 256; }\n`
    + `http {\n  log_format upstream '$upstream_addr "$request" $status';\n  access_log ${dir}/access.log upstream;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n`
    + `  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n`
    + `  include ${dir}/site.conf;\n}\n`);
  nginx = spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  nginx.stderr.on('data', (d) => { err += d; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${ports.chatPort}/socket.io/?EIO=4&transport=polling`).then(() => true, () => false);
    if (up) break;
    assert.ok(Date.now() < deadline && nginx.exitCode === null, `nginx did not start: ${err}`);
    await sleep(100);
  }
});

after(async () => {
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((r) => nginx.once('exit', r));
    nginx.kill('SIGQUIT');
    await withTimeout(exited, 5000, 'nginx exit').catch(() => nginx.kill('SIGKILL'));
  }
  await cluster?.stop();
  await redis?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The upstream (node address) of each proxied request whose line includes `what`. */
function upstreamsSeen(what) {
  const log = fs.readFileSync(path.join(dir, 'access.log'), 'utf8');
  return log.split('\n').filter((l) => l.includes(what)).map((l) => l.split(' ')[0]);
}

// --- An iOS-style client: raw Engine.IO v3 long-polling with no EIO parameter. -------------

const agent = new http.Agent({ keepAlive: false });

function request(port, method, p, body, ms = 10_000) {
  const headers = { accept: '*/*' };
  if (body !== undefined) {
    headers['content-type'] = 'text/plain;charset=UTF-8';
    headers['content-length'] = Buffer.byteLength(body);
  }
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  }), ms, `${method} ${p}`);
}

function parseV3(payload) {
  const packets = [];
  for (let i = 0; i < payload.length;) {
    const colon = payload.indexOf(':', i);
    const len = Number(payload.slice(i, colon));
    assert.ok(colon > i && Number.isInteger(len) && len > 0, `v3 framing at ${i} of ${JSON.stringify(payload)}`);
    packets.push(payload.slice(colon + 1, colon + 1 + len));
    i = colon + 1 + len;
  }
  return packets;
}
const encodeV3 = (packets) => packets.map((p) => `${p.length}:${p}`).join('');

/** Connects like the iOS app; events arrive in `queue` from a background poll loop. */
async function iosClient(port, name) {
  const base = '/socket.io/?transport=polling&b64=1';
  const hs = await request(port, 'GET', base);
  assert.equal(hs.status, 200, `handshake: ${hs.body}`);
  const packets = parseV3(hs.body);
  assert.ok(packets[0].startsWith('0'), `open packet: ${hs.body}`);
  const sid = JSON.parse(packets[0].slice(1)).sid;
  const p = `${base}&sid=${encodeURIComponent(sid)}`;
  const queue = new EventQueue(name);
  const raw = [];
  let closed = false;
  let failure = null;
  const handle = (pk) => {
    raw.push(pk);
    if (pk.startsWith('42')) {
      const [event, ...args] = JSON.parse(pk.slice(2));
      queue.push(event, args);
    }
  };
  packets.slice(1).forEach(handle);
  const loop = (async () => {
    while (!closed) {
      const res = await request(port, 'GET', p, undefined, 40_000).catch((e) => ({ status: 0, body: String(e.message) }));
      if (closed) return;
      if (res.status !== 200) {
        failure = `poll ${res.status}: ${res.body}`;
        queue.push('poll_failed', [failure]);
        return;
      }
      parseV3(res.body).forEach(handle);
    }
  })();
  // The server connects the client to "/" by itself.
  const deadline = Date.now() + 5000;
  while (!raw.includes('40')) {
    assert.ok(!failure && Date.now() < deadline, `${name}: connect packet 40 (got ${JSON.stringify(raw)}; ${failure ?? ''})`);
    await sleep(20);
  }
  return {
    name,
    id: sid,
    queue,
    async emit(event, payload) {
      const res = await request(port, 'POST', p, encodeV3([`42${JSON.stringify([event, payload])}`]));
      assert.equal(res.status, 200, `${name} POST ${event}: ${res.status} ${res.body}`);
      assert.equal(res.body, 'ok');
    },
    async close() {
      if (closed) return;
      await request(port, 'POST', p, '1:1').catch(() => {});
      closed = true;
      await withTimeout(loop, 5000, 'poll loop ends').catch(() => {});
    },
  };
}

const offerOf = (from, to, room, n) => ({ from, to, room, sdp: `v=0\r\no=- ${n} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n` });
const candOf = (from, to, room, n) => ({ from, to, room, candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: `candidate:${n} 1 udp 2122260223 10.0.0.${n} 5000${n} typ host` } });

test('nginx round robin, no sticky sessions: an iOS-style no-EIO polling client and a socket.io 2.x polling client make whole WebRtcRoom sessions', { skip, timeout: 90_000 }, async () => {
  for (let round = 1; round <= 3; round++) {
    const room = `ios-${round}`;
    const ios = await iosClient(ports.webPort, `ios${round}`);
    const s = await connectClient(socketIoV2Factory(`http://127.0.0.1:${ports.webPort}`, { transports: ['polling'] }), `sio2-${round}`);
    try {
      await ios.emit('createAndJoinRoom', { room });
      assert.deepEqual(await ios.queue.next(8000, 'created'), ['created', { id: ios.id, room, peers: [] }]);
      s.emit('createAndJoinRoom', { room });
      assert.deepEqual(await ios.queue.next(8000, 'joined'), ['joined', { id: s.id, room }]);
      assert.deepEqual(await s.queue.next(8000, 'created'), ['created', { id: s.id, room, peers: [{ id: ios.id }] }]);

      s.emit('offer', offerOf(s.id, ios.id, room, 1));
      assert.deepEqual(await ios.queue.next(8000, 'offer'), ['offer', offerOf(s.id, ios.id, room, 1)]);
      await ios.emit('answer', offerOf(ios.id, s.id, room, 2));
      assert.deepEqual(await s.queue.next(8000, 'answer'), ['answer', offerOf(ios.id, s.id, room, 2)]);
      for (let n = 1; n <= 4; n++) s.emit('candidate', candOf(s.id, ios.id, room, n));
      for (let n = 5; n <= 8; n++) await ios.emit('candidate', candOf(ios.id, s.id, room, n));
      for (let n = 1; n <= 4; n++) assert.deepEqual(await ios.queue.next(8000, `candidate ${n}`), ['candidate', candOf(s.id, ios.id, room, n)]);
      for (let n = 5; n <= 8; n++) assert.deepEqual(await s.queue.next(8000, `candidate ${n}`), ['candidate', candOf(ios.id, s.id, room, n)]);

      await ios.emit('exit', { from: ios.id, room });
      assert.deepEqual(await s.queue.next(8000, 'exit'), ['exit', { from: ios.id, room }]);
      s.emit('exit', { from: s.id, room });
      await sleep(300);
      assert.deepEqual([...ios.queue.drain(), ...s.queue.drain()], [], 'nothing else arrived');
    } finally {
      await ios.close();
      s.close();
    }
  }
  // The balancer really spread the sessions' requests over the three nodes.
  const seen = new Set(upstreamsSeen('/socket.io/?transport=polling'));
  const nodes = cluster.nodes.map((g) => new URL(g.urls.webrtcroom).host);
  assert.deepEqual([...seen].filter((u) => nodes.includes(u)).sort(), [...nodes].sort(), `the no-EIO requests reached all three nodes: ${[...seen]}`);
});

test('nginx round robin, no sticky sessions: socket.io 4.x polling-only chatroom clients join and relay', { skip, timeout: 60_000 }, async () => {
  const mk = socketIoV4Factory(`http://127.0.0.1:${ports.chatPort}`, { transports: ['polling'] });
  const a = await connectClient(mk, 'a');
  const b = await connectClient(mk, 'b');
  try {
    a.emit('join', { id: 'na', username: 'na', roomname: 'ng' });
    await untilJoined(`http://127.0.0.1:${ports.chatPort}`, 'na', 'ng');
    b.emit('join', { id: 'nb', username: 'nb', roomname: 'ng' });
    assert.deepEqual(await a.queue.next(8000, 'getOffer'), ['getOffer', { memberId: b.id }]);
    a.emit('offer', { connectorId: 'c1', memberId: b.id, offer: { type: 'offer', sdp: 'v=0\r\n' }, streamType: 'user' });
    assert.deepEqual(await b.queue.next(8000, 'offer'), ['offer', { remoteConnectorId: 'c1', offer: { type: 'offer', sdp: 'v=0\r\n' }, memberId: a.id, streamType: 'user' }]);
    b.emit('answer', { remoteConnectorId: 'c1', connectorId: 'c2', memberId: a.id, answer: { type: 'answer', sdp: 'v=0\r\n' }, streamType: 'user' });
    assert.deepEqual(await a.queue.next(8000, 'answer'), ['answer', { remoteConnectorId: 'c2', connectorId: 'c1', answer: { type: 'answer', sdp: 'v=0\r\n' }, memberId: b.id }]);
    b.emit('leave', { roomname: 'ng' });
    await sleep(300);
  } finally {
    a.close();
    b.close();
  }
});

const noBrowser = browserMissing();
test('cluster: one real WebRTC call in Chromium between two tabs served by different nodes', { skip: skip || noBrowser, timeout: 90_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    const tabs = [];
    for (const i of [0, 1]) tabs.push(await openTab(context, demoUrl(cluster.nodes[i].urls.webrtcroom, { room: 'cluster-call', autojoin: 1 }), `tab on node ${i + 1}`));
    await waitAll(tabs, meshConnected, { n: 1 }, { what: 'connected to the other tab with video', timeout: 30_000 });
    const ids = await Promise.all(tabs.map((t) => t.evaluate(() => window.demo.myId)));
    assert.notEqual(ids[0], ids[1]);
  } finally {
    await browser.close();
  }
});
