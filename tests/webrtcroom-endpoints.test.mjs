// How the apps reach the gateway: TLS with a certificate made at start (the apps accept any
// certificate), and the protocol bound to a non-root namespace with a query in the URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestGateway, socketIoV2Factory, connectClient } from './lib/scenario.mjs';

async function join(client, room, members) {
  client.emit('createAndJoinRoom', { room });
  for (const m of members) assert.deepEqual(await m.queue.next(3000, `joined ${client.name}`), ['joined', { id: client.id, room }]);
  assert.deepEqual(await client.queue.next(3000, 'created'), ['created', { id: client.id, room, peers: members.map((m) => ({ id: m.id })) }]);
}

async function offer(from, to, room) {
  const o = { from: from.id, to: to.id, room, sdp: 'v=0\r\n' };
  from.emit('offer', o);
  assert.deepEqual(await to.queue.next(3000, 'offer'), ['offer', o]);
}

test('TLS self-signed: a 2.x client that accepts the certificate joins and relays over wss://', async () => {
  const gw = await startTestGateway(['webrtcroom.tls=self-signed']);
  const clients = [];
  try {
    const url = gw.urls.webrtcroom;
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
    // The certificate is not trusted: a client that checks it must not get in.
    await assert.rejects(
      connectClient(socketIoV2Factory(url, { transports: ['websocket'], connectTimeoutMs: 2000 }), 'strict'),
      'a client that verifies the certificate is refused',
    );
    const ws = socketIoV2Factory(url, { transports: ['websocket'], options: { rejectUnauthorized: false } });
    const a = await connectClient(ws, 'a');
    clients.push(a);
    assert.equal(a.transport(), 'websocket');
    assert.match(a.socket.io.engine.transport.ws.url, /^wss:\/\/127\.0\.0\.1:\d+\/socket\.io\/\?/);
    await join(a, 'secure', []);
    // The Html page's way in: polling over https, then the upgrade to wss.
    const b = await connectClient(socketIoV2Factory(url, { options: { rejectUnauthorized: false } }), 'b');
    clients.push(b);
    await join(b, 'secure', [a]);
    await offer(a, b, 'secure');
    await offer(b, a, 'secure');
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});

test('namespace /room with a query in the URL: socket.id is "/room#<sid>" and equals created.id', async () => {
  const gw = await startTestGateway(['webrtcroom.namespace=/room']);
  const clients = [];
  try {
    const base = gw.urls.webrtcroom;
    const mk = socketIoV2Factory(`${base}/room?token=abc`); // default transports, as the Html page
    const a = await connectClient(mk, 'a');
    const b = await connectClient(mk, 'b');
    clients.push(a, b);
    const sid = a.socket.io.engine.id;
    assert.equal(a.id, `/room#${sid}`);
    await join(a, 'ns-room', []);
    await join(b, 'ns-room', [a]);
    await offer(b, a, 'ns-room');
    await offer(a, b, 'ns-room');

    // Without a query, websocket-only works too (the CONNECT packet needs no rewriting).
    const c = await connectClient(socketIoV2Factory(`${base}/room`, { transports: ['websocket'] }), 'c');
    clients.push(c);
    assert.equal(c.id, `/room#${c.socket.io.engine.id}`);
    await join(c, 'ns-room', [a, b]);
    await offer(c, a, 'ns-room');

    // The protocol is not on `/` any more: a client of `/` is not a WebRtcRoom member.
    const root = await connectClient(socketIoV2Factory(base, { transports: ['websocket'] }), 'root');
    clients.push(root);
    root.emit('createAndJoinRoom', { room: 'ns-room' });
    await new Promise((r) => setTimeout(r, 250));
    for (const cl of clients) assert.deepEqual(cl.queue.drain(), [], `${cl.name} got nothing from the / client`);
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});

test('a websocket-only 2.x client whose URL has a query reaches a non-root namespace', async () => {
  // Its CONNECT packet (`40/room?token=abc,`) travels in a WebSocket frame: the gateway proxies
  // such handshakes and rewrites the packet (src/endpoints/legacy_ws.rs).
  const gw = await startTestGateway(['webrtcroom.namespace=/room']);
  const clients = [];
  try {
    const mk = socketIoV2Factory(`${gw.urls.webrtcroom}/room?token=abc`, { transports: ['websocket'], connectTimeoutMs: 4000 });
    const a = await connectClient(mk, 'a');
    const b = await connectClient(mk, 'b');
    clients.push(a, b);
    assert.equal(a.socket.io.engine.transport.name, 'websocket');
    assert.equal(a.id, `/room#${a.socket.io.engine.id}`);
    await join(a, 'q-room', []);
    await join(b, 'q-room', [a]);
    await offer(b, a, 'q-room');
    await offer(a, b, 'q-room');
  } finally {
    for (const c of clients) c.close();
    await gw.stop();
  }
});
