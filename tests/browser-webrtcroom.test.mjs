// Real WebRTC calls through the gateway's WebRtcRoom listener: the demo page (socket.io-client
// 2.x, speaking the protocol as the Html app does) in headless Chromium tabs.
//
// 2 tabs, then 4 tabs in one room reach connectionState "connected" with every other tab and
// show its video; one tab leaves (`exit`), the others close that peer and stay connected.
// Once with the client's default transports (polling, then the websocket upgrade) and once
// forced onto long-polling.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway } from './lib/gateway.mjs';
import { browserMissing, launchBrowser, demoUrl, openTab, peers, waitAll, meshConnected, socketId, since } from './lib/browser.mjs';

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

for (const transport of ['websocket', 'polling']) {
  // `websocket` here is the client's default: it starts on polling and upgrades.
  const forced = transport === 'polling' ? 'polling' : undefined;

  test(`webrtcroom over ${transport}: 2 then 4 tabs connect, one leaves`, { skip, timeout: 90_000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    try {
      const room = `room-${transport}`;
      const url = demoUrl(gateway.urls.webrtcroom, { room, autojoin: 1, transport: forced });
      const tabs = [];

      // Two tabs.
      let t0 = performance.now();
      for (const i of [1, 2]) tabs.push(await openTab(context, url, `tab${i}`));
      await waitAll(tabs, meshConnected, { n: 1 }, { what: 'connected to 1 peer with video' });
      console.log(`webrtcroom ${transport}: 2 tabs connected in ${since(t0)} ms`);

      // Two more in the same room: each newcomer offers to everyone already there.
      t0 = performance.now();
      for (const i of [3, 4]) tabs.push(await openTab(context, url, `tab${i}`));
      await waitAll(tabs, meshConnected, { n: 3 }, { what: 'connected to 3 peers with video' });
      console.log(`webrtcroom ${transport}: 4 tabs connected in ${since(t0)} ms (2 joining 2)`);

      const ids = await Promise.all(tabs.map((t) => t.evaluate(() => window.demo.myId)));
      for (const [i, tab] of tabs.entries()) {
        const seen = (await peers(tab)).map((p) => p.id).sort();
        assert.deepEqual(seen, ids.filter((_, j) => j !== i).sort(), `${tab.label} is linked to every other tab`);
        const name = await tab.evaluate(() => window.demo.socket.io.engine.transport.name);
        if (forced) assert.equal(name, 'polling', `${tab.label} stays on long-polling`);
      }
      if (!forced) {
        await waitAll(tabs, () => window.demo.socket.io.engine.transport.name === 'websocket', null, { what: 'websocket upgrade', timeout: 5_000 });
      }
      // The socket ids the gateway hands out are the ids the page knows itself by.
      assert.deepEqual(ids, await Promise.all(tabs.map(socketId)));

      // Tab 2 leaves: it sends exit, the other three close that peer and keep the rest.
      const [leaver, ...stay] = [tabs[1], tabs[0], tabs[2], tabs[3]];
      const gone = ids[1];
      await leaver.click('#leave');
      await waitAll(stay, (id) => !(id in window.demo.peers), gone, { what: 'peer closed after exit', timeout: 10_000 });
      await waitAll(stay, meshConnected, { n: 2 }, { what: 'still connected to the 2 others', timeout: 10_000 });
      assert.equal((await peers(leaver)).length, 0, 'the leaver closed its peers');
      const exitSeen = await stay[0].evaluate((id) => window.demo.events.some((e) => e.dir === 'in' && e.event === 'exit' && e.data.from === id), gone);
      assert.ok(exitSeen, 'the others were told by an exit event');
      const sent = await leaver.evaluate(() => window.demo.events.find((e) => e.dir === 'out' && e.event === 'exit')?.data);
      assert.deepEqual(sent, { from: gone, room });
    } finally {
      await context.close();
    }
  });
}
