//! Client transports: a minimal WebSocket client (RFC 6455, text frames, no extensions) and
//! Engine.IO HTTP long-polling (v3 `len:packet` framing with UTF-16 lengths, v4 `\x1e`
//! separators), both handing the caller whole Engine.IO packets.
//!
//! The WebSocket side is written against the raw socket rather than a general-purpose
//! library so that the generator stays cheap: every packet a client produces while handling
//! one read is framed into one buffer and written with one system call, and received frames
//! are parsed in place without allocating.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};

/// Where the server is.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// Local addresses to connect from (spread over several to have more ports); empty: any.
    pub sources: Vec<std::net::IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Polling,
}

/// Packets queued by a client while it handles input; written out by [`Conn::flush`].
pub struct Out {
    buf: Vec<u8>,
    kind: OutKind,
    packets: usize,
}

#[derive(Clone, Copy)]
enum OutKind {
    Ws([u8; 4]),
    PollV3,
    PollV4,
}

impl Out {
    /// Queues one Engine.IO packet (its text, e.g. `42["x",{}]`).
    pub fn packet(&mut self, p: &[u8]) {
        match self.kind {
            OutKind::Ws(mask) => ws_frame(&mut self.buf, 0x1, p, mask),
            OutKind::PollV3 => {
                push_u64(&mut self.buf, utf16_len(p) as u64);
                self.buf.push(b':');
                self.buf.extend_from_slice(p);
            }
            OutKind::PollV4 => {
                if self.packets > 0 {
                    self.buf.push(0x1e);
                }
                self.buf.extend_from_slice(p);
            }
        }
        self.packets += 1;
    }

    fn control(&mut self, opcode: u8, p: &[u8]) {
        if let OutKind::Ws(mask) = self.kind {
            ws_frame(&mut self.buf, opcode, p, mask);
        }
    }
}

fn ws_frame(buf: &mut Vec<u8>, opcode: u8, p: &[u8], mask: [u8; 4]) {
    let len = p.len();
    buf.push(0x80 | opcode);
    if len < 126 {
        buf.push(0x80 | len as u8);
    } else if len < 65536 {
        buf.push(0x80 | 126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(0x80 | 127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(&mask);
    let start = buf.len();
    buf.extend_from_slice(p);
    apply_mask(&mut buf[start..], mask);
}

/// XORs `data` with the 4-byte WebSocket mask, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask) as u64;
    let m64 = m | (m << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends the decimal digits of `v`.
pub fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Length in UTF-16 code units (Engine.IO v3 counts those, not bytes).
pub fn utf16_len(p: &[u8]) -> usize {
    if p.is_ascii() {
        return p.len();
    }
    String::from_utf8_lossy(p).encode_utf16().count()
}

/// Bytes of `s` that make up its first `units` UTF-16 code units.
fn utf16_prefix_bytes(s: &[u8], units: usize) -> Option<usize> {
    let text = std::str::from_utf8(s).ok()?;
    let mut seen = 0;
    for (i, ch) in text.char_indices() {
        if seen >= units {
            return Some(i);
        }
        seen += ch.len_utf16();
    }
    (seen >= units).then_some(text.len())
}

/// Splits a polling payload into Engine.IO packets.
pub fn split_payload(body: &[u8], v3: bool, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    if !v3 {
        for p in body.split(|b| *b == 0x1e) {
            if !p.is_empty() {
                f(p);
            }
        }
        return Ok(());
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad v3 polling payload");
    let mut rest = body;
    while !rest.is_empty() {
        let colon = memchr::memchr(b':', rest).ok_or_else(bad)?;
        let units: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let after = &rest[colon + 1..];
        let n = utf16_prefix_bytes(after, units).ok_or_else(bad)?;
        f(&after[..n]);
        rest = &after[n..];
    }
    Ok(())
}

async fn tcp_connect(target: &Target, n: usize) -> io::Result<TcpStream> {
    let stream = if target.sources.is_empty() {
        TcpStream::connect(target.addr).await?
    } else {
        let src = target.sources[n % target.sources.len()];
        let sock = if src.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.bind(SocketAddr::new(src, 0))?;
        sock.connect(target.addr).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One client connection of either transport.
pub enum Conn {
    Ws(WsConn),
    Poll(PollConn),
}

impl Conn {
    /// Opens a connection; for polling this includes the handshake GET, whose packets are the
    /// first ones [`Conn::drain`] hands over.
    pub async fn connect(
        target: &Target,
        transport: Transport,
        eio: u8,
        n: usize,
    ) -> io::Result<Self> {
        match transport {
            Transport::WebSocket => Ok(Conn::Ws(WsConn::connect(target, eio, n).await?)),
            Transport::Polling => Ok(Conn::Poll(PollConn::connect(target, eio, n).await?)),
        }
    }

    pub fn out(&self) -> Out {
        let kind = match self {
            Conn::Ws(w) => OutKind::Ws(w.mask),
            Conn::Poll(p) if p.v3 => OutKind::PollV3,
            Conn::Poll(_) => OutKind::PollV4,
        };
        Out {
            buf: Vec::with_capacity(512),
            kind,
            packets: 0,
        }
    }

    /// Waits for more input. Cancel-safe (used in `select!`). `Ok(false)`: the connection closed.
    pub async fn readable(&mut self) -> io::Result<bool> {
        match self {
            Conn::Ws(w) => w.read_more().await,
            Conn::Poll(p) => p.recv().await,
        }
    }

    /// Hands every complete packet received so far to `f`. `Ok(false)`: the server closed.
    pub fn drain(
        &mut self,
        out: &mut Out,
        f: &mut impl FnMut(&[u8], &mut Out),
    ) -> io::Result<bool> {
        match self {
            Conn::Ws(w) => w.drain(out, f),
            Conn::Poll(p) => p.drain(out, f),
        }
    }

    /// Sends everything queued in `out` and empties it.
    pub async fn flush(&mut self, out: &mut Out) -> io::Result<()> {
        if out.buf.is_empty() {
            return Ok(());
        }
        let r = match self {
            Conn::Ws(w) => w.stream.write_all(&out.buf).await,
            Conn::Poll(p) => {
                p.post(&out.buf);
                Ok(())
            }
        };
        out.buf.clear();
        out.packets = 0;
        // Keep idle clients small.
        if out.buf.capacity() > 64 * 1024 {
            out.buf.shrink_to(4096);
        }
        r
    }

    /// Closes the connection (WebSocket: a close frame, then the socket).
    pub async fn close(self) {
        match self {
            Conn::Ws(mut w) => {
                let mut buf = Vec::new();
                ws_frame(&mut buf, 0x8, &1000u16.to_be_bytes(), w.mask);
                let _ = w.stream.write_all(&buf).await;
                let _ = w.stream.shutdown().await;
            }
            Conn::Poll(p) => {
                // Engine.IO close packet, then stop both loops.
                p.post(b"1");
                p.closing.set(true);
                p.wake.notify_one();
            }
        }
    }
}

// ---- WebSocket ---------------------------------------------------------------------------

pub struct WsConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    frag: Option<Vec<u8>>,
    mask: [u8; 4],
}

const RBUF_MIN: usize = 2048;
const RBUF_MAX: usize = 256 * 1024;

impl WsConn {
    async fn connect(target: &Target, eio: u8, n: usize) -> io::Result<Self> {
        let mut stream = tcp_connect(target, n).await?;
        let req = format!(
            "GET {}?EIO={eio}&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        stream.write_all(req.as_bytes()).await?;
        let mut rbuf = vec![0u8; RBUF_MIN];
        let mut rlen = 0;
        let head_end = loop {
            if rlen == rbuf.len() {
                if rbuf.len() >= 16 * 1024 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "handshake response too large",
                    ));
                }
                rbuf.resize(rbuf.len() * 2, 0);
            }
            let n = stream.read(&mut rbuf[rlen..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during handshake",
                ));
            }
            rlen += n;
            if let Some(i) = memchr::memmem::find(&rbuf[..rlen], b"\r\n\r\n") {
                break i + 4;
            }
        };
        let status = &rbuf[..head_end.min(16)];
        if !status.starts_with(b"HTTP/1.1 101") {
            let text = String::from_utf8_lossy(&rbuf[..head_end]).into_owned();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("upgrade refused: {}", text.lines().next().unwrap_or("")),
            ));
        }
        let seed = (n as u32).wrapping_mul(0x9E37_79B9) ^ 0x5A5A_1234;
        Ok(WsConn {
            stream,
            rbuf,
            rpos: head_end,
            rlen,
            frag: None,
            mask: seed.to_le_bytes(),
        })
    }

    async fn read_more(&mut self) -> io::Result<bool> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
            if self.rbuf.len() > 64 * 1024 {
                // A burst grew the buffer: give the memory back while idle.
                self.rbuf.truncate(RBUF_MIN);
                self.rbuf.shrink_to_fit();
            }
        } else if self.rpos > 0 && self.rlen == self.rbuf.len() {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        if self.rlen == self.rbuf.len() {
            let grown = (self.rbuf.len() * 2).min(RBUF_MAX.max(self.rbuf.len() + 1));
            self.rbuf.resize(grown, 0);
        }
        let n = self.stream.read(&mut self.rbuf[self.rlen..]).await?;
        self.rlen += n;
        Ok(n > 0)
    }

    fn drain(&mut self, out: &mut Out, f: &mut impl FnMut(&[u8], &mut Out)) -> io::Result<bool> {
        loop {
            let avail = &mut self.rbuf[self.rpos..self.rlen];
            if avail.len() < 2 {
                return Ok(true);
            }
            let b0 = avail[0];
            let b1 = avail[1];
            let (len, mut hdr) = match b1 & 0x7f {
                126 => {
                    if avail.len() < 4 {
                        return Ok(true);
                    }
                    (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4)
                }
                127 => {
                    if avail.len() < 10 {
                        return Ok(true);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&avail[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                l => (l as usize, 2),
            };
            let masked = b1 & 0x80 != 0;
            let mask_at = hdr;
            if masked {
                hdr += 4;
            }
            if avail.len() < hdr + len {
                if hdr + len > self.rbuf.len() {
                    // A frame larger than the buffer: make room for it.
                    let need = hdr + len;
                    self.rbuf.copy_within(self.rpos..self.rlen, 0);
                    self.rlen -= self.rpos;
                    self.rpos = 0;
                    self.rbuf.resize(need.next_power_of_two(), 0);
                }
                return Ok(true);
            }
            if masked {
                let m = [
                    avail[mask_at],
                    avail[mask_at + 1],
                    avail[mask_at + 2],
                    avail[mask_at + 3],
                ];
                apply_mask(&mut avail[hdr..hdr + len], m);
            }
            let payload = &avail[hdr..hdr + len];
            let fin = b0 & 0x80 != 0;
            match b0 & 0x0f {
                0x0 => {
                    let frag = self.frag.get_or_insert_with(Vec::new);
                    frag.extend_from_slice(payload);
                    if fin {
                        let whole = self.frag.take().unwrap_or_default();
                        f(&whole, out);
                    }
                }
                0x1 | 0x2 => {
                    if fin {
                        f(payload, out);
                    } else {
                        self.frag = Some(payload.to_vec());
                    }
                }
                0x8 => return Ok(false),
                0x9 => out.control(0xA, payload),
                _ => {}
            }
            self.rpos += hdr + len;
        }
    }
}

// ---- long-polling ------------------------------------------------------------------------

type Sender = SendRequest<Full<Bytes>>;

pub struct PollConn {
    v3: bool,
    rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    ready: VecDeque<Bytes>,
    outq: Rc<RefCell<Vec<u8>>>,
    wake: Rc<Notify>,
    closing: Rc<Cell<bool>>,
}

async fn http_conn(target: &Target, n: usize) -> io::Result<Sender> {
    let stream = tcp_connect(target, n).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn http_call(
    s: &mut Sender,
    target: &Target,
    method: Method,
    uri: &str,
    body: Bytes,
) -> io::Result<Bytes> {
    s.ready().await.map_err(io::Error::other)?;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(hyper::header::HOST, &target.host);
    if method == Method::POST {
        req = req.header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    }
    let req = req.body(Full::new(body)).map_err(io::Error::other)?;
    let resp = s.send_request(req).await.map_err(io::Error::other)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(io::Error::other(format!(
            "{method} {uri}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )));
    }
    Ok(body)
}

fn open_sid(body: &[u8], v3: bool) -> io::Result<String> {
    let mut sid = None;
    split_payload(body, v3, |p| {
        if sid.is_none() && p.first() == Some(&b'0') {
            #[derive(serde::Deserialize)]
            struct Open {
                sid: String,
            }
            sid = serde_json::from_slice::<Open>(&p[1..]).ok().map(|o| o.sid);
        }
    })?;
    sid.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no open packet in the handshake",
        )
    })
}

impl PollConn {
    async fn connect(target: &Target, eio: u8, n: usize) -> io::Result<Self> {
        let v3 = eio == 3;
        let mut get = http_conn(target, n).await?;
        let first = http_call(
            &mut get,
            target,
            Method::GET,
            &format!("{}?EIO={eio}&transport=polling", target.path),
            Bytes::new(),
        )
        .await?;
        let sid = open_sid(&first, v3)?;
        let uri: Rc<str> = format!("{}?EIO={eio}&transport=polling&sid={sid}", target.path).into();
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(first));
        let closing = Rc::new(Cell::new(false));
        // The long-poll loop: one GET in flight at all times.
        {
            let target = target.clone();
            let uri = uri.clone();
            let closing = closing.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let r = http_call(&mut get, &target, Method::GET, &uri, Bytes::new()).await;
                    let stop = r.is_err() || closing.get();
                    if tx.send(r).is_err() || stop {
                        break;
                    }
                }
            });
        }
        // The sender loop: one POST in flight at most, carrying everything queued meanwhile.
        let outq: Rc<RefCell<Vec<u8>>> = Rc::default();
        let wake = Rc::new(Notify::new());
        let mut post = http_conn(target, n).await?;
        {
            let target = target.clone();
            let outq = outq.clone();
            let wake = wake.clone();
            let closing = closing.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let body = std::mem::take(&mut *outq.borrow_mut());
                    if body.is_empty() {
                        if closing.get() {
                            break;
                        }
                        wake.notified().await;
                        continue;
                    }
                    if http_call(&mut post, &target, Method::POST, &uri, Bytes::from(body))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Ok(PollConn {
            v3,
            rx,
            ready: VecDeque::new(),
            outq,
            wake,
            closing,
        })
    }

    async fn recv(&mut self) -> io::Result<bool> {
        match self.rx.recv().await {
            Some(Ok(body)) => {
                self.ready.push_back(body);
                while let Ok(more) = self.rx.try_recv() {
                    self.ready.push_back(more?);
                }
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    fn drain(&mut self, out: &mut Out, f: &mut impl FnMut(&[u8], &mut Out)) -> io::Result<bool> {
        let mut open = true;
        while let Some(body) = self.ready.pop_front() {
            split_payload(&body, self.v3, |p| {
                if p.first() == Some(&b'1') {
                    open = false;
                }
                f(p, out)
            })?;
        }
        Ok(open)
    }

    fn post(&self, buf: &[u8]) {
        let mut q = self.outq.borrow_mut();
        if !self.v3 && !q.is_empty() {
            q.push(0x1e);
        }
        q.extend_from_slice(buf);
        drop(q);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_payload_counts_utf16() {
        let body = "2:40\u{1e}x".to_string();
        let _ = body;
        let room = "42[\"createAndJoinRoom\",{\"room\":\"房间1\"}]";
        let mut framed = Vec::new();
        push_u64(&mut framed, utf16_len(room.as_bytes()) as u64);
        framed.push(b':');
        framed.extend_from_slice(room.as_bytes());
        framed.extend_from_slice(b"1:3");
        let mut got = Vec::new();
        split_payload(&framed, true, |p| {
            got.push(String::from_utf8(p.to_vec()).unwrap())
        })
        .unwrap();
        assert_eq!(got, vec![room.to_string(), "3".to_string()]);
    }

    #[test]
    fn mask_roundtrip() {
        let mut d: Vec<u8> = (0..37u8).collect();
        let orig = d.clone();
        apply_mask(&mut d, [1, 2, 3, 4]);
        assert_eq!(d[0], 1);
        assert_eq!(d[9], 9 ^ 2);
        apply_mask(&mut d, [1, 2, 3, 4]);
        assert_eq!(d, orig);
    }
}
