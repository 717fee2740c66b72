// A flood of raw Engine.IO polling handshakes from one source address, run in a worker thread
// so that the flooder does not slow down the test's own clients (the flood competes with them
// for the gateway, not for the test's event loop).
//
// Each handshake opens a session nobody polls again; Engine.IO v4 sessions also send their
// Socket.IO CONNECT (v3 sessions are connected by the server itself). Bounded by `ms` and `max`.
import http from 'node:http';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { handshake, post } from './engine-raw.mjs';

/**
 * @param {string} base gateway URL
 * @param {{eio: 3|4, ms: number, max: number, workers?: number, from?: string}} opts
 * @returns {{done: Promise<{sent: number, opened: number, refused: number, ms: number}>, stop: () => void}}
 *   `stop()` ends the flood early; `done` resolves with its figures.
 */
export function startFlood(base, opts) {
  const w = new Worker(new URL(import.meta.url), { workerData: { base, ...opts } });
  const done = new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => { if (code !== 0) reject(new Error(`flood worker exited with ${code}`)); });
  });
  return { done, stop: () => w.postMessage('stop') };
}

/** A flood that runs its full `ms` (or `max` handshakes). */
export function flood(base, opts) {
  return startFlood(base, opts).done;
}

async function run({ base, eio, ms, max, workers = 16, from = '127.0.0.1' }) {
  const t0 = Date.now();
  let deadline = t0 + ms;
  parentPort.on('message', () => { deadline = 0; });
  const agent = new http.Agent({ localAddress: from, keepAlive: true, maxSockets: workers });
  let sent = 0;
  let opened = 0;
  let refused = 0;
  const loop = async () => {
    while (Date.now() < deadline && sent < max) {
      sent += 1;
      try {
        const h = await handshake(base, { eio, agent });
        if (!h.sid) { refused += 1; continue; }
        opened += 1;
        if (eio === 4) await post(base, h.sid, '40', { eio, agent });
      } catch {
        refused += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, loop));
  agent.destroy();
  parentPort.removeAllListeners('message');
  return { sent, opened, refused, ms: Date.now() - t0 };
}

if (!isMainThread && workerData?.base) {
  parentPort.postMessage(await run(workerData));
  // Sockets the gateway has not closed yet would keep this thread (and the test) alive.
  process.exit(0);
}
