// enliven page: choose a photo, start the webcam, show the animated stream with stats and controls.
// Signalling: POST /api/sessions -> {session_id, token}; POST /api/sessions/{id}/offer (Bearer token).
// A data channel "control" carries hello (token), 1 s heartbeats, stats, face events and controls.
// Where the browser can run the face landmarker (landmarks.js), no camera video is sent: only face points,
// on a second data channel "points"; otherwise (or when it is too slow) the camera's video, as before.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    preview: $("photo-preview"), caption: $("photo-caption"), file: $("photo-file"), consent: $("consent"),
    consentBox: $("consent-box"), useDefault: $("use-default"), local: $("local"), remote: $("remote"),
    start: $("start"), stop: $("stop"), del: $("delete"), mic: $("mic"), hear: $("hear"), status: $("status"),
    fps: $("stat-fps"), latency: $("stat-latency"), face: $("stat-face"), server: $("stat-server"),
    reset: $("reset"), size: $("size"), engine: $("engine"), eyes: $("eyes"), gainsReset: $("gains-reset"),
    gains: Array.from(document.querySelectorAll("input[data-gain]")),
    upstream: $("upstream-note"), popout: $("popout"),
  };
  const DEFAULT_PHOTO = "/static/default-photo.png";
  const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

  let photoFile = null;       // the user's chosen photo (stays in this page until deleted)
  let previewUrl = null;
  let live = null;            // {session, token, pc, dc, stream, timers, ...} while running
  let videoReason = null;     // why this page sends camera video instead of face points (null: it need not)
  const stats = {             // latest figures, also read by the end-to-end test
    outputFps: 0, latencyMs: null, faceFound: null, serverMs: null, framesShown: 0, connected: false,
    rttMs: null, server: null, errors: [], upstream: null,
  };
  window.enliven = { stats };

  // --- motion controls: per-channel strength and the eyelids, remembered by this browser ----------
  // Sent whole on every change ({"type": "set", "gains": {...}}), at most every SEND_INTERVAL_MS while a
  // slider moves (the last position always goes out); the server checks them and echoes them in stats.
  const CONTROLS_KEY = "enliven.controls.v1";
  const SEND_INTERVAL_MS = 100;
  const EYE_MODES = ["follow", "open", "auto-blink"];
  const controls = { timer: null, dirty: false };

  function gains() {
    const out = {};
    ui.gains.forEach((el) => { out[el.dataset.gain] = parseFloat(el.value); });
    return out;
  }

  function showGain(el) {
    $(`${el.id}-value`).textContent = parseFloat(el.value).toFixed(2);
  }

  function saveControls() {
    try {
      localStorage.setItem(CONTROLS_KEY, JSON.stringify({ gains: gains(), eyes: ui.eyes.value }));
    } catch (e) { /* storage off (private mode): the controls still work for this visit */ }
  }

  function loadControls() {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(CONTROLS_KEY) || "null"); } catch (e) { saved = null; }
    if (!saved || typeof saved !== "object") return;
    ui.gains.forEach((el) => {
      const v = saved.gains && saved.gains[el.dataset.gain];
      if (typeof v === "number" && v >= parseFloat(el.min) && v <= parseFloat(el.max)) el.value = String(v);
    });
    if (EYE_MODES.includes(saved.eyes)) ui.eyes.value = saved.eyes;
  }

  function sendGains() {
    controls.dirty = false;
    send({ type: "set", gains: gains() });
  }

  function gainsChanged() {
    saveControls();
    if (controls.timer) { controls.dirty = true; return; }
    sendGains();
    controls.timer = setInterval(() => {
      if (controls.dirty) sendGains();
      else { clearInterval(controls.timer); controls.timer = null; }
    }, SEND_INTERVAL_MS);
  }

  // After the hello: send what this browser remembers, if the server's session starts elsewhere.
  function syncControls(settings) {
    const mine = gains();
    const theirs = (settings && settings.gains) || {};
    if (Object.keys(mine).some((k) => theirs[k] !== mine[k])) sendGains();
    if (settings && settings.eyes !== ui.eyes.value) send({ type: "set", eyes: ui.eyes.value });
  }

  loadControls();
  ui.gains.forEach((el) => {
    showGain(el);
    el.addEventListener("input", () => { showGain(el); gainsChanged(); });
  });
  ui.gainsReset.addEventListener("click", () => {
    ui.gains.forEach((el) => { el.value = "1"; showGain(el); });
    gainsChanged();
  });
  ui.eyes.addEventListener("change", () => {
    saveControls();
    send({ type: "set", eyes: ui.eyes.value });
  });

  function setStatus(text, kind = "") {
    ui.status.textContent = text;
    ui.status.className = kind;
  }

  // --- photo --------------------------------------------------------------------------------
  function showPhoto(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    if (file) {
      previewUrl = URL.createObjectURL(file);
      ui.preview.src = previewUrl;
      ui.caption.textContent = "Your photo (not uploaded until you start).";
    } else {
      ui.preview.src = DEFAULT_PHOTO;
      ui.caption.textContent = "Built-in photo: Eileen Collins, NASA (public domain).";
    }
  }

  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    if (!file) return;
    if (file.size > MAX_UPLOAD_BYTES) {
      setStatus("That photo is larger than 10 MB; choose a smaller one.", "error");
      ui.file.value = "";
      return;
    }
    photoFile = file;
    showPhoto(file);
    ui.consentBox.classList.toggle("needed", !ui.consent.checked);
    setStatus(ui.consent.checked ? "Photo chosen. Press \u201cStart camera\u201d."
      : "Confirm the consent statement to use this photo.", ui.consent.checked ? "" : "error");
  });
  ui.consent.addEventListener("change", () => ui.consentBox.classList.toggle("needed", !!photoFile && !ui.consent.checked));
  ui.useDefault.addEventListener("click", () => {
    photoFile = null;
    ui.file.value = "";
    showPhoto(null);
    ui.consentBox.classList.remove("needed");
    setStatus("Using the built-in photo.");
  });

  // --- session ------------------------------------------------------------------------------
  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.message) return body.message;
    } catch (e) { /* not JSON */ }
    return `the server answered ${response.status}`;
  }

  async function createSession() {
    const size = parseInt(ui.size.value, 10);
    let response;
    if (photoFile) {
      const form = new FormData();
      form.append("consent", "true");
      form.append("size", String(size));
      form.append("photo", photoFile, "photo");
      response = await fetch("/api/sessions", { method: "POST", body: form });
    } else {
      response = await fetch("/api/sessions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ size }),
      });
    }
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  function preferVp8(transceiver) {
    if (!window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const rank = (c) => (c.mimeType === "video/VP8" ? 0 : c.mimeType === "video/H264" ? 1 : 2);
    transceiver.setCodecPreferences([...codecs].sort((a, b) => rank(a) - rank(b)));
  }

  function iceGatheringDone(pc, timeoutMs = 3000) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);  // host candidates only: gathering is fast; never wait forever
    });
  }

  function send(message) {
    if (live && live.dc && live.dc.readyState === "open") live.dc.send(JSON.stringify(message));
  }

  async function start() {
    if (live) return;
    if (photoFile && !ui.consent.checked) {
      ui.consentBox.classList.add("needed");
      setStatus("Confirm the consent statement first, or use the built-in photo.", "error");
      return;
    }
    ui.start.disabled = true;
    setStatus(photoFile ? "Uploading your photo\u2026" : "Starting\u2026");
    const run = { timers: [], shown: 0, lastShown: 0, prev: null };
    live = run;
    try {
      const created = await createSession();
      run.session = created.session_id;
      run.token = created.token;
      const trained = ui.engine.querySelector('option[value="trained"]');
      if (!created.engines || !created.engines.includes("trained")) {
        trained.disabled = true;
        trained.textContent = "Trained (not available)";
        ui.engine.value = "analytic";
      }
      setStatus("Asking for the camera\u2026");
      run.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
        audio: ui.mic.checked,
      });
      if (live !== run) throw new Error("stopped");
      ui.local.srcObject = run.stream;
      await chooseUpstream(run, created);
      if (live !== run) throw new Error("stopped");
      const pc = new RTCPeerConnection({ iceServers: [] });
      run.pc = pc;
      run.dc = pc.createDataChannel("control");
      const video = run.stream.getVideoTracks()[0];
      if (run.landmarker) {  // face points only: the video section just receives the animated video
        preferVp8(pc.addTransceiver("video", { direction: "recvonly" }));
        run.points = pc.createDataChannel("points", { ordered: false, maxRetransmits: 0 });
      } else {
        preferVp8(pc.addTransceiver(video, { direction: "sendrecv", streams: [run.stream] }));
      }
      const audio = run.stream.getAudioTracks()[0];
      if (audio) pc.addTransceiver(audio, { direction: "sendrecv", streams: [run.stream] });
      ui.hear.disabled = !audio;
      const remoteStream = new MediaStream();
      ui.remote.srcObject = remoteStream;
      pc.addEventListener("track", (e) => {
        remoteStream.addTrack(e.track);
        ui.remote.play().catch(() => {});
        ui.popout.disabled = !document.pictureInPictureEnabled || e.track.kind !== "video";
      });
      pc.addEventListener("connectionstatechange", () => {
        if (live !== run) return;
        if (pc.connectionState === "connected") setStatus("Connected: move your head, blink, talk.", "ok");
        if (pc.connectionState === "failed") stop("The connection failed.", "error");
      });
      wireChannel(run);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      setStatus("Connecting\u2026");
      const response = await fetch(`/api/sessions/${encodeURIComponent(run.session)}/offer`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${run.token}` },
        body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      await pc.setRemoteDescription(await response.json());
      watchFrames(run);
      run.timers.push(setInterval(() => pollStats(run), 1000));
      ui.stop.disabled = false;
    } catch (e) {
      if (live === run) await stop(`Could not start: ${e.message || e}`, "error");
    }
  }

  function wireChannel(run) {
    const dc = run.dc;
    dc.addEventListener("open", () => {
      dc.send(JSON.stringify({ type: "hello", token: run.token }));
      run.lastHeard = performance.now();
      run.timers.push(setInterval(() => {
        send({ type: "ping", t: performance.now() });
        // The server answers every ping: silence for 5 s means it is gone (ICE alone takes ~30 s).
        if (live === run && !run.asking && performance.now() - run.lastHeard > 5000) lost(run);
      }, 1000));
    });
    dc.addEventListener("close", () => {
      if (live === run) stop("The server closed the session.", "error");
    });
    dc.addEventListener("message", (e) => {
      if (live !== run) return;  // an ended run's last messages (e.g. its stats) must not land in the next run
      run.lastHeard = performance.now();
      let m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "hello" && m.ok) {
        stats.connected = true;
        if (run.landmarker) {
          run.landmarker.start(run.points, { onSlow: (why) => { if (live === run) fallBackToVideo(why); } });
        }
        ui.reset.disabled = false;
        const mode = document.querySelector('input[name="mode"]:checked').value;
        if (mode !== m.settings.mode) send({ type: "set", mode });
        if (ui.engine.value !== m.settings.engine) send({ type: "set", engine: ui.engine.value });
        syncControls(m.settings);
      } else if (m.type === "pong" && typeof m.t === "number") {
        stats.rttMs = performance.now() - m.t;
      } else if (m.type === "stats") {
        stats.server = m;
        stats.serverMs = m.server_ms_p50;
        showFace(m.face_found);
      } else if (m.type === "face") {
        showFace(m.found);
      } else if (m.type === "hint" && typeof m.max_fps === "number") {
        // The server animates fewer frames than the camera sends: send fewer (less work on both sides).
        const track = run.stream && run.stream.getVideoTracks()[0];
        if (track) {
          track.applyConstraints({
            width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: m.max_fps, max: m.max_fps },
          }).catch(() => {});
        }
      } else if (m.type === "error") {
        stats.errors.push(m);
        setStatus(m.message, "error");
      } else if (m.type === "bye") {
        stop(`The server ended the session (${m.reason}).`, m.reason === "deleted by the user" ? "" : "error");
      }
    });
  }

  // The session went quiet: ask the page's server why (with --cluster, the machine animating it may be gone).
  async function lost(run) {
    run.asking = true;
    let why = "";
    try {
      const r = await fetch(`/api/sessions/${encodeURIComponent(run.session)}`, {
        headers: { Authorization: `Bearer ${run.token}` }, signal: AbortSignal.timeout(3000),
      });
      const body = await r.json();
      if (body.state === "ended" && body.reason) why = `: the session ended (${body.reason})`;
    } catch (e) { /* the server is unreachable too */ }
    if (live === run) stop(`Lost the connection to the server${why}.`, "error");
  }

  function showFace(found) {
    stats.faceFound = found;
    ui.face.textContent = found ? "found" : "not found";
    ui.face.className = found ? "yes" : "no";
  }

  // Frames actually shown by the animated <video>: the output fps a person sees.
  function watchFrames(run) {
    const video = ui.remote;
    if (!video.requestVideoFrameCallback) return;
    let presented = null;
    const onFrame = (now, meta) => {
      if (live !== run) return;
      // Frames presented since the last callback (callbacks coalesce while the page is busy, e.g. measuring a face)
      const count = meta && meta.presentedFrames ? meta.presentedFrames : null;
      const step = count !== null && presented !== null ? Math.max(1, count - presented) : 1;
      presented = count;
      run.shown += step;
      stats.framesShown += step;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // Latency estimate (ms): browser encode + network round trip + server decode and encode (~3 ms) +
  // server time per frame + browser jitter buffer + decode. See docs/server.md.
  async function pollStats(run) {
    if (live !== run || !run.pc) return;
    const now = performance.now();
    if (run.lastPoll) {
      stats.outputFps = (run.shown - run.lastShown) * 1000 / (now - run.lastPoll);
      ui.fps.textContent = stats.outputFps.toFixed(1);
    }
    run.lastPoll = now;
    run.lastShown = run.shown;
    stats.landmarkerMs = run.landmarker ? run.landmarker.meanMs : null;  // the page's own time per frame
    let inbound = null;
    let outbound = null;
    let pair = null;
    const report = await run.pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
      if (s.type === "outbound-rtp" && s.kind === "video") outbound = s;
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
    const prev = run.prev;
    run.prev = { inbound, outbound };
    const sendsVideo = !run.landmarker;
    if (!prev || !inbound || !prev.inbound || !stats.server) return;
    if (sendsVideo && (!outbound || !prev.outbound)) return;
    const dIn = (k) => (inbound[k] || 0) - (prev.inbound[k] || 0);
    const dOut = (k) => (sendsVideo ? (outbound[k] || 0) - (prev.outbound[k] || 0) : 0);
    const emitted = dIn("jitterBufferEmittedCount");
    const decoded = dIn("framesDecoded");
    const encoded = dOut("framesEncoded");
    const jitterMs = emitted > 0 ? (dIn("jitterBufferDelay") / emitted) * 1000 : 0;
    const decodeMs = decoded > 0 ? (dIn("totalDecodeTime") / decoded) * 1000 : 0;
    // Video: the browser's encode time; face points: the landmarker's time per frame.
    const encodeMs = sendsVideo ? (encoded > 0 ? (dOut("totalEncodeTime") / encoded) * 1000 : 0) : run.landmarker.meanMs;
    const rttMs = pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : (stats.rttMs || 0);
    const SERVER_CODEC_MS = 3;  // VP8 decode 640x480 + encode 256x256 on the server (DESIGN.md)
    const serverMs = stats.server.server_ms_p50 || 0;
    stats.latencyMs = encodeMs + rttMs + SERVER_CODEC_MS + serverMs + jitterMs + decodeMs;
    ui.latency.textContent = Math.round(stats.latencyMs);
    ui.server.textContent = serverMs.toFixed(0);
  }

  // Face points where this browser can run the landmarker well enough, else camera video (says which, and why).
  async function chooseUpstream(run, created) {
    run.landmarker = null;
    let why = videoReason || window.enlivenLandmarks.unsupported();
    if (!why) {
      setStatus("Starting the face landmarker in this browser\u2026");
      try {
        run.landmarker = await window.enlivenLandmarks.open(ui.local);
      } catch (e) {
        why = e.message || String(e);
      }
    }
    if (!run.landmarker && created.landmarks_only) {
      throw new Error(`this server takes face points only, and ${why}`);
    }
    stats.upstream = run.landmarker ? "landmarks" : "video";
    ui.upstream.textContent = run.landmarker
      ? "Your camera stays on this device; only face points are sent."
      : `Sending your camera's video to the server: ${why}.`;
    ui.upstream.className = run.landmarker ? "ok" : "";
  }

  // The landmarker turned out too slow here: start again, sending video.
  async function fallBackToVideo(why) {
    videoReason = why;
    await stop(`Switching to sending video: ${why}.`);
    start();
  }

  async function stop(message = "Stopped.", kind = "") {
    const run = live;
    live = null;
    stats.connected = false;
    stats.server = null;  // the ended session's figures
    if (run) {
      run.timers.forEach(clearInterval);
      if (run.landmarker) run.landmarker.stop();
      if (run.dc) try { run.dc.close(); } catch (e) { /* closing */ }
      if (run.pc) try { run.pc.close(); } catch (e) { /* closing */ }
      if (run.stream) run.stream.getTracks().forEach((t) => t.stop());
      if (run.session) {
        // Ends the session now; the server deletes the photo (it would also notice the closed connection).
        fetch(`/api/sessions/${encodeURIComponent(run.session)}`, {
          method: "DELETE", keepalive: true, headers: { Authorization: `Bearer ${run.token}` },
        }).catch(() => {});
      }
    }
    ui.local.srcObject = null;
    ui.remote.srcObject = null;
    ui.start.disabled = false;
    ui.stop.disabled = true;
    ui.reset.disabled = true;
    ui.hear.disabled = true;
    ui.popout.disabled = true;
    if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    ui.fps.textContent = "\u2013";
    ui.latency.textContent = "\u2013";
    ui.server.textContent = "\u2013";
    ui.face.textContent = "\u2013";
    ui.face.className = "";
    setStatus(message, kind);
  }

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", () => stop());
  ui.del.addEventListener("click", async () => {
    await stop("Your photo was deleted from the server and from this page.", "ok");
    photoFile = null;
    ui.file.value = "";
    ui.consent.checked = false;
    showPhoto(null);
  });
  ui.hear.addEventListener("change", () => { ui.remote.muted = !ui.hear.checked; });
  // Pop-out: the animated video in the browser's own always-on-top window (Picture-in-Picture), e.g. beside a call.
  ui.popout.addEventListener("click", () => {
    const pop = document.pictureInPictureElement ? document.exitPictureInPicture() : ui.remote.requestPictureInPicture();
    pop.catch((e) => setStatus(`Cannot pop out the video: ${e.message || e}`, "error"));
  });
  document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", () => {
    if (r.checked) send({ type: "set", mode: r.value });
  }));
  ui.reset.addEventListener("click", () => send({ type: "reset_reference" }));
  ui.size.addEventListener("change", () => send({ type: "set", size: parseInt(ui.size.value, 10) }));
  ui.engine.addEventListener("change", () => send({ type: "set", engine: ui.engine.value }));
  window.addEventListener("pagehide", () => { if (live) stop(); });
})();
