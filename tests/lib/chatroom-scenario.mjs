// Chatroom additions to the generic scenario replayer (tests/lib/scenario.mjs, used unchanged).
//
// The replayer drives "clients" made by a factory. This factory makes three kinds, chosen by
// the client's name in the scenario file:
//   - any name starting with "http" (e.g. "http", "httpB"): plain HTTP on the chatroom origin.
//       {"client":"http","emit":["GET","/checkUsername?username=a&roomname=x"]}
//       {"client":"http","expect":["response",200,{"success":true,"isRepeat":false}]}
//     The response body is parsed as JSON when the Content-Type says so, otherwise it arrives
//     as {"text": "..."}; a JSON error body must have Content-Type application/json.
//     A fourth argument {"until": body} repeats the request (every 25 ms, for up to 5 s) until
//     the body is exactly `body`, and then delivers that response (or the last one): the way
//     a scenario waits for a join that gets no answer to reach the server before another
//     client acts on it.
//       {"client":"http","emit":["GET","/checkUsername?username=a&roomname=x",{},{"until":{"success":true,"isRepeat":true}}]}
//     With {"query": {...}} in that argument, its entries are added to the path's query string
//     (percent-encoded), so that a test can rewrite room names as plain JSON strings.
//   - any name starting with "metrics": reads one value from the admin /metrics endpoint,
//     summed over samples labelled protocol="chatroom" (and any labels given).
//       {"client":"metrics","emit":["gauge","gateway_members"]}
//       {"client":"metrics","expect":["gauge","gateway_members",3]}
//   - every other name: a socket.io-client 4.x socket, as the chatroom front-end uses.
//
// Free text: the wire spec fixes the `type` of every `error` event, but its `message` is free
// text except for `repeat` (the original's exact Chinese sentence). Likewise the `message` of
// an HTTP error body. So a non-empty string `message` in an `error` event whose type is not
// "repeat", or in an HTTP body with status >= 400, is seen by the scenario as "<text>". An
// empty or non-string message stays as it is, and so fails the comparison.
import { isDeepStrictEqual } from 'node:util';
import { socketIoV4Factory, withTimeout, metricValue, eventually } from './scenario.mjs';

export const FREE_TEXT = '<text>';

/** Replaces free-text messages as described above; returns the (possibly new) args. */
export function normalizeEvent(event, args) {
  if (event !== 'error' || !args.length) return args;
  const [first, ...rest] = args;
  if (!first || typeof first !== 'object' || first.type === 'repeat') return args;
  return [withFreeMessage(first), ...rest];
}

function withFreeMessage(obj) {
  if (typeof obj.message !== 'string' || obj.message.length === 0) return obj;
  const out = {};
  for (const [k, v] of Object.entries(obj)) out[k] = k === 'message' ? FREE_TEXT : v;
  return out;
}

/**
 * A client factory for `replay` against gateway `gw` (from startTestGateway).
 * @param {{urls: Record<string,string>, metrics: () => Promise<Record<string,number>>}} gw
 * @param {{transports?: string[], url?: string, options?: object}} opts
 */
export function chatroomFactory(gw, { transports, url, options } = {}) {
  const base = url ?? gw.urls.chatroom;
  const sio = socketIoV4Factory(base, { transports, options });
  return async (name) => {
    if (name.startsWith('http')) return httpClient(name, base);
    if (name.startsWith('metrics')) return metricsClient(name, gw);
    const client = await sio(name);
    const onEvent = client.onEvent;
    client.onEvent = (cb) => onEvent((event, args) => cb(event, normalizeEvent(event, args)));
    return client;
  };
}

/** A pseudo-client whose `emit(method, path)` makes an HTTP request and "receives" the response. */
function httpClient(name, base) {
  let sink = () => {};
  let closed = false;
  return {
    name,
    id: null,
    emit(method, path, headers = {}, { until, query } = {}) {
      if (query) path += (path.includes('?') ? '&' : '?') + new URLSearchParams(query);
      const once = async () => {
        const res = await withTimeout(fetch(base + path, { method, headers }), 5000, `${name} ${method} ${path}`);
        const type = res.headers.get('content-type') ?? '';
        const text = await res.text();
        let body = type.includes('application/json') ? JSON.parse(text) : { text };
        if (res.status >= 400 && body && typeof body === 'object') body = withFreeMessage(body);
        return [res.status, body];
      };
      (async () => {
        const deadline = Date.now() + 5000;
        let response = await once();
        while (until !== undefined && !isDeepStrictEqual(response[1], until) && Date.now() < deadline && !closed) {
          await new Promise((r) => setTimeout(r, 25));
          response = await once();
        }
        return response;
      })()
        .then((response) => {
          if (!closed) sink('response', response);
        })
        .catch((e) => {
          if (!closed) sink('http_error', [String(e?.message ?? e)]);
        });
    },
    onEvent(cb) {
      sink = cb;
    },
    disconnect() {},
    close() {
      closed = true;
    },
  };
}

/** A pseudo-client whose `emit(kind, name, labels?)` reads a metric of protocol "chatroom". */
function metricsClient(name, gw) {
  let sink = () => {};
  let closed = false;
  return {
    name,
    id: null,
    emit(kind, metric, labels = {}) {
      gw.metrics()
        .then((m) => {
          if (!closed) sink(kind, [metric, metricValue(m, metric, { protocol: 'chatroom', ...labels })]);
        })
        .catch((e) => {
          if (!closed) sink('metrics_error', [String(e?.message ?? e)]);
        });
    },
    onEvent(cb) {
      sink = cb;
    },
    disconnect() {},
    close() {
      closed = true;
    },
  };
}


/**
 * Waits until the chatroom gauges say no room and no member is left (after the grace period
 * of clients that closed). On failure the message also shows what the admin /api/rooms view
 * says, so a stale gauge can be told apart from a real leak.
 */
export async function assertReleased(gw, ms = 6000) {
  const deadline = Date.now() + ms;
  let gauges;
  for (;;) {
    const m = await gw.metrics();
    gauges = { members: metricValue(m, 'gateway_members', { protocol: 'chatroom' }), rooms: metricValue(m, 'gateway_rooms', { protocol: 'chatroom' }) };
    if (gauges.members === 0 && gauges.rooms === 0) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  let view = 'unavailable';
  try {
    const body = await (await withTimeout(fetch(`${gw.urls.admin}/api/rooms`), 3000, 'GET /api/rooms')).json();
    view = JSON.stringify(body.chatroom ?? body).slice(0, 1500);
  } catch (e) {
    view = `unavailable (${e?.message ?? e})`;
  }
  throw new Error(`chatroom rooms and members not back to 0 within ${ms} ms: gauges ${JSON.stringify(gauges)}; admin /api/rooms chatroom view: ${view}`);
}

/**
 * Resolves once `GET base/checkUsername` says `username` is taken in `roomname`: a join gets no
 * answer, so this is how a test knows it reached the server (in a cluster, any node's
 * `base` will do) before another client acts on it. Rejects after `ms`.
 */
export async function untilJoined(base, username, roomname, ms = 5000) {
  const url = `${base}/checkUsername?${new URLSearchParams({ username, roomname })}`;
  await eventually(async () => {
    const answer = await withTimeout(fetch(url).then((r) => r.text()), 5000, `GET ${url}`);
    if (answer !== '{"success":true,"isRepeat":true}') throw new Error(`/checkUsername answered ${answer}`);
    return true;
  }, ms, `${username} in room ${roomname}`);
}
