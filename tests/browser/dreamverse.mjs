// Uses FastVideo's Dreamverse web app (its built static export, served by Framecast) in
// Debian's headless chromium the way a person does, and reports what happened.
//
//   node tests/browser/dreamverse.mjs play    <page-url> <out-dir> [timeout-ms] [play-seconds]
//   node tests/browser/dreamverse.mjs refused <page-url> <out-dir> [timeout-ms]
//
// play: types a prompt into the "Continuation prompt" box and presses "Generate"; waits until
// the streamed <video> has played 1 s and screenshots it; then starts a new project from the
// sidebar ("New project") with one of the app's preset stories and waits until that stream
// has played `play-seconds` (default 3) of media; screenshots that too.
// refused: types a prompt, presses "Generate" and waits for the app's notice.
//
// With DREAMVERSE_PAUSE_FILE=<path> set, the driver writes <path>.loaded once the page has
// loaded and waits for <path> to exist before it types (so a test can, say, stop the
// backend in between).
//
// Prints one JSON object on stdout. Everything is collected from the page: the WebSocket's
// frames (by `type`, binary frames and bytes, each segment's prompt and each seed-list
// update), the video's currentTime over time (sampled
// every 100 ms), `error` events of <video> and SourceBuffers, appendBuffer exceptions,
// console errors and page errors.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, url, outDir, timeoutArg, playArg] = process.argv.slice(2);
if (!['play', 'refused'].includes(scenario) || !url || !outDir) {
  console.error('usage: node dreamverse.mjs play|refused <page-url> <out-dir> [timeout-ms] [play-seconds]');
  process.exit(2);
}
const timeout = Number(timeoutArg || 60000);
// The preset story a person picks for the second project.
const PRESET = /LEGO Stormtroopers/;
const playSeconds = Number(playArg || 3);
const deadline = Date.now() + timeout;
fs.mkdirSync(outDir, { recursive: true });

// In the page before any of the app's code: error hooks on media, and a sampler of the video
// that is playing the stream (the one with a MediaSource attached).
function instrument() {
  const dv = {
    videoErrors: [], sourceBufferErrors: [], appendErrors: [], sourceBuffers: [],
    waiting: 0, samples: [],
  };
  window.__dv = dv;
  document.addEventListener('error', (e) => {
    if (e.target instanceof HTMLMediaElement) {
      const err = e.target.error;
      dv.videoErrors.push(err ? `${err.code} ${err.message}` : 'error event');
    }
  }, true);
  document.addEventListener('waiting', (e) => {
    if (e.target instanceof HTMLMediaElement) dv.waiting += 1;
  }, true);
  for (const MS of [window.MediaSource, window.ManagedMediaSource].filter(Boolean)) {
    const add = MS.prototype.addSourceBuffer;
    MS.prototype.addSourceBuffer = function (mime) {
      const sb = add.call(this, mime);
      dv.sourceBuffers.push(mime);
      sb.addEventListener('error', () => dv.sourceBufferErrors.push(`SourceBuffer error (${mime})`));
      return sb;
    };
  }
  const append = SourceBuffer.prototype.appendBuffer;
  SourceBuffer.prototype.appendBuffer = function (data) {
    try {
      return append.call(this, data);
    } catch (e) {
      dv.appendErrors.push(`${e.name}: ${e.message}`);
      throw e;
    }
  };
  const streaming = () => [...document.querySelectorAll('video')].filter((v) => v.src || v.srcObject).pop();
  setInterval(() => {
    const v = streaming();
    if (!v) return;
    const b = v.buffered;
    dv.samples.push({
      at: performance.now(),
      src: v.src || 'srcObject',
      t: v.currentTime,
      end: b.length ? b.end(b.length - 1) : 0,
      paused: v.paused,
      readyState: v.readyState,
    });
  }, 100);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const result = { scenario, url, consoleErrors: [], pageErrors: [], ws: [], screenshots: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (m) => {
    if (m.type() === 'error') result.consoleErrors.push(m.text());
    if (m.type() === 'error' || m.type() === 'warning') console.error(`[page ${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (e) => {
    result.pageErrors.push(e.message);
    console.error(`[page error] ${e.message}`);
  });
  page.on('websocket', (socket) => {
    const ws = {
      url: socket.url(), sent: [], received: {}, binaryFrames: 0, binaryBytes: 0, errors: [],
      closed: false, segmentPrompts: [], seedUpdates: [],
    };
    result.ws.push(ws);
    socket.on('framesent', (f) => {
      try { ws.sent.push(JSON.parse(f.payload).type); } catch { ws.sent.push('?'); }
    });
    socket.on('framereceived', (f) => {
      if (typeof f.payload !== 'string') {
        ws.binaryFrames += 1;
        ws.binaryBytes += f.payload.length;
        return;
      }
      const msg = JSON.parse(f.payload);
      ws.received[msg.type] = (ws.received[msg.type] || 0) + 1;
      if (msg.type === 'error') ws.errors.push(msg.message);
      if (msg.type === 'ltx2_segment_start') ws.segmentPrompts.push(msg.prompt);
      if (msg.type === 'seed_prompts_updated') {
        ws.seedUpdates.push({ reason: msg.reason, fallbackUsed: msg.fallback_used ?? null, prompts: msg.prompts });
      }
    });
    socket.on('socketerror', (e) => ws.errors.push(`socket: ${e}`));
    socket.on('close', () => { ws.closed = true; });
  });
  await page.addInitScript(instrument);
  await page.goto(url);

  const left = () => Math.max(1000, deadline - Date.now());
  const shoot = async (name) => {
    const file = path.resolve(outDir, name);
    await page.screenshot({ path: file });
    result.screenshots.push(file);
  };
  // Server messages of `type` received so far, over every socket.
  const count = (type) => result.ws.reduce((n, w) => n + (w.received[type] || 0), 0);
  const pause = process.env.DREAMVERSE_PAUSE_FILE;
  if (pause) {
    await page.getByRole('textbox', { name: 'Continuation prompt' }).waitFor({ timeout: left() });
    fs.writeFileSync(`${pause}.loaded`, '');
    while (!fs.existsSync(pause) && Date.now() < deadline) await page.waitForTimeout(100);
  }
  const prompt = page.getByRole('textbox', { name: 'Continuation prompt' });
  const generate = async (text) => {
    await prompt.waitFor({ state: 'visible', timeout: left() });
    await page.waitForFunction(
      () => !document.querySelector('textarea[aria-label="Continuation prompt"]')?.disabled,
      null, { timeout: left() });
    await prompt.fill(text);
    const button = page.getByRole('button', { name: 'Generate', exact: true });
    await page.waitForFunction(
      () => [...document.querySelectorAll('button[aria-label="Generate"]')].some((b) => !b.disabled),
      null, { timeout: left() });
    await button.click();
  };
  // The text of the app's notices (alerts) on screen.
  const notices = () => page.evaluate(() => [...document.querySelectorAll('div')]
    .filter((d) => d.children.length === 0 && d.checkVisibility()
      && /Dreamverse backend|retry|unavailable|replica/i.test(d.textContent))
    .map((d) => d.textContent.trim()));
  // Playback of the latest stream (MediaSource) since sample `from`: its currentTime, and
  // the longest stretch without progress once it started, until `seconds` had played.
  const playback = async (from, seconds, oldSrc) => {
    const all = (await page.evaluate(() => window.__dv.samples)).slice(from)
      .filter((s) => s.src !== oldSrc);
    const src = all.at(-1)?.src;
    const samples = all.filter((s) => s.src === src);
    let started = false; let played = 0; let lastMove = null; let longestStallMs = 0;
    for (const s of samples) {
      if (!started) {
        if (s.t > 0) { started = true; played = s.t; lastMove = s.at; }
        continue;
      }
      if (s.t > played) {
        played = s.t;
        lastMove = s.at;
      } else if (played < seconds) {
        longestStallMs = Math.max(longestStallMs, s.at - lastMove);
      }
    }
    const bufferedEnd = samples.at(-1)?.end ?? 0;
    return { played, bufferedEnd, longestStallMs: Math.round(longestStallMs), samples: samples.length };
  };
  const waitForPlayback = async (from, seconds, oldSrc) => {
    while (Date.now() < deadline) {
      const p = await playback(from, seconds, oldSrc);
      if (p.played >= seconds) return { ...p, timedOut: false };
      await page.waitForTimeout(200);
    }
    return { ...(await playback(from, seconds, oldSrc)), timedOut: true };
  };

  if (scenario === 'play') {
    // A prompt of one's own: the box, then "Generate".
    await generate('a lighthouse in a storm, waves crashing');
    const typed = await waitForPlayback(0, playSeconds);
    typed.segmentsComplete = count('media_segment_complete');
    result.typedProject = typed;
    result.leaveVisible = await page.getByRole('button', { name: 'Leave' }).first().isVisible();
    await shoot('dreamverse-typed-prompt.png');

    // A new project, from the sidebar as a person would (it may be collapsed), started from
    // one of the app's preset stories: a rollout of several prompts.
    const newProject = page.getByRole('button', { name: 'New project', exact: true });
    const onScreen = () => newProject.evaluate((e) => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && r.right > 0 && r.left < window.innerWidth;
    });
    if (!(await newProject.isVisible()) || !(await onScreen())) {
      await page.getByRole('button', { name: 'Toggle sidebar' }).click();
      await page.waitForTimeout(500);
    }
    await newProject.click();
    const from = await page.evaluate(() => window.__dv.samples.length);
    const oldSrc = await page.evaluate(() => window.__dv.samples.at(-1)?.src);
    const initsBefore = count('media_init');
    const segmentsBefore = count('media_segment_complete');
    const preset = page.getByRole('button', { name: PRESET });
    await preset.first().waitFor({ state: 'visible', timeout: left() });
    result.preset = (await preset.first().innerText()).split('\n')[0];
    await preset.first().click();
    // The new project's stream gets a new MediaSource (the app rebuilds its pipeline).
    await page.waitForFunction(
      ([n, old]) => window.__dv.samples.slice(n).some((s) => s.src !== old),
      [from, oldSrc], { timeout: left() }).catch(() => {});
    const rollout = await waitForPlayback(from, playSeconds, oldSrc);
    rollout.newMediaInits = count('media_init') - initsBefore;
    rollout.segmentsComplete = count('media_segment_complete') - segmentsBefore;
    result.presetProject = rollout;
    await shoot('dreamverse-playing.png');
  } else {
    await generate('a lighthouse in a storm');
    let found = [];
    while (Date.now() < deadline) {
      found = await notices();
      if (found.length) break;
      await page.waitForTimeout(200);
    }
    result.notices = found;
    await shoot('dreamverse-refused.png');
    const p = await playback(0, 1);
    result.played = p.played;
  }
  const dv = await page.evaluate(() => window.__dv);
  result.videoErrors = dv.videoErrors;
  result.sourceBufferErrors = dv.sourceBufferErrors;
  result.appendErrors = dv.appendErrors;
  result.sourceBuffers = dv.sourceBuffers;
  result.waitingEvents = dv.waiting;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
