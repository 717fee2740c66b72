// Benchmark baseline: a chatroom signalling server on socket.io 4.x (Engine.IO v4), with the
// join, relay, leave, disconnect-grace and reconnect semantics of the original server (see
// shared/reference/chatroom.md), written for the benchmark. Differences from the original,
// each making it the strongest fair version of what users run today:
//   - no per-message logging;
//   - inputs that crashed the original (missing payloads, a non-array leave, an offer to a
//     socket that has not joined) are ignored instead.
//
// Usage: node chatroom.js [--port 18602] [--host 127.0.0.1] [--grace-ms 15000]
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const port = Number(opt('--port', '18602'));
const host = opt('--host', '127.0.0.1');
const graceMs = Number(opt('--grace-ms', '15000'));

const server = http.createServer((req, res) => {
  // GET /checkUsername?username=U&roomname=R
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/checkUsername' || url.pathname === '/api/checkUsername') {
    const room = rooms.get(url.searchParams.get('roomname'));
    let isRepeat = false;
    if (room) for (const u of room.values()) if (u.username === url.searchParams.get('username')) isRepeat = true;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ success: true, isRepeat }));
    return;
  }
  res.writeHead(404); res.end();
});
const io = new Server(server, { cors: { origin: '*' }, serveClient: false });

/** roomname -> Map(userId -> user) */
const rooms = new Map();
/** userId -> user; a user: {id, username, roomname, socketId, online, links, timer} */
const users = new Map();
/** socket id -> user */
const bySocket = new Map();
const STREAMS = ['user', 'display', 'remoteDisplay'];

const emitTo = (socketId, event, data) => io.to(socketId).emit(event, data);

function addUser(socket, { id, username, roomname }) {
  let room = rooms.get(roomname);
  if (!room) rooms.set(roomname, (room = new Map()));
  for (const u of room.values()) {
    if (u.username === username) {
      socket.emit('error', { type: 'repeat', message: '此房间该用户名已存在' });
      return;
    }
  }
  for (const u of room.values()) if (u.online) emitTo(u.socketId, 'getOffer', { memberId: socket.id });
  const links = {};
  for (const s of STREAMS) links[s] = new Map(); // peer user id -> their connector id
  const user = { id, username, roomname, socketId: socket.id, online: true, links, timer: null };
  room.set(id, user);
  users.set(id, user);
  bySocket.set(socket.id, user);
}

function removeUser(user) {
  const room = rooms.get(user.roomname);
  if (room) {
    room.delete(user.id);
    if (room.size === 0) rooms.delete(user.roomname);
  }
  users.delete(user.id);
  if (bySocket.get(user.socketId) === user) bySocket.delete(user.socketId);
}

function link(target, streamType, fromUser, connectorId) {
  const map = target.links[streamType];
  if (map && fromUser) map.set(fromUser.id, connectorId);
}

io.on('connection', (socket) => {
  socket.on('join', (data) => { if (data) addUser(socket, data); });

  socket.on('offer', (d) => {
    if (!d) return;
    const target = bySocket.get(d.memberId);
    if (!target) return;
    link(target, d.streamType, bySocket.get(socket.id), d.connectorId);
    emitTo(d.memberId, 'offer', { remoteConnectorId: d.connectorId, offer: d.offer, memberId: socket.id, streamType: d.streamType });
  });

  socket.on('answer', (d) => {
    if (!d) return;
    const target = bySocket.get(d.memberId);
    if (!target) return;
    link(target, d.streamType, bySocket.get(socket.id), d.connectorId);
    emitTo(d.memberId, 'answer', { remoteConnectorId: d.connectorId, connectorId: d.remoteConnectorId, answer: d.answer, memberId: socket.id });
  });

  socket.on('icecandidate', (d) => {
    if (!d) return;
    emitTo(d.memberId, 'icecandidate', { connectorId: d.remoteConnectorId, candidate: d.candidate });
  });

  socket.on('leave', (list) => {
    const user = bySocket.get(socket.id);
    if (!user || !Array.isArray(list)) return;
    removeUser(user);
    for (const e of list) if (e) emitTo(e.memberId, 'leave', { connectorId: e.remoteConnectorId, memberId: socket.id });
  });

  socket.on('reconnectWork', (d) => {
    if (!d || !d.memberId) return;
    emitTo(d.memberId, 'reconnect', { type: d.type, data: d.data, connectorId: d.connectorId, memberId: d.memberId });
  });

  socket.on('reconnect', (d) => {
    if (!d) return;
    const user = users.get(d.id);
    if (!user || user.roomname !== d.roomname) {
      socket.emit('reconnect', { type: 'leave' });
      addUser(socket, d);
      return;
    }
    clearTimeout(user.timer);
    user.timer = null;
    const room = rooms.get(user.roomname);
    const linked = new Set();
    for (const s of STREAMS) for (const [peerId, connectorId] of user.links[s]) {
      linked.add(peerId);
      const peer = users.get(peerId);
      if (peer && peer.online) emitTo(peer.socketId, 'reconnect', { type: 'getOffer', connectorId });
      else socket.emit('reconnect', { type: 'leave', memberId: peer ? peer.socketId : undefined });
    }
    if (room) for (const u of room.values()) if (u !== user && u.online && !linked.has(u.id)) emitTo(u.socketId, 'getOffer', { memberId: socket.id });
    bySocket.delete(user.socketId);
    user.socketId = socket.id;
    user.online = true;
    bySocket.set(socket.id, user);
  });

  socket.on('disconnect', () => {
    const user = bySocket.get(socket.id);
    if (!user) return;
    user.online = false;
    user.timer = setTimeout(() => {
      if (user.online) return;
      removeUser(user);
      for (const s of STREAMS) for (const [peerId, connectorId] of user.links[s]) {
        const peer = users.get(peerId);
        if (peer && peer.online) emitTo(peer.socketId, 'leave', { connectorId, memberId: socket.id });
      }
    }, graceMs);
  });
});

server.listen(port, host, () => {
  console.log(`node-chatroom listening on http://${host}:${server.address().port} (socket.io ${require('socket.io/package.json').version})`);
});
process.on('SIGTERM', () => process.exit(0));
