// enliven in-browser face landmarker: MediaPipe FaceMesh (npm @mediapipe/face_mesh, served by `enliven serve`
// from /static/vendor/face_mesh/) measures the camera's face here, and only its points go to the server, as
// one binary message per camera frame on the data channel "points" (format: enliven/server/points.py).
// Inference runs in WebAssembly on the CPU (XNNPACK, as the server's Python MediaPipe does: the same points
// within a fraction of a pixel), WebGL only uploads the frames.
//
//   const why = enlivenLandmarks.unsupported();          // null, or why this browser cannot
//   const lm = await enlivenLandmarks.open(videoElement); // loads and warms up the landmarker (throws)
//   lm.start(channel, {onSlow});                          // measures every camera frame, sends its points
//   lm.stop();
"use strict";

(() => {
  const BASE = "/static/vendor/face_mesh/";
  const MIN_FPS = 15;           // slower than this for SLOW_WINDOW_MS: the page sends video instead
  const SLOW_WINDOW_MS = 2000;
  const WARMUP_MS = 1000;       // not judged: the first frames compile and allocate
  const MAX_BUFFERED = 16384;   // bytes waiting in the channel: more means the network is behind; skip frames

  // Points message, version 1 (enliven/server/points.py): 20-byte header + 478 x 3 int16 (x/w, y/h, z/w) * 2^14.
  const VERSION = 1;
  const NUM_POINTS = 478;
  const SCALE = 16384;
  const HEADER_BYTES = 20;

  function encode(frameId, captureMs, width, height, landmarks) {
    const face = !!landmarks && landmarks.length === NUM_POINTS &&
      landmarks.every((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && Number.isFinite(p.z));
    const buf = new ArrayBuffer(HEADER_BYTES + (face ? NUM_POINTS * 6 : 0));
    const view = new DataView(buf);
    view.setUint8(0, VERSION);
    view.setUint8(1, face ? 1 : 0);
    view.setUint16(2, face ? NUM_POINTS : 0, true);
    view.setUint32(4, frameId >>> 0, true);
    view.setFloat64(8, captureMs, true);
    view.setUint16(16, width, true);
    view.setUint16(18, height, true);
    if (face) {
      const q = (v) => Math.max(-32768, Math.min(32767, Math.round(v * SCALE)));
      for (let i = 0; i < NUM_POINTS; i++) {
        const p = landmarks[i];
        const o = HEADER_BYTES + i * 6;
        view.setInt16(o, q(p.x), true);
        view.setInt16(o + 2, q(p.y), true);
        view.setInt16(o + 4, q(p.z), true);
      }
    }
    return buf;
  }

  // The smallest WebAssembly module with a SIMD instruction (as wasm-feature-detect tests it).
  const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8,
    0, 65, 0, 253, 15, 253, 98, 11]);

  function unsupported() {
    if (typeof WebAssembly !== "object") return "this browser has no WebAssembly";
    try {
      if (!WebAssembly.validate(SIMD_PROBE)) return "this browser's WebAssembly has no SIMD";
    } catch (e) {
      return "this browser's WebAssembly has no SIMD";
    }
    const canvas = document.createElement("canvas");
    if (!canvas.getContext("webgl2") && !canvas.getContext("webgl")) return "this browser has no WebGL";
    if (!HTMLVideoElement.prototype.requestVideoFrameCallback) return "this browser cannot follow video frames";
    return null;
  }

  let scriptLoaded = null;
  function loadScript() {
    if (!scriptLoaded) {
      scriptLoaded = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = BASE + "face_mesh.js";
        s.onload = () => (window.FaceMesh ? resolve() : reject(new Error("the landmarker did not load")));
        s.onerror = () => reject(new Error("the landmarker is not installed on this server"));
        document.head.appendChild(s);
      });
      scriptLoaded.catch(() => { scriptLoaded = null; });
    }
    return scriptLoaded;
  }

  class Landmarker {
    constructor(mesh, video) {
      this.mesh = mesh;
      this.video = video;
      this.channel = null;
      this.frameId = 0;
      this.busyMs = [];        // [time, processing ms] of recent frames
      this.started = 0;
      this.slowSince = null;
      this.running = false;
      this.busy = false;       // a frame is being measured
      this.fresh = null;       // metadata of a camera frame presented since the last measurement, or null
      this.pending = null;     // the frame being measured: {id, captureMs, width, height}
      this.sent = 0;
      this.faces = 0;
      this.onFrame = null;     // tests: called with (source canvas, frame id) before each measurement
      this.capture = null;     // a canvas the frame is drawn into first (tests only; null: the video itself)
      mesh.onResults((r) => this._results(r));
    }

    // Mean processing time (ms) over the last second, for the latency estimate.
    get meanMs() {
      const now = performance.now();
      const recent = this.busyMs.filter(([t]) => now - t < 1000);
      return recent.length ? recent.reduce((a, [, ms]) => a + ms, 0) / recent.length : 0;
    }

    start(channel, { onSlow } = {}) {
      this.channel = channel;
      this.onSlow = onSlow;
      this.running = true;
      this.started = performance.now();
      this._watch();
    }

    stop() {
      this.running = false;
      this.channel = null;
    }

    // Every frame the camera presents is noted; the newest is measured as soon as the previous measurement
    // ends (no wait for the next frame when one came meanwhile: the rate is the camera's or the landmarker's).
    _watch() {
      if (!this.running) return;
      this.video.requestVideoFrameCallback((now, meta) => {
        this.fresh = meta || {};
        this._watch();
        if (!this.busy) this._frame();
      });
    }

    async _frame() {
      const meta = this.fresh;
      this.fresh = null;
      if (!this.running || !meta) return;
      const video = this.video;
      const width = video.videoWidth;
      const height = video.videoHeight;
      if (!width || !height) return;
      this.busy = true;
      const id = ++this.frameId;
      const captureMs = performance.timeOrigin + (meta && meta.captureTime ? meta.captureTime : performance.now());
      let source = video;
      if (this.capture) {
        this.capture.width = width;
        this.capture.height = height;
        this.capture.getContext("2d").drawImage(video, 0, 0);
        source = this.capture;
      }
      if (this.onFrame) this.onFrame(source, id);
      this.pending = { id, captureMs, width, height };
      const t0 = performance.now();
      try {
        await this.mesh.send({ image: source });
      } catch (e) {
        this.running = false;
        if (this.onSlow) this.onSlow(`the landmarker failed (${e.message || e})`);
        return;
      } finally {
        this.busy = false;
      }
      const t1 = performance.now();
      this.busyMs.push([t1, t1 - t0]);
      while (this.busyMs.length && t1 - this.busyMs[0][0] > SLOW_WINDOW_MS) this.busyMs.shift();
      this._judge(t1);
      if (this.fresh) this._frame();  // a newer frame came while this one was measured
    }

    _results(r) {
      const frame = this.pending;
      if (!frame) return;
      this.pending = null;
      const landmarks = r.multiFaceLandmarks && r.multiFaceLandmarks[0] ? r.multiFaceLandmarks[0] : null;
      if (landmarks) this.faces += 1;
      if (this.onPoints) this.onPoints(frame.id, landmarks);
      const ch = this.channel;
      if (ch && ch.readyState === "open" && ch.bufferedAmount < MAX_BUFFERED) {
        ch.send(encode(frame.id, frame.captureMs, frame.width, frame.height, landmarks));
        this.sent += 1;
      }
    }

    // Too slow: the mean processing time over SLOW_WINDOW_MS allows fewer than MIN_FPS, for that long.
    _judge(now) {
      if (now - this.started < WARMUP_MS || !this.onSlow) return;
      const ms = this.busyMs.reduce((a, [, d]) => a + d, 0) / this.busyMs.length;
      if (1000 / ms >= MIN_FPS) {
        this.slowSince = null;
      } else if (this.slowSince === null) {
        this.slowSince = now;
      } else if (now - this.slowSince >= SLOW_WINDOW_MS) {
        this.running = false;
        this.onSlow(`the landmarker managed only ${(1000 / ms).toFixed(0)} frames per second here`);
      }
    }
  }

  // Load the landmarker and measure one frame of `video` (a playing <video>). Throws when it cannot run.
  async function open(video) {
    const why = unsupported();
    if (why) throw new Error(why);
    await loadScript();
    const mesh = new window.FaceMesh({ locateFile: (file) => BASE + file });
    // CPU inference (XNNPACK): the server's Python MediaPipe runs the same, so the points agree; and it runs
    // where WebGL is only emulated. The detection and presence thresholds are the graph's own (0.5, as the server's).
    mesh.setOptions({ maxNumFaces: 1, refineLandmarks: true, selfieMode: false, useCpuInference: true });
    await mesh.initialize();
    if (!video.videoWidth) await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
    await mesh.send({ image: video });  // compiles and allocates: the first frame is slow
    return new Landmarker(mesh, video);
  }

  window.enlivenLandmarks = { unsupported, open, encode, MIN_FPS };
})();
