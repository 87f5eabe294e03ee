// tagger's page (tagger export CKPT --format web): tags one audio file in this browser with
// a bundle's model (model.onnx, tagger.json), as `tagger predict BUNDLE FILE` does:
// decoded and resampled to the model's rate (WebAudio), the channels averaged, cut into
// windows of window_length samples hop_length apart (a file shorter than a window
// zero-padded to one, a remainder shorter than a window dropped), scaled by input_scale,
// run WINDOWS_PER_BATCH windows at a time, the windows' logits combined by aggregation.
// Nothing is sent anywhere: the model, the runtime and the audio stay in the page.
import * as ort from "./ort/ort.wasm.min.mjs";

const WINDOWS_PER_BATCH = 32; // tagger.predictions.WINDOWS_PER_BATCH
const TOP_K = 10; // tagger predict's default --top-k
const $ = (id) => document.getElementById(id);

let bundle = null; // {info, session}
let busy = false;

function setStatus(text) {
  $("status").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  setStatus("");
}

function errorText(error) {
  if (error instanceof Error) return `${error.name === "Error" ? "" : error.name + ": "}${error.message}`;
  return String(error);
}

window.addEventListener("error", (event) => showError(`error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showError(`error: ${errorText(event.reason)}`));

// ---------------------------------------------------------------- the model
async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(`${what} (${url}) cannot be fetched: ${errorText(error)}`);
  }
  if (!response.ok) throw new Error(`${what} (${url}) cannot be fetched: HTTP ${response.status}`);
  return response;
}

async function loadBundle() {
  const info = await (await fetchOk("tagger.json", "the model's tagger.json")).json();
  for (const key of ["tag_names", "thresholds", "sample_rate", "window_length", "hop_length",
    "aggregation", "input_scale"]) {
    if (info[key] === undefined) throw new Error(`tagger.json lacks ${key}: not a bundle's tagger.json`);
  }
  showModel(info);
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer: no cross-origin isolation needed
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = new URL("ort/", import.meta.url).href;
  let session;
  try {
    session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  } catch (error) {
    throw new Error(`model.onnx cannot be loaded by ONNX Runtime Web: ${errorText(error)}`);
  }
  if (!session.inputNames.includes("audio") || !session.outputNames.includes("logits")) {
    throw new Error(`model.onnx takes ${session.inputNames} and gives ${session.outputNames}; ` +
      "a bundle's model takes audio and gives logits");
  }
  return { info, session };
}

function fact(html) {
  const li = document.createElement("li");
  li.innerHTML = html;
  $("model-facts").append(li);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function figure(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "n/a";
}

function showModel(info) {
  const tags = info.tag_names.length;
  const seconds = info.window_length / info.sample_rate;
  const network = info.model ? info.model.network : "a network";
  $("model-summary").innerHTML = `<strong>${escapeHtml(network)}</strong>, ${tags} tags, ` +
    `exported by tagger ${escapeHtml(info.tagger_version || "?")}` +
    (info.checkpoint ? ` from <code>${escapeHtml(info.checkpoint.file)}</code>` : "") + ".";
  const data = info.data || {};
  fact(`Trained on <strong>${escapeHtml(data.name || "an unrecorded data set")}</strong>` +
    (data.description ? `: ${escapeHtml(data.description)}` : "") +
    (data.split ? ` (split ${escapeHtml(data.split)})` : "") +
    (data.clips ? `; clips: ${Object.entries(data.clips).map(([s, n]) => `${n} ${escapeHtml(s)}`).join(", ")}` : "") + ".");
  if (data.real_music === false) {
    fact('<span class="warning">Trained on synthetic audio (tones, noise, drum pulses), not ' +
      "music: its tags say nothing about real recordings.</span>");
  } else if (data.real_music == null) {
    fact("Whether its training audio is real music is not recorded.");
  }
  const metrics = info.test_metrics;
  fact(metrics
    ? `On its ${escapeHtml(metrics.split)} split: ROC-AUC ${figure(metrics.auc)}, PR-AUC ${figure(metrics.pr_auc)} (macro).`
    : "No test metrics are known for this checkpoint.");
  fact(`Input: mono audio at ${info.sample_rate} Hz, windows of ${info.window_length} samples ` +
    `(${seconds.toFixed(2)} s) every ${info.hop_length} samples, combined by ${escapeHtml(info.aggregation)}.`);
  const rule = info.thresholds.rule;
  fact(rule === "default"
    ? "The checkpoint stored no decision thresholds: every tag is decided at 0.5."
    : `Tags are decided at per-tag thresholds (rule ${escapeHtml(rule)}` +
      (info.thresholds.split ? `, chosen on the ${escapeHtml(info.thresholds.split)} split` : "") + ").");
  fetch("MODEL_CARD.md").then((r) => (r.ok ? r.text() : null)).then((text) => {
    if (text) {
      $("card-text").textContent = text;
      $("card").hidden = false;
    }
  }).catch(() => {});
}

// ---------------------------------------------------------------- the audio
async function decode(bytes, rate, name) {
  // decodeAudioData resamples to the context's rate: the model's
  const context = new OfflineAudioContext(1, 1, rate);
  let buffer;
  try {
    buffer = await context.decodeAudioData(bytes);
  } catch (error) {
    throw new Error(`${name}: unreadable: this browser cannot decode it as audio (${errorText(error)})`);
  }
  if (buffer.length === 0) throw new Error(`${name}: no audio: the file decodes to 0 samples`);
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i];
  }
  if (buffer.numberOfChannels > 1) {
    for (let i = 0; i < mono.length; i++) mono[i] /= buffer.numberOfChannels;
  }
  for (let i = 0; i < mono.length; i++) {
    if (!Number.isFinite(mono[i])) throw new Error(`${name}: non-finite: NaN or infinite samples`);
  }
  return mono;
}

// ---------------------------------------------------------------- tagging
function sigmoid(x) {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

// The windows' logits [n][K] (Float64Array rows) of samples: windows of `window` samples
// every `hop`, n = max(1, 1 + floor((S - window) / hop)), as tagger.predictions.window_view.
async function windowLogits(samples, info, session, progress) {
  const window = info.window_length;
  const hop = info.hop_length;
  if (samples.length < window) {
    const padded = new Float32Array(window);
    padded.set(samples);
    samples = padded;
  }
  const n = 1 + Math.floor((samples.length - window) / hop);
  const scale = Math.fround(info.input_scale);
  const tags = info.tag_names.length;
  const rows = [];
  for (let first = 0; first < n; first += WINDOWS_PER_BATCH) {
    const count = Math.min(WINDOWS_PER_BATCH, n - first);
    const data = new Float32Array(count * window);
    for (let w = 0; w < count; w++) {
      const start = (first + w) * hop;
      for (let i = 0; i < window; i++) data[w * window + i] = samples[start + i] * scale;
    }
    const input = new ort.Tensor("float32", data, [1, count, 1, window]);
    const output = await session.run({ audio: input });
    const logits = output.logits;
    if (logits.dims.length !== 3 || logits.dims[1] !== count || logits.dims[2] !== tags) {
      throw new Error(`model.onnx gives logits of shape [${logits.dims}] for ${count} windows; ` +
        `tagger.json names ${tags} tags`);
    }
    for (let w = 0; w < count; w++) rows.push(Float64Array.from(logits.data.subarray(w * tags, (w + 1) * tags)));
    progress(first + count, n);
  }
  return rows;
}

function clipProbabilities(rows, aggregation) {
  const tags = rows[0].length;
  const out = new Float64Array(tags);
  for (let k = 0; k < tags; k++) {
    let sum = 0;
    for (const row of rows) sum += aggregation === "mean_logits" ? row[k] : sigmoid(row[k]);
    out[k] = aggregation === "mean_logits" ? sigmoid(sum / rows.length) : sum / rows.length;
  }
  return out;
}

// Indices of `values` from the largest down; ties keep tag order (numpy's stable argsort of -p).
function order(values, indices) {
  return indices.slice().sort((a, b) => values[b] - values[a] || a - b);
}

// The document of `tagger predict --format json` for one file.
function predictJson(name, windows, probabilities, info) {
  const tags = info.tag_names;
  const thresholds = tags.map((t) => info.thresholds.values[t]);
  const all = tags.map((_, i) => i);
  const decided = order(probabilities, all.filter((i) => probabilities[i] >= thresholds[i]));
  const pair = (i) => ({ tag: tags[i], probability: probabilities[i] });
  return {
    tags,
    thresholds: {
      source: info.thresholds.rule === "default" ? "default" : "checkpoint",
      values: Object.fromEntries(tags.map((t, i) => [t, thresholds[i]])),
    },
    files: [{
      file: name,
      windows,
      tags: decided.map(pair),
      top: order(probabilities, all).slice(0, TOP_K).map(pair),
      probabilities: Object.fromEntries(tags.map((t, i) => [t, probabilities[i]])),
    }],
    skipped: [],
  };
}

async function tagBytes(bytes, name) {
  if (!bundle) throw new Error("the model is not loaded");
  const { info, session } = bundle;
  setStatus(`Decoding ${name} at ${info.sample_rate} Hz…`);
  const samples = await decode(bytes, info.sample_rate, name);
  const seconds = samples.length / info.sample_rate;
  const rows = await windowLogits(samples, info, session, (done, n) =>
    setStatus(`Tagging ${name} (${seconds.toFixed(1)} s): ${done} of ${n} windows…`));
  const probabilities = clipProbabilities(rows, info.aggregation);
  if (!probabilities.every(Number.isFinite)) {
    throw new Error(`${name}: the model gives NaN or infinite probabilities for it (a diverged checkpoint?)`);
  }
  const hopS = info.hop_length / info.sample_rate;
  const taggram = {
    tags: info.tag_names,
    hop_s: hopS,
    starts_s: rows.map((_, i) => i * hopS),
    probabilities: rows.map((row) => Array.from(row, sigmoid)),
  };
  const result = predictJson(name, rows.length, Array.from(probabilities), info);
  show(result, taggram, name, seconds);
  setStatus(`Tagged ${name}: ${seconds.toFixed(1)} s, ${rows.length} windows.`);
  return result;
}

async function run(bytesPromise, name) {
  if (busy) return;
  busy = true;
  showError("");
  $("result").textContent = "";
  $("taggram-data").textContent = "";
  try {
    await tagBytes(await bytesPromise, name);
  } catch (error) {
    $("output").hidden = true;
    showError(errorText(error));
  } finally {
    busy = false;
  }
}

// ---------------------------------------------------------------- showing the result
function show(result, taggram, name, seconds) {
  const file = result.files[0];
  const thresholds = result.thresholds.values;
  $("output-title").textContent = `Tags of ${name}`;
  const decided = $("decided");
  decided.textContent = "";
  if (file.tags.length === 0) {
    decided.textContent = "No tag reaches its threshold.";
  } else {
    for (const { tag, probability } of file.tags) {
      const span = document.createElement("span");
      span.className = "tag";
      span.textContent = `${tag} ${probability.toFixed(3)}`;
      decided.append(span);
    }
  }
  const bars = $("bars");
  bars.textContent = "";
  const sorted = Object.entries(file.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [tag, p] of sorted) {
    const li = document.createElement("li");
    if (p >= thresholds[tag]) li.className = "decided";
    li.innerHTML = '<span class="name"></span><span class="track"><span class="bar"></span>' +
      '<span class="threshold"></span></span><span class="value"></span>';
    li.querySelector(".name").textContent = tag;
    li.querySelector(".name").title = tag;
    li.querySelector(".bar").style.width = `${(100 * p).toFixed(2)}%`;
    li.querySelector(".threshold").style.left = `${(100 * thresholds[tag]).toFixed(2)}%`;
    li.querySelector(".threshold").title = `threshold ${thresholds[tag].toFixed(3)}`;
    li.querySelector(".value").textContent = p.toFixed(3);
    bars.append(li);
  }
  drawTaggram(taggram, sorted.map(([tag]) => tag), seconds);
  const stem = name.replace(/^.*[\\/]/, "").replace(/\?.*$/, "") || "audio";
  const json = JSON.stringify(result, null, 2) + "\n";
  link($("save-json"), json, "application/json", `${stem}.tags.json`);
  link($("save-taggram"), taggramCsv(taggram), "text/csv", `${stem}.taggram.csv`);
  $("output").hidden = false;
  $("taggram-data").textContent = JSON.stringify(taggram);
  $("result").textContent = json;
}

function link(anchor, text, type, filename) {
  if (anchor.href) URL.revokeObjectURL(anchor.href);
  anchor.href = URL.createObjectURL(new Blob([text], { type }));
  anchor.download = filename;
}

// The CSV of tagger predict --taggram: start_s, then one column per tag, 6 decimals.
function taggramCsv(taggram) {
  const quote = (t) => (/[",\n\r]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t);
  const lines = [["start_s", ...taggram.tags].map(quote).join(",")];
  taggram.starts_s.forEach((start, i) => {
    lines.push([start, ...taggram.probabilities[i]].map((x) => x.toFixed(6)).join(","));
  });
  return lines.join("\n") + "\n";
}

// viridis at a few stops, interpolated
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function color(p) {
  const x = Math.min(1, Math.max(0, p)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, j) => Math.round(v + f * (VIRIDIS[i + 1][j] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function drawTaggram(taggram, tagOrder, seconds) {
  const canvas = $("taggram");
  const n = taggram.starts_s.length;
  const K = tagOrder.length;
  const index = Object.fromEntries(taggram.tags.map((t, i) => [t, i]));
  const rowH = K > 60 ? 8 : 14;
  const labelW = 130;
  const plotW = Math.max(600, Math.min(4000, n * 4));
  const top = 8;
  const axisH = 30;
  const legendW = 60;
  const ratio = window.devicePixelRatio || 1;
  const width = labelW + plotW + legendW;
  const height = top + K * rowH + axisH;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.fillStyle = "#fff";
  g.fillRect(0, 0, width, height);
  const cellW = plotW / n;
  tagOrder.forEach((tag, r) => {
    const k = index[tag];
    for (let w = 0; w < n; w++) {
      g.fillStyle = color(taggram.probabilities[w][k]);
      g.fillRect(labelW + w * cellW, top + r * rowH, Math.ceil(cellW), rowH);
    }
  });
  g.fillStyle = "#222";
  g.font = `${Math.min(12, rowH - 2)}px system-ui, sans-serif`;
  g.textAlign = "right";
  g.textBaseline = "middle";
  tagOrder.forEach((tag, r) => g.fillText(tag, labelW - 6, top + (r + 0.5) * rowH, labelW - 10));
  // time axis
  g.textAlign = "center";
  g.textBaseline = "top";
  const end = n * taggram.hop_s;
  const step = niceStep(end / 6);
  for (let t = 0; t <= end + 1e-9; t += step) {
    const x = labelW + (t / end) * plotW;
    g.fillRect(x, top + K * rowH, 1, 4);
    g.fillText(`${+t.toFixed(2)} s`, x, top + K * rowH + 6);
  }
  // legend: probability 0 to 1
  const lx = labelW + plotW + 16;
  const lh = K * rowH;
  for (let y = 0; y < lh; y++) {
    g.fillStyle = color(1 - y / lh);
    g.fillRect(lx, top + y, 12, 1);
  }
  g.fillStyle = "#222";
  g.textAlign = "left";
  g.textBaseline = "middle";
  g.fillText("1", lx + 16, top + 4);
  g.fillText("0", lx + 16, top + lh - 4);
  canvas.title = `${K} tags (most probable first) x ${n} windows, ${seconds.toFixed(1)} s`;
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

// ---------------------------------------------------------------- input
function readFile(file) {
  run(file.arrayBuffer(), file.name);
}

function sameOriginUrl(text) {
  const url = new URL(text, location.href);
  if (url.origin !== location.origin) {
    throw new Error(`?audio=${text}: only audio from this page's own site is fetched ` +
      `(${location.origin}); choose or drop the file instead`);
  }
  return url;
}

async function fetchAudio(text) {
  const url = sameOriginUrl(text);
  const response = await fetchOk(url.href, "the audio");
  return response.arrayBuffer();
}

function wireInput() {
  const input = $("file");
  input.disabled = false;
  input.addEventListener("change", () => input.files.length && readFile(input.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) readFile(event.dataTransfer.files[0]);
  });
}

async function main() {
  setStatus("Loading the model…");
  try {
    bundle = await loadBundle();
  } catch (error) {
    $("model-summary").textContent = "The model could not be loaded.";
    showError(errorText(error));
    return;
  }
  setStatus("Ready: choose or drop an audio file.");
  wireInput();
  const audio = new URLSearchParams(location.search).get("audio");
  if (audio) await run(fetchAudio(audio), audio);
}

main();
