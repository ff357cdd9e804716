// Plays a live HLS master playlist with hls.js in Debian's headless chromium and walks the
// renditions: the largest first (hls.js's own choice from there on, with the download
// bandwidth limited through the DevTools protocol), then each rendition in turn as a viewer's
// quality menu would pick it, and reports what it played.
//
//   node tests/browser/hls.mjs <master-playlist-url> [seconds-per-phase=6] [throttled-kbps=30]
//
// Prints one JSON object: the levels hls.js found (bitrate, size, codecs), every level it
// switched to, the video time played in each phase, and errors.
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [url, secondsArg, kbpsArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node hls.mjs <master-playlist-url> [seconds-per-phase] [throttled-kbps]');
  process.exit(2);
}
const phaseMs = Number(secondsArg || 6) * 1000;
const kbps = Number(kbpsArg || 30);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--autoplay-policy=no-user-gesture-required'],
});
let result;
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
  await page.setContent('<video id="v" muted playsinline></video>');
  await page.addScriptTag({ path: require.resolve('hls.js/dist/hls.min.js') });
  await page.evaluate((src) => {
    const video = document.getElementById('v');
    const state = { levels: [], switches: [], errors: [], fatal: false };
    window.hlsState = state;
    if (!window.Hls.isSupported()) {
      state.errors.push('hls.js: MediaSource not supported');
      return;
    }
    // Start on the largest rendition, so a switch down shows the ABR logic at work.
    const hls = new window.Hls({ startLevel: -1, capLevelToPlayerSize: false, testBandwidth: false });
    window.hls = hls;
    hls.on(window.Hls.Events.MANIFEST_PARSED, (_, data) => {
      state.levels = data.levels.map((l) => ({ bitrate: l.bitrate, width: l.width, height: l.height, codecs: l.videoCodec }));
      hls.currentLevel = data.levels.length - 1;
      video.play().catch((e) => state.errors.push(`play: ${e.message}`));
      // Hand the choice back to the ABR controller once the top level loads.
      setTimeout(() => { hls.currentLevel = -1; hls.nextAutoLevel = data.levels.length - 1; }, 500);
    });
    hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, data) => state.switches.push({ level: data.level, at: video.currentTime }));
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (data.fatal) state.fatal = true;
      state.errors.push(`${data.fatal ? 'fatal ' : ''}${data.type}: ${data.details}`);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  }, url);
  const played = () => page.evaluate(() => document.getElementById('v').currentTime);
  const phases = [];
  await page.waitForTimeout(phaseMs);
  phases.push({ phase: 'open', played: await played() });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 50,
    downloadThroughput: (kbps * 1000) / 8,
    uploadThroughput: -1,
  });
  await page.waitForTimeout(phaseMs);
  phases.push({ phase: 'throttled', played: await played() });
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  // Every rendition in turn, lowest first, as a quality menu would.
  const levels = await page.evaluate(() => window.hlsState.levels.length);
  for (let level = 0; level < levels; level++) {
    await page.evaluate((l) => { window.hls.currentLevel = l; }, level);
    await page.waitForTimeout(phaseMs);
    phases.push({ phase: `level ${level}`, played: await played() });
  }
  result = await page.evaluate(() => ({ ...window.hlsState, currentTime: document.getElementById('v').currentTime }));
  result.phases = phases.map((p, i) => ({ ...p, played: p.played - (i ? phases[i - 1].played : 0) }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
