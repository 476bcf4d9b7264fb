// The page: a drawing pad and a photo drop, a picker of the server's models, the model's answer
// as a bar chart, the 28x28 picture the model saw, and what went wrong when something did. The server is asked only through the
// public REST API (./server.js); pictures are preprocessed by ./preprocess.js, client/images.py's
// steps.

import { NoDigitError, decodePicture, preprocessRGBA } from "./preprocess.js";
import { ModelServer, ServerProblem } from "./server.js";

const config = JSON.parse(document.querySelector('meta[name="digits-config"]').content);
const SIZE = config.imageSize;
const POLL_MS = 5000; // status, while all is well
const RETRY_MS = 1500; // status, while the server is unreachable or the model unavailable
const SETTLE_MS = 150; // after the last stroke, before asking (a new stroke cancels)

const $ = (id) => document.getElementById(id);
const server = new ModelServer(config);
const pad = $("pad");
const photo = $("photo");
const answer = $("answer");
const problem = $("problem");
const seen = $("seen");
const ink = pad.getContext("2d", { willReadFrequently: true });

let revision = 0; // bumps whenever the input changes; an answer for an older one is dropped
let current = null; // the input now shown: { pixels, revision } once preprocessed
let retryWhenBack = false; // the last request failed for a reason that passes (server down...)
let settleTimer = 0;
let pollTimer = 0;

// --- asking the server ---------------------------------------------------------------------------
async function predict(input) {
  setAnswerState("busy", input.revision);
  let reply;
  try {
    reply = await server.predict(input.pixels);
  } catch (error) {
    if (!(error instanceof ServerProblem)) throw error;
    if (input.revision !== revision) return;
    retryWhenBack = error.transient;
    showProblem(error);
    resetAnswer("No answer: see the message above.");
    $("latency").textContent = "–";
    setAnswerState("failed", input.revision);
    if (error.transient) schedulePoll(RETRY_MS);
    return;
  }
  if (input.revision !== revision) return; // the input changed meanwhile
  retryWhenBack = false;
  clearProblem();
  showAnswer(reply, input.revision);
  refreshStatus(); // which version answered (not part of the round trip shown)
}

async function refreshStatus() {
  clearTimeout(pollTimer);
  try {
    const version = await server.servedVersion();
    $("version").textContent = String(version);
    $("connection").textContent = `Connected to ${location.host}: ${server.model} version ${version} is available.`;
    if (!problem.hidden && problem.dataset.transient === "true") {
      clearProblem();
      if (retryWhenBack && current) predict(current);
    }
    schedulePoll(POLL_MS);
  } catch (error) {
    if (!(error instanceof ServerProblem)) throw error;
    showProblem(error);
    schedulePoll(error.transient ? RETRY_MS : POLL_MS);
  }
}

function schedulePoll(delay) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(() => (document.hidden ? schedulePoll(delay) : refreshStatus()), delay);
}

function showProblem(error) {
  if (error.kind === "unreachable") $("connection").textContent = "Not connected.";
  problem.textContent = error.message;
  problem.dataset.kind = error.kind;
  problem.dataset.transient = String(error.transient);
  problem.hidden = false;
}

function clearProblem() {
  problem.hidden = true;
  problem.textContent = "";
  delete problem.dataset.kind;
  delete problem.dataset.transient;
}

// --- the model picker: the server's ready models, the page's own model first chosen ----------------
const picker = $("models");

async function fillPicker() {
  const { names, fromIndex } = await server.models();
  picker.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      option.selected = name === server.model;
      return option;
    }),
  );
  picker.disabled = names.length < 2;
  picker.dataset.source = fromIndex ? "index" : "default";
}

picker.addEventListener("change", () => {
  server.model = picker.value;
  $("model").textContent = server.model;
  $("version").textContent = "…";
  const previous = current;
  const at = newRevision();
  refreshStatus();
  if (previous) {
    current = { pixels: previous.pixels, revision: at }; // the same picture, asked of the new model
    predict(current);
  } else {
    setAnswerState(answer.dataset.state, at);
  }
});

// --- the answer ----------------------------------------------------------------------------------
const bars = [];
const cells = [];

function buildChart() {
  const chart = $("chart");
  const body = $("probabilities").tBodies[0];
  for (let digit = 0; digit < config.classes; digit++) {
    const column = document.createElement("div");
    column.className = "column";
    const value = document.createElement("span");
    value.className = "value";
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = "bar";
    track.append(bar);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = String(digit);
    column.append(value, track, label);
    chart.append(column);
    bars.push({ bar, value, column });

    const row = body.insertRow();
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = String(digit);
    row.append(head);
    cells.push(row.insertCell());
  }
  showProbabilities(null, null);
}

function showProbabilities(probabilities, digit) {
  bars.forEach(({ bar, value, column }, i) => {
    const p = probabilities ? probabilities[i] : 0;
    bar.style.height = `${(100 * p).toFixed(2)}%`; // CSSOM, which the CSP allows (no inline style)
    value.textContent = probabilities ? percent(p) : "";
    column.classList.toggle("chosen", i === digit);
    cells[i].textContent = probabilities ? p.toFixed(4) : "–";
  });
}

function percent(p) {
  if (p >= 0.995) return "100%";
  if (p < 0.005) return p > 0 ? "<1%" : "0%";
  return `${Math.round(100 * p)}%`;
}

function showAnswer({ probabilities, digit, milliseconds }, answered) {
  $("digit").textContent = String(digit);
  $("confidence").textContent = `with probability ${probabilities[digit].toFixed(4)}`;
  showProbabilities(probabilities, digit);
  $("latency").textContent = `${milliseconds.toFixed(1)} ms`;
  setAnswerState("answered", answered);
}

function setAnswerState(state, forRevision) {
  answer.dataset.state = state;
  answer.dataset.revision = String(forRevision);
  answer.setAttribute("aria-busy", String(state === "busy"));
}

function resetAnswer(text) {
  $("digit").textContent = "?";
  $("confidence").textContent = text;
  showProbabilities(null, null);
}

function showSeen(pixels) {
  const context = seen.getContext("2d");
  if (!pixels) {
    context.clearRect(0, 0, SIZE, SIZE);
    seen.setAttribute("aria-label", `The ${SIZE} by ${SIZE} picture sent to the model (none yet)`);
    return;
  }
  const image = context.createImageData(SIZE, SIZE);
  pixels.forEach((v, i) => {
    const grey = Math.round(v * 255);
    image.data.set([grey, grey, grey, 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
  seen.setAttribute("aria-label", `The ${SIZE} by ${SIZE} picture sent to the model: the digit, white on black`);
}

// --- the input -----------------------------------------------------------------------------------
function newRevision() {
  revision += 1;
  document.body.dataset.revision = String(revision);
  current = null;
  return revision;
}

/** Preprocess, show what the model will see, ask. */
function submit(rgba, width, height, at) {
  let pixels;
  try {
    pixels = preprocessRGBA(rgba, width, height, SIZE);
  } catch (error) {
    if (!(error instanceof NoDigitError)) throw error;
    showSeen(null);
    resetAnswer(`No digit found: ${error.message.replace(/^no digit found:? ?/, "")}`);
    setAnswerState("no-digit", at);
    return;
  }
  showSeen(pixels);
  current = { pixels, revision: at };
  predict(current);
}

function classifyDrawing() {
  const at = revision;
  submit(ink.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height, at);
}

function showPad() {
  photo.hidden = true;
  pad.hidden = false;
  $("hint").textContent = "Draw here, or drop a photo";
}

function clearAll() {
  clearTimeout(settleTimer);
  ink.clearRect(0, 0, pad.width, pad.height);
  showPad();
  const at = newRevision();
  showSeen(null);
  resetAnswer("Draw a digit to ask the model.");
  setAnswerState("empty", at);
}

async function usePhoto(file) {
  clearTimeout(settleTimer);
  const at = newRevision();
  resetAnswer(`Reading ${file.name}…`);
  setAnswerState("busy", at);
  let decoded;
  try {
    decoded = await decodePicture(file);
  } catch (error) {
    if (!(error instanceof NoDigitError)) throw error;
    resetAnswer(`${file.name}: ${error.message}`);
    setAnswerState("no-digit", at);
    return;
  }
  if (at !== revision) return;
  const { rgba, width, height } = decoded;
  ink.clearRect(0, 0, pad.width, pad.height);
  drawPreview(rgba, width, height);
  pad.hidden = true;
  $("hint").textContent = "Clear to draw instead, or drop another photo";
  photo.hidden = false;
  photo.setAttribute("aria-label", `The photo you chose: ${file.name}`);
  submit(rgba, width, height, at);
}

function drawPreview(rgba, width, height) {
  const source = new OffscreenCanvas(width, height);
  source.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
  const context = photo.getContext("2d");
  const scale = Math.min(photo.width / width, photo.height / height);
  const [w, h] = [width * scale, height * scale];
  context.clearRect(0, 0, photo.width, photo.height);
  context.drawImage(source, (photo.width - w) / 2, (photo.height - h) / 2, w, h);
}

// Drawing: one stroke per pointer (mouse, pen or finger), round caps so a tap leaves a dot.
let stroke = null;

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [
    ((event.clientX - rect.left) * pad.width) / rect.width,
    ((event.clientY - rect.top) * pad.height) / rect.height,
  ];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  clearTimeout(settleTimer);
  if (stroke === null) newRevision();
  pad.setPointerCapture(event.pointerId);
  const [x, y] = padPoint(event);
  stroke = { id: event.pointerId, x, y };
  ink.beginPath();
  ink.arc(x, y, ink.lineWidth / 2, 0, 2 * Math.PI);
  ink.fill();
});

pad.addEventListener("pointermove", (event) => {
  if (!stroke || event.pointerId !== stroke.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) {
    const [x, y] = padPoint(each);
    ink.beginPath();
    ink.moveTo(stroke.x, stroke.y);
    ink.lineTo(x, y);
    ink.stroke();
    [stroke.x, stroke.y] = [x, y];
  }
});

function endStroke(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  stroke = null;
  setAnswerState("busy", revision);
  clearTimeout(settleTimer);
  settleTimer = setTimeout(classifyDrawing, SETTLE_MS);
}

pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("clear").addEventListener("click", clearAll);
$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) usePhoto(file);
  event.target.value = ""; // choosing the same file again is a change too
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("dragging");
});
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  const [file] = event.dataTransfer.files;
  if (file) usePhoto(file);
});

// --- start ---------------------------------------------------------------------------------------
ink.lineCap = "round";
ink.lineJoin = "round";
ink.lineWidth = pad.width / 14; // a finger's width: about two MNIST pixels
ink.strokeStyle = ink.fillStyle = "#111";
$("model").textContent = server.model;
buildChart();
clearAll();
refreshStatus();
fillPicker();
document.body.dataset.ready = "true";
