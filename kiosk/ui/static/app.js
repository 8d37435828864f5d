// The reference kiosk screen: consent -> ID photo -> live session -> decision.
//
// It is the executable form of README "Live session protocol": frames go unmirrored
// (drawn from the video element's pixels; only the preview is mirrored, by CSS), at
// 10 fps, each stamped with its capture time on the monotonic clock (performance.now)
// and echoing the nonce of the latest prompt received when it was captured. Prompt
// deadlines are on that same clock, so the countdown is deadline_ms - performance.now().
//
// Nothing is kept: no storage API is used, frames live only between drawImage and the
// send (the capture canvas is cleared right after encoding), nothing about a frame is
// logged, and reset (or the end of a session) stops the camera and clears every canvas.
"use strict";

const FPS = 10;
const FRAME_INTERVAL_MS = 1000 / FPS;
// The protocol refuses frames closer than 20 ms and, once challenges run, gaps over 500 ms.
const MIN_FRAME_GAP_MS = 25;
// While the service is behind (this many frames unanswered) the page sends only every
// SLOW_INTERVAL_MS: the queue grows slower (a prompt reaches the person sooner) and the
// gaps stay inside the 500 ms limit with room for a busy moment of the page itself.
const BEHIND = 4;
const SLOW_INTERVAL_MS = 300;
// Past this many unanswered frames the page stops sending (the service cannot keep up
// with the protocol: its session ends on frame_timing); the relay allows 64.
const MAX_IN_FLIGHT = 60;
const JPEG_QUALITY = 0.85;
const INFO_RETRY_MS = 5000;
const COUNTDOWN_MS = 100;
const CAMERA = { video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false };

// Consent texts this screen can show, by the version the service knows them as. The
// page offers only a version that is both here and in the service's accepted list.
const CONSENT_TEXTS = {
  "2026-01": {
    en: [
      "To register your SIM card, this kiosk compares the photo of your ID card with your face as the camera sees it now.",
      "The comparison runs on this device. The ID photo and the camera images are used only for this check and are erased as soon as it ends; only the result (same person or not, with its scores) is recorded, without any image.",
      "During the check you may be asked to blink, turn your head, open your mouth or nod.",
      "You may refuse: staff at the counter can register you instead.",
    ],
    zh: [
      "为办理SIM卡登记，本机将把您身份证上的照片与摄像头当前拍到的您的面部进行比对。",
      "比对在本设备上完成。证件照片和摄像头画面仅用于本次核验，核验结束后立即清除；只记录核验结果（是否为同一人及其分数），不保存任何图像。",
      "核验过程中可能会请您眨眼、转头、张嘴或点头。",
      "您可以拒绝，改由柜台工作人员为您办理。",
    ],
  },
};

const TEXT = {
  en: {
    title: "SIM registration · identity check",
    reset: "Start over",
    consentTitle: "Before we start",
    consentVersion: "Consent text version",
    accept: "I agree",
    idTitle: "Your ID card photo",
    idHelp: "Place your ID card on the reader, or (demo) choose a photo file.",
    readCard: "Use the card reader",
    chooseFile: "Choose a photo file",
    startCamera: "Start the camera",
    done: "Done",
    idFromCard: "The photo will be read from the card reader.",
    idChosen: "Photo chosen.",
    idTooLarge: "This file is too large for the service.",
    connecting: "Starting the camera…",
    lookAtCamera: "Look at the camera",
    stepOf: "Step",
    secondsLeft: "s left",
    MATCH: "Identity confirmed",
    NO_MATCH: "This is not the card holder",
    RETRY: "Please try again",
    similarity: "similarity",
    threshold: "threshold",
    noConsentText: "This screen has no consent text the service accepts. Staff: update the kiosk screen.",
    serviceDown: "The verification service is not available. Please ask staff.",
    cameraFailed: "The camera could not be started. Please ask staff.",
    connectionLost: "The connection to the service was lost.",
    tooLarge: "A message was too large for the kiosk screen's relay.",
    guidance: {
      NO_FACE: "Look at the camera",
      ONLY_ONE_PERSON: "Only the person registering may be in front of the camera",
      GOOD_FRAME: "Hold still",
      MOVE_CLOSER: "Move closer to the camera",
      MOVE_BACK: "Move back a little",
      FACE_THE_CAMERA: "Look straight at the camera",
      HOLD_STILL: "Hold still",
      TOO_DARK: "Too dark: please find more light",
      TOO_BRIGHT: "Too bright: avoid direct light",
      OPEN_EYES: "Keep your eyes open",
      NOISY_IMAGE: "Too dark: more light is needed",
    },
    challenge: {
      BLINK: "Blink your eyes",
      TURN_LEFT: "Turn your head to your left",
      TURN_RIGHT: "Turn your head to your right",
      OPEN_MOUTH: "Open your mouth",
      NOD: "Nod: head down, then back up",
    },
    reasons: {
      liveness_failed: "The liveness check was not passed.",
      low_quality: "The camera image was not good enough.",
      no_face_in_id_photo: "No face was found in the ID photo.",
      no_face_in_live_frame: "No face was seen by the camera.",
      multiple_faces_in_live_photo: "More than one person was in front of the camera.",
      no_usable_live_frames: "The camera did not get a usable picture of your face.",
      presentation_attack_suspected: "The camera image looks like a photo or a screen.",
    },
    checks: {
      challenge_timeout: "The action was not done in time",
      wrong_action: "A different action was done",
      face_lost: "The face left the camera's view",
      multiple_faces: "Another person appeared",
      identity_changed: "The face changed during the check",
      frame_timing: "The camera frames arrived irregularly",
      nonce_mismatch: "The camera frames did not answer the current step",
      passive: "The image looks like a photo or a screen",
    },
    errors: {
      consent: "Consent is needed before the check.",
      card_reader: "The ID card could not be read. Please insert it again.",
      busy: "The kiosk is busy. Please try again.",
      timeout: "The check took too long.",
      service: "The verification service refused the request.",
      bad_message: "The kiosk screen sent something the relay refused.",
      internal: "Internal error of the kiosk screen.",
    },
  },
  zh: {
    title: "SIM卡登记 · 身份核验",
    reset: "重新开始",
    consentTitle: "开始之前",
    consentVersion: "同意书版本",
    accept: "我同意",
    idTitle: "您的身份证照片",
    idHelp: "请将身份证放在读卡器上，或（演示）选择一张照片文件。",
    readCard: "使用读卡器",
    chooseFile: "选择照片文件",
    startCamera: "打开摄像头",
    done: "完成",
    idFromCard: "将从读卡器读取照片。",
    idChosen: "已选择照片。",
    idTooLarge: "文件太大，服务无法处理。",
    connecting: "正在打开摄像头…",
    lookAtCamera: "请看摄像头",
    stepOf: "第",
    secondsLeft: "秒",
    MATCH: "身份核验通过",
    NO_MATCH: "与证件持有人不符",
    RETRY: "请重试",
    similarity: "相似度",
    threshold: "阈值",
    noConsentText: "本屏幕没有服务接受的同意书文本。请工作人员更新。",
    serviceDown: "核验服务不可用，请联系工作人员。",
    cameraFailed: "无法打开摄像头，请联系工作人员。",
    connectionLost: "与核验服务的连接已断开。",
    tooLarge: "消息过大，被中继拒绝。",
    guidance: {
      NO_FACE: "请看摄像头",
      ONLY_ONE_PERSON: "摄像头前只能有办理人一人",
      GOOD_FRAME: "请保持不动",
      MOVE_CLOSER: "请靠近摄像头",
      MOVE_BACK: "请稍微后退",
      FACE_THE_CAMERA: "请正对摄像头",
      HOLD_STILL: "请保持不动",
      TOO_DARK: "光线太暗，请到亮处",
      TOO_BRIGHT: "光线太强，请避开直射光",
      OPEN_EYES: "请睁开眼睛",
      NOISY_IMAGE: "光线太暗，需要更多光线",
    },
    challenge: {
      BLINK: "请眨眼",
      TURN_LEFT: "请向您的左侧转头",
      TURN_RIGHT: "请向您的右侧转头",
      OPEN_MOUTH: "请张嘴",
      NOD: "请点头：先低头，再抬起",
    },
    reasons: {
      liveness_failed: "未通过活体检测。",
      low_quality: "摄像头画面质量不足。",
      no_face_in_id_photo: "证件照片中未找到人脸。",
      no_face_in_live_frame: "摄像头未拍到人脸。",
      multiple_faces_in_live_photo: "摄像头前不止一人。",
      no_usable_live_frames: "摄像头未拍到可用的面部画面。",
      presentation_attack_suspected: "画面疑似照片或屏幕。",
    },
    checks: {
      challenge_timeout: "未在规定时间内完成动作",
      wrong_action: "做了不同的动作",
      face_lost: "面部离开了画面",
      multiple_faces: "出现了其他人",
      identity_changed: "核验过程中面部发生了变化",
      frame_timing: "摄像头画面到达不规律",
      nonce_mismatch: "摄像头画面未对应当前步骤",
      passive: "画面疑似照片或屏幕",
    },
    errors: {
      consent: "核验前需要您的同意。",
      card_reader: "无法读取身份证，请重新放置。",
      busy: "设备忙，请重试。",
      timeout: "核验时间过长。",
      service: "核验服务拒绝了请求。",
      bad_message: "中继拒绝了本屏幕发送的内容。",
      internal: "本屏幕内部错误。",
    },
  },
};

const $ = (id) => document.getElementById(id);
const el = {};
for (const id of ["lang", "reset", "error", "step-consent", "consent-text", "consent-version", "consent-accept",
  "step-id", "id-card", "id-file", "id-status", "id-preview", "start", "step-camera", "prompt", "deadline",
  "deadline-fill", "video", "overlay", "camera-status", "step-decision", "decision", "decision-reason",
  "decision-detail", "done", "capture"]) {
  el[id] = null;
}

let lang = "zh";
let info = null; // the service's facts from /api/info
let consentVersion = null;
// Everything of one customer; reset() puts back a fresh one.
let s = null;

function freshState() {
  return {
    consented: false,
    idSource: null, // "upload" | "card"
    idFile: null, // a File: read only when the session starts
    previewUrl: null,
    stream: null,
    socket: null,
    running: false,
    inFlight: 0,
    lastTimestamp: 0,
    nonce: "", // latest prompt's nonce, echoed in every frame captured after it arrived
    prompt: null, // {challenge, deadline_ms, step, message}
    guidance: null, // [{code, message}]
    box: null, // latest face box, in frame pixels
    boxOk: false,
    lastFailedChallenge: null,
    ended: false,
    decision: null,
    countdown: 0, // setInterval id of the prompt's countdown
    messageKey: null, // what #prompt shows, to re-render on a language change
  };
}

function t(key) {
  return TEXT[lang][key];
}

function setState(name) {
  document.body.dataset.state = name;
  el["step-consent"].hidden = name !== "consent";
  el["step-id"].hidden = name !== "id";
  el["step-camera"].hidden = name !== "camera";
  el["step-decision"].hidden = name !== "decision";
}

// What #error shows: a text of TEXT (re-rendered on a language change) and, for the
// relay's errors, its own English detail. showError() with no argument hides it.
let shownError = null;

function showError(render, code) {
  shownError = render ? { render, code } : null;
  renderError();
}

function renderError() {
  el.error.textContent = shownError ? shownError.render() : "";
  el.error.dataset.code = shownError ? shownError.code : "";
  el.error.hidden = !shownError;
}

// ------------------------------------------------------------------ language

function renderTexts() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-text]")) {
    node.textContent = t(node.dataset.text);
  }
  // The toggle names the other language, in that language.
  el.lang.textContent = lang === "zh" ? "English" : "中文";
  el.lang.lang = lang === "zh" ? "en" : "zh-CN";
  el["consent-text"].replaceChildren();
  if (consentVersion) {
    for (const paragraph of CONSENT_TEXTS[consentVersion][lang]) {
      const p = document.createElement("p");
      p.textContent = paragraph;
      el["consent-text"].append(p);
    }
    el["consent-version"].textContent = consentVersion;
  }
  renderPrompt();
  renderError();
  if (s && s.decision) renderDecision(s.decision);
  if (s && s.idSource) renderIdStatus();
}

// ------------------------------------------------------------------ start-up and reset

async function loadInfo() {
  showError("");
  let response;
  try {
    response = await fetch("/api/info", { cache: "no-store" });
  } catch (e) {
    response = null;
  }
  if (!response || !response.ok) {
    info = null;
    showError(() => t("serviceDown"), "service_down");
    // Ask again until the service is back (a reset also asks at once).
    const waiting = s;
    setTimeout(() => { if (s === waiting && document.body.dataset.state === "loading") loadInfo(); }, INFO_RETRY_MS);
    return;
  }
  info = await response.json();
  // Newest version first: versions are dates ("2026-01"), so they sort as text.
  const shown = Object.keys(CONSENT_TEXTS).filter((v) => info.accepted_consent_versions.includes(v)).sort().reverse();
  consentVersion = shown.length ? shown[0] : null;
  if (!consentVersion) showError(() => t("noConsentText"), "no_consent_text");
  el["consent-accept"].disabled = !consentVersion;
  el["id-card"].hidden = !info.card_reader;
  renderTexts();
  if (consentVersion) setState("consent");
}

function clearCanvas(canvas) {
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  // A zero-size canvas holds no pixels at all.
  canvas.width = 0;
  canvas.height = 0;
}

function stopSession() {
  if (!s) return;
  s.running = false;
  if (s.socket) {
    const socket = s.socket;
    s.socket = null;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }
  if (s.stream) {
    for (const track of s.stream.getTracks()) track.stop();
    s.stream = null;
  }
  el.video.pause();
  el.video.srcObject = null;
  clearInterval(s.countdown);
  clearCanvas(el.overlay);
  clearCanvas(el.capture);
}

function reset() {
  stopSession();
  if (s && s.previewUrl) URL.revokeObjectURL(s.previewUrl);
  el["id-preview"].removeAttribute("src");
  el["id-preview"].hidden = true;
  el["id-file"].value = "";
  el["id-status"].textContent = "";
  el["camera-status"].textContent = "";
  el.prompt.textContent = "";
  delete el.prompt.dataset.challenge;
  el.deadline.hidden = true;
  el.decision.textContent = "";
  el.decision.className = "decision";
  delete el.decision.dataset.decision;
  el["decision-reason"].textContent = "";
  delete el["decision-reason"].dataset.reason;
  delete el["decision-reason"].dataset.check;
  el["decision-detail"].textContent = "";
  el.start.disabled = true;
  for (const key of ["promptsSeen", "framesSent", "minGapMs", "maxGapMs", "maxInFlight"]) delete document.body.dataset[key];
  showError("");
  // The next customer starts in the default language.
  lang = "zh";
  el["consent-accept"].disabled = true;
  s = freshState();
  setState("loading");
  renderTexts();
  loadInfo();
}

// ------------------------------------------------------------------ consent and ID photo

function renderIdStatus() {
  if (s.idSource === "card") el["id-status"].textContent = t("idFromCard");
  else if (s.idSource === "upload" && s.idFile) el["id-status"].textContent = t("idChosen");
}

function acceptConsent() {
  if (!consentVersion) return;
  s.consented = true;
  setState("id");
}

function chooseCard() {
  s.idSource = "card";
  s.idFile = null;
  el["id-preview"].hidden = true;
  renderIdStatus();
  el.start.disabled = false;
}

function chooseFile() {
  const file = el["id-file"].files[0];
  if (!file) return;
  if (s.previewUrl) URL.revokeObjectURL(s.previewUrl);
  if (info && file.size > info.max_image_bytes) {
    el["id-status"].textContent = t("idTooLarge");
    el.start.disabled = true;
    return;
  }
  s.idSource = "upload";
  s.idFile = file;
  s.previewUrl = URL.createObjectURL(file);
  el["id-preview"].src = s.previewUrl;
  el["id-preview"].hidden = false;
  renderIdStatus();
  el.start.disabled = false;
}

// ------------------------------------------------------------------ relay messages

// uint32 big-endian header length | UTF-8 JSON header | payload (see kiosk/ui/bridge.py).
function message(header, payload) {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const body = payload ? new Uint8Array(payload) : new Uint8Array(0);
  const out = new Uint8Array(4 + head.length + body.length);
  new DataView(out.buffer).setUint32(0, head.length);
  out.set(head, 4);
  out.set(body, 4 + head.length);
  return out.buffer;
}

async function startSession() {
  if (!s.consented || !s.idSource) return;
  el.start.disabled = true;
  showError("");
  setState("camera");
  el["camera-status"].textContent = t("connecting");
  try {
    s.stream = await navigator.mediaDevices.getUserMedia(CAMERA);
  } catch (e) {
    stopSession();
    showError(() => t("cameraFailed"), "camera");
    return;
  }
  el.video.srcObject = s.stream;
  await el.video.play().catch(() => {});
  let idPhoto = s.idSource === "upload" ? await s.idFile.arrayBuffer() : null;
  const socket = new WebSocket(`ws://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  s.socket = socket;
  socket.onopen = () => {
    const header = { type: "start", consent_version: consentVersion, consent_granted: true, id_photo: s.idSource };
    socket.send(message(header, idPhoto));
    idPhoto = null; // sent: this copy of the photo is not kept
    s.running = true;
    el["camera-status"].textContent = "";
    showMessage("lookAtCamera");
    captureLoop(socket);
    s.countdown = setInterval(tick, COUNTDOWN_MS);
  };
  socket.onmessage = (event) => onEvent(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (s.socket !== socket || s.ended) return;
    stopSession();
    const key = event.code === 1009 ? "tooLarge" : "connectionLost";
    showError(() => t(key), event.code === 1009 ? "too_large" : "closed");
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Synchronous on purpose: toBlob waits for an idle moment of the page (up to a second
// on a busy machine), which would hold the next capture back past the 500 ms gap limit.
function encode(canvas) {
  const url = canvas.toDataURL("image/jpeg", JPEG_QUALITY);
  const text = atob(url.slice(url.indexOf(",") + 1));
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function captureLoop(socket) {
  const video = el.video;
  const canvas = el.capture;
  let due = performance.now();
  while (s.running && s.socket === socket) {
    due += FRAME_INTERVAL_MS;
    const now = performance.now();
    const gap = s.inFlight >= BEHIND ? SLOW_INTERVAL_MS - 10 : MIN_FRAME_GAP_MS;
    if (video.videoWidth && s.inFlight < MAX_IN_FLIGHT && now - s.lastTimestamp >= gap) {
      if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
      }
      const context = canvas.getContext("2d");
      // Capture time and nonce belong to this instant: the frame answers the prompt seen by now.
      const timestamp = Math.round(performance.now());
      const nonce = s.nonce;
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      const jpeg = encode(canvas);
      context.clearRect(0, 0, canvas.width, canvas.height);
      if (s.running && s.socket === socket && socket.readyState === WebSocket.OPEN && timestamp > s.lastTimestamp) {
        socket.send(message({ type: "frame", timestamp_ms: timestamp, nonce }, jpeg));
        noteFrame(timestamp);
        s.lastTimestamp = timestamp;
        s.inFlight += 1;
      }
    }
    await sleep(Math.max(0, due - performance.now()));
  }
}

// Frame counts and gaps (no content) on the page, for staff and tests: the protocol
// wants 10-30 fps, no two frames closer than 20 ms and, in challenges, no gap over 500 ms.
function noteFrame(timestamp) {
  const stats = document.body.dataset;
  stats.framesSent = String(Number(stats.framesSent || 0) + 1);
  if (s.lastTimestamp > 0) {
    const gap = timestamp - s.lastTimestamp;
    stats.minGapMs = String(Math.min(Number(stats.minGapMs || Infinity), gap));
    stats.maxGapMs = String(Math.max(Number(stats.maxGapMs || 0), gap));
  }
  stats.maxInFlight = String(Math.max(Number(stats.maxInFlight || 0), s.inFlight + 1));
}

function onEvent(event) {
  if (!s.running && event.type !== "decision" && event.type !== "error") return;
  switch (event.type) {
    case "frame_result":
      s.inFlight = Math.max(0, s.inFlight - 1);
      s.box = event.finding && event.finding.face_found ? event.finding.box : null;
      s.boxOk = Boolean(event.finding && event.finding.quality_ok);
      drawOverlay();
      break;
    case "guidance":
      s.guidance = event.items;
      if (!s.prompt) renderPrompt();
      break;
    case "prompt":
      s.nonce = event.nonce;
      s.prompt = { ...event, shownAt: performance.now() };
      s.lastFailedChallenge = event.challenge;
      document.body.dataset.promptsSeen = String(Number(document.body.dataset.promptsSeen || 0) + 1);
      renderPrompt();
      break;
    case "decision":
      s.ended = true;
      s.decision = event;
      stopSession();
      renderDecision(event);
      setState("decision");
      break;
    case "error":
      s.ended = true;
      stopSession();
      setState("id");
      el.start.disabled = !s.idSource;
      showError(() => `${t("errors")[event.code] || event.code} (${event.message})`, event.code);
      break;
    default:
      break;
  }
}

function showMessage(key) {
  s.messageKey = key;
  renderPrompt();
}

function renderPrompt() {
  if (!s) return;
  const prompt = el.prompt;
  if (s.prompt) {
    const text = t("challenge")[s.prompt.challenge] || s.prompt.message;
    prompt.textContent = lang === "zh" ? `${t("stepOf")} ${s.prompt.step + 1} 步：${text}` : `${t("stepOf")} ${s.prompt.step + 1}: ${text}`;
    prompt.dataset.challenge = s.prompt.challenge;
    prompt.classList.add("challenge");
    el.deadline.hidden = false;
  } else if (s.guidance && s.guidance.length) {
    prompt.textContent = s.guidance.map((g) => t("guidance")[g.code] || g.message).join(" · ");
    prompt.classList.remove("challenge");
  } else if (s.messageKey) {
    prompt.textContent = t(s.messageKey);
  }
}

// Ten times a second: the prompt's remaining time on the frame clock.
function tick() {
  if (!s.running) return;
  if (s.prompt) {
    const left = Math.max(0, s.prompt.deadline_ms - performance.now());
    const span = Math.max(1, s.prompt.deadline_ms - s.prompt.shownAt);
    el["deadline-fill"].style.width = `${Math.min(100, (100 * left) / span)}%`;
    el["camera-status"].textContent = `${(left / 1000).toFixed(1)} ${t("secondsLeft")}`;
  }
}

function drawOverlay() {
  const canvas = el.overlay;
  const video = el.video;
  if (!video.videoWidth) return;
  if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
  }
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  // Where the face should be: an oval in the middle of the frame.
  context.lineWidth = Math.max(3, canvas.width / 160);
  context.setLineDash([12, 10]);
  context.strokeStyle = "rgba(255,255,255,0.8)";
  context.beginPath();
  context.ellipse(canvas.width / 2, canvas.height / 2, canvas.width * 0.2, canvas.height * 0.36, 0, 0, 2 * Math.PI);
  context.stroke();
  context.setLineDash([]);
  if (s.box) {
    // The box is in the sent frame's pixels, which are the video's: the overlay has the
    // video's size and the same CSS mirror, so it lands on the face in the preview.
    const [x, y, w, h] = s.box;
    context.strokeStyle = s.boxOk ? "#2fd158" : "#ffb020";
    context.lineWidth = Math.max(4, canvas.width / 120);
    context.strokeRect(x, y, w, h);
  }
}

function renderDecision(d) {
  el.decision.textContent = t(d.decision) || d.decision;
  el.decision.className = `decision ${d.decision}`;
  el.decision.dataset.decision = d.decision;
  let reason = "";
  if (d.decision === "RETRY") {
    reason = t("reasons")[d.retry_reason] || d.message;
    if (d.liveness && d.liveness.failed_check) {
      const check = t("checks")[d.liveness.failed_check] || d.liveness.failed_check;
      reason += ` ${check}`;
      if (d.liveness.failed_check === "challenge_timeout" && s.lastFailedChallenge) {
        reason += `: ${t("challenge")[s.lastFailedChallenge]}`;
      }
      reason += lang === "zh" ? "。" : ".";
    }
  }
  el["decision-reason"].textContent = reason;
  el["decision-reason"].dataset.reason = d.retry_reason || "";
  el["decision-reason"].dataset.check = (d.liveness && d.liveness.failed_check) || "";
  const parts = [];
  if (d.similarity !== null && d.similarity !== undefined) {
    parts.push(`${t("similarity")} ${d.similarity.toFixed(3)} / ${t("threshold")} ${d.threshold.toFixed(3)}`);
  }
  if (d.retry_reason) parts.push(d.retry_reason + (d.liveness && d.liveness.failed_check ? ` (${d.liveness.failed_check})` : ""));
  // The service's own English sentence, for staff: it says e.g. which limit was crossed.
  if (d.decision === "RETRY" && d.message) parts.push(d.message);
  if (d.audit_id) parts.push(`audit ${d.audit_id}`);
  el["decision-detail"].textContent = parts.join(" · ");
}

// ------------------------------------------------------------------ wiring

function init() {
  for (const id of Object.keys(el)) el[id] = $(id);
  el.lang.addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    renderTexts();
  });
  el.reset.addEventListener("click", reset);
  el.done.addEventListener("click", reset);
  el["consent-accept"].addEventListener("click", acceptConsent);
  el["id-card"].addEventListener("click", chooseCard);
  el["id-file"].addEventListener("change", chooseFile);
  el.start.addEventListener("click", startSession);
  renderTexts();
  reset();
}

document.addEventListener("DOMContentLoaded", init);
