// Makes docs/demo.png: two tabs of the WebRtcRoom demo page in one room, connected, one
// above the other. Run by hand after changing the demo pages (it is not a test):
//   cargo build && node tests/lib/browser-screenshot.mjs [output.png]
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, ROOT } from './gateway.mjs';
import { launchBrowser, demoUrl, openTab, waitAll, meshConnected } from './browser.mjs';

const out = path.resolve(process.argv[2] ?? path.join(ROOT, 'docs', 'demo.png'));
const gateway = await startGateway({});
const browser = await launchBrowser();
try {
  const context = await browser.newContext({ viewport: { width: 980, height: 520 } });
  const url = demoUrl(gateway.urls.webrtcroom, { room: 'demo', autojoin: 1 });
  const tabs = [await openTab(context, url, 'tab 1'), await openTab(context, url, 'tab 2')];
  await waitAll(tabs, meshConnected, { n: 1 }, { what: 'connected with video' });
  await new Promise((r) => setTimeout(r, 1500)); // let the log settle and the videos run
  const shots = await Promise.all(tabs.map((t) => t.screenshot()));
  const sheet = await context.newPage();
  await sheet.setViewportSize({ width: 1000, height: 100 });
  await sheet.setContent(`<!doctype html><style>
      body { margin: 0; padding: 10px; background: #c9ced8; font: 600 14px system-ui, sans-serif; }
      p { margin: 0 0 4px; color: #1d2330; } p + img + p { margin-top: 10px; }
      img { display: block; box-shadow: 0 1px 4px #0004; }
    </style>
    ${shots.map((png, i) => `<p>tab ${i + 1} · same room "demo"</p><img src="data:image/png;base64,${png.toString('base64')}">`).join('')}`);
  await sheet.waitForFunction(() => [...document.images].every((i) => i.complete));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await sheet.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await gateway.stop();
}
