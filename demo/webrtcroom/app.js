// WebRtcRoom demo page: speaks the WebRtcRoom protocol as its Html app does, on
// socket.io-client 2.x (Engine.IO v3, polling first, then upgrade to websocket).
//
//   → createAndJoinRoom {room}
//   ← created {id, room, peers: [{id}]}    the newcomer sends one offer per peer
//   ← joined {id, room}                    nothing to do: the newcomer will offer
//   ↔ offer / answer {from, to, room, sdp}              (sdp: the SDP text)
//   ↔ candidate {from, to, room, candidate: {sdpMid, sdpMLineIndex, sdp}}  (sdp: candidate line)
//   → exit {from, room} when leaving;  ← exit {from, room}: close that peer
//
// URL parameters: ?room=NAME  &autojoin=1  &transport=polling|websocket
// Tests read window.demo: {myId, room, peers: {id: {state, videoWidth}}, events, socket}.
'use strict';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const RTC_CONFIG = { iceServers: [] }; // no STUN/TURN: the demo must work offline

const demo = (window.demo = {
  protocol: 'webrtcroom',
  socket: null,
  myId: null,
  room: null,
  localStream: null,
  peers: {}, // peer id → {id, pc, state, videoWidth, connectedAt}
  events: [], // {t, dir: 'in'|'out'|'info', event, data}
  startedAt: performance.now(),
});

// ---- signalling log --------------------------------------------------------------------

function log(dir, event, data) {
  const t = Math.round(performance.now() - demo.startedAt);
  demo.events.push({ t, dir, event, data });
  if (demo.events.length > 2000) demo.events.splice(0, 500);
  const li = document.createElement('li');
  li.className = dir;
  const arrow = { out: '↑', in: '↓', info: '·' }[dir];
  li.innerHTML = `<span class="t">${(t / 1000).toFixed(3)}</span> <span class="dir">${arrow}</span> <span class="ev"></span> <span class="what"></span>`;
  li.querySelector('.ev').textContent = event;
  li.querySelector('.what').textContent = summary(data);
  li.title = typeof data === 'string' ? data : JSON.stringify(data);
  $('log').prepend(li);
  while ($('log').childElementCount > 300) $('log').lastChild.remove();
}

/** One short line about a message: the other party, and what kind of payload. */
function summary(data) {
  if (data == null || typeof data !== 'object') return data == null ? '' : String(data);
  const parts = [];
  // One end of a relayed message is this tab: name the other one.
  if (data.to && data.to !== demo.myId) parts.push(`to ${short(data.to)}`);
  else if (data.from) parts.push(`from ${short(data.from)}`);
  if (data.id) parts.push(`id ${short(data.id)}`);
  if ('room' in data && !data.sdp && !data.candidate) parts.push(`room ${JSON.stringify(data.room)}`);
  if (Array.isArray(data.peers)) parts.push(`peers [${data.peers.map((p) => short(p.id)).join(', ')}]`);
  if (typeof data.sdp === 'string') parts.push(`sdp ${data.sdp.length} chars`);
  if (data.candidate && typeof data.candidate.sdp === 'string') parts.push(candidateSummary(data.candidate.sdp));
  return parts.join(' · ');
}

/** "udp 127.0.0.1:5000 host" from a candidate line. */
function candidateSummary(line) {
  const f = line.split(' ');
  return f.length > 7 ? `${f[2]} ${f[4]}:${f[5]} ${f[7]}` : line;
}

const short = (id) => String(id).slice(0, 8);

function showRoom() {
  if (!demo.room) return;
  const n = Object.keys(demo.peers).length;
  setStatus(`in room ${JSON.stringify(demo.room)} · ${n} peer${n === 1 ? '' : 's'}`);
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

// ---- camera ----------------------------------------------------------------------------

async function openCamera() {
  if (demo.localStream) return demo.localStream;
  if (!navigator.mediaDevices) {
    // Browsers give pages the camera only on https or localhost.
    log('info', 'camera', 'not available on this origin (needs https or localhost): receiving only');
    return null;
  }
  for (const constraints of [{ video: true, audio: true }, { video: true }, { audio: true }]) {
    try {
      demo.localStream = await navigator.mediaDevices.getUserMedia(constraints);
      break;
    } catch (e) {
      log('info', 'camera', `${JSON.stringify(constraints)}: ${e.name}`);
    }
  }
  if (demo.localStream) {
    $('local-video').srcObject = demo.localStream;
  } else {
    log('info', 'camera', 'no camera or microphone: receiving only');
  }
  return demo.localStream;
}

// ---- peers: one RTCPeerConnection per other member -------------------------------------

function createPeer(id) {
  if (demo.peers[id]) return demo.peers[id];
  const pc = new RTCPeerConnection(RTC_CONFIG);
  const tile = makeTile(id);
  const peer = {
    id,
    pc,
    tile,
    state: pc.connectionState,
    connectedAt: null,
    get videoWidth() { return tile.video.videoWidth; },
    get videoHeight() { return tile.video.videoHeight; },
    pending: [], // remote candidates that came before the remote description
    chain: Promise.resolve(), // this peer's signalling steps, one at a time, in order
  };
  demo.peers[id] = peer;
  showRoom();

  if (demo.localStream) {
    for (const track of demo.localStream.getTracks()) pc.addTrack(track, demo.localStream);
  } else {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
  }
  pc.onicecandidate = ({ candidate }) => {
    if (!candidate || !demo.room) return;
    send('candidate', {
      from: demo.myId,
      to: id,
      room: demo.room,
      candidate: { sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex, sdp: candidate.candidate },
    });
  };
  pc.ontrack = (e) => {
    const video = tile.video;
    video.srcObject = e.streams[0] || new MediaStream([e.track]);
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  };
  pc.onconnectionstatechange = () => {
    peer.state = pc.connectionState;
    if (peer.state === 'connected' && !peer.connectedAt) peer.connectedAt = performance.now();
    tile.badge.textContent = peer.state;
    tile.badge.className = `badge ${peer.state}`;
    log('info', 'connectionState', `${short(id)}: ${peer.state}`);
  };
  return peer;
}

/** Runs `step` after the peer's earlier steps; errors are logged, not thrown. */
function queue(peer, name, step) {
  peer.chain = peer.chain.then(step).catch((e) => log('info', 'error', `${name} ${short(peer.id)}: ${e}`));
  return peer.chain;
}

function closePeer(id) {
  const peer = demo.peers[id];
  if (!peer) return;
  delete demo.peers[id];
  peer.pc.close();
  peer.tile.figure.remove();
  log('info', 'closed', short(id));
  showRoom();
}

function closeAllPeers() {
  for (const id of Object.keys(demo.peers)) closePeer(id);
}

async function setRemote(peer, description) {
  await peer.pc.setRemoteDescription(description);
  for (const c of peer.pending.splice(0)) await peer.pc.addIceCandidate(c);
}

function makeTile(id) {
  const figure = document.createElement('figure');
  figure.className = 'tile';
  figure.dataset.peer = id;
  figure.innerHTML = '<video autoplay playsinline></video><figcaption><span class="who"></span><span class="badge new">new</span></figcaption>';
  figure.querySelector('.who').textContent = id;
  $('tiles').append(figure);
  return { figure, video: figure.querySelector('video'), badge: figure.querySelector('.badge') };
}

// ---- socket ----------------------------------------------------------------------------

function send(event, data) {
  log('out', event, data);
  demo.socket.emit(event, data);
}

function on(event, handler) {
  demo.socket.on(event, (data) => {
    log('in', event, data);
    handler(data || {});
  });
}

function connect(namespace) {
  const options = {};
  const transport = params.get('transport');
  if (transport === 'polling' || transport === 'websocket') options.transports = [transport];
  const socket = (demo.socket = io(location.origin + namespace, options));

  socket.on('connect', () => {
    const name = socket.io.engine.transport.name;
    showSocket(`connected (${name})`, 'connected');
    log('info', 'connect', `socket ${socket.id} over ${name}`);
    socket.io.engine.once('upgrade', (t) => {
      showSocket(`connected (${t.name})`, 'connected');
      log('info', 'upgrade', t.name);
    });
    $('join').disabled = false;
    // The server forgot us when the socket dropped (the others got `exit`): join again.
    if (demo.room) join(demo.room);
    else if (params.get('autojoin') === '1' && $('room').value) join($('room').value);
  });
  socket.on('disconnect', (reason) => {
    showSocket('disconnected', 'disconnected');
    log('info', 'disconnect', reason);
    closeAllPeers();
  });

  on('created', (msg) => {
    demo.myId = msg.id;
    $('my-id').textContent = msg.id;
    for (const { id } of msg.peers || []) offerTo(id);
    showRoom();
  });
  on('joined', () => {
    // The newcomer makes the offers; nothing to do until its offer arrives.
  });
  on('offer', (msg) => {
    if (msg.to !== demo.myId || !demo.room) return;
    const peer = createPeer(msg.from);
    queue(peer, 'answer', async () => {
      await setRemote(peer, { type: 'offer', sdp: msg.sdp });
      const answer = await peer.pc.createAnswer();
      await peer.pc.setLocalDescription(answer);
      send('answer', { from: demo.myId, to: msg.from, room: demo.room, sdp: answer.sdp });
    });
  });
  on('answer', (msg) => {
    const peer = demo.peers[msg.from];
    if (peer) queue(peer, 'setRemoteDescription', () => setRemote(peer, { type: 'answer', sdp: msg.sdp }));
  });
  on('candidate', (msg) => {
    const peer = demo.peers[msg.from];
    const c = msg.candidate;
    if (!peer || !c) return;
    const candidate = { candidate: c.sdp, sdpMid: c.sdpMid, sdpMLineIndex: Number(c.sdpMLineIndex) };
    queue(peer, 'addIceCandidate', () =>
      peer.pc.remoteDescription ? peer.pc.addIceCandidate(candidate) : peer.pending.push(candidate));
  });
  on('exit', (msg) => closePeer(msg.from));
}

function showSocket(text, cls) {
  $('socket-state').textContent = text;
  $('socket-state').className = `badge ${cls}`;
}

// ---- joining and leaving ----------------------------------------------------------------

async function join(room) {
  await openCamera();
  closeAllPeers();
  demo.room = room;
  showRoom();
  send('createAndJoinRoom', { room });
  $('room').disabled = true;
  $('join').disabled = true;
  $('leave').disabled = false;
  const url = new URL(location.href);
  url.searchParams.set('room', room);
  history.replaceState(null, '', url);
}

function offerTo(id) {
  const peer = createPeer(id);
  queue(peer, 'offer', async () => {
    const offer = await peer.pc.createOffer();
    await peer.pc.setLocalDescription(offer);
    send('offer', { from: demo.myId, to: id, room: demo.room, sdp: offer.sdp });
  });
}

function leave() {
  if (!demo.room) return;
  send('exit', { from: demo.myId, room: demo.room });
  demo.room = null;
  closeAllPeers();
  $('room').disabled = false;
  $('join').disabled = false;
  $('leave').disabled = true;
  setStatus('left the room');
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  $('room').value = params.get('room') || 'demo';
  $('controls').addEventListener('submit', (e) => {
    e.preventDefault();
    const room = $('room').value.trim();
    if (room) join(room);
  });
  $('leave').addEventListener('click', leave);
  if (typeof io !== 'function') {
    setStatus('the Socket.IO client library did not load', true);
    return;
  }
  const config = await (await fetch('config.json')).json();
  if (config.protocol !== 'webrtcroom') {
    setStatus(`this address serves ${config.protocol}, not webrtcroom`, true);
    return;
  }
  setStatus('type a room and join; open the same room in another tab');
  connect(config.namespace || '/');
}

start().catch((e) => setStatus(String(e), true));
