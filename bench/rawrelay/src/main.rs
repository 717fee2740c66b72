//! `rawrelay`: the benchmark's "how fast could a relay be on this machine" bound.
//!
//! A WebSocket server that does only what a signalling relay must: find the target id in a
//! text frame and forward the frame's bytes to that connection. It speaks just enough
//! Engine.IO (v3 and v4, WebSocket transport only) and just enough of both signalling
//! protocols for the load generator to drive it exactly like the real servers:
//! - handshake: open packet; v3: `40` at once; v4: `40{"sid":..}` in answer to `40`;
//!   heartbeats (`2` → `3` for v3; a `2` to every client each 25 s for v4);
//! - `createAndJoinRoom {room}` (WebRtcRoom): `joined {id, room}` to the members, then
//!   `created {id, room, peers}` to the joiner; `join {roomname}` (chatroom): `getOffer
//!   {memberId}` to the members;
//! - any other event with a `"to":"ID"` or `"memberId":"ID"` field: the frame is forwarded
//!   unchanged to connection ID (no room check, no rewriting, no validation);
//! - `exit` / `leave`: leave the room and forward the frame to its other members;
//!   a closed connection: WebRtcRoom rooms get `exit {from, room: ""}`.
//!
//! Single-threaded (the benchmark pins servers to one core). Every frame for one receiver
//! that is produced while others are being handled is appended to that receiver's buffer and
//! written with one system call.
//!
//! Usage: `rawrelay [--listen 127.0.0.1:18500]`; prints `rawrelay listening on http://ADDR`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

struct Peer {
    sid: Rc<str>,
    out: RefCell<Vec<u8>>,
    wake: Notify,
    room: RefCell<Option<Rc<str>>>,
    closed: Cell<bool>,
}

impl Peer {
    /// Queues one unmasked text frame.
    fn send(&self, payload: &[u8]) {
        if self.closed.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let was_empty = out.is_empty();
        let len = payload.len();
        out.push(0x81);
        if len < 126 {
            out.push(len as u8);
        } else if len < 65536 {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        if was_empty {
            self.wake.notify_one();
        }
    }
}

#[derive(Default)]
struct Relay {
    peers: RefCell<HashMap<Rc<str>, Rc<Peer>>>,
    rooms: RefCell<HashMap<Rc<str>, Vec<Rc<Peer>>>>,
    next: Cell<u64>,
}

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn main() -> io::Result<()> {
    let mut listen = "127.0.0.1:18500".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            _ => {
                eprintln!("usage: rawrelay [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&listen).await?;
        println!("rawrelay listening on http://{}", listener.local_addr()?);
        let relay = Rc::new(Relay::default());
        // v4 heartbeat: the server pings.
        {
            let relay = relay.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(25));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let peers: Vec<Rc<Peer>> = relay.peers.borrow().values().cloned().collect();
                    for p in peers {
                        p.send(b"2");
                    }
                }
            });
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let relay = relay.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(relay, stream).await;
            });
        }
    })
}

async fn serve(relay: Rc<Relay>, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // HTTP upgrade request.
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let head = loop {
        if len == buf.len() {
            return Ok(());
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(i) = memchr::memmem::find(&buf[..len], b"\r\n\r\n") {
            break i + 4;
        }
    };
    let req = String::from_utf8_lossy(&buf[..head]).into_owned();
    let line = req.lines().next().unwrap_or("");
    let v3 = line.contains("EIO=3") || !line.contains("EIO=");
    let key = req.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_string())
    });
    let Some(key) = key.filter(|_| line.contains("transport=websocket")) else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 33\r\nConnection: close\r\n\r\nonly the websocket transport here")
            .await?;
        return Ok(());
    };
    let accept = base64::engine::general_purpose::STANDARD
        .encode(Sha1::digest(format!("{key}{GUID}").as_bytes()));
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    stream.write_all(resp.as_bytes()).await?;
    buf.copy_within(head..len, 0);
    len -= head;

    let n = relay.next.get();
    relay.next.set(n + 1);
    let sid: Rc<str> = format!("raw{n:017}").into();
    let peer = Rc::new(Peer {
        sid: sid.clone(),
        out: RefCell::new(Vec::new()),
        wake: Notify::new(),
        room: RefCell::new(None),
        closed: Cell::new(false),
    });
    relay.peers.borrow_mut().insert(sid.clone(), peer.clone());
    let open = if v3 {
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":5000}}"
        )
    } else {
        format!("0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}")
    };
    peer.send(open.as_bytes());
    if v3 {
        peer.send(b"40");
    }
    let (mut rd, wr) = stream.into_split();
    let writer = tokio::task::spawn_local(write_loop(peer.clone(), wr));
    let r = read_loop(&relay, &peer, &mut rd, buf, len, v3).await;
    // Gone: forget it, tell its WebRtcRoom room.
    peer.closed.set(true);
    peer.wake.notify_one();
    relay.peers.borrow_mut().remove(&sid);
    if let Some(room) = leave_room(&relay, &peer) {
        if v3 {
            let exit = format!("42[\"exit\",{{\"from\":\"{sid}\",\"room\":\"\"}}]");
            for m in members(&relay, &room) {
                m.send(exit.as_bytes());
            }
        }
    }
    let _ = writer.await;
    r
}

async fn write_loop(peer: Rc<Peer>, mut wr: OwnedWriteHalf) {
    let mut spare = Vec::new();
    loop {
        let mut batch = std::mem::replace(&mut *peer.out.borrow_mut(), spare);
        if batch.is_empty() {
            spare = batch;
            if peer.closed.get() {
                return;
            }
            peer.wake.notified().await;
            continue;
        }
        if wr.write_all(&batch).await.is_err() {
            peer.closed.set(true);
            return;
        }
        batch.clear();
        if batch.capacity() > 64 * 1024 {
            batch = Vec::new();
        }
        spare = batch;
    }
}

async fn read_loop(
    relay: &Relay,
    peer: &Rc<Peer>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    mut len: usize,
    v3: bool,
) -> io::Result<()> {
    let mut pos = 0;
    loop {
        // Every complete frame in the buffer.
        loop {
            let avail = &mut buf[pos..len];
            if avail.len() < 2 {
                break;
            }
            let b0 = avail[0];
            let (plen, mut hdr) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                127 if avail.len() >= 10 => (
                    u64::from_be_bytes(avail[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                l => (l as usize, 2),
            };
            let masked = avail[1] & 0x80 != 0;
            let mask_at = hdr;
            if masked {
                hdr += 4;
            }
            if avail.len() < hdr + plen {
                if hdr + plen > buf.len() {
                    buf.resize((hdr + plen).next_power_of_two(), 0);
                }
                break;
            }
            if masked {
                let m = [
                    avail[mask_at],
                    avail[mask_at + 1],
                    avail[mask_at + 2],
                    avail[mask_at + 3],
                ];
                for (i, b) in avail[hdr..hdr + plen].iter_mut().enumerate() {
                    *b ^= m[i & 3];
                }
            }
            match b0 & 0x0f {
                0x1 => handle(relay, peer, &avail[hdr..hdr + plen], v3),
                0x8 => return Ok(()),
                0x9 => {} // no pings expected from our clients
                _ => {}
            }
            pos += hdr + plen;
        }
        if pos == len {
            pos = 0;
            len = 0;
        } else if pos > 0 {
            buf.copy_within(pos..len, 0);
            len -= pos;
            pos = 0;
        }
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = rd.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
}

fn members(relay: &Relay, room: &str) -> Vec<Rc<Peer>> {
    relay.rooms.borrow().get(room).cloned().unwrap_or_default()
}

fn leave_room(relay: &Relay, peer: &Rc<Peer>) -> Option<Rc<str>> {
    let room = peer.room.borrow_mut().take()?;
    let mut rooms = relay.rooms.borrow_mut();
    if let Some(list) = rooms.get_mut(&room) {
        list.retain(|p| !Rc::ptr_eq(p, peer));
        if list.is_empty() {
            rooms.remove(&room);
        }
    }
    Some(room)
}

/// A string field's raw value (`"key":"VALUE"`), without unescaping.
fn field<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = memchr::memmem::find(frame, key)? + key.len();
    let end = memchr::memchr(b'"', &frame[i..])?;
    Some(&frame[i..i + end])
}

fn handle(relay: &Relay, peer: &Rc<Peer>, p: &[u8], v3: bool) {
    match p.first() {
        Some(b'2') => {
            peer.send(b"3");
            return;
        }
        Some(b'4') => {}
        _ => return,
    }
    match p.get(1) {
        Some(b'0') if !v3 => {
            let ack = format!("40{{\"sid\":\"{}\"}}", peer.sid);
            peer.send(ack.as_bytes());
            return;
        }
        Some(b'2') => {}
        _ => return,
    }
    let Some(rest) = p[2..].strip_prefix(b"[\"") else {
        return;
    };
    let Some(q) = memchr::memchr(b'"', rest) else {
        return;
    };
    let name = &rest[..q];
    match name {
        b"createAndJoinRoom" | b"join" => join(relay, peer, name == b"join", &p[2..]),
        b"exit" | b"leave" => {
            if let Some(room) = leave_room(relay, peer) {
                for m in members(relay, &room) {
                    m.send(p);
                }
            }
        }
        _ => {
            let target = field(p, b"\"to\":\"").or_else(|| field(p, b"\"memberId\":\""));
            let Some(target) = target.and_then(|t| std::str::from_utf8(t).ok()) else {
                return;
            };
            let to = relay.peers.borrow().get(target).cloned();
            if let Some(to) = to {
                to.send(p);
            }
        }
    }
}

fn join(relay: &Relay, peer: &Rc<Peer>, chatroom: bool, array: &[u8]) {
    let Ok(serde_json::Value::Array(args)) = serde_json::from_slice::<serde_json::Value>(array)
    else {
        return;
    };
    let Some(payload) = args.get(1) else { return };
    let key = if chatroom { "roomname" } else { "room" };
    let room_value = payload.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let room: Rc<str> = match &room_value {
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Null => return,
        other => other.to_string().into(),
    };
    leave_room(relay, peer);
    let existing = members(relay, &room);
    let sid = &peer.sid;
    if chatroom {
        let msg = format!("42[\"getOffer\",{{\"memberId\":\"{sid}\"}}]");
        for m in &existing {
            m.send(msg.as_bytes());
        }
    } else {
        let joined = format!("42[\"joined\",{{\"id\":\"{sid}\",\"room\":{room_value}}}]");
        for m in &existing {
            m.send(joined.as_bytes());
        }
        let peers: Vec<String> = existing
            .iter()
            .map(|m| format!("{{\"id\":\"{}\"}}", m.sid))
            .collect();
        let created = format!(
            "42[\"created\",{{\"id\":\"{sid}\",\"room\":{room_value},\"peers\":[{}]}}]",
            peers.join(",")
        );
        peer.send(created.as_bytes());
    }
    relay
        .rooms
        .borrow_mut()
        .entry(room.clone())
        .or_default()
        .push(peer.clone());
    *peer.room.borrow_mut() = Some(room);
}
