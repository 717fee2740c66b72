// What the demo pages share, loaded before each page's app.js (which speaks one protocol):
// the page state on window.demo, the log of signalling events, the local camera, one tile with
// a connection-state badge per RTCPeerConnection, the socket and its state, and the URL
// parameters.
//
// URL parameters: ?room=NAME  &autojoin=1  &transport=polling|websocket  &token=JWT  (and the
// page's own). The token, when given, goes to the server both ways a client can send one (the
// `token` query parameter and the v5 `auth` payload) and to /turn.
// app.js sets demo.protocol and its own fields of window.demo, defines summary(data) (one short
// line about a message, for the log) and calls startPage().
'use strict';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
// No STUN/TURN by default: the demo must work offline. When the gateway hands out TURN
// credentials (/turn, see the README's [turn]), they replace this list before the first call.
const RTC_CONFIG = { iceServers: [] };

/** Uses the gateway's TURN credentials as ICE servers; a 404 (not configured) keeps the default. */
async function loadIceServers() {
  const token = params.get('token');
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const res = await fetch('/turn', { headers });
    if (!res.ok) return;
    const { username, credential, uris } = await res.json();
    RTC_CONFIG.iceServers = [{ urls: uris, username, credential }];
    log('info', 'turn', `TURN credentials for ${uris.join(', ')}`);
  } catch (e) {
    log('info', 'turn', `no TURN credentials: ${e}`);
  }
}

/** The page's state; tests read it as window.demo. app.js adds its protocol and own fields. */
const demo = (window.demo = {
  protocol: null, // set by app.js
  socket: null,
  room: null, // set while in a room
  localStream: null,
  peers: {}, // one entry per RTCPeerConnection: {pc, tile, state, videoWidth, connectedAt, …}
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
  li.querySelector('.what').textContent = summary(data); // app.js: one line for its messages
  li.title = typeof data === 'string' ? data : JSON.stringify(data);
  $('log').prepend(li);
  while ($('log').childElementCount > 300) $('log').lastChild.remove();
}

/** "udp 127.0.0.1:5000 host" from a candidate line. */
function candidateSummary(line) {
  const f = line.split(' ');
  return f.length > 7 ? `${f[2]} ${f[4]}:${f[5]} ${f[7]}` : line;
}

const short = (id) => String(id).slice(0, 8);

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

function showSocket(text, cls) {
  $('socket-state').textContent = text;
  $('socket-state').className = `badge ${cls}`;
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
  if (demo.localStream) $('local-video').srcObject = demo.localStream;
  else log('info', 'camera', 'no camera or microphone: receiving only');
  return demo.localStream;
}

/** Sends our camera and microphone on `pc`; without them, if `receiveIfNone`, asks to receive both. */
function addLocalMedia(pc, receiveIfNone) {
  if (demo.localStream) {
    for (const track of demo.localStream.getTracks()) pc.addTrack(track, demo.localStream);
  } else if (receiveIfNone) {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
  }
}

// ---- peers: one RTCPeerConnection and one tile each -------------------------------------

/**
 * A new RTCPeerConnection as an entry of demo.peers: `fields` (the page's ids for it), then what
 * every page keeps. Its remote media plays in `tile`; on each connection-state change the
 * entry, the tile's badge and the log (naming the peer `label`) follow, then `onState(state)`.
 */
function createPeerConnection(fields, tile, label, onState = () => {}) {
  const pc = new RTCPeerConnection(RTC_CONFIG);
  const peer = {
    ...fields,
    pc,
    tile,
    state: pc.connectionState,
    connectedAt: null,
    get videoWidth() { return tile.video.videoWidth; },
    get videoHeight() { return tile.video.videoHeight; },
    pending: [], // remote candidates that came before the remote description
    chain: Promise.resolve(), // this peer's signalling steps, one at a time, in order
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
    log('info', 'connectionState', `${label}: ${peer.state}`);
    onState(peer.state);
  };
  return peer;
}

async function setRemote(peer, description) {
  await peer.pc.setRemoteDescription(description);
  for (const candidate of peer.pending.splice(0)) await peer.pc.addIceCandidate(candidate);
}

/** Adds a remote candidate now, or once the remote description is set. */
function addRemoteCandidate(peer, candidate) {
  return peer.pc.remoteDescription ? peer.pc.addIceCandidate(candidate) : peer.pending.push(candidate);
}

/**
 * A tile in #tiles for one remote stream: its video, then `caption` (HTML) and a badge with the
 * connection state. `dataset` goes on the tile's data- attributes.
 */
function addTile(className, dataset, caption) {
  const figure = document.createElement('figure');
  figure.className = className;
  Object.assign(figure.dataset, dataset);
  figure.innerHTML = `<video autoplay playsinline></video><figcaption>${caption}<span class="badge new">new</span></figcaption>`;
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

/**
 * Connects demo.socket to `namespace`, on the transport the URL asks for if any, and shows and
 * logs its state; then runs `connected(socket)` on every (re)connect, `disconnected()` on every drop.
 */
function openSocket(namespace, { connected, disconnected = () => {} }) {
  const options = {};
  const transport = params.get('transport');
  if (transport === 'polling' || transport === 'websocket') options.transports = [transport];
  const token = params.get('token');
  if (token) {
    options.query = { token }; // socket.io-client 2.x can send only this
    options.auth = { token }; // socket.io-client 4.x
  }
  const socket = (demo.socket = io(location.origin + namespace, options));

  socket.on('connect', () => {
    const name = socket.io.engine.transport.name;
    showSocket(`connected (${name})`, 'connected');
    log('info', 'connect', `socket ${socket.id} over ${name}`);
    socket.io.engine.once('upgrade', (t) => {
      showSocket(`connected (${t.name})`, 'connected');
      log('info', 'upgrade', t.name);
    });
    connected(socket);
  });
  socket.on('disconnect', (reason) => {
    showSocket('disconnected', 'disconnected');
    log('info', 'disconnect', reason);
    disconnected();
  });
  return socket;
}

// ---- URL and start -----------------------------------------------------------------------

/** Puts `values` in the page's URL parameters, so that a reload comes back to the same room. */
function setUrlParams(values) {
  const url = new URL(location.href);
  for (const [name, value] of Object.entries(values)) url.searchParams.set(name, value);
  history.replaceState(null, '', url);
}

/**
 * Starts the page: the room from the URL, Join runs `submit()` and Leave `leave()`; then, if this
 * address serves demo.protocol, `hint` in the status line and `connect(namespace)`. Errors go
 * to the status line.
 */
function startPage({ submit, leave, hint, connect }) {
  const start = async () => {
    $('room').value = params.get('room') || 'demo';
    $('controls').addEventListener('submit', (e) => {
      e.preventDefault();
      submit();
    });
    $('leave').addEventListener('click', leave);
    if (typeof io !== 'function') {
      setStatus('the Socket.IO client library did not load', true);
      return;
    }
    const config = await (await fetch('config.json')).json();
    if (config.protocol !== demo.protocol) {
      setStatus(`this address serves ${config.protocol}, not ${demo.protocol}`, true);
      return;
    }
    await loadIceServers();
    setStatus(hint);
    connect(config.namespace || '/');
  };
  start().catch((e) => setStatus(String(e), true));
}
