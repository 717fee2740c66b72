// Raw Engine.IO polling requests over plain HTTP, bound to a chosen loopback source address:
// what a flood of handshakes (or an abandoned one) looks like to the gateway, without a
// Socket.IO client library in the way.
import http from 'node:http';

/**
 * One HTTP request; resolves with {status, body, headers}. Never rejects on HTTP status;
 * rejects on a network error or after `ms`.
 * @param {string} base e.g. http://127.0.0.1:1234
 * @param {{method?: string, path: string, body?: string, from?: string, headers?: Record<string,string>, ms?: number, agent?: http.Agent}} opts
 */
export function request(base, { method = 'GET', path, body, from, headers = {}, ms = 10_000, agent }) {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method,
      localAddress: from,
      agent: agent ?? false,
      headers: body === undefined ? headers : { 'content-type': 'text/plain;charset=UTF-8', ...headers },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data, headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(ms, () => req.destroy(new Error(`no answer to ${method} ${path} in ${ms} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * Opens an Engine.IO polling session (the handshake GET) and returns its sid, or the refused
 * response. `eio` 3 also connects namespace `/` (the server does it by itself).
 */
export async function handshake(base, { eio = 4, from, headers, agent } = {}) {
  const res = await request(base, { path: `/socket.io/?EIO=${eio}&transport=polling&t=${Date.now()}`, from, headers, agent });
  const m = /"sid":"([^"]+)"/.exec(res.body);
  return { ...res, sid: m ? m[1] : null };
}

/** Sends one Engine.IO message packet (e.g. `40` = Socket.IO CONNECT to `/`) on a polling session. */
export function post(base, sid, packet, { eio = 4, from, headers, agent } = {}) {
  const body = eio === 3 ? `${packet.length}:${packet}` : packet;
  return request(base, { method: 'POST', path: `/socket.io/?EIO=${eio}&transport=polling&sid=${sid}`, body, from, headers, agent });
}

/** One polling GET on a session (long-polls until the server has something to say). */
export function poll(base, sid, { eio = 4, from, headers, ms, agent } = {}) {
  return request(base, { path: `/socket.io/?EIO=${eio}&transport=polling&sid=${sid}`, from, headers, ms, agent });
}

/**
 * Polls a session until what it received matches `pattern`, and returns all of it (packets
 * joined by \x1e). One poll is not enough to wait for a packet: engineioxide pings a v4 session
 * as soon as it opens, and a poll that finds that ping queued returns with it alone.
 */
export async function pollUntil(base, sid, pattern, { eio = 4, from, headers, agent, ms = 5_000 } = {}) {
  const deadline = Date.now() + ms;
  const received = [];
  while (Date.now() < deadline) {
    const answer = await poll(base, sid, { eio, from, headers, agent, ms: Math.max(deadline - Date.now(), 1) });
    if (answer.status !== 200) break;
    received.push(answer.body);
    if (pattern.test(received.join('\x1e'))) break;
  }
  return received.join('\x1e');
}
