// Real WebRTC calls across the two protocols (cross-protocol rooms, issue 12): the WebRtcRoom
// demo page (socket.io-client 2.x, as the Html app) in one headless Chromium tab and the
// chatroom demo page (socket.io-client 4.x, as the chatroom client) in another, in the same
// room, each on its own listener. Media must flow both ways: each tab's remote video decodes
// frames from the other. Both join orders, with the clients' default transports (polling,
// then the websocket upgrade) and forced onto long-polling; then a third tab joins (a
// WebRtcRoom tab into W-then-C, a chatroom tab into C-then-W) and all three are connected to
// each other.
//
// Then the same call across two cluster nodes: a redis-server of this test's own on a free
// loopback port, two gateway processes (GATEWAY_CLUSTER__REDIS_URL / __NODE_ID), the
// WebRtcRoom tab on one node and the chatroom tab on the other.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway } from './lib/gateway.mjs';
import { startClusterWithRedis as startCluster } from './lib/cluster.mjs';
import {
  browserMissing, launchBrowser, demoUrl, openTab, peers, framesDecoded, waitAll, since,
} from './lib/browser.mjs';

const skip = browserMissing();
let browser;

before(async () => {
  if (skip) return;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** In-page predicate: `n` camera links (either page), connected, each showing video. */
function linked({ n }) {
  const ps = Object.values(window.demo.peers).filter((p) => (p.streamType ?? 'user') === 'user');
  return ps.length === n && ps.every((p) => p.state === 'connected' && p.videoWidth > 0);
}

/** Waits until every incoming video of every tab has decoded more frames than before. */
async function framesKeepComing(tabs) {
  const first = await Promise.all(tabs.map(framesDecoded));
  await sleep(1_000);
  const then = await Promise.all(tabs.map(framesDecoded));
  for (const [i, tab] of tabs.entries()) {
    const ids = Object.keys(then[i]);
    assert.ok(ids.length > 0, `${tab.label} has incoming video`);
    for (const id of ids) {
      assert.ok(then[i][id] > (first[i][id] ?? 0), `${tab.label}: frames from ${id} keep coming (${first[i][id]} → ${then[i][id]})`);
    }
  }
}

/** Opens a WebRtcRoom tab on `w` or a chatroom tab on `c`, in `room`. */
function opener(context, urls, room, forced) {
  return (kind, label) => {
    const url = kind === 'W'
      ? demoUrl(urls.webrtcroom, { room, autojoin: 1, transport: forced })
      : demoUrl(urls.chatroom, { room, user: label, autojoin: 1, transport: forced });
    return openTab(context, url, label);
  };
}

/** Two tabs in `order`, then a third of the first one's kind; asserts media both ways. */
async function mixedCall(context, open, order, what) {
  let t0 = performance.now();
  const first = await open(order[0], `${order[0]}1`);
  // The second joins once the first is in the room: the join order is the point.
  await waitAll([first], () => !!window.demo.room, null, { what: 'in the room', timeout: 10_000 });
  const second = await open(order[1], `${order[1]}1`);
  const pair = [first, second];
  await waitAll(pair, linked, { n: 1 }, { what: 'camera link to the other protocol connected with video' });
  console.log(`${what}: ${order} connected in ${since(t0)} ms`);
  await framesKeepComing(pair);

  t0 = performance.now();
  const third = await open(order[0], `${order[0]}2`);
  const all = [...pair, third];
  await waitAll(all, linked, { n: 2 }, { what: 'camera links to the 2 others connected with video' });
  console.log(`${what}: third tab (${order[0]}) connected to both in ${since(t0)} ms`);
  await framesKeepComing(all);
  for (const tab of all) {
    assert.deepEqual(tab.errors, [], `${tab.label}: no page errors`);
    const states = (await peers(tab)).map((p) => p.state);
    assert.equal(states.length, 2, `${tab.label}: one link per other tab, no duplicate`);
  }
  return all;
}

describe('mixed calls on one node', () => {
  let gateway;
  before(async () => {
    if (skip) return;
    gateway = await startGateway({ sets: ['cross_protocol.enabled=true'] });
  });
  after(async () => {
    await gateway?.stop();
  });

  for (const transport of ['websocket', 'polling']) {
    const forced = transport === 'polling' ? 'polling' : undefined;
    for (const order of ['WC', 'CW']) {
      test(`${order[0]} then ${order[1]} over ${transport}: media both ways, then a third tab`, { skip, timeout: 120_000 }, async () => {
        const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
        try {
          const room = `mixed-${order}-${transport}`;
          const tabs = await mixedCall(context, opener(context, gateway.urls, room, forced), order, `one node, ${transport}`);
          if (forced) {
            for (const tab of tabs) {
              assert.equal(await tab.evaluate(() => window.demo.socket.io.engine.transport.name), 'polling', `${tab.label} stays on long-polling`);
            }
          }
          // The first tab leaves: the two others close their link to it and keep theirs.
          await tabs[0].click('#leave');
          await waitAll(tabs.slice(1), linked, { n: 1 }, { what: 'the remaining link still up after a leave', timeout: 10_000 });
        } finally {
          await context.close();
        }
      });
    }
  }
});

describe('mixed calls across two cluster nodes', () => {
  let cluster;
  before(async () => {
    if (skip) return;
    cluster = await startCluster(2, ['cross_protocol.enabled=true'], 'mixed-browser');
  });
  after(async () => {
    await cluster?.stop();
  });

  for (const order of ['WC', 'CW']) {
    test(`${order[0]} then ${order[1]}, each tab on another node: media both ways, then a third tab`, { skip, timeout: 120_000 }, async () => {
      const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
      try {
        const room = `cluster-${order}`;
        // WebRtcRoom tabs on node a, chatroom tabs on node b.
        const { nodes } = cluster;
        const urls = { webrtcroom: nodes[0].urls.webrtcroom, chatroom: nodes[1].urls.chatroom };
        const tabs = await mixedCall(context, opener(context, urls, room, undefined), order, 'two nodes');
        // The first tab leaves: its peers on the other node close their link to it.
        await tabs[0].click('#leave');
        await waitAll(tabs.slice(1), linked, { n: 1 }, { what: 'the remaining link still up after a leave', timeout: 10_000 });
      } finally {
        await context.close();
      }
    });
  }
});
