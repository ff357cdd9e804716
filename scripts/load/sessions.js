// k6 load and soak test for Framecast: virtual users open `/v1/stream` sessions through the
// router, send session_init_v2 and a prompt, wait for SEGMENTS media segments (binary fMP4
// frames plus their media_segment_complete), close, and start over (session churn).
//
// Any error frame, close the client did not ask for, timeout or failed check fails the run
// (thresholds below), so k6 exits non-zero.
//
//   ROUTER_URL   router base URL (default http://127.0.0.1:9000); ws(s):// is derived
//   VUS          virtual users (default 10)
//   ITERATIONS   sessions per virtual user (default 10); ignored when DURATION is set
//   DURATION     run for this long instead (e.g. 30m for a soak), each VU looping
//   SEGMENTS     media segments to wait for in each session (default 2)
//   SESSION_TIMEOUT_S  longest a session may take (default 60)
//   PAUSE_S      pause between a VU's sessions (default 0)
//
// Run: ROUTER_URL=http://127.0.0.1:9000 k6 run --summary-export summary.json scripts/load/sessions.js
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const ROUTER_URL = (__ENV.ROUTER_URL || 'http://127.0.0.1:9000').replace(/\/+$/, '');
const STREAM_URL = ROUTER_URL.replace(/^http/, 'ws') + '/v1/stream';
const VUS = parseInt(__ENV.VUS || '10', 10);
const ITERATIONS = parseInt(__ENV.ITERATIONS || '10', 10);
const DURATION = __ENV.DURATION || '';
const SEGMENTS = parseInt(__ENV.SEGMENTS || '2', 10);
const SESSION_TIMEOUT_MS = parseFloat(__ENV.SESSION_TIMEOUT_S || '60') * 1000;
const PAUSE_S = parseFloat(__ENV.PAUSE_S || '0');

const sessionsOk = new Counter('framecast_sessions_ok');
const sessionsFailed = new Counter('framecast_sessions_failed');
const errorFrames = new Counter('framecast_error_frames');
const unexpectedCloses = new Counter('framecast_unexpected_closes');
const socketErrors = new Counter('framecast_socket_errors');
const timeouts = new Counter('framecast_session_timeouts');
const mediaFrames = new Counter('framecast_media_frames');
const mediaBytes = new Counter('framecast_media_bytes');
const firstMedia = new Trend('framecast_time_to_first_media', true);
const sessionTime = new Trend('framecast_session_duration', true);

const scenario = DURATION
  ? { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '90s' }
  : { executor: 'per-vu-iterations', vus: VUS, iterations: ITERATIONS, maxDuration: '2h' };

export const options = {
  scenarios: { sessions: scenario },
  thresholds: {
    checks: ['rate==1'],
    framecast_sessions_failed: ['count==0'],
    framecast_error_frames: ['count==0'],
    framecast_unexpected_closes: ['count==0'],
    framecast_socket_errors: ['count==0'],
    framecast_session_timeouts: ['count==0'],
    framecast_sessions_ok: ['count>0'],
  },
  // The router and replicas are local: no DNS, no TLS.
  noConnectionReuse: true,
};

export default function () {
  const started = Date.now();
  const s = {
    segments: 0,
    binaries: 0,
    errors: [],
    closedByUs: false,
    closeCode: null,
    timedOut: false,
    socketError: null,
    streamComplete: null,
  };
  const res = ws.connect(STREAM_URL, { tags: { name: '/v1/stream' } }, (socket) => {
    socket.on('open', () => {
      socket.send(JSON.stringify({
        type: 'session_init_v2',
        client_id: `k6-${__VU}-${__ITER}`,
        curated_prompts: ['a calm sea at dusk', 'waves on a rocky shore'],
        auto_extension_enabled: true,
      }));
      socket.send(JSON.stringify({
        type: 'segment_prompt_source',
        prompt: `load test session ${__VU}-${__ITER}`,
      }));
      socket.setTimeout(() => {
        s.timedOut = true;
        s.closedByUs = true;
        socket.close(1000);
      }, SESSION_TIMEOUT_MS);
    });
    socket.on('message', (text) => {
      let m;
      try {
        m = JSON.parse(text);
      } catch (e) {
        s.errors.push(`not JSON: ${String(text).slice(0, 80)}`);
        return;
      }
      if (m.type === 'error') {
        s.errors.push(`${m.code}/${m.reason || '-'}: ${m.message}`);
      } else if (m.type === 'media_segment_complete') {
        s.segments += 1;
        if (s.segments >= SEGMENTS && !s.closedByUs) {
          s.closedByUs = true;
          socket.close(1000);
        }
      } else if (m.type === 'ltx2_stream_complete') {
        s.streamComplete = m.reason;
      }
    });
    socket.on('binaryMessage', (data) => {
      if (s.binaries === 0) {
        firstMedia.add(Date.now() - started);
      }
      s.binaries += 1;
      mediaFrames.add(1);
      mediaBytes.add(data.byteLength);
    });
    socket.on('close', (code) => {
      s.closeCode = code;
    });
    socket.on('error', (e) => {
      s.socketError = e && e.error ? e.error() : String(e);
    });
  });
  sessionTime.add(Date.now() - started);

  const served = s.segments >= SEGMENTS && s.binaries >= SEGMENTS;
  // A stream the replica ended itself after enough segments (segment cap) is fine too.
  const cleanEnd = s.closedByUs || (served && s.closeCode === 1000);
  const handshake = check(res, {
    'handshake 101': (r) => r && r.status === 101,
  });
  const session = check(s, {
    'no error frame': (x) => x.errors.length === 0,
    [`${SEGMENTS} media segments`]: (x) => x.segments >= SEGMENTS && x.binaries >= SEGMENTS,
    'closed by the client or cleanly': () => cleanEnd,
    'within the session timeout': (x) => !x.timedOut,
    'no socket error': (x) => x.socketError === null,
  });

  errorFrames.add(s.errors.length);
  if (!cleanEnd) unexpectedCloses.add(1);
  if (s.socketError !== null) socketErrors.add(1);
  if (s.timedOut) timeouts.add(1);
  if (handshake && session && served && cleanEnd && !s.timedOut) {
    sessionsOk.add(1);
  } else {
    sessionsFailed.add(1);
    console.error(`session ${__VU}-${__ITER} failed: ${JSON.stringify({
      status: res && res.status, segments: s.segments, binaries: s.binaries,
      errors: s.errors, close: s.closeCode, closedByUs: s.closedByUs,
      socketError: s.socketError, streamComplete: s.streamComplete,
    })}`);
  }
  if (PAUSE_S > 0) sleep(PAUSE_S);
}
