// An operator's first hour: what the binary says when the configuration is wrong, what
// `--check-config` shows, the start-up banner, `GET /` on a protocol port, and the metrics
// that must exist from the first scrape on (so that rate() and absence alerts work).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, ROOT, startGateway } from './lib/gateway.mjs';

const FIXTURE = path.join(ROOT, 'tests', 'fixtures', 'test.toml');

/** Runs the binary to completion (killed after `ms`); returns its exit code and output. */
function run(args, { env = {}, ms = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${args.join(' ')} still running after ${ms} ms`)); }, ms);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** A fresh temporary folder, removed when the test ends. */
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-operator-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a configuration error is one line with exit code 2', async (t) => {
  const dir = tempDir(t);
  const cases = [
    ['syntax.toml', '[webrtcroom]\nlisten = "127.0.0.1:1\n', [/syntax\.toml:2:\d+: /]],
    ['unknown.toml', '[webrtcroom]\nlistn = 1\nfoo = 2\n[admin]\nbar = 1\n',
      [/webrtcroom\.listn/, /webrtcroom\.foo/, /admin\.bar/]],
    ['level.toml', '[log]\nlevel = "verbose"\n', [/log\.level/]],
    ['cert.toml', '[webrtcroom]\ntls = { cert = "/dev/null", key = "/dev/null" }\n',
      [/webrtcroom\.tls\.cert: .*\(from .*cert\.toml\)/]],
  ];
  for (const [name, text, patterns] of cases) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    const { code, stdout, stderr } = await run(['--config', file, '--check-config']);
    assert.equal(code, 2, `${name}: exit code; stderr: ${stderr}`);
    assert.equal(stdout, '', name);
    const lines = stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${name}: one line, got ${JSON.stringify(stderr)}`);
    assert.ok(!stderr.includes('``'), `${name}: no doubled backticks: ${stderr}`);
    for (const p of patterns) assert.match(stderr, p, name);
  }
});

test('--check-config names the file read, redacts secrets and ends with "configuration OK"', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'gateway.toml');
  fs.writeFileSync(file, '[admin]\ntoken = "very-secret-token"\n');
  const { code, stdout } = await run(['--config', file, '--check-config'], { env: { GATEWAY_LOG__FORMAT: 'json' } });
  assert.equal(code, 0, stdout);
  assert.ok(!stdout.includes('very-secret-token'), stdout);
  assert.match(stdout, /^token = "<redacted>"$/m);
  assert.ok(stdout.includes(file), `names ${file}:\n${stdout}`);
  assert.match(stdout, /GATEWAY_LOG__FORMAT/);
  assert.equal(stdout.trimEnd().split('\n').at(-1), '# configuration OK');
  // The README's configuration table lists every key that --check-config prints.
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  let table = '';
  for (const line of stdout.split('\n')) {
    const section = /^\[(.+)\]$/.exec(line);
    if (section) { table = section[1]; continue; }
    const key = /^(\w+) = /.exec(line);
    if (key) assert.ok(readme.includes(`\`${table}.${key[1]}\``), `README's configuration table should list ${table}.${key[1]}`);
  }
});

test('every metric family exists at 0 from the first scrape, with process metrics and build info', async () => {
  const gw = await startGateway();
  try {
    const text = await (await fetch(`${gw.urls.admin}/metrics`)).text();
    const has = (series) => assert.ok(text.split('\n').some((l) => l.startsWith(series)), `missing ${series} in:\n${text}`);
    for (const protocol of ['webrtcroom', 'chatroom']) {
      has(`gateway_joins_total{protocol="${protocol}"} 0`);
      has(`gateway_leaves_total{protocol="${protocol}"} 0`);
      has(`gateway_rooms{protocol="${protocol}"} 0`);
      has(`gateway_members{protocol="${protocol}"} 0`);
      has(`gateway_handling_seconds_count{protocol="${protocol}"} 0`);
      for (const reason of ['send_buffer_full', 'receiver_closed', 'not_joined', 'unknown_target', 'slow_consumer_disconnect']) {
        has(`gateway_dropped_total{protocol="${protocol}",reason="${reason}"} 0`);
      }
      for (const reason of ['room_full', 'max_rooms', 'max_connections', 'payload_size', 'rate', 'flood_disconnect', 'name_length']) {
        has(`gateway_refused_total{protocol="${protocol}",reason="${reason}"} 0`);
      }
      has(`gateway_bad_input_total{protocol="${protocol}",kind="malformed_frame"} 0`);
    }
    for (const event of ['offer', 'answer', 'candidate']) {
      has(`gateway_relayed_total{protocol="webrtcroom",event="${event}"} 0`);
    }
    for (const event of ['offer', 'answer', 'icecandidate', 'leave', 'reconnect']) {
      has(`gateway_relayed_total{protocol="chatroom",event="${event}"} 0`);
    }
    has('gateway_sent_total{protocol="webrtcroom",event="created"} 0');
    has('gateway_sent_total{protocol="chatroom",event="getOffer"} 0');
    has('gateway_bad_input_total{protocol="webrtcroom",kind="unknown_event"} 0');
    has('gateway_bad_input_total{protocol="chatroom",kind="invalid"} 0');
    has('gateway_connections{protocol="chatroom",engine_io="4",transport="websocket"} 0');
    const version = /^version = "([^"]+)"/m.exec(fs.readFileSync(path.join(ROOT, 'Cargo.toml'), 'utf8'))[1];
    has(`gateway_build_info{version="${version}"} 1`);
    const m = await gw.metrics();
    assert.ok(m.process_resident_memory_bytes > 1_000_000, `RSS ${m.process_resident_memory_bytes}`);
    assert.ok(m.process_open_fds > 3, `fds ${m.process_open_fds}`);
    assert.ok(m.process_cpu_seconds_total >= 0, 'cpu seconds');
    const now = Date.now() / 1000;
    assert.ok(Math.abs(m.process_start_time_seconds - now) < 120, `start time ${m.process_start_time_seconds} vs ${now}`);
  } finally {
    await gw.stop();
  }
});

test('the banner names each listener once, with the demo and dashboard URLs', async () => {
  const child = spawn(BIN, ['--config', FIXTURE, '--set', 'log.level=info'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  try {
    const deadline = Date.now() + 15_000;
    while (!/^admin listening on /m.test(stdout)) {
      assert.ok(Date.now() < deadline, `no banner in 15 s: ${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300));
    const all = `${stdout}\n${stderr}`;
    for (const name of ['webrtcroom', 'chatroom', 'admin']) {
      const url = new RegExp(`^${name} listening on (\\S+)`, 'm').exec(stdout)?.[1];
      assert.ok(url, `${name} in ${stdout}`);
      const mentions = all.split('\n').filter((l) => l.includes(url.replace(/^\w+:\/\//, '')));
      assert.equal(mentions.length, 1, `${name}'s address printed once, got:\n${mentions.join('\n')}`);
      if (name !== 'admin') assert.match(stdout, new RegExp(`${url.replace(/[.]/g, '\\.')}/demo/${name}/`), `demo URL of ${name}`);
    }
    assert.match(stdout, /dashboard http:\/\/127\.0\.0\.1:\d+\//);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.exitCode !== null ? r() : child.on('exit', r));
  }
});

test('GET / on a protocol port says what the address serves and links the demo', async () => {
  const gw = await startGateway();
  try {
    for (const name of ['webrtcroom', 'chatroom']) {
      const res = await fetch(`${gw.urls[name]}/`);
      assert.equal(res.status, 200, name);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/);
      const body = await res.text();
      assert.ok(body.includes(name), `${name} page names the protocol: ${body}`);
      assert.ok(body.includes(`href="/demo/${name}/"`), `${name} page links the demo: ${body}`);
    }
  } finally {
    await gw.stop();
  }
  // Without the demo the page still answers, without the link.
  const quiet = await startGateway({ sets: ['webrtcroom.demo=false'] });
  try {
    const body = await (await fetch(`${quiet.urls.webrtcroom}/`)).text();
    assert.ok(!body.includes('/demo/webrtcroom/'), body);
  } finally {
    await quiet.stop();
  }
});

test('the dashboard stream starts with the last minutes of per-second totals', async () => {
  const gw = await startGateway();
  const { createRequire } = await import('node:module');
  const ioV2 = createRequire(import.meta.url)('socket.io-client-v2');
  const clients = [];
  try {
    const once = (s, ev) => new Promise((r) => s.once(ev, r));
    for (let i = 0; i < 2; i++) {
      const s = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
      await once(s, 'connect');
      s.emit('createAndJoinRoom', { room: 'hist' });
      await once(s, 'created');
      clients.push(s);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const [a, b] = clients;
    for (let i = 0; i < 20; i++) a.emit('candidate', { from: a.id, to: b.id, room: 'hist', candidate: { i } });
    await new Promise((r) => setTimeout(r, 3500));
    const res = await fetch(`${gw.urls.admin}/api/events`);
    const reader = res.body.getReader();
    let text = '';
    const deadline = Date.now() + 5000;
    while (!/event: history\ndata: .*\n\n/.test(text) && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    const events = text.split('\n\n');
    // The first event is still the current snapshot (what existing readers of the stream expect).
    assert.match(events[0], /^data: \{"realms":/, `first event: ${events[0]}`);
    const first = events.find((e) => e.startsWith('event: history'));
    assert.ok(first, `a history event right after the first snapshot: ${text.slice(0, 500)}`);
    const data = JSON.parse(first.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n'));
    assert.ok(data.length >= 3, `${data.length} samples`);
    const last = data.at(-1);
    assert.ok(last.time > data[0].time, 'ordered by time');
    assert.ok(last.realms.webrtcroom.relayed >= 20, JSON.stringify(last));
    assert.equal(data[0].realms.webrtcroom.relayed, 0, JSON.stringify(data[0]));
  } finally {
    for (const s of clients) s.close();
    await gw.stop();
  }
});
