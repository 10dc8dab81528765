// The paint-and-see page: plain JS, no build step. Painting writes exact Cityscapes colours into the canvas's
// pixels (no anti-aliasing, which would make colours no class has); the server reads them back to label ids.
"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d", { willReadFrequently: true });
const undoStack = [];
let classes = [], colour = [128, 64, 128], last = null, pictureUrl = null;

function status(text, isError) { $("status").textContent = text; $("status").className = isError ? "error" : ""; }
function headers() { const k = $("key").value.trim(); return k ? { Authorization: "Bearer " + k } : {}; }
async function fail(resp) {
  let text = resp.status + " " + resp.statusText;
  try { text = (await resp.json()).error || text; } catch (e) { /* not JSON */ }
  throw new Error(text);
}
async function get(url) { const r = await fetch(url, { headers: headers() }); if (!r.ok) await fail(r); return r; }

function pushUndo() {
  undoStack.push(ctx.getImageData(0, 0, canvas.width, canvas.height));
  if (undoStack.length > 30) undoStack.shift();
}
function undo() { const img = undoStack.pop(); if (img) { ctx.putImageData(img, 0, 0); mapChanged(); } }

function mapChanged() {
  canvas.toBlob((blob) => { const a = $("dl-map"); a.href = URL.createObjectURL(blob); a.className = ""; }, "image/png");
}

function drawBlob(blob) {
  return createImageBitmap(blob).then((bmp) => {
    canvas.width = bmp.width; canvas.height = bmp.height;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bmp, 0, 0); undoStack.length = 0; mapChanged();
  });
}

// ---------------------------------------------------------------- painting on the pixels themselves
function at(ev) {
  const r = canvas.getBoundingClientRect();
  return [Math.floor((ev.clientX - r.left) * canvas.width / r.width),
          Math.floor((ev.clientY - r.top) * canvas.height / r.height)];
}
function dab(img, x0, y0, radius) {
  const w = img.width, h = img.height, d = img.data, r2 = radius * radius;
  for (let y = Math.max(0, y0 - radius); y <= Math.min(h - 1, y0 + radius); y++)
    for (let x = Math.max(0, x0 - radius); x <= Math.min(w - 1, x0 + radius); x++)
      if ((x - x0) ** 2 + (y - y0) ** 2 <= r2) { const i = 4 * (y * w + x); d[i] = colour[0]; d[i + 1] = colour[1]; d[i + 2] = colour[2]; d[i + 3] = 255; }
}
function stroke(from, to) {
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height), radius = Math.floor($("brush").value / 2);
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1])));
  for (let s = 0; s <= steps; s++)
    dab(img, Math.round(from[0] + (to[0] - from[0]) * s / steps), Math.round(from[1] + (to[1] - from[1]) * s / steps), radius);
  ctx.putImageData(img, 0, 0);
}
function fill([x0, y0]) {
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height), w = img.width, h = img.height, d = img.data;
  const i0 = 4 * (y0 * w + x0), target = [d[i0], d[i0 + 1], d[i0 + 2]];
  if (target.every((v, k) => v === colour[k])) return;
  const stack = [[x0, y0]];
  const same = (i) => d[i] === target[0] && d[i + 1] === target[1] && d[i + 2] === target[2];
  while (stack.length) {
    const [x, y] = stack.pop(), i = 4 * (y * w + x);
    if (x < 0 || y < 0 || x >= w || y >= h || !same(i)) continue;
    d[i] = colour[0]; d[i + 1] = colour[1]; d[i + 2] = colour[2]; d[i + 3] = 255;
    stack.push([x + 1, y], [x - 1, y], [x, y + 1], [x, y - 1]);
  }
  ctx.putImageData(img, 0, 0);
}
canvas.addEventListener("pointerdown", (ev) => {
  pushUndo(); last = at(ev);
  if (document.querySelector("input[name=tool]:checked").value === "fill") { fill(last); last = null; mapChanged(); }
  else { stroke(last, last); canvas.setPointerCapture(ev.pointerId); }
});
canvas.addEventListener("pointermove", (ev) => { if (last) { const p = at(ev); stroke(last, p); last = p; } });
canvas.addEventListener("pointerup", () => { if (last) { last = null; mapChanged(); } });

// ---------------------------------------------------------------- the server
async function newScene() {
  const [h, w] = $("size").value.split(",");
  status("making a scene ...");
  const r = await get(`v1/scene?height=${h}&width=${w}&seed=${$("seed").value || 0}`);
  await drawBlob(await r.blob()); status("");
}
async function upload(file) {
  const form = new FormData(); form.append("label", file, file.name);
  status("reading " + file.name + " ...");
  const r = await fetch("v1/colorize", { method: "POST", body: form, headers: headers() });
  if (!r.ok) await fail(r);
  await drawBlob(await r.blob()); status("");
}
async function synthesize() {
  const blob = await new Promise((ok) => canvas.toBlob(ok, "image/png"));
  const form = new FormData(); form.append("label", blob, "painted.png");
  status("synthesizing ..."); document.body.dataset.state = "busy";
  const r = await fetch("v1/synthesize?instances=labels", { method: "POST", body: form, headers: headers() });
  if (!r.ok) await fail(r);
  const compute = r.headers.get("X-Compute-Seconds"), batch = r.headers.get("X-Batch-Size");
  if (pictureUrl) URL.revokeObjectURL(pictureUrl);
  pictureUrl = URL.createObjectURL(await r.blob());
  await new Promise((ok) => { $("picture").onload = ok; $("picture").src = pictureUrl; });
  const a = $("dl-pic"); a.href = pictureUrl; a.className = "";
  status(`${canvas.width}x${canvas.height}: computed in ${(compute * 1000).toFixed(0)} ms (batch of ${batch}, ${r.headers.get("X-Backend")})`);
  document.body.dataset.state = "done";
}
const guard = (fn) => (...args) => fn(...args).catch((e) => { status(e.message, true); document.body.dataset.state = "error"; });

async function start() {
  classes = await (await get("v1/classes")).json();
  for (const c of classes.filter((c) => c.paintable)) {
    const o = document.createElement("option"); o.value = c.id; o.textContent = `${c.name} (${c.id})`; $("cls").appendChild(o);
  }
  const pick = () => { colour = classes.find((c) => c.id == $("cls").value).color; $("swatch").style.background = `rgb(${colour})`; };
  $("cls").value = classes.find((c) => c.name === "road").id; pick();
  $("cls").onchange = pick;
  const info = await (await get("v1/info")).json();
  for (const [h, w] of info.sizes) { const o = document.createElement("option"); o.value = `${h},${w}`; o.textContent = `${w}x${h}`; $("size").appendChild(o); }
  $("size").onchange = guard(newScene);
  $("scene").onclick = guard(newScene);
  $("upload").onchange = guard(async (ev) => { if (ev.target.files[0]) await upload(ev.target.files[0]); });
  $("undo").onclick = undo;
  $("go").onclick = guard(synthesize);
  await newScene();
  document.body.dataset.state = info.ready ? "ready" : "loading";
  if (!info.ready) status("the model is still loading; Synthesize will work once it is ready");
}
guard(start)();
