// Benchmark baseline: a WebRtcRoom signalling server on socket.io 2.x (Engine.IO v3), with the
// join, relay, exit and disconnect semantics of the original server (see
// shared/reference/webrtcroom.md), written for the benchmark. Differences from the original,
// each making it the strongest fair version of what users run today:
//   - no per-message logging (the original printed every relayed message);
//   - a missing payload is ignored instead of killing the process;
//   - plain HTTP (the benchmark compares signalling, not TLS).
// Relays keep the original's targeting (the socket named by `to`, any room) and forwarding
// (the payload object unchanged).
//
// Usage: node webrtcroom.js [--port 18601] [--host 127.0.0.1]
'use strict';
const http = require('http');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const port = Number(opt('--port', '18601'));
const host = opt('--host', '127.0.0.1');

const server = http.createServer();
const io = require('socket.io-v2')(server, { pingInterval: 25000, pingTimeout: 5000, serveClient: false });

io.on('connection', (socket) => {
  socket.on('createAndJoinRoom', (message) => {
    if (!message) return;
    const room = message.room;
    const existing = io.sockets.adapter.rooms[room];
    const peers = existing ? Object.keys(existing.sockets).map((id) => ({ id })) : [];
    // existing members first, then the newcomer, then the newcomer joins
    socket.to(room).emit('joined', { id: socket.id, room });
    socket.emit('created', { id: socket.id, room, peers });
    socket.join(room);
  });
  for (const event of ['offer', 'answer', 'candidate']) {
    socket.on(event, (message) => {
      if (!message) return;
      // socket.io 2.x: every socket is in a room named after its id
      socket.to(message.to).emit(event, message);
    });
  }
  socket.on('exit', (message) => {
    if (!message) return;
    socket.leave(message.room);
    socket.to(message.room).emit('exit', message);
  });
  socket.on('disconnect', () => {
    // as the original: every other connected socket hears it
    socket.broadcast.emit('exit', { from: socket.id, room: '' });
  });
});

server.listen(port, host, () => {
  console.log(`node-webrtcroom listening on http://${host}:${server.address().port} (socket.io ${require('socket.io-v2/package.json').version})`);
});
process.on('SIGTERM', () => process.exit(0));
