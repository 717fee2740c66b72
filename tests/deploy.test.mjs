// The deployment files shipped in deploy/ and the behaviour README "Deploying" promises:
// the systemd unit passes `systemd-analyze verify`; the nginx configuration, run by the real
// Debian nginx on loopback ports, carries both protocols over WebSocket and polling; SIGHUP
// makes the gateway read renewed certificate files while open sessions go on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { io as ioV4 } from 'socket.io-client';
import { BIN, ROOT, startGateway } from './lib/gateway.mjs';
import { withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');
const once = (s, event) => withTimeout(new Promise((resolve) => s.once(event, resolve)), 8000, event);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const missing = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0 && `${cmd} is not installed (tests/run.sh installs it)`;

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-deploy-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A self-signed certificate for 127.0.0.1 with common name `cn`, written to dir. */
function makeCert(dir, cn) {
  const cert = path.join(dir, `${cn}.crt`);
  const key = path.join(dir, `${cn}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

/** The common name of the certificate served at `port`. */
function servedName(port) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().subject.CN);
      s.end();
    });
    s.on('error', reject);
  }), 5000, 'TLS handshake');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

test('the systemd unit passes systemd-analyze verify', { skip: missing('systemd-analyze') }, (t) => {
  const dir = tempDir(t);
  const shipped = fs.readFileSync(path.join(ROOT, 'deploy', 'signal-gateway.service'), 'utf8');
  assert.match(shipped, /^ExecStart=\/usr\/local\/bin\/signal-gateway /m);
  assert.match(shipped, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  // verify checks that the program exists: point it at the binary under test.
  const unit = path.join(dir, 'signal-gateway.service');
  fs.writeFileSync(unit, shipped.replaceAll('/usr/local/bin/signal-gateway', BIN));
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 60_000 });
  const complaints = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('signal-gateway.service'));
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(complaints, [], 'systemd-analyze has no complaint about the unit');
});

test('behind the shipped nginx configuration both protocols work over websocket and polling', { skip: missing('nginx') || missing('openssl') }, async (t) => {
  const dir = tempDir(t);
  const { cert, key } = makeCert(dir, 'nginx-front');
  const gw = await startGateway();
  t.after(() => gw.stop());
  const [webPort, chatPort] = [await freePort(), await freePort()];
  const upstream = (name) => new URL(gw.urls[name]).host;
  let site = fs.readFileSync(path.join(ROOT, 'deploy', 'nginx.conf'), 'utf8');
  for (const header of ['X-Forwarded-For', 'X-Forwarded-Proto', 'X-Forwarded-Host', 'Upgrade']) {
    assert.equal(site.split(`proxy_set_header ${header} `).length - 1, 2, `both servers set ${header}`);
  }
  site = site
    .replace('server 127.0.0.1:18443;', `server ${upstream('webrtcroom')};`)
    .replace('server 127.0.0.1:13000;', `server ${upstream('chatroom')};`)
    .replace('listen 8443 ssl;', `listen 127.0.0.1:${webPort} ssl;`)
    .replace('listen 443 ssl;', `listen 127.0.0.1:${chatPort} ssl;`)
    .replace(/^\s*listen \[::\]:\d+ ssl;$/gm, '')
    .replaceAll('/etc/letsencrypt/live/signal.example.org/fullchain.pem', cert)
    .replaceAll('/etc/letsencrypt/live/signal.example.org/privkey.pem', key);
  fs.writeFileSync(path.join(dir, 'site.conf'), site);
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `${user}daemon off;\nworker_processes 1;\npid ${dir}/nginx.pid;\n`
    + `error_log ${dir}/error.log;\nevents { worker_connections 256; }\n`
    + `http {\n  access_log ${dir}/access.log;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n`
    + `  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n`
    + `  include ${dir}/site.conf;\n}\n`);
  const nginx = spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let nginxErr = '';
  nginx.stderr.on('data', (d) => { nginxErr += d; });
  t.after(() => { nginx.kill('SIGQUIT'); return new Promise((r) => nginx.exitCode !== null ? r() : nginx.on('exit', r)); });
  const deadline = Date.now() + 10_000;
  while (!(await servedName(webPort).then(() => true, () => false))) {
    assert.ok(Date.now() < deadline && nginx.exitCode === null, `nginx did not start: ${nginxErr}`);
    await sleep(100);
  }

  const clients = [];
  t.after(() => { for (const c of clients) c.close(); });
  for (const transports of [['websocket'], ['polling']]) {
    // WebRtcRoom (socket.io 2.x) through nginx on "8443".
    const room = `nginx-${transports[0]}`;
    const web = [];
    for (let i = 0; i < 2; i++) {
      const s = ioV2(`https://127.0.0.1:${webPort}`, { forceNew: true, reconnection: false, transports, rejectUnauthorized: false });
      clients.push(s);
      await once(s, 'connect');
      s.emit('createAndJoinRoom', { room });
      await once(s, 'created');
      web.push(s);
    }
    const offer = once(web[0], 'offer');
    web[1].emit('offer', { from: web[1].id, to: web[0].id, room, sdp: 'v=0' });
    assert.equal((await offer).sdp, 'v=0', `webrtcroom offer over ${transports}`);
    if (transports[0] === 'websocket') assert.equal(web[0].io.engine.transport.name, 'websocket');

    // chatroom (socket.io 4.x) through nginx on "443".
    const chat = [];
    for (const id of ['a', 'b']) {
      const s = ioV4(`https://127.0.0.1:${chatPort}`, { forceNew: true, reconnection: false, transports, rejectUnauthorized: false });
      clients.push(s);
      await once(s, 'connect');
      chat.push(s);
      const getOffer = id === 'b' ? once(chat[0], 'getOffer') : null;
      s.emit('join', { id: `${room}-${id}`, username: `${room}-${id}`, roomname: room });
      if (getOffer) await getOffer;
    }
    if (transports[0] === 'websocket') assert.equal(chat[0].io.engine.transport.name, 'websocket');
  }
  // nginx logs a WebSocket when it closes.
  for (const c of clients) c.close();
  await sleep(1000);
  const log = fs.readFileSync(path.join(dir, 'access.log'), 'utf8');
  assert.match(log, /GET \/socket\.io\/\?EIO=3&transport=websocket[^"]*" 101 /, `websocket upgrade went through nginx:\n${log}`);
  assert.match(log, /GET \/socket\.io\/\?EIO=3&transport=polling/, 'polling went through nginx');
  assert.match(log, /GET \/socket\.io\/\?EIO=4&transport=websocket[^"]*" 101 /, `websocket upgrade went through nginx:\n${log}`);
});

test('SIGHUP reloads certificate files without dropping open sessions', { skip: missing('openssl') }, async (t) => {
  const dir = tempDir(t);
  const first = makeCert(dir, 'first');
  const second = makeCert(dir, 'second');
  const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  fs.copyFileSync(first.cert, live.cert);
  fs.copyFileSync(first.key, live.key);
  const config = path.join(dir, 'gateway.toml');
  fs.writeFileSync(config, fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'test.toml'), 'utf8')
    .replace('tls = "off"', `tls = { cert = ${JSON.stringify(live.cert)}, key = ${JSON.stringify(live.key)} }`));
  const gw = await startGateway({ config });
  t.after(() => gw.stop());
  assert.match(gw.urls.webrtcroom, /^https:/);
  const port = Number(new URL(gw.urls.webrtcroom).port);
  assert.equal(await servedName(port), 'first');

  const a = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'], rejectUnauthorized: false });
  const b = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['polling'], rejectUnauthorized: false });
  t.after(() => { a.close(); b.close(); });
  await Promise.all([once(a, 'connect'), once(b, 'connect')]);
  for (const s of [a, b]) { s.emit('createAndJoinRoom', { room: 'renewal' }); await once(s, 'created'); }
  let disconnected = false;
  for (const s of [a, b]) s.on('disconnect', () => { disconnected = true; });

  // The renewal: new files in place, then SIGHUP (what `systemctl reload` sends).
  fs.copyFileSync(second.cert, live.cert);
  fs.copyFileSync(second.key, live.key);
  gw.child.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while (await servedName(port) !== 'second') {
    assert.ok(Date.now() < deadline && gw.child.exitCode === null, `still the old certificate; exit ${gw.child.exitCode}; stderr ${gw.stderr()}`);
    await sleep(100);
  }
  // Both sessions are still there and still relay, over websocket and polling.
  const offer = once(a, 'offer');
  b.emit('offer', { from: b.id, to: a.id, room: 'renewal', sdp: 'after-reload' });
  assert.equal((await offer).sdp, 'after-reload');
  const answer = once(b, 'answer');
  a.emit('answer', { from: a.id, to: b.id, room: 'renewal', sdp: 'back' });
  assert.equal((await answer).sdp, 'back');
  assert.equal(disconnected, false);

  // A broken renewal keeps the working certificate and the process.
  fs.writeFileSync(live.cert, 'not a certificate');
  gw.child.kill('SIGHUP');
  await sleep(500);
  assert.equal(gw.child.exitCode, null);
  assert.equal(await servedName(port), 'second');
});
