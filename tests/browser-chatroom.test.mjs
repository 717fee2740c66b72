// Real WebRTC calls through the gateway's chatroom listener: the demo page (socket.io-client
// 4.x, speaking the protocol as the chatroom client does) in headless Chromium tabs.
//
// Three tabs make a full mesh; a name already in the room is refused by /checkUsername; one
// tab shares its screen and the other two receive it; one tab's socket is dropped and comes
// back inside the grace period (2 s in tests/fixtures/test.toml) and its calls carry on, and
// signalling from it works again; one tab leaves. Once with the client's default transports
// (polling, then the websocket upgrade) and once forced onto long-polling.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway } from './lib/gateway.mjs';
import {
  browserMissing, launchBrowser, demoUrl, openTab, peers, framesDecoded, socketId, waitAll, meshConnected, since,
} from './lib/browser.mjs';

const GRACE_MS = 2_000; // chatroom.reconnect_grace in tests/fixtures/test.toml

const skip = browserMissing();
let gateway;
let browser;

before(async () => {
  if (skip) return;
  gateway = await startGateway({});
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gateway?.stop();
});

/** In-page predicate: `n` received screens, connected and showing video, from `memberId` if given. */
function receivesScreens({ n, memberId }) {
  const ps = Object.values(window.demo.peers)
    .filter((p) => p.streamType === 'remoteDisplay' && (!memberId || p.memberId === memberId));
  return ps.length === n && ps.every((p) => p.state === 'connected' && p.videoWidth > 0);
}

/** The signalling events a page received, by name. */
const received = (page, event) =>
  page.evaluate((name) => window.demo.events.filter((e) => e.dir === 'in' && e.event === name).map((e) => e.data), event);

for (const transport of ['websocket', 'polling']) {
  // `websocket` here is the client's default: it starts on polling and upgrades.
  const forced = transport === 'polling' ? 'polling' : undefined;

  test(`chatroom over ${transport}: mesh, screen share, socket drop and return, leave`, { skip, timeout: 120_000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    try {
      const room = `room-${transport}`;
      const url = (user) => demoUrl(gateway.urls.chatroom, { room, user, autojoin: 1, transport: forced });

      // Three tabs, full mesh: each newcomer gets an offer from everyone already there.
      let t0 = performance.now();
      const tabs = [];
      for (const user of ['a', 'b', 'c']) tabs.push(await openTab(context, url(user), user));
      await waitAll(tabs, meshConnected, { n: 2 }, { what: 'camera links to the 2 others' });
      console.log(`chatroom ${transport}: 3 tabs connected (full mesh) in ${since(t0)} ms`);
      const [ta, tb, tc] = tabs;
      const ids = Object.fromEntries(await Promise.all(tabs.map(async (t) => [t.label, await socketId(t)])));
      for (const tab of tabs) {
        const others = Object.entries(ids).filter(([u]) => u !== tab.label).map(([, id]) => id).sort();
        assert.deepEqual((await peers(tab)).map((p) => p.memberId).sort(), others, `${tab.label} links to both others`);
        const name = await tab.evaluate(() => window.demo.socket.io.engine.transport.name);
        if (forced) assert.equal(name, 'polling', `${tab.label} stays on long-polling`);
      }
      if (!forced) {
        await waitAll(tabs, () => window.demo.socket.io.engine.transport.name === 'websocket', null, { what: 'websocket upgrade', timeout: 5_000 });
      }

      // A fourth tab that takes the name "a": /checkUsername says it is taken, the page refuses.
      const dup = await openTab(context, url('a'), 'dup');
      await waitAll([dup], () => document.getElementById('status').classList.contains('error'), null, { what: 'name refused', timeout: 10_000 });
      assert.equal(await dup.evaluate(() => window.demo.room), null);
      assert.ok(!(await dup.evaluate(() => window.demo.events.some((e) => e.event === 'join'))), 'no join was sent');
      await dup.close();

      // Tab a shares its screen: b and c each receive it (a display offer, answered remoteDisplay).
      t0 = performance.now();
      await ta.click('#share');
      await waitAll([tb, tc], receivesScreens, { n: 1, memberId: ids.a }, { what: "a's screen" });
      await waitAll([ta], () => {
        const ps = Object.values(window.demo.peers).filter((p) => p.streamType === 'display');
        return ps.length === 2 && ps.every((p) => p.state === 'connected');
      }, null, { what: 'its 2 display links connected', timeout: 5_000 });
      const screen = (await peers(tb)).find((p) => p.streamType === 'remoteDisplay');
      const camera = (await peers(tb)).find((p) => p.streamType === 'user');
      assert.notEqual(screen.videoWidth, camera.videoWidth, 'the screen is a different stream from the camera');
      console.log(`chatroom ${transport}: screen of a shown in b and c in ${since(t0)} ms (${screen.videoWidth} px wide)`);

      // Tab b's socket drops and reconnects inside the grace period.
      const before = Object.fromEntries(await Promise.all(tabs.map(async (t) => [t.label, (await peers(t)).map((p) => p.id).sort()])));
      // A short blip: the client retries after 200 ms (its default is 0.5 to 1.5 s, too close
      // to the tests' 2 s grace period to be sure of coming back inside it).
      await tb.evaluate(() => window.demo.socket.io.reconnectionDelay(200).randomizationFactor(0));
      await tb.evaluate(() => window.demo.socket.io.engine.close());
      await waitAll([tb], (old) => window.demo.socket.connected && window.demo.socket.id !== old
        && window.demo.events.some((e) => e.dir === 'out' && e.event === 'reconnect'), ids.b, { what: 'socket back and reconnect sent', timeout: 10_000 });
      // Measured in the page: from the socket's disconnect to the reconnect event sent.
      const back = await tb.evaluate(() => {
        const t = (dir, name) => window.demo.events.findLast((e) => e.dir === dir && e.event === name).t;
        return t('out', 'reconnect') - t('info', 'disconnect');
      });
      assert.ok(back < GRACE_MS, `b came back in ${back} ms, inside the ${GRACE_MS} ms grace period`);
      const newB = await socketId(tb);
      const sent = await tb.evaluate(() => window.demo.events.find((e) => e.dir === 'out' && e.event === 'reconnect').data);
      assert.deepEqual(Object.keys(sent).sort(), ['id', 'roomname', 'username']);
      assert.deepEqual([sent.username, sent.roomname], ['b', room]);
      // Past the grace period: had the gateway evicted b, a and c would have had `leave`.
      await sleep(GRACE_MS + 1_000);
      await waitAll(tabs, meshConnected, { n: 2 }, { what: 'camera links still up after the drop', timeout: 5_000 });
      await waitAll([tb, tc], receivesScreens, { n: 1 }, { what: "a's screen still shown", timeout: 5_000 });
      for (const tab of tabs) {
        assert.deepEqual((await peers(tab)).map((p) => p.id).sort(), before[tab.label], `${tab.label} kept the same peer connections`);
      }
      assert.deepEqual(await received(ta, 'leave'), [], 'a heard no leave');
      assert.deepEqual(await received(tc, 'leave'), [], 'c heard no leave');
      const askedToOffer = (await received(ta, 'reconnect')).filter((m) => m.type === 'getOffer');
      assert.ok(askedToOffer.length >= 1, 'a was asked to renegotiate its link to b (reconnect getOffer)');
      // Media still flows on every call.
      const frames0 = await Promise.all(tabs.map(framesDecoded));
      await sleep(1_000);
      const frames1 = await Promise.all(tabs.map(framesDecoded));
      for (const [i, tab] of tabs.entries()) {
        for (const [id, n] of Object.entries(frames1[i])) {
          assert.ok(n > (frames0[i][id] ?? 0), `${tab.label}: video from ${id} still decoding`);
        }
      }
      const renegotiated = (await received(tb, 'reconnect')).some((m) => m.type === 'offer');
      console.log(`chatroom ${transport}: b's socket back in ${back} ms, calls still connected after the grace period`
        + ` (renegotiation through reconnectWork ${renegotiated ? 'done' : 'not routed: reconnect getOffer carries no memberId'})`);

      // Signalling from b's new socket works: b shares its screen, a and c receive it.
      t0 = performance.now();
      await tb.click('#share');
      await waitAll([ta, tc], receivesScreens, { n: 1, memberId: newB }, { what: "b's screen after its return" });
      console.log(`chatroom ${transport}: screen of b (new socket) shown in a and c in ${since(t0)} ms`);

      // Tab c leaves: a and b close their links to c and keep theirs.
      await tc.click('#leave');
      await waitAll([ta, tb], (id) => !Object.values(window.demo.peers).some((p) => p.memberId === id), ids.c, { what: 'links to c closed', timeout: 10_000 });
      await waitAll([ta, tb], meshConnected, { n: 1 }, { what: 'a and b still connected', timeout: 5_000 });
      assert.equal((await peers(tc)).length, 0);
      assert.ok((await received(ta, 'leave')).length >= 1, 'a was told by a leave event');
    } finally {
      await context.close();
    }
  });
}
