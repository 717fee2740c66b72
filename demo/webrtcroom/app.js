// WebRtcRoom demo page: speaks the WebRtcRoom protocol as its Html app does, on
// socket.io-client 2.x (Engine.IO v3, polling first, then upgrade to websocket).
// What the demo pages share (log, camera, tiles, socket, start) is in ../common.js.
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

// demo.peers: peer id → {id, pc, state, videoWidth, connectedAt}
Object.assign(demo, {
  protocol: 'webrtcroom',
  myId: null, // our id in the room, from `created`
});

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

function showRoom() {
  if (!demo.room) return;
  const n = Object.keys(demo.peers).length;
  setStatus(`in room ${JSON.stringify(demo.room)} · ${n} peer${n === 1 ? '' : 's'}`);
}

// ---- peers: one RTCPeerConnection per other member -------------------------------------

function createPeer(id) {
  if (demo.peers[id]) return demo.peers[id];
  const peer = createPeerConnection({ id }, makeTile(id), short(id));
  demo.peers[id] = peer;
  showRoom();

  addLocalMedia(peer.pc, true);
  peer.pc.onicecandidate = ({ candidate }) => {
    if (!candidate || !demo.room) return;
    send('candidate', {
      from: demo.myId,
      to: id,
      room: demo.room,
      candidate: { sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex, sdp: candidate.candidate },
    });
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

function makeTile(id) {
  const tile = addTile('tile', { peer: id }, '<span class="who"></span>');
  tile.figure.querySelector('.who').textContent = id;
  return tile;
}

// ---- socket ----------------------------------------------------------------------------

function connect(namespace) {
  openSocket(namespace, {
    connected() {
      $('join').disabled = false;
      // The server forgot us when the socket dropped (the others got `exit`): join again.
      if (demo.room) join(demo.room);
      else if (params.get('autojoin') === '1' && $('room').value) join($('room').value);
    },
    disconnected: closeAllPeers,
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
    queue(peer, 'addIceCandidate', () => addRemoteCandidate(peer, candidate));
  });
  on('exit', (msg) => closePeer(msg.from));
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
  setUrlParams({ room });
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

startPage({
  submit() {
    const room = $('room').value.trim();
    if (room) join(room);
  },
  leave,
  hint: 'type a room and join; open the same room in another tab',
  connect,
});
