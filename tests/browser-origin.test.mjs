// The origin allowlist as a browser meets it (issue 14): the same page, served from two
// loopback origins by a tiny HTTP server, connects to the gateway from the allowed origin and
// is refused from the other one. Both protocols (socket.io-client 2.x for WebRtcRoom, 4.x for
// chatroom), over WebSocket and over long-polling, in Debian's headless Chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, ROOT } from './lib/gateway.mjs';
import { browserMissing, launchBrowser } from './lib/browser.mjs';

const skip = browserMissing();
const CLIENTS = {
  v2: path.join(ROOT, 'tests', 'node_modules', 'socket.io-client-v2', 'dist', 'socket.io.js'),
  v4: path.join(ROOT, 'tests', 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js'),
};

// The page connects to `gw` with the client `v` and transport `t`, and records the outcome.
const PAGE = `<!doctype html><meta charset="utf-8"><title>origin test</title>
<script>
const q = new URLSearchParams(location.search);
document.write('<script src="/client-' + q.get('v') + '.js"><\\/script>');
</script>
<script>
window.outcome = null;
const socket = io(q.get('gw'), { transports: [q.get('t')], reconnection: false, forceNew: true });
socket.on('connect', () => { window.outcome = 'connected'; });
socket.on('connect_error', (e) => { window.outcome = 'refused: ' + (e && e.message || e); });
socket.on('error', (e) => { window.outcome = window.outcome || 'refused: ' + (e && e.message || e); });
</script>`;

/** A static server for the page and the two client builds; resolves its origin. */
function pageServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const client = /^\/client-(v2|v4)\.js$/.exec(url.pathname);
    if (client) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(CLIENTS[client[1]]));
    } else if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` })));
}

let allowed;
let other;
let gateway;
let browser;

before(async () => {
  if (skip) return;
  allowed = await pageServer();
  other = await pageServer();
  const list = JSON.stringify([allowed.origin]);
  gateway = await startGateway({ sets: [`webrtcroom.allowed_origins=${list}`, `chatroom.allowed_origins=${list}`] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gateway?.stop();
  allowed?.server.close();
  other?.server.close();
});

async function outcome(pageOrigin, protocol, transport) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const v = protocol === 'webrtcroom' ? 'v2' : 'v4';
    const url = `${pageOrigin}/?v=${v}&t=${transport}&gw=${encodeURIComponent(gateway.urls[protocol])}`;
    await page.goto(url, { timeout: 15_000 });
    await page.waitForFunction(() => window.outcome !== null, null, { timeout: 15_000 });
    return await page.evaluate(() => window.outcome);
  } finally {
    await context.close();
  }
}

for (const protocol of ['webrtcroom', 'chatroom']) {
  for (const transport of ['websocket', 'polling']) {
    test(`${protocol} over ${transport}: the page connects from the allowed origin and is refused from another`, { skip, timeout: 60_000 }, async () => {
      assert.equal(await outcome(allowed.origin, protocol, transport), 'connected');
      assert.match(await outcome(other.origin, protocol, transport), /^refused/);
    });
  }
}

test('the refusals were counted by reason', { skip, timeout: 30_000 }, async () => {
  const m = await gateway.metrics();
  for (const protocol of ['webrtcroom', 'chatroom']) {
    const n = m[`gateway_refused_total{protocol="${protocol}",reason="origin_not_allowed"}`];
    assert.ok(n >= 2, `${protocol}: ${n} refusals counted`);
  }
});

test('the demo pages use the TURN credentials from /turn as their ICE servers, and keep none without [turn]', { skip, timeout: 60_000 }, async () => {
  const turnGw = await startGateway({ sets: ['turn.secret=demo-turn-secret', 'turn.uris=["turn:127.0.0.1:3478"]'] });
  const context = await browser.newContext();
  try {
    for (const [gw, protocol, expectTurn] of [[turnGw, 'webrtcroom', true], [turnGw, 'chatroom', true], [gateway, 'chatroom', false]]) {
      const page = await context.newPage();
      await page.goto(new URL('/demo/', gw.urls[protocol]).href, { timeout: 15_000 });
      await page.waitForFunction(() => window.demo && window.demo.socket, null, { timeout: 15_000 });
      const servers = await page.evaluate(() => RTC_CONFIG.iceServers);
      if (expectTurn) {
        assert.equal(servers.length, 1, `${protocol}: ${JSON.stringify(servers)}`);
        assert.deepEqual(servers[0].urls, ['turn:127.0.0.1:3478']);
        assert.match(servers[0].username, /^\d+:[0-9a-f]{32}$/);
        assert.equal(typeof servers[0].credential, 'string');
      } else {
        assert.deepEqual(servers, [], 'no [turn]: the page keeps its default');
      }
      await page.close();
    }
  } finally {
    await context.close();
    await turnGw.stop();
  }
});
