// WebRtcRoom over raw HTTP long-polling, as the iOS app (Socket.IO-Client-Swift 13) speaks it:
// no EIO parameter, Engine.IO v3 payload framing `len:packet` with len in UTF-16 code units.
// No Socket.IO library on the polling side: every byte is checked. Also CORS for the Html
// page's cross-origin credentialed polling.
// Reference: ../shared/reference/transcripts/webrtcroom-polling-no-eio.jsonl and
// webrtcroom-polling-v3-cors.jsonl.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startTestGateway, socketIoV2Factory, connectClient, withTimeout } from './lib/scenario.mjs';

const POLL = '/socket.io/?transport=polling&b64=1';
const ORIGIN = 'https://page.example:8441';
let gw;
let agent;

before(async () => {
  gw = await startTestGateway();
  agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
});
after(async () => {
  agent?.destroy();
  await gw?.stop();
});

/** One HTTP exchange; the body is decoded as UTF-8. Bounded by `ms`. */
function request(method, path, { body, headers = {}, ms = 5000 } = {}) {
  const u = new URL(gw.urls.webrtcroom);
  const h = { accept: '*/*', ...headers };
  if (body !== undefined) {
    h['content-type'] ??= 'text/plain;charset=UTF-8';
    h['content-length'] = Buffer.byteLength(body);
  }
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, method, path, agent, headers: h }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          resolve({ status: res.statusCode, headers: res.headers, body: raw.toString('utf8'), bytes: raw.length });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    }),
    ms,
    `${method} ${path}`,
  );
}

/** Splits an Engine.IO v3 payload; asserts every length prefix is exact (UTF-16 units). */
function parseV3(payload) {
  const packets = [];
  let i = 0;
  while (i < payload.length) {
    const colon = payload.indexOf(':', i);
    assert.ok(colon > i, `v3 framing: no length prefix at offset ${i} of ${JSON.stringify(payload)}`);
    const len = Number(payload.slice(i, colon));
    assert.ok(Number.isInteger(len) && len > 0, `v3 framing: bad length ${payload.slice(i, colon)}`);
    assert.ok(colon + 1 + len <= payload.length, `v3 framing: length ${len} runs past the end of ${JSON.stringify(payload)}`);
    packets.push(payload.slice(colon + 1, colon + 1 + len));
    i = colon + 1 + len;
  }
  return packets;
}

/** v3 payload of `packets`; `String.length` counts UTF-16 code units, as the framing does. */
const encodeV3 = (packets) => packets.map((p) => `${p.length}:${p}`).join('');

async function handshakeNoEio() {
  const res = await request('GET', POLL);
  assert.equal(res.status, 200, res.body);
  assert.match(res.headers['content-type'], /^text\/plain/);
  const packets = parseV3(res.body);
  assert.ok(packets.length >= 1 && packets[0].startsWith('0'), `open packet first: ${res.body}`);
  const open = JSON.parse(packets[0].slice(1));
  assert.equal(typeof open.sid, 'string');
  assert.ok(open.sid.length > 0);
  assert.deepEqual(open.upgrades, ['websocket']);
  assert.equal(typeof open.pingInterval, 'number');
  assert.equal(typeof open.pingTimeout, 'number');
  const sid = open.sid;
  const path = `${POLL}&sid=${encodeURIComponent(sid)}`;
  // The server connects the client to `/` by itself: `40` is in the handshake body or the next poll.
  let rest = packets.slice(1);
  if (rest.length === 0) {
    const next = await request('GET', path);
    assert.equal(next.status, 200, next.body);
    rest = parseV3(next.body);
  }
  assert.deepEqual(rest, ['40'], 'the connect packet to / and nothing else');
  return { sid, path, handshake: res };
}

test('raw polling client with no EIO parameter: 房间1, relays with non-BMP text, heartbeat, close, dead sid', async () => {
  const { sid, path } = await handshakeNoEio();

  // The iOS app's join, exactly as in the transcript: 38 UTF-16 units, 42 UTF-8 bytes.
  const join = '42["createAndJoinRoom",{"room":"房间1"}]';
  assert.equal(join.length, 38);
  const post = await request('POST', path, { body: `38:${join}` });
  assert.equal(post.status, 200);
  assert.equal(post.body, 'ok');

  const created = `42["created",{"id":"${sid}","room":"房间1","peers":[]}]`;
  let poll = await request('GET', path);
  assert.equal(poll.status, 200);
  assert.equal(poll.body, `${created.length}:${created}`);
  if (sid.length === 20) assert.equal(poll.body.slice(0, 3), '67:', 'the transcript length with a 20-character id');
  assert.equal(poll.bytes, Buffer.byteLength(poll.body));

  // A socket.io 2.x client joins the same room over WebSocket; the raw client hears `joined`.
  const b = await connectClient(socketIoV2Factory(gw.urls.webrtcroom, { transports: ['websocket'] }), 'B');
  try {
    b.emit('createAndJoinRoom', { room: '房间1' });
    const joined = `42["joined",{"id":"${b.id}","room":"房间1"}]`;
    poll = await request('GET', path);
    assert.equal(poll.body, encodeV3([joined]));
    assert.deepEqual(await b.queue.next(3000, 'created'), ['created', { id: b.id, room: '房间1', peers: [{ id: sid }] }]);

    // Two packets in one POST, with characters outside the BMP (two UTF-16 units each):
    // both arrive, in order, unchanged.
    const offer = { from: sid, to: b.id, room: '房间1', sdp: 'v=0\r\ns=会议 😀🎧\r\n', extra: { n: 1.5, s: '\\/' } };
    const cand = { from: sid, to: b.id, room: '房间1', candidate: { sdpMid: '0', sdpMLineIndex: 0, sdp: 'candidate:1 1 udp 1 10.0.0.1 9 typ host' } };
    const payload = encodeV3([`42${JSON.stringify(['offer', offer])}`, `42${JSON.stringify(['candidate', cand])}`]);
    assert.equal((await request('POST', path, { body: payload })).body, 'ok');
    assert.deepEqual(await b.queue.next(3000, 'offer'), ['offer', offer]);
    assert.deepEqual(await b.queue.next(3000, 'candidate'), ['candidate', cand]);

    // And back: the relayed packet is the sender's JSON, framed with its UTF-16 length.
    const answer = { from: b.id, to: sid, room: '房间1', sdp: 'v=0\r\ns=答复 🙂\r\n' };
    b.emit('answer', answer);
    poll = await request('GET', path);
    assert.equal(poll.body, encodeV3([`42${JSON.stringify(['answer', answer])}`]));

    // Heartbeat, v3 style: the client pings, the server answers 3.
    assert.equal((await request('POST', path, { body: '1:2' })).body, 'ok');
    poll = await request('GET', path);
    assert.equal(poll.body, '1:3');

    // Close packet while a poll is pending: the poll is released (not left hanging), the
    // room hears the disconnect, and the sid is dead afterwards.
    const pending = request('GET', path, { ms: 5000 });
    await new Promise((r) => setTimeout(r, 100));
    const closing = await request('POST', path, { body: '1:1' });
    assert.equal(closing.status, 200);
    const released = await pending;
    assert.equal(released.status, 200, `pending poll released: ${released.body}`);
    for (const p of parseV3(released.body)) assert.ok(p === '6' || p === '1', `pending poll released with a noop or close, got ${p}`);
    assert.deepEqual(await b.queue.next(3000, 'exit'), ['exit', { from: sid, room: '' }]);

    const dead = await request('GET', path);
    assert.equal(dead.status, 400);
    assert.match(dead.headers['content-type'], /^application\/json/);
    const err = JSON.parse(dead.body);
    assert.equal(err.message, 'Session ID unknown');
    assert.equal(Number(err.code), 1);
  } finally {
    b.close();
  }
});

test('dead sid error body is the original\'s: {"code":1,...} with a JSON number', async () => {
  // The original (engine.io 3.2) answered {"code":1,"message":"Session ID unknown"}.
  const res = await request('GET', `${POLL}&sid=AAAAAAAAAAAAAAAAAAAA`);
  assert.equal(res.status, 400);
  assert.deepStrictEqual(JSON.parse(res.body), { code: 1, message: 'Session ID unknown' });
});

test('CORS: polling with an Origin echoes it and allows credentials; preflights are answered', async () => {
  const hs = await request('GET', '/socket.io/?EIO=3&transport=polling&t=MfA2', { headers: { origin: ORIGIN, referer: `${ORIGIN}/` } });
  assert.equal(hs.status, 200);
  assert.equal(hs.headers['access-control-allow-origin'], ORIGIN);
  assert.equal(hs.headers['access-control-allow-credentials'], 'true');
  const sid = JSON.parse(parseV3(hs.body)[0].slice(1)).sid;
  const path = `/socket.io/?EIO=3&transport=polling&t=MfA3&sid=${encodeURIComponent(sid)}`;

  // Preflight before the handshake (no sid) and before a POST (with the sid).
  for (const [p, method] of [['/socket.io/?EIO=3&transport=polling&t=MfA1', 'GET'], [path, 'POST']]) {
    const pre = await request('OPTIONS', p, {
      headers: { origin: ORIGIN, 'access-control-request-method': method, 'access-control-request-headers': 'content-type' },
    });
    assert.ok(pre.status >= 200 && pre.status < 300, `preflight ${p}: status ${pre.status} ${pre.body}`);
    assert.equal(pre.headers['access-control-allow-origin'], ORIGIN);
    assert.equal(pre.headers['access-control-allow-credentials'], 'true');
    assert.match(pre.headers['access-control-allow-headers'] ?? '', /content-type/i);
    const methods = pre.headers['access-control-allow-methods'];
    if (methods !== undefined) assert.match(methods, new RegExp(method), `allow-methods ${methods}`);
  }

  // The credentialed POST and poll carry the same headers.
  const post = await request('POST', path, { body: '37:42["createAndJoinRoom",{"room":"r3"}]', headers: { origin: ORIGIN } });
  assert.equal(post.body, 'ok');
  assert.equal(post.headers['access-control-allow-origin'], ORIGIN);
  assert.equal(post.headers['access-control-allow-credentials'], 'true');
  let packets = parseV3((await request('GET', path, { headers: { origin: ORIGIN } })).body);
  if (packets[0] === '40') packets = packets.slice(1);
  if (packets.length === 0) packets = parseV3((await request('GET', path, { headers: { origin: ORIGIN } })).body);
  assert.deepEqual(packets, [`42["created",{"id":"${sid}","room":"r3","peers":[]}]`]);
  const poll = await request('POST', path, { body: '1:1', headers: { origin: ORIGIN } });
  assert.equal(poll.headers['access-control-allow-origin'], ORIGIN);
});
