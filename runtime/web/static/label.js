// frameqc label: the page. Plain JS, no build step. The server owns every label:
// a label shows as saved only once the server has answered (it answers once on disk).
// Saves go to the server one after another, in the order given; each says which label
// this page showed on the frame, so a label given meanwhile elsewhere (another tab,
// another person) is refused and shown, never overwritten. Runs under a CSP that allows
// only this file: no inline script or style (sizes are set through element.style).
"use strict";

const TOKEN = document.querySelector('meta[name="frameqc-token"]').content;
const EXCLUDED = "(excluded)";
const PAGE = 36;
const $ = (id) => document.getElementById(id);

let S = null;            // the last state from the server
let order = document.querySelector('meta[name="frameqc-order"]').content;
let current = null;      // the frame shown (an index into the server's list)
let mode = "single";
let keys = {};           // key -> label
const undoStack = [];    // each: [[index, previous label], ...], pushed when given
let gridLabel = null;
let gridCursor = 0;
const marked = new Set();
let pending = 0;         // saves given and not yet answered
let queue = Promise.resolve();  // the saves, one after another
let saves = 0;           // saves given so far: a state asked for before one is stale

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-FrameQC-Token": TOKEN}};
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(data.error || `${r.status} ${r.statusText}`);
    e.given = data.given || {};
    throw e;
  }
  return data;
}

// The state, when it changed (another page's labels included); `full`: whatever it is.
async function refresh(full) {
  const since = S && !full ? `&since=${S.version}` : "";
  const asked = saves;
  const fresh = await api(`/api/state?order=${order}${since}`);
  if (fresh.unchanged || (!full && (pending || saves !== asked))) return;  // own saves first
  S = fresh;
  if (current === null || !(current in S.frames)) current = nextOpen(-1);
  setupKeys();
  render();
}

function poll() {
  refresh().catch(() => {}).finally(() => setTimeout(poll, S && S.done ? 2000 : 1500));
}

function setupKeys() {
  if (Object.keys(keys).length) return;
  const reserved = new Set(["x", "u", "g", "n", "p"]);
  const initials = S.labels.map((l) => l[0].toLowerCase());
  S.labels.forEach((label, k) => {
    keys[String(k + 1)] = label;
    const c = initials[k];
    if (!reserved.has(c) && initials.indexOf(c) === initials.lastIndexOf(c) && !/[0-9]/.test(c))
      keys[c] = label;
  });
  const box = $("label-buttons");
  box.innerHTML = "";
  S.labels.forEach((label, k) => {
    const b = document.createElement("button");
    const extra = Object.keys(keys).filter((c) => keys[c] === label && c !== String(k + 1));
    b.innerHTML = `<kbd>${k + 1}</kbd>${extra.length ? `<kbd>${extra[0]}</kbd>` : ""} ${esc(label)}`;
    b.className = "label" + (S.alerts.includes(label) ? " alert" : "");
    b.dataset.label = label;
    b.onclick = () => give(label);
    box.appendChild(b);
  });
  const rows = Object.keys(keys).map((c) => `<tr><td><kbd>${c}</kbd></td><td>${esc(keys[c])}</td></tr>`);
  rows.push("<tr><td><kbd>x</kbd></td><td>exclude: fits no label (left out of labels.csv)</td></tr>",
    "<tr><td><kbd>u</kbd></td><td>undo the last label (or grid page)</td></tr>",
    "<tr><td><kbd>←</kbd> <kbd>→</kbd></td><td>previous / next frame</td></tr>",
    "<tr><td><kbd>g</kbd></td><td>frame view / grid view</td></tr>",
    "<tr><td><kbd>?</kbd></td><td>this help</td></tr>");
  $("help-keys").innerHTML = rows.join("");
  $("help-multi").textContent = S.labels.length > 2 ? " (with more than two labels, marked frames are left for the frame view)" : "";
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function nextOpen(from) {
  const o = S.order;
  const start = o.indexOf(from);
  for (let k = 1; k <= o.length; k++) {
    const i = o[(start + k + o.length) % o.length];
    if (S.frames[i].given === null && i !== from) return i;
  }
  return o.length ? (from !== -1 ? from : o[0]) : null;
}

function step(delta) {
  const o = S.order;
  const k = o.indexOf(current);
  if (k + delta >= 0 && k + delta < o.length) { current = o[k + delta]; render(); }
}

function counts() {
  const c = S.counts;
  $("counts").textContent = `${c.labelled} labelled · ${c.excluded} excluded · ` +
    `${c.classified}/${c.total} classified` + (c.errors ? ` · ${c.errors} unreadable` : "");
  $("bar-classified").style.width = `${100 * c.classified / c.total}%`;
  $("bar-labelled").style.width = `${100 * (c.labelled + c.excluded) / c.total}%`;
}

function render() {
  counts();
  $("order").value = order;
  $("single").hidden = mode !== "single";
  $("grid").hidden = mode !== "grid";
  $("tab-frame").classList.toggle("on", mode === "single");
  $("tab-grid").classList.toggle("on", mode === "grid");
  if (mode === "single") renderSingle(); else renderGrid();
}

function renderSingle() {
  const f = current === null ? null : S.frames[current];
  const open = S.order.some((i) => S.frames[i].given === null);
  $("finished").hidden = !!f && (open || f.given !== null);
  if (!f) {
    $("finished").textContent = S.done ? "No frame could be classified." : "Classifying the first frames…";
    return;
  }
  if (!open) $("finished").textContent = S.done ? "Every frame is labelled. labels.csv is complete." : "Every classified frame is labelled; more are coming…";
  $("net").src = f.error ? "" : `/img/${current}/net`;
  $("net").style.visibility = f.error ? "hidden" : "visible";
  $("view").src = f.view ? `/img/${current}/view` : "";
  $("view").style.visibility = f.view ? "visible" : "hidden";
  $("error-card").hidden = !f.error;
  $("error-text").textContent = f.error || "";
  const cut = f.name.lastIndexOf("/") + 1;
  $("name").textContent = f.name.slice(cut);
  $("folder").textContent = f.name.slice(0, cut);
  $("name").title = f.name;
  const g = f.given;
  $("given").className = "given" + (g === null ? "" : g === EXCLUDED ? " excluded" : " done");
  $("given").textContent = g === null ? "not labelled yet" : g === EXCLUDED ? "excluded" : `labelled ${g}`;
  if (f.error) {
    $("decision").innerHTML = `<span class="err">unreadable</span>`;
    $("probs").innerHTML = "";
  } else {
    const alert = S.alerts.includes(f.label);
    $("decision").innerHTML = `<span class="${alert ? "alert" : "ok"}">${esc(f.label)}</span> ` +
      `${(100 * f.p).toFixed(1)} %` + (f.doubtful ? ` <span class="doubt">doubtful</span>` : "");
    $("probs").innerHTML = S.labels.map((l) =>
      `<div class="prob"><span>${esc(l)}</span><div class="pbar"><div` +
      ` class="${S.alerts.includes(l) ? "alert" : "ok"}"></div></div><span>${f.probs[l].toFixed(3)}</span></div>`).join("");
    $("probs").querySelectorAll(".pbar div").forEach((bar, k) => {
      bar.style.width = `${(100 * f.probs[S.labels[k]]).toFixed(1)}%`;
    });
  }
  const facts = Object.entries(f.facts);
  $("facts").innerHTML = facts.length ? facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")
    : "<dd class='none'>none</dd>";
  const k = S.order.indexOf(current);
  $("position").textContent = `frame ${k + 1} of ${S.order.length} in this order`;
  for (const b of document.querySelectorAll("#label-buttons button")) {
    b.disabled = !!f.error;
    b.classList.toggle("chosen", b.dataset.label === g);
  }
  prefetch(k);
}

function prefetch(k) {
  for (const i of S.order.slice(k + 1, k + 4)) {
    const f = S.frames[i];
    if (f.error) continue;
    new Image().src = `/img/${i}/net`;
    if (f.view) new Image().src = `/img/${i}/view`;
  }
}

// Give labels now (the page moves on at once), saved in the order given. Its undo entry
// is pushed now too, so an undo pressed before the server answered undoes this save.
function save(changes, note, undoable = true) {
  const before = changes.map(([i]) => [i, S.frames[i].given]);
  const sent = changes.map(([i, label]) => [i, label, S.frames[i].given]);
  for (const [i, label] of changes) S.frames[i].given = label;
  if (undoable) undoStack.push(before);
  recount();
  pending++;
  saves++;
  $("saved").className = "saved busy";
  $("saved").textContent = "saving…";
  queue = queue.then(() => send(sent, before, note, undoable));
}

async function send(changes, before, note, undoable) {
  try {
    const r = await api("/api/labels", {changes});
    if (r.version === S.version + 1) S.version = r.version;  // else another page saved too
    $("saved").className = "saved ok";
    $("saved").textContent = `saved: ${note}`;
  } catch (e) {
    // not saved: the frames show the server's labels (another page's, on a conflict)
    const k = undoStack.indexOf(before);
    if (undoable && k >= 0) undoStack.splice(k, 1);
    const now = e.given || {};  // none when the server was not reached at all
    for (const [i, label] of before) S.frames[i].given = i in now ? now[i] : label;
    recount();
    S.version = -1;  // the next look at the server takes the whole state
    if (mode === "single") current = changes[0][0];
    $("saved").className = "saved bad";
    $("saved").textContent = `NOT saved: ${e.message}`;
  } finally {
    pending--;
    render();
  }
}

function recount() {
  const given = Object.values(S.frames).map((f) => f.given).filter((g) => g !== null);
  S.counts.excluded = given.filter((g) => g === EXCLUDED).length;
  S.counts.labelled = given.length - S.counts.excluded;
}

function give(label) {
  if (current === null) return;
  const f = S.frames[current];
  if (f.error && label !== EXCLUDED) return;
  const i = current;
  save([[i, label]], `${f.name.split("/").pop()} → ${label}`);
  current = nextOpen(i);
  render();
}

function undo() {
  const last = undoStack.pop();
  if (!last) return;
  save(last, `undone (${last.length} frame${last.length > 1 ? "s" : ""})`, false);
  if (mode === "single") current = last[0][0];
  render();
}

// -- the grid ------------------------------------------------------------------------
function gridItems() {
  return Object.entries(S.frames)
    .filter(([, f]) => !f.error && f.given === null && f.label === gridLabel)
    .sort((a, b) => a[1].p - b[1].p || a[0] - b[0])
    .slice(0, PAGE).map(([i]) => Number(i));
}

function renderGrid() {
  if (gridLabel === null) gridLabel = S.alerts[0] || S.labels[0];
  $("grid-tabs").innerHTML = S.labels.map((l) => {
    const n = Object.values(S.frames).filter((f) => !f.error && f.given === null && f.label === l).length;
    return `<button class="tab ${l === gridLabel ? "on" : ""}" data-label="${esc(l)}">${esc(l)} <small>${n}</small></button>`;
  }).join("");
  for (const b of $("grid-tabs").children) b.onclick = () => { gridLabel = b.dataset.label; marked.clear(); gridCursor = 0; render(); };
  const items = gridItems();
  gridCursor = Math.min(gridCursor, Math.max(items.length - 1, 0));
  $("grid-empty").hidden = items.length > 0;
  $("grid-empty").textContent = `No unlabelled frame the model called ${gridLabel}.`;
  $("accept").disabled = !items.length;
  const other = S.labels.length === 2 ? S.labels.find((l) => l !== gridLabel) : null;
  $("thumbs").innerHTML = items.map((i, k) => {
    const f = S.frames[i];
    const wrong = marked.has(i);
    return `<figure class="thumb ${wrong ? "wrong" : ""} ${k === gridCursor ? "cursor" : ""}" data-index="${i}">` +
      `<img src="/img/${i}/net" alt="">` +
      `<figcaption><span>${(100 * f.p).toFixed(1)} %</span>` +
      `<b>${wrong ? (other ? "→ " + esc(other) : "wrong") : esc(gridLabel)}</b></figcaption></figure>`;
  }).join("");
  for (const t of $("thumbs").children) {
    t.onclick = () => { toggle(Number(t.dataset.index)); };
    t.title = S.frames[t.dataset.index].name;
  }
}

function toggle(i) {
  if (marked.has(i)) marked.delete(i); else marked.add(i);
  const items = gridItems();
  gridCursor = Math.max(items.indexOf(i), 0);
  render();
}

function acceptPage() {
  const items = gridItems();
  if (!items.length) return;
  const other = S.labels.length === 2 ? S.labels.find((l) => l !== gridLabel) : null;
  const changes = [];
  for (const i of items) {
    if (!marked.has(i)) changes.push([i, gridLabel]);
    else if (other) changes.push([i, other]);
  }
  const wrong = items.filter((i) => marked.has(i)).length;
  marked.clear();
  gridCursor = 0;
  save(changes, `${changes.length} frames (${wrong} corrected)`);
  render();
}

function gridKey(e) {
  const items = gridItems();
  const cols = Math.max(1, Math.round($("thumbs").clientWidth / 170));
  const moves = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols};
  if (e.key in moves) {
    gridCursor = Math.min(Math.max(gridCursor + moves[e.key], 0), items.length - 1);
    render();
  } else if (e.key === " ") {
    if (items.length) toggle(items[gridCursor]);
  } else if (e.key === "Enter") {
    acceptPage();
  } else return false;
  return true;
}

// -- keys, buttons, touch ------------------------------------------------------------
function showHelp(on) { $("help").hidden = !on; }

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || !S) return;
  if (e.target.tagName === "SELECT" || (e.target.tagName === "INPUT" && e.key !== "Escape")) return;
  if (!$("help").hidden) { if (e.key === "Escape" || e.key === "?") showHelp(false); e.preventDefault(); return; }
  let done = true;
  if (e.key === "?") showHelp(true);
  else if (e.key === "g") { mode = mode === "single" ? "grid" : "single"; render(); }
  else if (e.key === "u") undo();
  else if (mode === "grid") done = gridKey(e);
  else if (e.key in keys) give(keys[e.key]);
  else if (e.key === "x") give(EXCLUDED);
  else if (e.key === "ArrowLeft") step(-1);
  else if (e.key === "ArrowRight") step(1);
  else done = false;
  if (done) e.preventDefault();
});

$("exclude").onclick = () => give(EXCLUDED);
$("undo").onclick = undo;
$("prev").onclick = () => step(-1);
$("next").onclick = () => step(1);
$("accept").onclick = acceptPage;
$("help-button").onclick = () => showHelp(true);
$("help-close").onclick = () => showHelp(false);
$("tab-frame").onclick = () => { mode = "single"; render(); };
$("tab-grid").onclick = () => { mode = "grid"; render(); };
$("order").onchange = async (e) => { order = e.target.value; current = null; await refresh(true); e.target.blur(); };
function look() {
  $("view").style.filter = `contrast(${$("contrast").value}) brightness(${$("brightness").value})`;
}
$("contrast").oninput = look;
$("brightness").oninput = look;
$("reset-view").onclick = () => { $("contrast").value = 1; $("brightness").value = 1; look(); };
let touchX = null;
$("single").addEventListener("touchstart", (e) => { touchX = e.touches[0].clientX; }, {passive: true});
$("single").addEventListener("touchend", (e) => {
  if (touchX === null) return;
  const dx = e.changedTouches[0].clientX - touchX;
  if (Math.abs(dx) > 60) step(dx < 0 ? 1 : -1);
  touchX = null;
});
window.addEventListener("beforeunload", (e) => { if (pending) e.preventDefault(); });

refresh(true).then(() => setTimeout(poll, 1500),
  (e) => { $("counts").textContent = `cannot reach the server: ${e.message}`; });
