// signstream demo page: camera -> 640x480 JPEG (q 0.8) at ~25 fps -> Socket.IO `frame` (binary, with
// an id) -> `prediction` / `sign` events. No framework; the server is the page's own origin unless
// `?server=URL` says otherwise.
"use strict";

(() => {
  const FPS = 25;
  const MAX_IN_FLIGHT = 4; // frames sent but not yet answered; beyond this the camera frame is skipped
  const TOPK = 3;
  const LATENCY_WINDOW = 25;

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $("connection"), start: $("start"), error: $("error"), video: $("video"), canvas: $("canvas"),
    label: $("label"), fill: $("confidence-fill"), meter: $("confidence"), score: $("score"), top: $("top"),
    transcript: $("transcript"), fps: $("fps"), latency: $("latency"), predictions: $("predictions"),
  };
  const ERROR_TEXT = {
    capacity: "The server is at capacity. Please try again in a few minutes.",
    loading: "The server is still loading its model. Please try again in a moment.",
    unauthorized: "This server needs a token: open the page as /?token=YOUR_TOKEN.",
    too_many_connections: "Too many connections from your network. Close another tab and try again.",
    shutting_down: "The server is restarting. Please try again in a moment.",
  };

  let socket = null;
  let stream = null;
  let timer = null;
  let statsTimer = null;
  let nextId = 0;
  let sentThisSecond = 0;
  let predictionCount = 0;
  let refused = false; // the server said capacity/loading: keep that message up
  const inFlight = new Map(); // id -> performance.now() when sent
  const latencies = [];

  function setConnection(text, state) {
    ui.connection.textContent = text;
    ui.connection.className = `state state-${state}`;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function percent(score) {
    return `${Math.round(score * 100)}%`;
  }

  function clearResult() {
    ui.label.textContent = "–";
    ui.label.classList.add("none");
    ui.fill.style.width = "0%";
    ui.meter.setAttribute("aria-valuenow", "0");
    ui.score.textContent = "0%";
    ui.top.replaceChildren();
  }

  function showPrediction(p) {
    if (!stream) return; // stopped: a reply still on its way must not bring the label back
    predictionCount += 1;
    ui.predictions.textContent = String(predictionCount);
    ui.predictions.dataset.count = String(predictionCount);
    if (p.id !== undefined && inFlight.has(p.id)) {
      latencies.push(performance.now() - inFlight.get(p.id));
      inFlight.delete(p.id);
      if (latencies.length > LATENCY_WINDOW) latencies.shift();
      const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
      ui.latency.textContent = String(Math.round(mean));
    }
    const none = p.label === "none";
    ui.label.textContent = none ? "–" : p.label;
    ui.label.classList.toggle("none", none);
    ui.fill.style.width = percent(p.score);
    ui.meter.setAttribute("aria-valuenow", String(Math.round(p.score * 100)));
    ui.score.textContent = percent(p.score);
    if (Array.isArray(p.top)) {
      ui.top.replaceChildren(...p.top.map(({ label, score }) => {
        const li = document.createElement("li");
        const pct = document.createElement("span");
        pct.className = "pct";
        pct.textContent = percent(score);
        li.append(label, pct);
        return li;
      }));
    }
  }

  function showSign(s) {
    ui.transcript.textContent = s.transcript.join(" · ");
  }

  function connect() {
    const query = new URLSearchParams(location.search);
    const server = query.get("server") || undefined;
    const serverName = server || location.origin; // what the person is told when it cannot be reached
    const token = query.get("token"); // for servers with AUTH_TOKENS (same-origin pages also get a cookie)
    setConnection("Connecting…", "connecting");
    refused = false;
    socket = io(server, {
      transports: ["websocket", "polling"],
      auth: token ? { topk: TOPK, signs: true, token } : { topk: TOPK, signs: true }, // opt in to `top` and `sign`
    });
    socket.on("connect", () => setConnection("Connected", "connecting"));
    socket.on("status", (s) => {
      if (s && s.message === "ready") {
        setConnection("Ready", "ready");
        showError("");
      } else if (s && s.code === "shutdown") {
        setConnection("Server restarting, reconnecting…", "connecting"); // the client reconnects by itself
      }
    });
    socket.on("prediction", showPrediction);
    socket.on("sign", showSign);
    socket.on("error", (e) => {
      const code = e && e.code;
      if (code in ERROR_TEXT) {
        refused = true;
        showError(ERROR_TEXT[code]);
        setConnection("Refused", "error");
        stop(false);
      } else {
        showError(`Frame error: ${(e && e.message) || "unknown"} (${code || "?"})`);
        if (e && e.id !== undefined) inFlight.delete(e.id);
      }
    });
    socket.on("connect_error", (err) => {
      const detail = err && err.data && err.data.message ? err.data.message : (err && err.message) || "";
      const auth = /auth|unauthori[sz]ed|forbidden|token/i.test(detail);
      showError(auth ? `Not allowed to connect to ${serverName}: ${detail}`
        : `Cannot reach the server at ${serverName} (${detail}). Retrying…`);
      setConnection(auth ? "Not allowed" : "Unreachable", "error");
    });
    socket.on("disconnect", (reason) => {
      inFlight.clear();
      if (refused) return;
      if (reason === "io client disconnect") setConnection("Not connected", "idle");
      else if (reason === "io server disconnect") setConnection("Disconnected by the server", "error");
      else setConnection("Connection lost, reconnecting…", "error");
    });
  }

  function sendFrame() {
    if (!socket || !socket.connected || !stream) return;
    if (inFlight.size >= MAX_IN_FLIGHT) {
      // The server is behind: drop answers that will never come and skip this camera frame.
      const now = performance.now();
      for (const [id, sent] of inFlight) if (now - sent > 5000) inFlight.delete(id);
      return;
    }
    const context = ui.canvas.getContext("2d");
    context.drawImage(ui.video, 0, 0, ui.canvas.width, ui.canvas.height);
    const id = nextId++;
    const target = socket; // Stop (or Stop and Start again) may come while the frame is encoded
    inFlight.set(id, performance.now());
    ui.canvas.toBlob(async (blob) => {
      const image = blob ? new Uint8Array(await blob.arrayBuffer()) : null;
      if (!image || socket !== target || !target.connected) {
        inFlight.delete(id);
        return;
      }
      inFlight.set(id, performance.now());
      target.emit("frame", { image, id });
      sentThisSecond += 1;
    }, "image/jpeg", 0.8);
  }

  async function start() {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser cannot use a camera here (it needs https or localhost).");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      showError(denied ? "Camera access was denied. Allow the camera and press Start again."
        : `No camera available: ${(err && err.message) || err}`);
      stream = null;
      return;
    }
    if (socket) socket.disconnect(); // a socket the server refused earlier
    ui.video.srcObject = stream;
    await ui.video.play().catch(() => {});
    ui.start.textContent = "Stop";
    ui.start.setAttribute("aria-pressed", "true");
    connect();
    timer = setInterval(sendFrame, 1000 / FPS);
    statsTimer = setInterval(() => {
      ui.fps.textContent = String(sentThisSecond);
      sentThisSecond = 0;
    }, 1000);
  }

  function stop(disconnect = true) {
    clearInterval(timer);
    clearInterval(statsTimer);
    timer = statsTimer = null;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    ui.video.srcObject = null;
    if (socket && disconnect) socket.disconnect();
    if (disconnect) socket = null;
    inFlight.clear();
    clearResult(); // the recognised signs stay: they are the record of what was signed
    ui.fps.textContent = "0";
    ui.start.textContent = "Start camera";
    ui.start.setAttribute("aria-pressed", "false");
  }

  ui.start.addEventListener("click", () => (stream ? stop() : start()));
})();
