// Headless Chromium (Debian's, driven by playwright-core) for the browser tests of the demo
// pages: real WebRTC calls set up through the gateway, on loopback only.
//
// Each page exposes its state on `window.demo` (see demo/*/app.js): `peers` (one entry per
// RTCPeerConnection, with `state` and `videoWidth`), `events` (the signalling log) and
// `socket`. The helpers here read it.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Why the browser tests cannot run here, or `false`. In CI a missing browser is a failure. */
export function browserMissing() {
  if (fs.existsSync(CHROMIUM) || process.env.CI) return false;
  return `${CHROMIUM} not found (bash tests/run.sh installs Debian's chromium)`;
}

const ARGS = [
  '--no-sandbox', // the tests run as root in CI
  '--headless',
  '--disable-gpu',
  // Camera, microphone and screen capture: granted without a prompt, fed by fake devices.
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  // Let remote videos play without a user gesture, as a user's click would.
  '--autoplay-policy=no-user-gesture-required',
  // ICE on loopback: gather 127.0.0.1 candidates (off by default), and give host candidates
  // as plain addresses, not mDNS names that nothing resolves here.
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // No traffic to the outside (the machine's network is closed).
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

/** Starts the browser. Playwright gives it a fresh, temporary user-data-dir. */
export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30_000 });
}

/** A demo page URL on `base` (a listener's URL) with the given query parameters. */
export function demoUrl(base, query) {
  const url = new URL('/demo/', base);
  for (const [k, v] of Object.entries(query)) if (v != null) url.searchParams.set(k, String(v));
  return url.href;
}

/** Opens `url` in a new tab of `context`; page errors are collected for failure messages. */
export async function openTab(context, url, label) {
  const page = await context.newPage();
  page.label = label;
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(url, { timeout: 15_000 });
  return page;
}

/** Plain data about each RTCPeerConnection of a page. */
export function peers(page) {
  return page.evaluate(() =>
    Object.entries(window.demo.peers).map(([id, p]) => ({
      id,
      memberId: p.memberId ?? p.id,
      streamType: p.streamType ?? 'user',
      state: p.state,
      videoWidth: p.videoWidth,
    })),
  );
}

/** Frames decoded so far on each incoming video of a page, by peer id. */
export function framesDecoded(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const [id, p] of Object.entries(window.demo.peers)) {
      const stats = await p.pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') out[id] = (out[id] ?? 0) + (s.framesDecoded ?? 0);
      });
    }
    return out;
  });
}

/** The page's own socket id. */
export function socketId(page) {
  return page.evaluate(() => window.demo.socket.id);
}

/**
 * Waits until `predicate(arg)` is true in every page (polled every 100 ms, not on animation
 * frames, which background tabs may not get). On timeout the error names the page and shows
 * its peers and latest signalling events.
 */
export async function waitAll(pages, predicate, arg, { timeout = 20_000, what = 'condition' } = {}) {
  await Promise.all(
    pages.map(async (page) => {
      try {
        await page.waitForFunction(predicate, arg, { timeout, polling: 100 });
      } catch (e) {
        throw new Error(`${page.label}: ${what} not reached in ${timeout} ms\n${await describe(page)}\n${e.message.split('\n')[0]}`);
      }
    }),
  );
}

/** A page's peers, latest events and errors, for failure messages. */
export async function describe(page) {
  try {
    const state = await page.evaluate(() => ({
      socket: window.demo.socket && { id: window.demo.socket.id, connected: window.demo.socket.connected },
      events: window.demo.events.slice(-25).map((e) => `${e.t} ${e.dir} ${e.event} ${JSON.stringify(e.data)?.slice(0, 160)}`),
    }));
    return [
      `  socket: ${JSON.stringify(state.socket)}`,
      `  peers: ${JSON.stringify(await peers(page))}`,
      `  errors: ${JSON.stringify(page.errors)}`,
      '  last events:',
      ...state.events.map((l) => `    ${l}`),
    ].join('\n');
  } catch (e) {
    return `  (page state unavailable: ${e.message})`;
  }
}

/** In-page predicate: exactly `n` peers of `streamType`, all connected with video. */
export function meshConnected({ n, streamType = 'user' }) {
  const ps = Object.values(window.demo.peers).filter((p) => (p.streamType ?? 'user') === streamType);
  return ps.length === n && ps.every((p) => p.state === 'connected' && p.videoWidth > 0);
}

/** Milliseconds since `t0`, for the printed timings. */
export const since = (t0) => Math.round(performance.now() - t0);
