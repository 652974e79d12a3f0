// flowrtc's built-in page: one session with the stream that serves it, by WebRTC or (audio
// streams) over the WebSocket route, PCM16 both ways (?transport=websocket, or the selector).
// Every URL is relative to the page, so the page works under any mount path or proxy prefix.
"use strict";

(() => {
  const base = new URL(".", document.baseURI);
  const url = (path) => new URL(path, base).toString();
  const $ = (id) => document.getElementById(id);

  // Everything a person sees, also readable by tests (window.flowrtc).
  const state = (window.flowrtc = {
    status: "loading",
    transport: new URLSearchParams(location.search).get("transport") === "websocket" ? "websocket" : "webrtc",
    webrtcId: null,
    config: null,
    logs: [],
    errors: [],
    outputs: [],
    messages: [],
    stats: { packetsSent: 0, packetsReceived: 0, bytesReceived: 0, framesDecoded: 0, captured: 0 },
    micRms: 0,
    replyRms: 0,
    maxReplyRms: 0,
    clears: 0,
    answerMs: [], // end of the user's speech to the first reply audio, per turn (ms)
    outputRate: null,
    connectedAt: null,
  });

  const AUDIO_DEFAULTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: { ideal: 1 } };
  const VIDEO_DEFAULTS = { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };

  let pc = null;
  let channel = null;
  let events = null;
  let localStream = null;
  let timers = [];
  let audioContext = null;
  let pendingCandidates = null;
  let socket = null; // the WebSocket transport's connection
  let capture = null; // its microphone worklet
  let captureModule = null; // the worklet's code being (or once) added to the AudioContext
  let replyBus = null; // where its reply audio is played (and metered)
  let playhead = 0; // AudioContext time at which the next reply frame starts
  let scheduled = []; // reply frames scheduled and not yet played
  let lastLoudAt = null; // performance.now() when the last loud microphone frame was sent
  let answered = true; // whether a reply frame came since then
  let lastReplyAt = null; // performance.now() of the last reply frame
  const LOUD_RMS = 300 / 32768; // -41 dBFS: a frame of speech (the benchmarks' SPEECH_RMS)
  const inputControls = [];

  function setStatus(status) {
    state.status = status;
    const pill = $("status");
    pill.textContent = status;
    pill.dataset.status = status;
    $("start").disabled = !["ready", "closed", "failed"].includes(status);
    $("stop").disabled = !["connecting", "connected"].includes(status);
    $("transport").disabled = $("start").disabled;
  }

  function log(type, text) {
    const entry = { type, text: String(text), at: Date.now() };
    state.logs.push(entry);
    const item = document.createElement("li");
    item.dataset.type = type;
    item.textContent = `${new Date(entry.at).toLocaleTimeString()} ${type}: ${entry.text}`;
    $("log").prepend(item);
  }

  function showError(text) {
    state.errors.push(String(text));
    log("error", text);
    const box = $("error");
    box.textContent = text;
    box.hidden = false;
  }

  async function postJSON(path, body) {
    const response = await fetch(url(path), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = { status: "failed", meta: { error: `HTTP ${response.status}` } };
    }
    if (!response.ok && data.status !== "failed") data = { status: "failed", meta: { error: `HTTP ${response.status}` } };
    return data;
  }

  function describeFailure(meta) {
    if (!meta) return "the server refused the connection";
    if (meta.error === "concurrency_limit_reached") return `Too many concurrent connections (limit ${meta.limit}); try again later.`;
    return meta.detail ? `${meta.error}: ${meta.detail}` : String(meta.error);
  }

  // -- additional inputs ------------------------------------------------------------
  function renderInputs(specs) {
    const form = $("inputs");
    specs.forEach((spec, index) => {
      const kind = String(spec.type || spec.component || "textbox").toLowerCase();
      const label = document.createElement("label");
      const caption = document.createElement("span");
      caption.textContent = spec.label || spec.name || `input ${index + 1}`;
      label.append(caption);
      let control;
      let read;
      const choices = (spec.choices || []).map((choice) => (Array.isArray(choice) ? choice : [choice, choice]));
      if (kind === "slider" || kind === "number") {
        control = document.createElement("input");
        control.type = kind === "slider" ? "range" : "number";
        if (spec.minimum != null) control.min = spec.minimum;
        if (spec.maximum != null) control.max = spec.maximum;
        control.step = spec.step != null ? spec.step : "any";
        if (spec.value != null) control.value = spec.value;
        read = () => Number(control.value);
        if (kind === "slider") {
          const shown = document.createElement("output");
          shown.textContent = control.value;
          control.addEventListener("input", () => (shown.textContent = control.value));
          label.append(shown);
        }
      } else if (kind === "checkbox") {
        control = document.createElement("input");
        control.type = "checkbox";
        control.checked = Boolean(spec.value);
        read = () => control.checked;
      } else if (kind === "dropdown" || kind === "radio") {
        control = document.createElement("select");
        for (const [shown, value] of choices) {
          const option = document.createElement("option");
          option.textContent = String(shown);
          option.value = JSON.stringify(value);
          if (JSON.stringify(value) === JSON.stringify(spec.value)) option.selected = true;
          control.append(option);
        }
        read = () => JSON.parse(control.value);
      } else {
        control = document.createElement(spec.lines > 1 ? "textarea" : "input");
        if (control.tagName === "INPUT") control.type = "text";
        if (spec.placeholder) control.placeholder = spec.placeholder;
        control.value = spec.value != null ? spec.value : "";
        read = () => control.value;
      }
      control.name = spec.name || `input-${index}`;
      control.addEventListener("change", () => sendInputs());
      label.append(control);
      if (spec.info) {
        const info = document.createElement("small");
        info.className = "muted";
        info.textContent = spec.info;
        label.append(info);
      }
      form.append(label);
      inputControls.push(read);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sendInputs();
    });
    $("inputs-panel").hidden = specs.length === 0;
  }

  async function sendInputs() {
    if (!state.webrtcId || inputControls.length === 0) return;
    const args = inputControls.map((read) => read());
    const result = await postJSON("input_hook", { webrtc_id: state.webrtcId, args });
    if (result.status === "failed") log("warning", `inputs not delivered: ${describeFailure(result.meta)}`);
  }

  // -- server messages --------------------------------------------------------------
  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      log("message", text);
      return null;
    }
  }

  function onMessage(message) {
    state.messages.push(message);
    const data = message.message != null ? message.message : message.data;
    switch (message.type) {
      case "send_input":
        sendInputs();
        break;
      case "fetch_output":
        break; // the outputs arrive on the event stream
      case "log":
        log("log", data);
        break;
      case "warning":
        log("warning", data);
        break;
      case "error":
        showError(data);
        stop("failed"); // the server ends a session whose handler failed
        break;
      case "stopword":
        log("stopword", "stop word detected");
        break;
      case "end_stream":
        log("end_stream", data || "stream closed");
        stop();
        break;
      case "update_connection":
        if (data === "closed") stop();
        break;
      default:
        log(message.type || "message", JSON.stringify(data));
    }
  }

  function showOutput(args) {
    state.outputs.push(args);
    const item = document.createElement("li");
    item.textContent = args.map((value) => (typeof value === "string" ? value : JSON.stringify(value))).join("  ·  ");
    $("outputs").prepend(item);
  }

  // -- answer timing: from the end of the user's speech to the first reply audio -----------
  function speechHeard(now) {
    lastLoudAt = now;
    answered = false;
  }

  // The first reply audio after the user went quiet answers their turn (audio of an older
  // reply still coming while they speak, until the server's clear, does not: a reply begins
  // when none came for 300 ms).
  function replyHeard(now) {
    const begins = lastReplyAt === null || now - lastReplyAt > 300;
    lastReplyAt = now;
    if (begins && !answered && lastLoudAt !== null && now - lastLoudAt > 100) {
      answered = true;
      state.answerMs.push(now - lastLoudAt);
      $("stat-answer").textContent = `${Math.round(now - lastLoudAt)} ms`;
    }
  }

  // WebRTC mode: the user's speech from the microphone's level (the last ~5 ms, every 10 ms)...
  function timeSpeechByLevel(source) {
    pollLevel(source, 256, 10, (rms) => {
      if (rms > LOUD_RMS) speechHeard(performance.now());
    });
  }

  // ... and the reply from its frames as the browser plays them (quiet ones too, as the
  // WebSocket mode counts frames): the receiver's source reports when it last played one.
  function timeRepliesByPlayout(receiver) {
    let lastPlayed = null;
    timers.push(
      setInterval(() => {
        const sources = receiver.getSynchronizationSources ? receiver.getSynchronizationSources() : [];
        if (!sources.length || sources[0].timestamp === lastPlayed) return;
        lastPlayed = sources[0].timestamp;
        replyHeard(performance.now());
      }, 10),
    );
  }

  // -- levels and stats --------------------------------------------------------------
  function meter(stream, element, onLevel) {
    audioContext = audioContext || new AudioContext();
    const source = audioContext.createMediaStreamSource(stream);
    meterNode(source, element, onLevel);
    return source;
  }

  function meterNode(node, element, onLevel) {
    pollLevel(node, 1024, 50, (rms) => {
      element.value = rms;
      onLevel(rms);
    });
  }

  // Every everyMs, the RMS of the last `size` samples that reached `node`.
  function pollLevel(node, size, everyMs, onLevel) {
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = size;
    node.connect(analyser);
    const samples = new Float32Array(size);
    timers.push(
      setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const sample of samples) sum += sample * sample;
        onLevel(Math.sqrt(sum / size));
      }, everyMs),
    );
  }

  async function pollStats() {
    if (!pc) return;
    const report = await pc.getStats();
    const stats = { packetsSent: 0, packetsReceived: 0, bytesReceived: 0, framesDecoded: 0, jitterBufferMs: null };
    report.forEach((entry) => {
      if (entry.type === "outbound-rtp") stats.packetsSent += entry.packetsSent || 0;
      if (entry.type === "inbound-rtp") {
        stats.packetsReceived += entry.packetsReceived || 0;
        stats.bytesReceived += entry.bytesReceived || 0;
        stats.framesDecoded += entry.framesDecoded || 0;
        // How long the browser holds received audio before playing it, on average so far.
        if (entry.kind === "audio" && entry.jitterBufferEmittedCount > 0) {
          stats.jitterBufferMs = (1000 * entry.jitterBufferDelay) / entry.jitterBufferEmittedCount;
        }
      }
    });
    state.stats = stats;
    $("stat-sent").textContent = `${stats.packetsSent} packets`;
    $("stat-received").textContent = `${stats.packetsReceived} packets`;
    if (stats.jitterBufferMs !== null) $("stat-jitter").textContent = `${Math.round(stats.jitterBufferMs)} ms`;
  }

  // -- connection -----------------------------------------------------------------
  function kindsOf(modality) {
    return modality === "audio-video" ? ["audio", "video"] : [modality];
  }

  async function sendCandidate(candidate) {
    const result = await postJSON("webrtc/offer", { type: "ice-candidate", webrtc_id: state.webrtcId, candidate });
    if (result.status === "failed") log("warning", `candidate refused: ${describeFailure(result.meta)}`);
  }

  async function start() {
    const config = state.config;
    $("error").hidden = true;
    setStatus("connecting");
    state.webrtcId = Math.random().toString(36).slice(2) + Date.now().toString(36);
    $("stat-id").textContent = state.webrtcId;
    state.answerMs = [];
    lastLoudAt = null;
    lastReplyAt = null;
    answered = true;
    if (state.transport === "websocket") return startWebSocket(config);
    const sends = config.mode !== "receive";
    const receives = config.mode !== "send";
    const kinds = kindsOf(config.modality);
    try {
      pc = new RTCPeerConnection(config.rtc_configuration || {});
      channel = pc.createDataChannel("text");
      channel.onopen = () => channel.send("handshake");
      channel.onmessage = (event) => {
        const message = parse(event.data);
        if (message) onMessage(message);
      };
      pc.onconnectionstatechange = () => {
        const connection = pc && pc.connectionState;
        if (connection === "connected") {
          state.connectedAt = Date.now();
          setStatus("connected");
        } else if (connection === "failed") {
          const other = state.config.modality === "audio" ? ", or choose WebSocket next to Start" : "";
          showError(`the connection failed (a TURN server may be needed on this network${other})`);
          stop("failed");
        } else if (connection === "closed") {
          if (state.status === "connected") stop();
        } else if (connection === "disconnected") {
          // Often a blip that ICE recovers from; give it a few seconds.
          const watched = pc;
          setTimeout(() => {
            if (pc === watched && pc.connectionState !== "connected") stop();
          }, 4000);
        }
      };
      pc.ontrack = (event) => {
        const stream = event.streams[0] || new MediaStream([event.track]);
        if (event.track.kind === "audio") {
          $("remote-audio").srcObject = stream;
          meter(stream, $("reply-level"), (rms) => {
            state.replyRms = rms;
            state.maxReplyRms = Math.max(state.maxReplyRms, rms);
          });
          timeRepliesByPlayout(event.receiver);
        } else {
          const video = $("remote-video");
          video.srcObject = stream;
          video.hidden = false;
        }
      };
      pendingCandidates = [];
      pc.onicecandidate = (event) => {
        if (!event.candidate || !event.candidate.candidate) return;
        const candidate = event.candidate.toJSON();
        if (pendingCandidates) pendingCandidates.push(candidate);
        else sendCandidate(candidate);
      };
      const senders = [];
      if (sends) {
        const constraints = {};
        for (const kind of kinds) {
          const given = config.track_constraints && config.track_constraints[kind];
          constraints[kind] = given != null ? given : kind === "audio" ? AUDIO_DEFAULTS : VIDEO_DEFAULTS;
        }
        localStream = await navigator.mediaDevices.getUserMedia(constraints);
        for (const track of localStream.getTracks()) {
          const transceiver = pc.addTransceiver(track, { direction: receives ? "sendrecv" : "sendonly", streams: [localStream] });
          senders.push(transceiver.sender);
        }
        if (localStream.getAudioTracks().length) timeSpeechByLevel(meter(localStream, $("mic-level"), (rms) => (state.micRms = rms)));
        if (localStream.getVideoTracks().length) {
          const preview = $("local-video");
          preview.srcObject = localStream;
          preview.hidden = false;
        }
      } else {
        for (const kind of kinds) pc.addTransceiver(kind, { direction: "recvonly" });
      }
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await postJSON("webrtc/offer", { sdp: pc.localDescription.sdp, type: "offer", webrtc_id: state.webrtcId });
      if (answer.status === "failed") {
        showError(describeFailure(answer.meta));
        stop("failed");
        return;
      }
      await pc.setRemoteDescription(answer);
      const queued = pendingCandidates;
      pendingCandidates = null;
      for (const candidate of queued) await sendCandidate(candidate);
      if (config.rtp_params) {
        for (const sender of senders) {
          try {
            await sender.setParameters(Object.assign(sender.getParameters(), config.rtp_params));
          } catch (error) {
            log("warning", `rtp_params not applied: ${error}`);
          }
        }
      }
      timers.push(setInterval(pollStats, 500));
      sessionStarted();
    } catch (error) {
      showError(error && error.message ? error.message : String(error));
      stop("failed");
    }
  }

  // -- the WebSocket transport: PCM16 at the AudioContext's rate, both ways ------------
  // The microphone is cut into 20 ms frames in an AudioWorklet and sent as binary
  // frames; reply frames are scheduled back to back on the AudioContext's clock and
  // all dropped at once on the server's "clear" (barge-in).
  const CAPTURE_WORKLET = `
    class FlowrtcCapture extends AudioWorkletProcessor {
      constructor() {
        super();
        this.size = Math.round(sampleRate / 50);
        this.frame = new Int16Array(this.size);
        this.filled = 0;
      }
      process(inputs) {
        const input = inputs[0] && inputs[0][0];
        if (!input) return true;
        for (let i = 0; i < input.length; i++) {
          this.frame[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(input[i] * 32768)));
          if (this.filled === this.size) {
            this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // detaches it
            this.frame = new Int16Array(this.size);
            this.filled = 0;
          }
        }
        return true;
      }
    }
    registerProcessor("flowrtc-capture", FlowrtcCapture);
  `;

  async function startWebSocket(config) {
    state.stats = { packetsSent: 0, packetsReceived: 0, bytesReceived: 0, framesDecoded: 0, captured: 0 };
    state.clears = 0;
    try {
      audioContext = audioContext || new AudioContext();
      await audioContext.resume();
      const rate = audioContext.sampleRate;
      const given = config.track_constraints && config.track_constraints.audio;
      localStream = await navigator.mediaDevices.getUserMedia({ audio: given != null ? given : AUDIO_DEFAULTS });
      meter(localStream, $("mic-level"), (rms) => (state.micRms = rms));
      if (!captureModule) {
        const module = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
        captureModule = audioContext.audioWorklet.addModule(module).finally(() => URL.revokeObjectURL(module));
      }
      await captureModule; // once per AudioContext: a processor name registers only once
      replyBus = audioContext.createGain();
      replyBus.connect(audioContext.destination);
      meterNode(replyBus, $("reply-level"), (rms) => {
        state.replyRms = rms;
        state.maxReplyRms = Math.max(state.maxReplyRms, rms);
      });

      const opened = new WebSocket(url("websocket/offer").replace(/^http/, "ws"));
      opened.binaryType = "arraybuffer";
      socket = opened;
      await new Promise((resolve, reject) => {
        opened.onopen = resolve;
        opened.onerror = () => reject(new Error("the WebSocket connection failed"));
      });
      opened.onmessage = (event) => (typeof event.data === "string" ? onSocketText(event.data) : playFrame(event.data));
      opened.onclose = (event) => {
        if (socket !== opened) return; // stopped here
        if (event.code !== 1000 && state.errors.length === 0) showError(`the connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
        stop(event.code === 1000 ? "closed" : "failed");
      };
      opened.send(JSON.stringify({ event: "start", websocket_id: state.webrtcId, format: "pcm16", sample_rate: rate, output_sample_rate: rate }));

      capture = new AudioWorkletNode(audioContext, "flowrtc-capture");
      capture.port.onmessage = (event) => {
        state.stats.captured += 1; // 20 ms frames from the microphone
        if (socket && socket.readyState === WebSocket.OPEN && state.status === "connected") {
          if (rmsOf(new Int16Array(event.data)) > LOUD_RMS) speechHeard(performance.now());
          socket.send(event.data);
          state.stats.packetsSent += 1;
        }
      };
      audioContext.createMediaStreamSource(localStream).connect(capture);
      const silent = audioContext.createGain();
      silent.gain.value = 0; // the worklet runs only when something pulls it
      capture.connect(silent).connect(audioContext.destination);
      timers.push(setInterval(showSocketStats, 500));
    } catch (error) {
      showError(error && error.message ? error.message : String(error));
      stop("failed");
    }
  }

  function onSocketText(text) {
    const message = parse(text);
    if (!message) return;
    if (message.event === "started") {
      state.outputRate = message.output_sample_rate;
      state.connectedAt = Date.now();
      setStatus("connected");
      sessionStarted();
    } else if (message.event === "clear") {
      state.clears += 1;
      dropScheduled();
    } else if (message.event === "error") {
      showError(message.message || message.kind); // the server closes the socket next
    } else if (message.status === "failed") {
      showError(describeFailure(message.meta));
    } else if (message.event !== "pong") {
      onMessage(message);
    }
  }

  function rmsOf(pcm) {
    let sum = 0;
    for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
    return Math.sqrt(sum / Math.max(1, pcm.length)) / 32768;
  }

  function playFrame(data) {
    if (!state.outputRate || !replyBus) return;
    const pcm = new Int16Array(data);
    state.stats.packetsReceived += 1;
    // The first frame of a reply that begins after the user went quiet answers their turn
    // (frames of an older reply still coming while they speak, until the server's clear,
    // do not: a reply begins when no frame came for 300 ms).
    replyHeard(performance.now());
    state.stats.bytesReceived += data.byteLength;
    const buffer = audioContext.createBuffer(1, pcm.length, state.outputRate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
    const source = audioContext.createBufferSource();
    source.buffer = buffer;
    source.connect(replyBus);
    const at = Math.max(playhead, audioContext.currentTime + 0.02); // 20 ms of slack for jitter
    source.start(at);
    playhead = at + buffer.duration;
    scheduled.push(source);
    source.onended = () => {
      scheduled = scheduled.filter((item) => item !== source);
    };
  }

  function dropScheduled() {
    for (const source of scheduled) {
      try {
        source.stop();
      } catch (_) {
        // already ended
      }
    }
    scheduled = [];
    playhead = 0;
  }

  function showSocketStats() {
    $("stat-sent").textContent = `${state.stats.packetsSent} frames`;
    $("stat-received").textContent = `${state.stats.packetsReceived} frames`;
  }

  // The session exists on the server: read its outputs, count its time, send its inputs.
  function sessionStarted() {
    events = new EventSource(url(`outputs?webrtc_id=${encodeURIComponent(state.webrtcId)}`));
    events.addEventListener("output", (event) => showOutput(JSON.parse(event.data)));
    events.addEventListener("end", () => events && events.close());
    if (state.config.time_limit) startTimer(state.config.time_limit);
    sendInputs();
  }

  function startTimer(seconds) {
    const until = Date.now() + seconds * 1000;
    const tick = () => ($("timer").textContent = `${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s left`);
    tick();
    timers.push(setInterval(tick, 1000));
  }

  function stop(status = "closed") {
    for (const timer of timers) clearInterval(timer);
    timers = [];
    if (events) events.close();
    events = null;
    if (localStream) for (const track of localStream.getTracks()) track.stop();
    localStream = null;
    if (socket) {
      const closing = socket;
      socket = null;
      if (closing.readyState === WebSocket.OPEN) closing.send(JSON.stringify({ event: "stop" }));
      closing.close(1000);
    }
    if (capture) capture.disconnect();
    capture = null;
    dropScheduled();
    if (replyBus) replyBus.disconnect();
    replyBus = null;
    if (pc) {
      const closing = pc;
      pc = null;
      if (channel && channel.readyState === "open") channel.close();
      closing.close();
    }
    channel = null;
    $("timer").textContent = "";
    setStatus(status);
  }

  async function load() {
    try {
      const response = await fetch(url("config"));
      const config = await response.json();
      if (!response.ok) throw new Error(describeFailure(config.meta));
      state.config = config;
      const title = (config.ui_args && config.ui_args.title) || "flowrtc";
      $("title").textContent = title;
      document.title = title;
      $("mode").textContent = `${config.modality} · ${config.mode}`;
      const choice = $("transport");
      if (config.modality !== "audio") state.transport = "webrtc"; // the WebSocket route carries audio only
      choice.hidden = config.modality !== "audio";
      choice.value = state.transport;
      choice.addEventListener("change", () => (state.transport = choice.value));
      renderInputs(config.additional_inputs || []);
      setStatus("ready");
    } catch (error) {
      showError(`could not load the stream's configuration: ${error.message || error}`);
      setStatus("failed");
      $("start").disabled = true;
    }
  }

  $("start").addEventListener("click", () => start());
  $("stop").addEventListener("click", () => stop());
  window.addEventListener("beforeunload", () => stop());
  window.flowrtcStart = start;
  window.flowrtcStop = stop;
  load();
})();
