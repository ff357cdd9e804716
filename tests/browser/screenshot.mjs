// Opens a Framecast player page in Debian's headless chromium, lets it play until `segments`
// segments are complete and the video has played past them, and saves a screenshot of the
// page: how the README's picture of the demo is made.
//
//   node tests/browser/screenshot.mjs <page-url> <out.png> [segments=3] [timeout-ms=60000]
import { chromium } from 'playwright-core';

const [url, out, segmentsArg, timeoutArg] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node screenshot.mjs <page-url> <out.png> [segments] [timeout-ms]');
  process.exit(2);
}
const segments = Number(segmentsArg || 3);
const timeout = Number(timeoutArg || 60000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(
    (n) => {
      const s = window.framecastStats;
      const v = document.querySelector('video');
      return s && (s.errors.length > 0 || (s.segmentsComplete >= n && v.currentTime > n - 1));
    },
    segments,
    { timeout, polling: 100 },
  );
  await page.screenshot({ path: out });
  const stats = await page.evaluate(() => ({ ...window.framecastStats, currentTime: document.querySelector('video').currentTime }));
  console.log(JSON.stringify(stats));
} finally {
  await browser.close();
}
