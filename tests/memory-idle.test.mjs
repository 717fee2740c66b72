// Memory per idle WebSocket client, seen from outside: the gateway's resident memory grows by
// a bounded amount per open Engine.IO WebSocket session.
//
// hyper parses a request head in place, so the URI and header values of the upgrade request
// are slices of its 8 KiB connection read buffer; Engine.IO keeps that request for the
// session's life, which would keep the whole buffer alive per client (bench/README.md,
// "Memory levers"). The clients here send the headers a browser sends, over raw TCP, and stay
// connected without sending anything (the test ends well before the first heartbeat is due).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import { startGateway } from './lib/gateway.mjs';

const CLIENTS = 1500;
const CONCURRENCY = 100;
// Measured (KiB per client, debug and release builds alike): ~30 while the upgrade request
// pinned hyper's buffer, ~22.5 since it is copied out (src/endpoints/slim.rs), ~20 since
// the gateway upgrades new WebSocket sessions itself (upgrade.rs) and reads WebSocket frames
// with a 2 KiB buffer (engine.ws_read_buffer).
const LIMIT_KIB = 21.5;
// Per idle long-polling session with its one connection and a pending poll (debug build,
// WebRtcRoom EIO3 / chatroom EIO4): 40.4 / 38.7 KiB while every plain connection's task was
// sized for the TLS path, 36.7 / 34.9 since that path is boxed (src/endpoints/listener.rs).
const POLLING_LIMIT_KIB = 38;

function rssKib(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Opens one Engine.IO WebSocket session; resolves with the socket once the open packet came. */
function openSession(url, eio) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: hostname, port: Number(port) });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('no open packet in 20 s')); }, 20_000);
    let seen = '';
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('connect', () => {
      sock.write([
        `GET /socket.io/?EIO=${eio}&transport=websocket HTTP/1.1`,
        `Host: ${hostname}:${port}`,
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        `Sec-WebSocket-Key: ${Buffer.from(String(Math.random()).padEnd(16, '0').slice(0, 16)).toString('base64')}`,
        'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits',
        'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
        'Origin: http://127.0.0.1',
        'Accept-Encoding: gzip, deflate, br, zstd',
        'Accept-Language: en-US,en;q=0.9,de;q=0.8',
        'Cache-Control: no-cache',
        'Pragma: no-cache',
        '', '',
      ].join('\r\n'));
    });
    sock.on('data', function onData(d) {
      seen += d.toString('latin1');
      if (seen.startsWith('HTTP/1.1 101') && seen.includes('0{')) {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.on('data', () => {});
        resolve(sock);
      } else if (seen.includes('\r\n\r\n') && !seen.startsWith('HTTP/1.1 101')) {
        clearTimeout(timer);
        sock.destroy();
        reject(new Error(`upgrade refused: ${seen.split('\r\n')[0]}`));
      }
    });
  });
}

/**
 * Opens one Engine.IO long-polling session on its own connection and leaves a poll pending on
 * it, as an idle polling client does; resolves with the socket once a poll has been held for
 * 300 ms (polls answered at once, e.g. with EIO3's `40`, are followed by the next one).
 */
function openPollingSession(url, eio) {
  const { hostname, port } = new URL(url);
  const request = (query) => [
    `GET /socket.io/?EIO=${eio}&transport=polling${query} HTTP/1.1`,
    `Host: ${hostname}:${port}`,
    'Connection: keep-alive',
    'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
    'Origin: http://127.0.0.1',
    'Accept: */*',
    'Accept-Encoding: gzip, deflate, br, zstd',
    'Accept-Language: en-US,en;q=0.9,de;q=0.8',
    '', '',
  ].join('\r\n');
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: hostname, port: Number(port) });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('no pending poll in 20 s')); }, 20_000);
    let buf = Buffer.alloc(0);
    let sid = null;
    let held = null;
    const poll = () => {
      sock.write(request(`&sid=${sid}`));
      clearTimeout(held);
      held = setTimeout(() => { clearTimeout(timer); sock.removeAllListeners('data'); sock.on('data', () => {}); resolve(sock); }, 300);
    };
    sock.on('error', (e) => { clearTimeout(timer); clearTimeout(held); reject(e); });
    sock.on('connect', () => sock.write(request(`&t=${Math.random().toString(36).slice(2)}`)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
        if (!head.startsWith('HTTP/1.1 200') || Number.isNaN(length)) {
          clearTimeout(timer);
          sock.destroy();
          reject(new Error(`unexpected answer: ${head.split('\r\n')[0]}`));
          return;
        }
        if (buf.length < end + 4 + length) return;
        const body = buf.subarray(end + 4, end + 4 + length).toString('utf8');
        buf = buf.subarray(end + 4 + length);
        if (sid === null) {
          sid = /"sid":"([^"]+)"/.exec(body)?.[1];
          if (!sid) { clearTimeout(timer); sock.destroy(); reject(new Error(`no sid in ${body}`)); return; }
        }
        poll();
      }
    });
  });
}

async function perClientKib(proto, eio, open = openSession) {
  const gw = await startGateway();
  const sockets = [];
  try {
    const url = gw.urls[proto];
    // Warm up (first connection's one-time allocations), then the baseline.
    sockets.push(await open(url, eio));
    await new Promise((r) => setTimeout(r, 500));
    const before = rssKib(gw.child.pid);
    let next = 1;
    const worker = async () => {
      while (next < CLIENTS + 1) {
        next += 1;
        sockets.push(await open(url, eio));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    await new Promise((r) => setTimeout(r, 2000));
    const after = rssKib(gw.child.pid);
    return (after - before) / CLIENTS;
  } finally {
    for (const s of sockets) s.destroy();
    await gw.stop();
  }
}

for (const [proto, eio] of [['webrtcroom', 3], ['chatroom', 4]]) {
  test(`${proto}: resident memory per idle WebSocket client (EIO ${eio}) stays under ${LIMIT_KIB} KiB`, { timeout: 120_000 }, async () => {
    const kib = await perClientKib(proto, eio);
    console.log(`${proto} EIO${eio}: ${kib.toFixed(1)} KiB per idle WebSocket client`);
    assert.ok(kib <= LIMIT_KIB, `${kib.toFixed(1)} KiB per client, above ${LIMIT_KIB}`);
  });
}

for (const [proto, eio] of [['webrtcroom', 3], ['chatroom', 4]]) {
  test(`${proto}: resident memory per idle long-polling client (EIO ${eio}, one connection, a poll pending) stays under ${POLLING_LIMIT_KIB} KiB`, { timeout: 120_000 }, async () => {
    const kib = await perClientKib(proto, eio, openPollingSession);
    console.log(`${proto} EIO${eio}: ${kib.toFixed(1)} KiB per idle long-polling client`);
    assert.ok(kib <= POLLING_LIMIT_KIB, `${kib.toFixed(1)} KiB per client, above ${POLLING_LIMIT_KIB}`);
  });
}
