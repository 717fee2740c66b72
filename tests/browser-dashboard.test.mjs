// The admin dashboard in a real browser: a room appears with its members while clients
// join, and disappears when they leave; opened late, it draws the last minutes at once and
// keeps long member ids on one line. Its screenshot goes to a temporary folder; with
// DOCS_PICTURES=1 it refreshes docs/dashboard.png instead (README "Tests").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { io as ioV4 } from 'socket.io-client';
import { startGateway, ROOT } from './lib/gateway.mjs';
import { browserMissing, launchBrowser } from './lib/browser.mjs';
import { withTimeout } from './lib/scenario.mjs';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');
const once = (s, event) => withTimeout(new Promise((resolve) => s.once(event, resolve)), 5000, event);

test('the dashboard shows a room appear and disappear as clients join and leave', { skip: browserMissing() }, async () => {
  const gw = await startGateway({ sets: ['admin.token=dash'] });
  const browser = await launchBrowser();
  const clients = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await page.goto(`${gw.urls.admin}/?token=dash`, { timeout: 15_000 });
    await page.waitForSelector('#conn.live', { timeout: 10_000 });
    await page.waitForSelector('[data-protocol="chatroom"] .empty', { timeout: 5000 });

    // Two chatroom members and three WebRtcRoom members join.
    for (const name of ['alice', 'bob']) {
      const s = ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false });
      await once(s, 'connect');
      s.emit('join', { id: `u-${name}`, username: name, roomname: 'standup' });
      clients.push(s);
    }
    for (let i = 0; i < 3; i++) {
      const s = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
      await once(s, 'connect');
      s.emit('createAndJoinRoom', { room: 'call-42' });
      await once(s, 'created');
      clients.push(s);
    }
    // Relay some traffic so the rate chart has something to draw.
    const [w1, w2] = clients.slice(2);
    for (let i = 0; i < 50; i++) w1.emit('candidate', { from: w1.id, to: w2.id, room: 'call-42', candidate: { i } });

    const chatRoom = page.locator('[data-protocol="chatroom"] tr.room[data-room="standup"]');
    await chatRoom.waitFor({ timeout: 5000 });
    assert.match(await chatRoom.textContent(), /standup — 2 members/);
    const names = await page.locator('[data-protocol="chatroom"] tr[data-member] td:nth-child(2)').allTextContents();
    assert.deepEqual(names, ['alice', 'bob']);
    const webRoom = page.locator('[data-protocol="webrtcroom"] tr.room[data-room="call-42"]');
    await webRoom.waitFor({ timeout: 5000 });
    assert.match(await webRoom.textContent(), /call-42 — 3 members/);
    const members = await page.locator('[data-protocol="webrtcroom"] [data-k="members"]').textContent();
    assert.equal(members, '3');

    await page.waitForTimeout(2500);
    const out = process.env.DOCS_PICTURES === '1'
      ? path.join(ROOT, 'docs', 'dashboard.png')
      : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gw-dashboard-')), 'dashboard.png');
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await page.screenshot({ path: out });
    assert.ok(fs.statSync(out).size > 10_000, 'screenshot written');
    if (process.env.DOCS_PICTURES !== '1') fs.rmSync(path.dirname(out), { recursive: true, force: true });

    // Everyone leaves: both rooms disappear.
    for (const s of clients) s.close();
    await page.waitForSelector('[data-protocol="webrtcroom"] .empty', { timeout: 5000 });
    await page.waitForSelector('[data-protocol="chatroom"] tr.room', { state: 'detached', timeout: 20_000 });
  } finally {
    for (const s of clients) s.close();
    await browser.close();
    await gw.stop();
  }
});

test('opened late, the dashboard draws the recent traffic at once and keeps long ids on one line', { skip: browserMissing() }, async () => {
  const gw = await startGateway();
  const clients = [];
  const browser = await launchBrowser();
  try {
    // Ids such as several UUIDs joined, and names with spaces, have places to break a line.
    const longId = Array.from({ length: 4 }, () => crypto.randomUUID()).join('-');
    for (const [id, name] of [[longId, 'a rather long user name with spaces in it'], ['short', 'short']]) {
      const s = ioV4(gw.urls.chatroom, { forceNew: true, reconnection: false });
      await once(s, 'connect');
      s.emit('join', { id, username: name, roomname: 'wide' });
      clients.push(s);
    }
    for (let i = 0; i < 2; i++) {
      const s = ioV2(gw.urls.webrtcroom, { forceNew: true, reconnection: false, transports: ['websocket'] });
      await once(s, 'connect');
      s.emit('createAndJoinRoom', { room: 'early' });
      await once(s, 'created');
      clients.push(s);
    }
    const [w1, w2] = clients.slice(2);
    // Traffic in the seconds before anyone opens the dashboard.
    for (let second = 0; second < 3; second++) {
      for (let i = 0; i < 30; i++) w1.emit('candidate', { from: w1.id, to: w2.id, room: 'early', candidate: { i } });
      await new Promise((r) => setTimeout(r, 1000));
    }
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await page.goto(`${gw.urls.admin}/`, { timeout: 15_000 });
    await page.waitForSelector('#conn.live', { timeout: 10_000 });
    await page.locator('[data-protocol="chatroom"] tr.room[data-room="wide"]').waitFor({ timeout: 5000 });
    // Right after connecting, the chart holds the seconds with traffic from before the page
    // was opened (without the gateway's history it would only fill with zeros from now on).
    await page.waitForFunction(() => history.webrtcroom?.relayed.length >= 3, null, { timeout: 10_000 });
    const rates = await page.evaluate(() => history.webrtcroom.relayed);
    assert.ok(rates.length >= 3, `rates at connect: ${JSON.stringify(rates)}`);
    assert.ok(rates.some((r) => r > 0), `some traffic in ${JSON.stringify(rates)}`);
    const heights = await page.evaluate(() => [...document.querySelectorAll('[data-protocol="chatroom"] tr[data-member]')]
      .map((tr) => [tr.dataset.member.length, tr.getBoundingClientRect().height]));
    assert.equal(heights.length, 2, JSON.stringify(heights));
    assert.equal(heights[0][1], heights[1][1], `a long id's row is as tall as a short one's: ${JSON.stringify(heights)}`);
  } finally {
    for (const s of clients) s.close();
    await browser.close();
    await gw.stop();
  }
});
