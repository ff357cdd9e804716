// Loads a Framecast player page in Debian's headless chromium and reports what it played.
//
//   node tests/browser/play.mjs <page-url> [timeout-ms]
//
// Prints one JSON object on stdout: the player's stats (see replica/static/player.js) plus
// the video's currentTime and duration when playback ended or the timeout hit.
import { chromium } from 'playwright-core';

const [url, timeoutArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node play.mjs <page-url> [timeout-ms]');
  process.exit(2);
}
const timeout = Number(timeoutArg || 30000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let result;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(url);
  let timedOut = false;
  try {
    await page.waitForFunction(
      () => window.framecastStats && (window.framecastStats.ended || window.framecastStats.errors.length > 0),
      null,
      { timeout, polling: 100 },
    );
  } catch (e) {
    timedOut = true;
  }
  result = await page.evaluate(() => {
    const v = document.querySelector('video');
    return { ...(window.framecastStats || {}), currentTime: v.currentTime, duration: v.duration };
  });
  result.timedOut = timedOut;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
