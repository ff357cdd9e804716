// Framecast player: plays the fragmented-MP4 stream of a /v1/stream WebSocket with Media
// Source Extensions. Plain JS, no build step.
//
// Protocol (server -> client): `media_init {segment_idx, mime, stream_id}` announces the
// codec string, binary frames carry whole MP4 boxes in order (init segment first, then one
// moof+mdat per frame), `media_segment_complete` closes a segment, `ltx2_stream_complete`
// ends the stream, `error {code, message}` reports problems.
//
// Resume: the server sends `session_resumable {session_id, token}`. When the connection is
// lost before the stream completed (the replica died: the router sends `error
// {code: worker_failed, retryable: true}` and closes with 1012; or the socket just closed),
// the player reconnects with `session_init_v2.resume {session_id, token, next_segment_idx}`
// and keeps its MediaSource: the server continues at the first segment whose
// `media_segment_complete` did not arrive, on the same fMP4 timeline. The newest binary
// frame is held until the next frame arrives (or 100 ms pass), because the router completes
// a frame cut off by a dying replica with padding, and that frame must not reach the decoder.

export class FramecastPlayer {
  /**
   * @param {HTMLVideoElement} video
   * @param {{startBufferSeconds?: number, onStats?: (stats) => void, onMessage?: (msg) => void}} options
   */
  constructor(video, options = {}) {
    this.video = video;
    this.startBufferSeconds = options.startBufferSeconds ?? 0.5;
    this.onStats = options.onStats ?? (() => {});
    this.onMessage = options.onMessage ?? (() => {});
    this.queue = [];
    this.mediaSource = null;
    this.sourceBuffer = null;
    this.mime = null;
    this.streamEnded = false;
    this.maxResumes = options.maxResumes ?? 5;
    this.resumable = null;
    this.nextSegment = 0;
    this.held = null;
    this._heldTimer = null;
    this.stats = {
      resumes: 0,
      recovered: [],
      connectedAt: null,
      timeToFirstFrameMs: null,
      bufferedSeconds: 0,
      bytes: 0,
      chunks: 0,
      segmentsComplete: 0,
      stalls: 0,
      longestStallMs: 0,
      errors: [],
      streamComplete: false,
      ended: false,
    };
    this._stallStart = null;
    this._watchVideo();
  }

  /** Opens the WebSocket; `init` is sent as the first frame when given. */
  connect(url, init) {
    this.stats.connectedAt = performance.now();
    this.url = url;
    this.init = init;
    return this._open(init);
  }

  _open(init) {
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { if (init) ws.send(JSON.stringify(init)); };
    ws.onmessage = (ev) => { if (ws === this.ws) this._onFrame(ev.data); };
    ws.onerror = () => { if (ws === this.ws && !this._canResume()) this._error('websocket', 'WebSocket error'); };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this._releaseHeld();
      if (!this.stats.streamComplete && ev.code !== 1000 && !this.closing) {
        if (this._canResume()) {
          this._resume(`closed with code ${ev.code} ${ev.reason || ''}`.trim());
          return;
        }
        this._error('websocket', `closed with code ${ev.code} ${ev.reason || ''}`.trim());
      }
      this._finishIfDone();
    };
    this.ws = ws;
    return ws;
  }

  _canResume() {
    return this.resumable !== null && this.stats.resumes < this.maxResumes && !this.stats.streamComplete && !this.closing;
  }

  /** Reconnects and continues the stream where its media stopped. */
  _resume(why) {
    this.stats.resumes += 1;
    this.stats.recovered.push(`${why}; resuming at segment ${this.nextSegment}`);
    this._emit();
    const init = {
      ...(this.init || { type: 'session_init_v2' }),
      resume: { ...this.resumable, next_segment_idx: this.nextSegment },
    };
    // A short pause, longer after each try, so a router can notice the lost replica.
    const delay = Math.min(2000, 100 * 2 ** (this.stats.resumes - 1));
    setTimeout(() => { if (!this.closing) this._open(init); }, delay);
  }

  /** Sends a JSON message on the open WebSocket. */
  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  close() {
    this.closing = true;
    if (this.ws) this.ws.close(1000);
  }

  _onFrame(data) {
    if (typeof data !== 'string') {
      this._releaseHeld();
      this.stats.bytes += data.byteLength;
      this.stats.chunks += 1;
      this.held = data;
      this._heldTimer = setTimeout(() => this._releaseHeld(), 100);
      return;
    }
    let msg;
    try { msg = JSON.parse(data); } catch (e) { this._error('protocol', 'non-JSON text frame'); return; }
    if (msg.type === 'error' && msg.code === 'worker_failed' && msg.retryable && this._canResume()) {
      // The replica died mid-stream: its last frame may be padding. Resume on close.
      this._dropHeld();
      this.stats.recovered.push(`${msg.code}: ${msg.message || ''}`);
      this.onMessage(msg);
      this._emit();
      return;
    }
    this._releaseHeld();
    this.onMessage(msg);
    switch (msg.type) {
      case 'session_resumable': this.resumable = { session_id: msg.session_id, token: msg.token }; break;
      case 'media_init': this._onMediaInit(msg); break;
      case 'media_segment_complete':
        this.stats.segmentsComplete += 1;
        this.nextSegment = msg.segment_idx + 1;
        break;
      case 'ltx2_stream_complete':
        this.stats.streamComplete = true;
        this._finishIfDone();
        break;
      case 'error':
        if (typeof msg.reason === 'string' && msg.reason.startsWith('resume:')) {
          // The server could not continue the stream and starts a new one from its start.
          this.stats.recovered.push(`resume refused (${msg.reason}); playing a new stream`);
          this._resetMedia();
        } else {
          this._error(msg.code || 'error', msg.message || '');
        }
        break;
      default: break;
    }
    this._emit();
  }

  _releaseHeld() {
    clearTimeout(this._heldTimer);
    if (this.held === null) return;
    this.queue.push(this.held);
    this.held = null;
    this._pump();
  }

  _dropHeld() {
    clearTimeout(this._heldTimer);
    this.held = null;
  }

  /** Forgets the media of a stream that will not continue; the next media_init starts over. */
  _resetMedia() {
    this._dropHeld();
    this.queue = [];
    this.mediaSource = null;
    this.sourceBuffer = null;
    this.mime = null;
    this.nextSegment = 0;
  }

  _onMediaInit(msg) {
    if (this.mediaSource) {
      // One init segment serves the whole stream; a changed codec would need a new player.
      if (msg.mime !== this.mime) this._error('media', `codec changed from ${this.mime} to ${msg.mime}`);
      return;
    }
    if (!window.MediaSource || !MediaSource.isTypeSupported(msg.mime)) {
      this._error('media', `this browser cannot play ${msg.mime}`);
      return;
    }
    this.mime = msg.mime;
    this.mediaSource = new MediaSource();
    this.video.src = URL.createObjectURL(this.mediaSource);
    this.mediaSource.addEventListener('sourceopen', () => {
      try {
        this.sourceBuffer = this.mediaSource.addSourceBuffer(this.mime);
        this.sourceBuffer.mode = 'segments';
        this.sourceBuffer.addEventListener('updateend', () => { this._maybeStart(); this._pump(); this._finishIfDone(); });
        this.sourceBuffer.addEventListener('error', () => this._error('media', 'SourceBuffer error'));
        this._pump();
      } catch (e) {
        this._error('media', `addSourceBuffer failed: ${e.message}`);
      }
    }, { once: true });
  }

  _pump() {
    const sb = this.sourceBuffer;
    if (!sb || sb.updating || this.queue.length === 0) return;
    try {
      sb.appendBuffer(this.queue.shift());
    } catch (e) {
      this._error('media', `appendBuffer failed: ${e.name}: ${e.message}`);
    }
  }

  _bufferedAhead() {
    const v = this.video;
    for (let i = 0; i < v.buffered.length; i++) {
      if (v.buffered.start(i) <= v.currentTime + 0.05 && v.currentTime <= v.buffered.end(i)) {
        return v.buffered.end(i) - v.currentTime;
      }
    }
    return v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0;
  }

  _maybeStart() {
    const ahead = this._bufferedAhead();
    this.stats.bufferedSeconds = ahead;
    if (this.video.paused && !this.stats.ended && (ahead >= this.startBufferSeconds || this.stats.streamComplete)) {
      if (this.video.buffered.length && this.video.currentTime < this.video.buffered.start(0)) {
        this.video.currentTime = this.video.buffered.start(0);
      }
      this.video.play().catch((e) => this._error('playback', `play() refused: ${e.message}`));
    }
    this._emit();
  }

  _finishIfDone() {
    const ms = this.mediaSource;
    if (!this.stats.streamComplete || !ms || ms.readyState !== 'open') return;
    if (this.queue.length || (this.sourceBuffer && this.sourceBuffer.updating)) return;
    try { ms.endOfStream(); } catch (e) { /* already ended */ }
    this._maybeStart();
  }

  _watchVideo() {
    const v = this.video;
    const firstFrame = () => {
      if (this.stats.timeToFirstFrameMs === null && this.stats.connectedAt !== null) {
        this.stats.timeToFirstFrameMs = Math.round(performance.now() - this.stats.connectedAt);
        this._emit();
      }
    };
    if ('requestVideoFrameCallback' in v) v.requestVideoFrameCallback(firstFrame);
    v.addEventListener('playing', () => {
      firstFrame();
      if (this._stallStart !== null) {
        const ms = performance.now() - this._stallStart;
        this.stats.longestStallMs = Math.max(this.stats.longestStallMs, Math.round(ms));
        this._stallStart = null;
      }
      this._emit();
    });
    v.addEventListener('waiting', () => {
      if (this.stats.timeToFirstFrameMs === null || this.stats.ended) return;
      this.stats.stalls += 1;
      this._stallStart = performance.now();
      this._emit();
    });
    v.addEventListener('ended', () => {
      this.stats.ended = true;
      this._stallStart = null;
      this._emit();
    });
    v.addEventListener('error', () => this._error('media', `video error ${v.error ? v.error.code + ' ' + v.error.message : ''}`));
    v.addEventListener('timeupdate', () => { this.stats.bufferedSeconds = this._bufferedAhead(); this._emit(); });
  }

  _error(code, message) {
    this.stats.errors.push(`${code}: ${message}`);
    this._emit();
  }

  _emit() {
    if (this._stallStart !== null) {
      const ms = performance.now() - this._stallStart;
      this.stats.longestStallMs = Math.max(this.stats.longestStallMs, Math.round(ms));
    }
    this.onStats({ ...this.stats, currentTime: this.video.currentTime });
  }
}
