// Long handshake flood from one source address, with probes from another (README "Limits and
// failure behaviour", bench/README.md "Per-source admission"). Prints figures, asserts nothing.
//
//   node bench/admission-flood.mjs                     # 30 s flood, defaults below
//   FLOOD_SECONDS=120 WORKERS=32 node bench/admission-flood.mjs
//   PER_IP=0 HANDSHAKE_TIMEOUT=   SIGNAL_GATEWAY_BIN=/path/old node bench/admission-flood.mjs
//                                                      # an older build without the keys
//   MODE=abandoned node bench/admission-flood.mjs       # how long one abandoned polling
//                                                      # handshake holds its slot (v3 and v4)
//
// Flood: raw Engine.IO polling handshakes from 127.0.0.1 to both protocols (v4 ones also send
// their Socket.IO CONNECT), nobody polls them again; WORKERS concurrent loops per protocol, in
// worker threads. Probe: every second a fresh socket.io-client 4.x (chatroom: connect, join,
// relay to itself) and 2.x (WebRtcRoom: connect, createAndJoinRoom, created) from 127.0.0.2.
// Everything on loopback; bounded by FLOOD_SECONDS and MAX_HANDSHAKES.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tests = path.join(here, '..', 'tests');
const require = createRequire(path.join(tests, 'package.json'));
const { io: ioV4 } = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');
const { startGateway } = await import(path.join(tests, 'lib', 'gateway.mjs'));
const { flood } = await import(path.join(tests, 'lib', 'handshake-flood.mjs'));
const { handshake, post } = await import(path.join(tests, 'lib', 'engine-raw.mjs'));

const env = process.env;
const SECONDS = Number(env.FLOOD_SECONDS ?? 30);
const WORKERS = Number(env.WORKERS ?? 16);
const MAX_HANDSHAKES = Number(env.MAX_HANDSHAKES ?? 1_000_000);
const sets = [
  `limits.max_connections=${env.MAX_CONNECTIONS ?? 2000}`,
  ...(env.PER_IP === '0' ? [] : [`limits.max_connections_per_ip=${env.PER_IP ?? 200}`]),
  ...(env.HANDSHAKE_TIMEOUT === '' ? [] : [`limits.handshake_timeout=${env.HANDSHAKE_TIMEOUT ?? '10s'}`]),
];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const agent = () => new http.Agent({ localAddress: '127.0.0.2' });

function once(socket, events, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    for (const e of events) socket.once(e, (arg) => { clearTimeout(timer); resolve(e === events[0] ? 'ok' : `${e}: ${arg?.message ?? arg}`); });
  });
}

async function probeChat(url) {
  const t0 = Date.now();
  const s = ioV4(url, { forceNew: true, reconnection: false, agent: agent() });
  let r = await once(s, ['connect', 'connect_error'], 5000);
  if (r === 'ok') {
    s.emit('join', { id: `u${t0}`, username: `p${t0}`, roomname: `probe${t0}` });
    s.emit('icecandidate', { remoteConnectorId: 'self', memberId: s.id, candidate: {} });
    r = await once(s, ['icecandidate'], 5000);
  }
  s.close();
  return { r, ms: Date.now() - t0 };
}

async function probeWebrtc(url) {
  const t0 = Date.now();
  const s = ioV2(url, { forceNew: true, reconnection: false, agent: agent() });
  let r = await once(s, ['connect', 'error'], 5000);
  if (r === 'ok') {
    s.emit('createAndJoinRoom', { room: `probe${t0}` });
    r = await once(s, ['created'], 5000);
  }
  s.close();
  return { r, ms: Date.now() - t0 };
}

function rssMiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) / 1024;
}

function summary(list) {
  const ok = list.filter((p) => p.r === 'ok').map((p) => p.ms).sort((a, b) => a - b);
  const failures = {};
  for (const p of list) if (p.r !== 'ok') failures[p.r] = (failures[p.r] ?? 0) + 1;
  return {
    probes: list.length,
    ok: ok.length,
    p50_ms: ok[Math.floor(ok.length / 2)] ?? null,
    max_ms: ok.at(-1) ?? null,
    failures,
  };
}

async function runFlood() {
  const gw = await startGateway({ sets });
  try {
    const floods = Promise.all([
      flood(gw.urls.webrtcroom, { eio: 3, ms: SECONDS * 1000, max: MAX_HANDSHAKES, workers: WORKERS }),
      flood(gw.urls.chatroom, { eio: 4, ms: SECONDS * 1000, max: MAX_HANDSHAKES, workers: WORKERS }),
    ]);
    const chat = [];
    const webrtc = [];
    let peakRss = 0;
    const end = Date.now() + SECONDS * 1000;
    await sleep(1000);
    while (Date.now() < end) {
      const t = Date.now();
      const [c, w] = await Promise.all([probeChat(gw.urls.chatroom), probeWebrtc(gw.urls.webrtcroom)]);
      chat.push(c);
      webrtc.push(w);
      peakRss = Math.max(peakRss, rssMiB(gw.child.pid));
      await sleep(Math.max(0, 1000 - (Date.now() - t)));
    }
    const [v3, v4] = await floods;
    const m = await gw.metrics();
    const refused = Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith('gateway_refused_total')));
    console.log(JSON.stringify({
      sets,
      flood: { seconds: SECONDS, workers_per_protocol: WORKERS, v3, v4,
        handshakes_per_s: Math.round((v3.sent + v4.sent) / SECONDS) },
      chatroom_4x_from_127_0_0_2: summary(chat),
      webrtcroom_2x_from_127_0_0_2: summary(webrtc),
      gateway_peak_rss_mib: Math.round(peakRss * 10) / 10,
      refused,
    }, null, 2));
  } finally {
    await gw.stop();
  }
}

/** How long one abandoned polling handshake keeps the only connection slot (v3 and v4). */
async function runAbandoned() {
  const gw = await startGateway({ sets: [...sets, 'limits.max_connections=1'] });
  try {
    const t0 = Date.now();
    await handshake(gw.urls.webrtcroom, { eio: 3 });
    const h4 = await handshake(gw.urls.chatroom, { eio: 4 });
    await post(gw.urls.chatroom, h4.sid, '40');
    const held = {};
    while ((!held.v3 || !held.v4) && Date.now() - t0 < 90_000) {
      if (!held.v3 && (await probeWebrtc(gw.urls.webrtcroom)).r === 'ok') held.v3 = Date.now() - t0;
      if (!held.v4 && (await probeChat(gw.urls.chatroom)).r === 'ok') held.v4 = Date.now() - t0;
      await sleep(250);
    }
    console.log(JSON.stringify({ sets, slot_held_ms: held }));
  } finally {
    await gw.stop();
  }
}

await (env.MODE === 'abandoned' ? runAbandoned() : runFlood());
process.exit(0);
