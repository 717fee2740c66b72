// chatroom demo page: speaks the chatroom protocol as its Vue/React client does, on
// socket.io-client 4.x (Engine.IO v4, polling first, then upgrade to websocket).
// What the demo pages share (log, camera, tiles, socket, start) is in ../common.js.
//
// Every RTCPeerConnection is a "connector" with its own id; the two ends of a link know each
// other's connector id. Members are addressed by their socket id (memberId).
//   GET /checkUsername?username&roomname first: a taken name is refused here.
//   → join {id, username, roomname}             id: a UUID per page load
//   ← getOffer {memberId}                        a newcomer: make a connector, offer to it
//   ↔ offer {connectorId, memberId, offer, streamType}  ("user" camera, "display" screen)
//   ↔ answer {remoteConnectorId, connectorId, memberId, answer, streamType}
//   ↔ icecandidate {remoteConnectorId, memberId, candidate}, sent once the remote connector
//     is known; received as {connectorId, candidate}
//   → leave [{remoteConnectorId, memberId}]; ← leave {connectorId, memberId}
//   → reconnect {id, username, roomname} on every socket (re)connect while in a room
//   ← reconnect {type: "getOffer", connectorId}: no memberId (as the original), so no renegotiation
//   ← reconnect {type: "offer" | "answer", data, connectorId}: renegotiation of a connector
//   ← reconnect {type: "leave", memberId?}: drop that member's connectors, or all of them
//
// URL parameters: ?room=NAME  &user=NAME  &autojoin=1  &transport=polling|websocket
// Tests read window.demo: {peers: {connectorId: {memberId, streamType, state, videoWidth}},
// events, socket}.
'use strict';

const RENEGOTIATION_TIMEOUT_MS = 5000;

// demo.peers: connectorId → connector: {memberId, streamType, remoteConnectorId, pc, state, videoWidth}
Object.assign(demo, {
  protocol: 'chatroom',
  userId: newId(), // the client's stable user id, one per page load
  username: null,
  screenStream: null,
});

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID(); // only in secure contexts (https, localhost)
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** One short line about a message: its type, stream and the ids that matter. */
function summary(data) {
  if (data == null || typeof data !== 'object') return data == null ? '' : String(data);
  if (Array.isArray(data)) return data.map(summary).join(' | ');
  const parts = [];
  if (data.type) parts.push(data.type);
  if (data.streamType) parts.push(data.streamType);
  if (data.username) parts.push(`${data.username} @ ${data.roomname}`);
  const sdp = (data.offer || data.answer || data.data || {}).sdp;
  if (typeof sdp === 'string') parts.push(`sdp ${sdp.length} chars`);
  if (data.candidate && typeof data.candidate.candidate === 'string') parts.push(candidateSummary(data.candidate.candidate));
  if (data.memberId) parts.push(`member ${short(data.memberId)}`);
  if (data.connectorId) parts.push(`conn ${short(data.connectorId)}`);
  if (data.remoteConnectorId) parts.push(`remote ${short(data.remoteConnectorId)}`);
  if (data.message) parts.push(data.message);
  return parts.join(' · ');
}

function showRoom() {
  if (!demo.room) return;
  const members = new Set(Object.values(demo.peers).map((c) => c.memberId)).size;
  setStatus(`${demo.username} in room ${JSON.stringify(demo.room)} · ${members} other member${members === 1 ? '' : 's'}`);
}

// ---- connectors: one RTCPeerConnection per link and stream type --------------------------

const KIND_LABEL = { user: 'camera', display: 'your screen →', remoteDisplay: 'their screen' };

/**
 * streamType "user": camera both ways; "display": we send our screen; "remoteDisplay": we
 * receive a member's screen.
 */
function createConnector({ memberId, streamType, remoteConnectorId = null }) {
  const id = newId();
  const fields = {
    connectorId: id,
    memberId,
    streamType,
    remoteConnectorId,
    outbox: [], // our candidates, held until the remote connector is known
    renegotiation: null, // timer while a reconnect offer waits for its answer
  };
  const label = `${KIND_LABEL[streamType]} ${short(memberId)}`;
  const c = createPeerConnection(fields, makeTile(id, memberId, streamType), label, (state) => {
    // A shared screen has no "stop" message: its connector fails once the sharer closes it.
    if (streamType === 'remoteDisplay' && state === 'failed') closeConnector(id);
  });
  demo.peers[id] = c;

  if (streamType === 'user') {
    addLocalMedia(c.pc, !remoteConnectorId);
  } else if (streamType === 'display' && demo.screenStream) {
    for (const track of demo.screenStream.getTracks()) c.pc.addTrack(track, demo.screenStream);
  }

  c.pc.onicecandidate = ({ candidate }) => {
    if (!candidate) return;
    if (c.remoteConnectorId) sendCandidate(c, candidate.toJSON());
    else c.outbox.push(candidate.toJSON());
  };
  showRoom();
  return c;
}

function sendCandidate(c, candidate) {
  send('icecandidate', { remoteConnectorId: c.remoteConnectorId, memberId: c.memberId, candidate });
}

/** Runs `step` after the connector's earlier steps; errors are logged, not thrown. */
function queue(c, name, step) {
  c.chain = c.chain.then(step).catch((e) => log('info', 'error', `${name} ${short(c.connectorId)}: ${e}`));
  return c.chain;
}

const plain = (d) => ({ type: d.type, sdp: d.sdp });

function sendOffer(c) {
  queue(c, 'offer', async () => {
    const offer = await c.pc.createOffer();
    await c.pc.setLocalDescription(offer);
    send('offer', { connectorId: c.connectorId, memberId: c.memberId, offer: plain(offer), streamType: c.streamType });
  });
}

/** A connector by our id, or by the id of its remote end. */
function findConnector(id) {
  return demo.peers[id] || Object.values(demo.peers).find((c) => c.remoteConnectorId === id);
}

function closeConnector(id) {
  const c = demo.peers[id];
  if (!c) return;
  delete demo.peers[id];
  clearTimeout(c.renegotiation);
  c.pc.close();
  c.tile.figure.remove();
  log('info', 'closed', `${KIND_LABEL[c.streamType]} ${short(c.memberId)}`);
  showRoom();
}

function closeMember(memberId) {
  for (const c of Object.values(demo.peers)) if (c.memberId === memberId) closeConnector(c.connectorId);
}

function closeAll() {
  for (const id of Object.keys(demo.peers)) closeConnector(id);
}

/** Other members, known by their camera connectors. */
function members() {
  return [...new Set(Object.values(demo.peers).filter((c) => c.streamType === 'user').map((c) => c.memberId))];
}

function makeTile(id, memberId, streamType) {
  const className = `tile ${streamType === 'display' ? 'sending' : ''}`;
  const tile = addTile(className, { connector: id }, '<span class="kind"></span><span class="who"></span>');
  tile.figure.querySelector('.kind').textContent = KIND_LABEL[streamType];
  tile.figure.querySelector('.who').textContent = memberId;
  tile.figure.querySelector('.who').title = `member ${memberId}, connector ${id}`;
  return tile;
}

// ---- socket ----------------------------------------------------------------------------

function connect(namespace) {
  // On a drop, calls go on without signalling; the server keeps our place for its grace period.
  openSocket(namespace, {
    connected(socket) {
      $('my-id').textContent = socket.id;
      $('join').disabled = !!demo.room;
      if (demo.room) {
        // Back within the grace period, we keep our place and our calls.
        send('reconnect', { id: demo.userId, username: demo.username, roomname: demo.room });
      } else if (params.get('autojoin') === '1') {
        join();
      }
    },
  });

  on('getOffer', ({ memberId }) => {
    if (!demo.room || !memberId) return;
    for (const c of Object.values(demo.peers)) {
      if (c.memberId === memberId && c.streamType === 'user') closeConnector(c.connectorId);
    }
    sendOffer(createConnector({ memberId, streamType: 'user' }));
    if (demo.screenStream) sendOffer(createConnector({ memberId, streamType: 'display' }));
  });

  on('offer', ({ remoteConnectorId, offer, memberId, streamType }) => {
    if (!demo.room || !offer) return;
    const kind = streamType === 'display' ? 'remoteDisplay' : 'user';
    const c = createConnector({ memberId, streamType: kind, remoteConnectorId });
    queue(c, 'answer', async () => {
      await setRemote(c, offer);
      const answer = await c.pc.createAnswer();
      await c.pc.setLocalDescription(answer);
      send('answer', { remoteConnectorId, connectorId: c.connectorId, memberId, answer: plain(answer), streamType: kind });
    });
  });

  on('answer', ({ remoteConnectorId, connectorId, answer, memberId }) => {
    const c = demo.peers[connectorId];
    if (!c || !answer) return;
    c.remoteConnectorId = remoteConnectorId;
    if (memberId) c.memberId = memberId;
    queue(c, 'setRemoteDescription', () => setRemote(c, answer));
    for (const candidate of c.outbox.splice(0)) sendCandidate(c, candidate);
  });

  on('icecandidate', ({ connectorId, candidate }) => {
    const c = demo.peers[connectorId];
    if (!c || !candidate) return;
    queue(c, 'addIceCandidate', () => addRemoteCandidate(c, candidate));
  });

  on('leave', ({ connectorId, memberId }) => {
    closeConnector(connectorId);
    if (memberId) closeMember(memberId); // the member left the room: all its links are gone
  });

  on('reconnect', (msg) => {
    if (msg.type === 'leave') {
      if (msg.memberId) closeMember(msg.memberId);
      else closeAll();
    } else if (msg.type === 'getOffer') {
      // As from the original server, this names no member: the peer's new socket id is not
      // known here, so a renegotiation could not reach it. The call itself survives the blip.
      const c = demo.peers[msg.connectorId];
      if (!c || !msg.memberId) return;
      c.memberId = msg.memberId;
      renegotiate(c);
    } else if (msg.type === 'offer') {
      const c = findConnector(msg.connectorId);
      if (!c || !msg.data) return;
      queue(c, 'reconnect answer', async () => {
        await setRemote(c, msg.data); // rolls back our own pending offer, if any
        const answer = await c.pc.createAnswer();
        await c.pc.setLocalDescription(answer);
        send('reconnectWork', { type: 'answer', data: plain(answer), connectorId: c.connectorId, memberId: c.memberId });
      });
    } else if (msg.type === 'answer') {
      const c = findConnector(msg.connectorId);
      if (!c || !msg.data) return;
      clearTimeout(c.renegotiation);
      queue(c, 'reconnect setRemoteDescription', async () => {
        if (c.pc.signalingState === 'have-local-offer') await setRemote(c, msg.data);
      });
    }
  });

  on('error', (msg) => {
    // A refused join leaves us out of the room; other refusals are only logged.
    const refusals = { repeat: 'the name is taken in this room: pick another', limit: 'the room is full', id_in_use: 'this user id is in use' };
    if (refusals[msg.type]) {
      resetRoom();
      setStatus(refusals[msg.type], true);
    }
  });
}

/** A peer came back on a new socket: offer again on the same connector (ICE restart if it broke). */
function renegotiate(c) {
  queue(c, 'reconnect offer', async () => {
    if (c.pc.signalingState !== 'stable') return;
    const iceRestart = c.state === 'failed' || c.state === 'disconnected';
    const offer = await c.pc.createOffer({ iceRestart });
    await c.pc.setLocalDescription(offer);
    send('reconnectWork', { type: 'offer', data: plain(offer), connectorId: c.connectorId, memberId: c.memberId });
    clearTimeout(c.renegotiation);
    c.renegotiation = setTimeout(() => {
      // No answer came: go back to the description that works.
      queue(c, 'rollback', async () => {
        if (c.pc.signalingState === 'have-local-offer') {
          await c.pc.setLocalDescription({ type: 'rollback' });
          log('info', 'rollback', `no answer to the reconnect offer on ${short(c.connectorId)}`);
        }
      });
    }, RENEGOTIATION_TIMEOUT_MS);
  });
}

// ---- joining, sharing, leaving -----------------------------------------------------------

async function join() {
  const username = $('user').value.trim();
  const room = $('room').value.trim();
  if (!username || !room || demo.room) return;
  $('join').disabled = true;
  const query = new URLSearchParams({ username, roomname: room });
  try {
    const reply = await (await fetch(`/checkUsername?${query}`)).json();
    if (reply.isRepeat) {
      setStatus(`"${username}" is already in room "${room}": pick another name`, true);
      $('join').disabled = false;
      return;
    }
  } catch (e) {
    log('info', 'checkUsername', String(e));
  }
  await openCamera();
  demo.username = username;
  demo.room = room;
  send('join', { id: demo.userId, username, roomname: room });
  for (const id of ['user', 'room']) $(id).disabled = true;
  $('share').disabled = false;
  $('leave').disabled = false;
  showRoom();
  setUrlParams({ room, user: username });
}

async function toggleShare() {
  if (demo.screenStream) return stopSharing();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    setStatus('screen sharing is not available here (needs https or localhost)', true);
    return;
  }
  try {
    demo.screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (e) {
    log('info', 'share screen', `${e.name}: ${e.message}`);
    return;
  }
  $('screen-video').srcObject = demo.screenStream;
  $('screen-tile').hidden = false;
  $('share').textContent = 'Stop sharing';
  demo.screenStream.getVideoTracks()[0].addEventListener('ended', stopSharing);
  for (const memberId of members()) sendOffer(createConnector({ memberId, streamType: 'display' }));
}

function stopSharing() {
  if (!demo.screenStream) return;
  for (const track of demo.screenStream.getTracks()) track.stop();
  demo.screenStream = null;
  for (const c of Object.values(demo.peers)) if (c.streamType === 'display') closeConnector(c.connectorId);
  $('screen-tile').hidden = true;
  $('share').textContent = 'Share screen';
}

function leave() {
  if (!demo.room) return;
  const links = Object.values(demo.peers)
    .filter((c) => c.remoteConnectorId)
    .map((c) => ({ remoteConnectorId: c.remoteConnectorId, memberId: c.memberId }));
  send('leave', links);
  resetRoom();
  setStatus('left the room');
}

function resetRoom() {
  stopSharing();
  closeAll();
  demo.room = null;
  for (const id of ['user', 'room']) $(id).disabled = false;
  $('join').disabled = !demo.socket.connected;
  $('share').disabled = true;
  $('leave').disabled = true;
}

// ---- start -----------------------------------------------------------------------------

$('user').value = params.get('user') || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
$('share').addEventListener('click', toggleShare);
startPage({
  submit: join,
  leave,
  hint: 'pick a name and a room, and join; open the same room in another tab',
  connect,
});
