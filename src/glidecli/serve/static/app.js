// The page of `glide serve`: a form for any rendering command, a canvas to paint masks on
// (and grow for outpainting), progress from the job's event stream, and the gallery of --out.
// Plain DOM and fetch, no build step and no CDN: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const API = "/glide/v1";
// The job states the page tells apart (serve/jobs.py's JobState); any other is shown as it is.
const STATE = Object.freeze({ DONE: "done", FAILED: "failed" });
// The commands whose pictures and canvas the page handles itself; /commands lists them all.
const COMMAND = Object.freeze({
  GENERATE: "generate", INPAINT: "inpaint", OUTPAINT: "outpaint", UPSAMPLE: "upsample", VARY: "vary", BLEND: "blend",
});
const SIDES = ["left", "right", "top", "bottom"];  // outpaint's options, the canvas grown on each side
const BASICS = ["negative", "steps", "scale", "seed", "num"];  // options with a field of their own
const COMMON = ["prompt", ...BASICS, ...SIDES];
const PICTURE_FIELDS = {
  [COMMAND.INPAINT]: ["image", "mask"], [COMMAND.OUTPAINT]: ["image"], [COMMAND.UPSAMPLE]: ["image"], [COMMAND.VARY]: ["image"],
  [COMMAND.BLEND]: ["image-a", "image-b"],
};

let commands = {};          // GET /commands: each command's options
let picture = null;         // {blob, image, width, height}
let pictureB = null;        // blend's second picture
let mask = null;            // canvas at the picture's size: white = repaint
let undoStack = [];
let currentJob = null;
let selected = null;        // the gallery item shown in #details

// --- talking to the server ------------------------------------------------------------------

function token() { return sessionStorage.getItem("glide-token"); }

async function api(path, options = {}, retry = true) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && retry) {
    const given = prompt("This server needs its token:");
    if (given) { sessionStorage.setItem("glide-token", given); return api(path, options, false); }
  }
  return response;
}

async function detail(response) {
  try { return (await response.json()).detail || response.statusText; } catch (e) { return response.statusText; }
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// --- the form -------------------------------------------------------------------------------

function optionsOf(command) { return (commands[command] || { options: [] }).options; }
function optionOf(command, name) { return optionsOf(command).find((o) => o.name === name || o.aliases.includes(name)); }
function hasOption(command, name) { return optionOf(command, name) !== undefined; }

function listCommands() {
  const select = $("command");
  const chosen = select.value;
  select.replaceChildren();
  for (const command of Object.keys(commands)) {
    const item = document.createElement("option");
    item.value = item.textContent = command;
    select.append(item);
  }
  if (chosen in commands) select.value = chosen;
}

function showCommand() {
  const command = $("command").value;
  $("outpaint-sides").hidden = command !== COMMAND.OUTPAINT;
  $("second-drop").hidden = command !== COMMAND.BLEND;
  $("tools").hidden = !(command === COMMAND.INPAINT && picture);
  for (const name of BASICS) {
    const input = $(name);
    input.closest("label").hidden = !hasOption(command, name);
    const option = optionOf(command, name);
    input.placeholder = option && option.default !== null ? String(option.default) : (name === "seed" ? "random" : "");
  }
  $("prompt").closest("label").hidden = !hasOption(command, "prompt");
  const fields = $("more-fields");
  fields.replaceChildren();
  for (const option of optionsOf(command)) {
    if ([option.name, ...option.aliases].some((n) => COMMON.includes(n)) || option.type === "picture" || option.type === "prompts" || option.type === "path") continue;  // paths: the server's own
    const label = document.createElement("label");
    label.title = option.help;
    label.append(option.name);
    let input;
    if (option.choices) {
      input = document.createElement("select");
      for (const choice of ["", ...option.choices]) {
        const item = document.createElement("option");
        item.value = choice;
        item.textContent = choice || `(${option.default})`;
        input.append(item);
      }
    } else if (option.type === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
    } else {
      input = document.createElement("input");
      input.placeholder = option.default === null ? "" : String(option.default);
      input.size = 10;
    }
    input.dataset.option = option.name;
    label.append(input);
    fields.append(label);
  }
  draw();
}

function formOptions(command) {
  const options = {};
  for (const name of COMMON) {
    const input = $(name);
    if (!input || input.closest("label").hidden || !hasOption(command, name)) continue;
    const value = input.value.trim();
    if (value !== "" && !(SIDES.includes(name) && value === "0")) options[name] = value;
  }
  for (const input of $("more-fields").querySelectorAll("[data-option]")) {
    if (input.type === "checkbox") { if (input.checked) options[input.dataset.option] = "true"; }
    else if (input.value.trim() !== "") options[input.dataset.option] = input.value.trim();
  }
  return options;
}

async function maskBlob() {
  const flat = document.createElement("canvas");
  flat.width = mask.width; flat.height = mask.height;
  const context = flat.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, flat.width, flat.height);
  context.drawImage(mask, 0, 0);
  return new Promise((resolve) => flat.toBlob(resolve, "image/png"));
}

async function submit(event) {
  event.preventDefault();
  const command = $("command").value;
  const body = new FormData();
  body.append("command", command);
  const options = formOptions(command);
  for (const [name, value] of Object.entries(options)) body.append(name, value);
  const needs = PICTURE_FIELDS[command] || [];
  if (needs.length && !picture) return say("drop a picture first", true);
  if (needs.includes("image")) body.append("image", picture.blob, "image");
  if (needs.includes("mask")) body.append("mask", await maskBlob(), "mask.png");
  if (command === COMMAND.BLEND) {
    if (!pictureB) return say("blend needs a second picture", true);
    body.append("image-a", picture.blob, "a");
    body.append("image-b", pictureB, "b");
  }
  if (command === COMMAND.GENERATE && picture && (options.strength || options["upsample-strength"])) body.append("init-image", picture.blob, "init");
  say("submitting...");
  const response = await api(`${API}/jobs`, { method: "POST", body });
  if (!response.ok) return say(await detail(response), true);
  const job = await response.json();
  follow(job);
}

// --- progress ---------------------------------------------------------------------------------

async function follow(job) {
  currentJob = job;
  $("run").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  say(`job ${job.id}: ${job.state}`);
  const response = await api(`${API}/jobs/${job.id}/events`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data) { last = JSON.parse(data); progress(job, last); }
    }
  }
  finished(job, last);
}

function progress(job, event) {
  const fraction = event.total ? event.step / event.total : 0;
  $("progress").value = Math.min(1, (event.images_done + fraction) / Math.max(1, job.images));
  const where = event.stage ? `${event.stage} step ${event.step}/${event.total}` : event.state;
  say(`job ${job.id}: ${where}, ${event.images_done}/${job.images} pictures`);
}

async function finished(job, event) {
  $("run").disabled = false;
  $("cancel").disabled = true;
  currentJob = null;
  const status = await (await api(`${API}/jobs/${job.id}`)).json();
  if (status.state === STATE.DONE) { $("progress").value = 1; say(`${STATE.DONE}: ${status.files.map((f) => f.name).join(", ")}`); }
  else if (status.state === STATE.FAILED) say(`${STATE.FAILED}: ${status.error}`, true);
  else say(status.state);
  await loadGallery();
  if (status.state === STATE.DONE && status.files.length) showDetails({ name: status.files[0].name, url: status.files[0].url, settings: status.files[0].settings });
}

async function cancel() {
  if (!currentJob) return;
  const response = await api(`${API}/jobs/${currentJob.id}`, { method: "DELETE" });
  if (!response.ok) say(await detail(response), true);
}

// --- the picture and its mask -------------------------------------------------------------------

async function usePicture(blob) {
  const image = new Image();
  const url = URL.createObjectURL(blob);
  await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = reject; image.src = url; });
  picture = { blob, image, width: image.naturalWidth, height: image.naturalHeight };
  mask = document.createElement("canvas");
  mask.width = picture.width; mask.height = picture.height;
  undoStack = [];
  showCommand();
}

function sides() {
  const outpaint = $("command").value === COMMAND.OUTPAINT;
  return Object.fromEntries(SIDES.map((side) => [side, outpaint ? Math.max(0, parseInt($(side).value, 10) || 0) : 0]));
}

function draw() {
  const view = $("view");
  if (!picture) { view.width = view.height = 0; return; }
  const grow = sides();
  view.width = picture.width + grow.left + grow.right;
  view.height = picture.height + grow.top + grow.bottom;
  const context = view.getContext("2d");
  context.clearRect(0, 0, view.width, view.height);
  context.drawImage(picture.image, grow.left, grow.top);
  if ($("command").value === COMMAND.INPAINT) {
    const tint = document.createElement("canvas");
    tint.width = mask.width; tint.height = mask.height;
    const t = tint.getContext("2d");
    t.drawImage(mask, 0, 0);
    t.globalCompositeOperation = "source-in";
    t.fillStyle = "rgba(230, 40, 40, 0.55)";
    t.fillRect(0, 0, tint.width, tint.height);
    context.drawImage(tint, grow.left, grow.top);
  }
}

function pictureXY(event) {
  const view = $("view");
  const box = view.getBoundingClientRect();
  const grow = sides();
  return [(event.clientX - box.left) * view.width / box.width - grow.left, (event.clientY - box.top) * view.height / box.height - grow.top];
}

let painting = null;

function strokeTo(x, y) {
  const context = mask.getContext("2d");
  context.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  context.strokeStyle = context.fillStyle = "white";
  context.lineWidth = Number($("brush").value);
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  context.moveTo(painting[0], painting[1]);
  context.lineTo(x, y);
  context.stroke();
  painting = [x, y];
  draw();
}

function startStroke(event) {
  if (!picture || $("command").value !== COMMAND.INPAINT) return;
  undoStack.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
  if (undoStack.length > 30) undoStack.shift();
  painting = pictureXY(event);
  $("view").setPointerCapture(event.pointerId);
  strokeTo(...painting);
}

function invertMask() {
  if (!mask) return;
  const context = mask.getContext("2d");
  const data = context.getImageData(0, 0, mask.width, mask.height);
  undoStack.push(context.getImageData(0, 0, mask.width, mask.height));
  for (let i = 0; i < data.data.length; i += 4) {
    const on = data.data[i + 3] > 127;
    data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
    data.data[i + 3] = on ? 0 : 255;
  }
  context.putImageData(data, 0, 0);
  draw();
}

function clearMask() {
  if (!mask) return;
  undoStack.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  draw();
}

function undo() {
  if (!undoStack.length) return;
  mask.getContext("2d").putImageData(undoStack.pop(), 0, 0);
  draw();
}

// --- the gallery ----------------------------------------------------------------------------------

async function imageURL(url) {
  if (!token()) return url;
  const response = await api(url);
  return URL.createObjectURL(await response.blob());
}

async function loadGallery() {
  const response = await api(`${API}/gallery?limit=60`);
  if (!response.ok) return;
  const { images } = await response.json();
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const item of images) {
    const img = document.createElement("img");
    img.alt = item.settings.prompt || item.name;
    img.title = item.name;
    img.dataset.name = item.name;
    img.src = await imageURL(item.url);
    img.addEventListener("click", () => showDetails(item));
    gallery.append(img);
  }
}

async function showDetails(item) {
  selected = item;
  $("details").hidden = false;
  $("details-image").src = await imageURL(item.url);
  $("details-settings").textContent = JSON.stringify(item.settings, null, 2);
  for (const img of $("gallery").querySelectorAll("img")) img.classList.toggle("selected", img.dataset.name === item.name);
}

async function act(action) {
  if (!selected) return;
  if (action === "settings") return useSettings(selected.settings);
  const blob = await (await api(selected.url)).blob();
  $("command").value = action;
  await usePicture(blob);
  if (selected.settings.prompt && action !== COMMAND.VARY) $("prompt").value = selected.settings.prompt;
  showCommand();
}

function useSettings(settings) {
  if (settings.command && commands[settings.command]) $("command").value = settings.command;
  showCommand();
  const command = $("command").value;
  $("prompt").value = settings.prompt || "";
  $("negative").value = settings.negative_prompt || "";
  for (const name of ["steps", "scale", "seed"]) $(name).value = settings[name] !== undefined ? settings[name] : "";
  for (const input of $("more-fields").querySelectorAll("[data-option]")) {
    const key = input.dataset.option.replaceAll("-", "_");
    if (settings[key] === undefined || !hasOption(command, input.dataset.option)) continue;
    if (input.type === "checkbox") input.checked = Boolean(settings[key]);
    else input.value = fieldText(settings[key]);
  }
}

// A recorded value as a form field's text: lists joined by commas, a recorded adapter
// ({name, sha256, weight}) as the NAME:WEIGHT that --lora takes.
function fieldText(value) {
  if (!Array.isArray(value)) return String(value);
  return value.map((item) => (item && typeof item === "object" ? `${item.name}:${item.weight}` : String(item))).join(",");
}

// --- wiring ---------------------------------------------------------------------------------------

async function start() {
  // Listeners first: a picture chosen while /commands is still on its way is not missed.
  $("command").addEventListener("change", showCommand);
  $("job-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", loadGallery);
  $("file").addEventListener("change", (e) => e.target.files[0] && usePicture(e.target.files[0]));
  $("file-b").addEventListener("change", (e) => { pictureB = e.target.files[0] || null; });
  for (const id of SIDES) $(id).addEventListener("input", draw);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) usePicture(e.dataTransfer.files[0]); });
  const view = $("view");
  view.addEventListener("pointerdown", startStroke);
  view.addEventListener("pointermove", (e) => { if (painting) strokeTo(...pictureXY(e)); });
  view.addEventListener("pointerup", () => { painting = null; });
  $("invert").addEventListener("click", invertMask);
  $("clear").addEventListener("click", clearMask);
  $("undo").addEventListener("click", undo);
  for (const button of $("details").querySelectorAll("[data-action]")) button.addEventListener("click", () => act(button.dataset.action));
  const response = await api(`${API}/commands`);
  if (response.ok) { commands = await response.json(); listCommands(); }
  const health = await api(`${API}/health`);
  if (health.ok) { const h = await health.json(); $("health").textContent = `glidecli ${h.version} on ${h.devices.join(", ")}`; }
  showCommand();
  document.body.dataset.ready = "1";
  await loadGallery();
}

start();
