// Replays a conformance scenario (a JSON data file under protocols/<name>/scenarios/) against
// a running gateway, with whatever Socket.IO client a protocol's apps use.
//
// A scenario is a list of clients and a list of steps, run strictly in order:
//   {"client":"A","connect":true}                 connect A now (clients in "clients" connect first)
//   {"client":"A","emit":["event", arg, ...]}      A emits; ["event"] alone emits no payload
//   {"client":"A","expect":["event", arg, ...]}    A's next received event is exactly this
//   {"client":"A","disconnect":true}              A leaves as the app does (socket close)
//   {"client":"A","drop":true}                    A's transport closes under it (app killed)
//   {"quiet":200}                                 nobody has or gets any event for 200 ms
//   {"note":"..."}                                nothing (a comment)
// Strings may contain <id:X>, replaced by the id client X knows itself by (its socket.id).
//
// Checks: each `expect` takes the client's *next* event, so the order of events per client is
// checked; payloads are compared with deepStrictEqual (JSON types matter: 7 is not "7") and,
// unless the step says "anyKeyOrder":true, with their keys in the order given in the file.
// After the last step the replayer waits `quietMs` and fails if any client holds an event no
// step consumed. Every wait is bounded.
//
// Order across different clients is not checked: each client has its own connection, so the
// order in which two clients observe events says nothing reliable about the server.
//
// A client factory is `async (name) => ScenarioClient`:
//   { id, emit(event, ...args), onEvent(cb(event, args)), disconnect(), drop?(), close() }
// Factories for socket.io-client 2.x and 4.x are below.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startGateway } from './gateway.mjs';

const require = createRequire(import.meta.url);

/** Reads every `*.json` scenario in `dir`, sorted by file name. */
export function loadScenarios(dir) {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, ...JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) }));
}

/** Events received by one client, consumed in order by `next`. */
export class EventQueue {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.arrivals = []; // performance.now() at which each queued item arrived
    this.seen = [];
    this.waiter = null;
  }
  push(event, args) {
    const item = [event, ...args];
    this.seen.push(item);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(item);
    } else {
      this.items.push(item);
      this.arrivals.push(performance.now());
    }
  }
  /** The next event, or a rejection after `timeoutMs`. */
  next(timeoutMs, what = 'an event') {
    if (what.length > 300) what = `${what.slice(0, 300)}…`;
    if (this.items.length) {
      this.arrivals.shift();
      return Promise.resolve(this.items.shift());
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`${this.name}: no event within ${timeoutMs} ms while waiting for ${what}; received so far: ${brief(this.seen)}`));
      }, timeoutMs);
      this.waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }
  /** Removes and returns whatever is queued. */
  drain() {
    this.arrivals.splice(0);
    return this.items.splice(0);
  }
  /** Removes and returns what arrived at or before `time` (a performance.now() value). */
  drainUntil(time) {
    const n = this.arrivals.filter((t) => t <= time).length;
    this.arrivals.splice(0, n);
    return this.items.splice(0, n);
  }
}

function brief(items) {
  const text = JSON.stringify(items);
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

/** Replaces `<id:X>` in every string of `value` (keys untouched, key order kept). */
export function substitute(value, ids) {
  if (typeof value === 'string') {
    return value.replace(/<id:([^>]+)>/g, (_, name) => {
      if (!(name in ids)) throw new Error(`placeholder <id:${name}>: client ${name} is not connected`);
      return ids[name];
    });
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, ids));
  if (value && typeof value === 'object') {
    // fromEntries defines own properties, so a key such as "__proto__" stays a plain key.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, ids)]));
  }
  return value;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Replays `scenario` with clients made by `factory`.
 * @param {{clients?: string[], steps: object[], file?: string}} scenario
 * @param {(name: string) => Promise<object>} factory
 * @param {{stepTimeoutMs?: number, quietMs?: number, beforeClose?: (clients: Record<string, object>) => Promise<void>}} opts
 */
export async function replay(scenario, factory, { stepTimeoutMs = 5000, quietMs = 250, beforeClose } = {}) {
  const label = scenario.file ?? scenario.name ?? 'scenario';
  const clients = {};
  const queues = {};
  const ids = {};
  const connect = async (name) => {
    assert.ok(!clients[name], `${label}: client ${name} connected twice`);
    const client = await connectClient(factory, name, stepTimeoutMs);
    clients[name] = client;
    queues[name] = client.queue;
    ids[name] = client.id;
  };
  // `until`: only what arrived by then counts (a quiet period that overran because this process
  // was held up leaves later events to the next steps).
  const assertQuiet = (when, until) => {
    for (const [name, q] of Object.entries(queues)) {
      const extra = until === undefined ? q.drain() : q.drainUntil(until);
      assert.deepStrictEqual(extra, [], `${label}: ${when}: client ${name} received unexpected events ${brief(extra)}`);
    }
  };
  try {
    for (const name of scenario.clients ?? []) await connect(name);
    for (const [index, step] of scenario.steps.entries()) {
      const where = `${label} step ${index + 1} ${JSON.stringify(step)}`;
      if ('note' in step && Object.keys(step).length === 1) continue;
      if ('quiet' in step) {
        assertQuiet(`${where} (before)`);
        const start = performance.now();
        await sleep(step.quiet);
        assertQuiet(where, start + step.quiet);
        continue;
      }
      const name = step.client;
      if (step.connect) {
        await connect(name);
        continue;
      }
      const client = clients[name];
      assert.ok(client, `${where}: client ${name} is not connected`);
      if (step.emit) {
        const [event, ...args] = substitute(step.emit, ids);
        client.emit(event, ...args);
      } else if (step.expect) {
        const expected = substitute(step.expect, ids);
        const actual = await client.queue.next(stepTimeoutMs, `${where}`);
        assert.deepStrictEqual(actual, expected, `${where}: ${name} received ${brief(actual)}`);
        if (!step.anyKeyOrder) {
          assert.equal(JSON.stringify(actual), JSON.stringify(expected), `${where}: same content but different key order`);
        }
      } else if (step.disconnect) {
        await client.disconnect();
      } else if (step.drop) {
        assert.ok(client.drop, `${where}: this client factory cannot drop a transport`);
        await client.drop();
      } else {
        throw new Error(`${where}: unknown step`);
      }
    }
    await sleep(quietMs);
    assertQuiet(`${label}: after the last step`);
    if (beforeClose) await beforeClose(clients);
  } finally {
    for (const c of Object.values(clients)) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  }
  return { ids };
}

/** Rejects with `what` if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Connects one client outside a scenario; its events collect in `client.queue`. */
export async function connectClient(factory, name, ms = 6000) {
  const client = await withTimeout(factory(name), ms, `connecting client ${name}`);
  client.queue = new EventQueue(name);
  client.onEvent((event, args) => client.queue.push(event, args));
  return client;
}

// ---------------------------------------------------------------------------------------------
// Client factories.

/** An error a client emitted, with the transport's detail (an HTTP status, a socket error). */
function why(e) {
  const detail = e?.description;
  if (detail === undefined || detail === null) return `${e?.message ?? e}`;
  const text = typeof detail === 'object' ? `${detail.message ?? ''} ${detail.code ?? ''}`.trim() : detail;
  return `${e?.message ?? e} (${text})`;
}

function connected(socket, ms, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', (e) => reject(new Error(`connect_error: ${why(e)}`)));
      socket.once('error', (e) => reject(new Error(`error: ${why(e)}`)));
    }),
    ms,
    what,
  );
}

/**
 * socket.io-client 2.x (Engine.IO v3), as the WebRtcRoom apps.
 * @param {string} url full URL including a namespace and query if wanted
 * @param {{transports?: string[], options?: object, connectTimeoutMs?: number}} opts
 */
export function socketIoV2Factory(url, { transports, options = {}, connectTimeoutMs = 5000 } = {}) {
  const ioV2 = require('socket.io-client-v2');
  return async (name) => {
    const socket = ioV2(url, {
      forceNew: true,
      reconnection: false,
      timeout: connectTimeoutMs,
      ...(transports ? { transports } : {}),
      ...options,
    });
    // 2.x has no onAny: every incoming event packet goes through onevent, in arrival order.
    let sink = null;
    const backlog = [];
    const onevent = socket.onevent;
    socket.onevent = function (packet) {
      const [event, ...args] = packet.data ?? [];
      if (sink) sink(event, args);
      else backlog.push([event, args]);
      return onevent.call(this, packet);
    };
    try {
      await connected(socket, connectTimeoutMs + 1000, `socket.io 2.x client ${name} connecting to ${url}`);
    } catch (e) {
      socket.close();
      throw e;
    }
    return {
      name,
      id: socket.id,
      socket,
      emit: (event, ...args) => socket.emit(event, ...args),
      onEvent(cb) {
        sink = cb;
        for (const [e, a] of backlog.splice(0)) cb(e, a);
      },
      transport: () => socket.io.engine?.transport?.name,
      disconnect: () => socket.close(),
      drop: () => socket.io.engine.close(),
      close: () => socket.close(),
    };
  };
}

/**
 * socket.io-client 4.x (Engine.IO v4), as the chatroom apps.
 * @param {string} url
 * @param {{transports?: string[], options?: object, connectTimeoutMs?: number}} opts
 */
export function socketIoV4Factory(url, { transports, options = {}, connectTimeoutMs = 5000 } = {}) {
  const { io } = require('socket.io-client');
  return async (name) => {
    const socket = io(url, {
      forceNew: true,
      reconnection: false,
      timeout: connectTimeoutMs,
      ...(transports ? { transports } : {}),
      ...options,
    });
    let sink = null;
    const backlog = [];
    socket.onAny((event, ...args) => (sink ? sink(event, args) : backlog.push([event, args])));
    try {
      await connected(socket, connectTimeoutMs + 1000, `socket.io 4.x client ${name} connecting to ${url}`);
    } catch (e) {
      socket.close();
      throw e;
    }
    return {
      name,
      id: socket.id,
      socket,
      emit: (event, ...args) => socket.emit(event, ...args),
      onEvent(cb) {
        sink = cb;
        for (const [e, a] of backlog.splice(0)) cb(e, a);
      },
      transport: () => socket.io.engine?.transport?.name,
      disconnect: () => socket.disconnect(),
      drop: () => socket.io.engine.close(),
      close: () => socket.disconnect(),
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Gateway and metrics helpers shared by the protocol test files.

/** Starts a gateway from tests/fixtures/test.toml plus `sets` (see gateway.mjs). */
export function startTestGateway(sets = [], opts = {}) {
  return startGateway({ ...opts, sets, env: opts.env ?? {} });
}

/**
 * Sum of the samples of metric `name` whose labels include all of `labels`
 * (0 when there is none). `metrics` is what gateway.metrics() returned.
 */
export function metricValue(metrics, name, labels = {}) {
  let sum = 0;
  for (const [key, value] of Object.entries(metrics)) {
    const m = /^([^{]+)(?:\{(.*)\})?$/.exec(key);
    if (!m || m[1] !== name) continue;
    const have = {};
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have[pair[1]] = pair[2];
    if (Object.entries(labels).every(([k, v]) => have[k] === String(v))) sum += value;
  }
  return sum;
}

/** Polls `check` (async, returns truthy when done) every 25 ms for up to `ms`. */
export async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`not reached within ${ms} ms: ${what} (last: ${last?.message ?? last})`);
    await sleep(25);
  }
}
