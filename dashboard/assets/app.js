// gpufleet dashboard UI: plain JavaScript, no dependencies, served from the binary.
// Reads /api/v1 (JSON) and /api/v1/events (server-sent events); every chart is SVG drawn here
// or by the planner. No inline styles or scripts (the page's CSP forbids them): colours are
// set through the CSSOM and SVG presentation attributes.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = {
  fleet: null,          // last /api/v1/fleet
  fleetLoading: null,   // the /api/v1/fleet request in flight
  gpus: new Map(),      // uuid -> GPU object (kept current by SSE)
  heatmap: null,        // the fleet page's heatmap while it shows (see heatmapView)
  metric: "utilization",
  scenarios: null,
  liveUpdates: 0,
  page: null,
  historyTimer: null,
  readyMarked: false,
};

// ---------------------------------------------------------------- helpers

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function format(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

// Green → yellow → red for a share in [0, 1].
function ramp(share) {
  const clamped = Math.max(0, Math.min(1, share));
  const hue = 130 - 130 * clamped;
  return `hsl(${hue.toFixed(0)}, 70%, ${(38 + 10 * clamped).toFixed(0)}%)`;
}

const METRICS = {
  memory: { label: "memory used", value: (gpu) => gpu.memoryUsedMiB == null ? null : gpu.memoryUsedMiB / gpu.memoryTotalMiB, text: (gpu) => `${format(gpu.memoryUsedMiB)} / ${format(gpu.memoryTotalMiB)} MiB` },
  utilization: { label: "utilisation", value: (gpu) => gpu.utilizationPercent == null ? null : gpu.utilizationPercent / 100, text: (gpu) => `${format(gpu.utilizationPercent)} %` },
  temperature: { label: "temperature", value: (gpu) => gpu.temperatureCelsius == null ? null : (gpu.temperatureCelsius - 25) / 70, text: (gpu) => `${format(gpu.temperatureCelsius)} °C` },
  health: { label: "health", value: (gpu) => ({ Healthy: 0, Degraded: 0.55, Unhealthy: 1 })[gpu.health], text: (gpu) => gpu.health },
};

// One GPU as its tooltip describes it.
function describe(gpu) {
  return `${gpu.node} GPU ${gpu.index} · ${gpu.product}\n${gpu.uuid}\n` +
    `memory ${format(gpu.memoryUsedMiB)} / ${format(gpu.memoryTotalMiB)} MiB · ${format(gpu.utilizationPercent)} % · ` +
    `${format(gpu.temperatureCelsius)} °C · ${format(gpu.powerWatts)} W\n${gpu.health}` +
    (gpu.reasons && gpu.reasons.length ? ` (${gpu.reasons.join(", ")})` : "");
}

function showTotals(totals) {
  if (!totals) return;
  document.getElementById("totals").textContent =
    `${totals.nodes} nodes · ${totals.gpus} GPUs · ${totals.healthy} healthy · ` +
    `${totals.degraded} degraded · ${totals.unhealthy} unhealthy · ` +
    `${format(totals.memoryUsedMiB / 1024)} / ${format(totals.memoryTotalMiB / 1024)} GiB used`;
}

// The fleet document, fetched once however many callers want it at the same time.
function loadFleet() {
  if (!state.fleetLoading) {
    state.fleetLoading = api("/api/v1/fleet").then((fleet) => {
      state.fleet = fleet;
      state.gpus.clear();
      for (const node of fleet.nodes) for (const gpu of node.gpus) state.gpus.set(gpu.uuid, gpu);
      showTotals(fleet.totals);
      return fleet;
    }).finally(() => { state.fleetLoading = null; });
  }
  return state.fleetLoading;
}

// ---------------------------------------------------------------- fleet heatmap
//
// Every GPU is a cell of one <canvas>: ten thousand DOM cells took seconds to style, lay out
// and paint, a canvas draws them in milliseconds, and a live update repaints one cell. Nodes
// are boxes (the name above four columns of GPUs) flowing left to right like words; the layout
// is kept so that hovering and clicking find the GPU under the pointer. What was painted is
// counted on the canvas (data-gpus, data-nodes, data-healthy, data-degraded, data-unhealthy)
// and every GPU painted as not Healthy is listed under "needs attention": a person sees the
// broken GPUs by name, and the browser tests read the same facts.

const HEATMAP = { columns: 4, padding: 4, spacing: 6, panel: "#111827", line: "#1f2937", muted: "#9ca3af", missing: "#374151" };
// Cell sizes, largest first: the first that keeps the canvas under Chromium's size limit wins.
const CELL_SIZES = [16, 12, 8, 5, 3];
const MAX_CANVAS_HEIGHT = 16000;
// At most this many GPUs are listed under "needs attention" (the rest are counted).
const ATTENTION_LIMIT = 200;
// The colour ramp precomputed, one fill style per percent, instead of a string per cell.
const RAMP = Array.from({ length: 101 }, (_, step) => ramp(step / 100));

function layoutHeatmap(nodes, width) {
  let layout = null;
  for (const size of CELL_SIZES) {
    layout = layoutWith(nodes, width, size);
    if (layout.height <= MAX_CANVAS_HEIGHT) break;
  }
  return layout;
}

function layoutWith(nodes, width, size) {
  const { columns, padding, spacing } = HEATMAP;
  const gap = size >= 8 ? 2 : 1;
  const label = size >= 12 ? 13 : 0; // node names only where they are legible
  const boxWidth = 2 * padding + columns * size + (columns - 1) * gap;
  const boxes = [];
  const cells = [];
  const positions = new Map(); // uuid -> index into cells
  let x = 0, y = 0, rowHeight = 0;
  for (const node of nodes) {
    const rows = Math.max(1, Math.ceil(node.gpus.length / columns));
    const height = 2 * padding + label + rows * size + (rows - 1) * gap;
    if (x > 0 && x + boxWidth > width) { x = 0; y += rowHeight + spacing; rowHeight = 0; }
    boxes.push({ node, x, y, width: boxWidth, height, first: cells.length });
    node.gpus.forEach((gpu, position) => {
      positions.set(gpu.uuid, cells.length);
      cells.push({
        uuid: gpu.uuid,
        x: x + padding + (position % columns) * (size + gap),
        y: y + padding + label + Math.floor(position / columns) * (size + gap),
      });
    });
    x += boxWidth + spacing;
    rowHeight = Math.max(rowHeight, height);
  }
  return { size, gap, label, boxes, cells, positions, width, height: y + rowHeight };
}

// Sizes the canvas for its layout (sharp on high-density screens) and draws everything. Each
// kind of shape is one path filled or stroked once (node boxes, then each colour's cells):
// ten thousand separate fillRect calls with their style changes cost several times more.
function drawHeatmap(heatmap) {
  const { canvas, layout } = heatmap;
  const density = window.devicePixelRatio || 1;
  canvas.width = Math.round(layout.width * density);
  canvas.height = Math.max(1, Math.round(layout.height * density));
  canvas.style.width = `${layout.width}px`;
  canvas.style.height = `${layout.height}px`;
  const context = canvas.getContext("2d", { alpha: false });
  context.setTransform(density, 0, 0, density, 0, 0);
  heatmap.context = context;
  context.fillStyle = getComputedStyle(document.body).backgroundColor || "#0f172a";
  context.fillRect(0, 0, layout.width, layout.height);
  const boxes = new Path2D();
  for (const box of layout.boxes) boxes.rect(box.x + 0.5, box.y + 0.5, box.width - 1, box.height - 1);
  context.fillStyle = HEATMAP.panel;
  context.fill(boxes);
  context.strokeStyle = HEATMAP.line;
  context.lineWidth = 1;
  context.stroke(boxes);
  if (layout.label) {
    context.font = "10px system-ui, sans-serif";
    context.textBaseline = "top";
    context.fillStyle = HEATMAP.muted;
    for (const box of layout.boxes) {
      context.fillText(box.node.name, box.x + HEATMAP.padding, box.y + HEATMAP.padding, box.width - 2 * HEATMAP.padding);
    }
  }
  heatmap.painted = new Array(layout.cells.length).fill(null);
  heatmap.counts = { Healthy: 0, Degraded: 0, Unhealthy: 0 };
  heatmap.dirty = new Set();
  paintCells(heatmap, layout.cells.keys());
  publishHeatmap(heatmap);
}

// Paints cells (indices into layout.cells) by the chosen metric, outlined when the GPU is not
// Healthy, and keeps the counts of what is painted. Outlines stay inside their cell, so
// repainting a cell never touches its neighbours.
function paintCells(heatmap, positions) {
  const { context, layout } = heatmap;
  const size = layout.size;
  const value = METRICS[state.metric].value;
  const fills = new Map(); // fill style -> Path2D of its cells
  const unhealthy = new Path2D();
  const degraded = new Path2D();
  for (const position of positions) {
    const cell = layout.cells[position];
    const gpu = state.gpus.get(cell.uuid);
    const share = gpu ? value(gpu) : null;
    const fill = Number.isFinite(share) ? RAMP[Math.round(100 * Math.max(0, Math.min(1, share)))] : HEATMAP.missing;
    let path = fills.get(fill);
    if (!path) { path = new Path2D(); fills.set(fill, path); }
    path.rect(cell.x, cell.y, size, size);
    const health = gpu ? gpu.health : null;
    if (health === "Unhealthy") unhealthy.rect(cell.x + 1, cell.y + 1, size - 2, size - 2);
    else if (health === "Degraded") degraded.rect(cell.x + 0.5, cell.y + 0.5, size - 1, size - 1);
    const before = heatmap.painted[position];
    if (before !== health) {
      if (before) heatmap.counts[before] -= 1;
      if (health) heatmap.counts[health] += 1;
      heatmap.painted[position] = health;
      heatmap.healthChanged = true;
    }
  }
  for (const [fill, path] of fills) {
    context.fillStyle = fill;
    context.fill(path);
  }
  context.strokeStyle = "#ffffff";
  context.lineWidth = 2;
  context.stroke(unhealthy);
  context.strokeStyle = "#fde68a";
  context.lineWidth = 1;
  context.setLineDash([2, 2]);
  context.stroke(degraded);
  context.setLineDash([]);
}

// Live changes are painted once per frame, at most PAINT_BUDGET cells a frame, so that a tick
// changing every GPU never holds the main thread for long.
const PAINT_BUDGET = 2500;

function schedulePaint(heatmap) {
  if (heatmap.frame) return;
  heatmap.frame = requestAnimationFrame(() => {
    heatmap.frame = null;
    if (state.heatmap !== heatmap) return;
    const batch = [];
    for (const position of heatmap.dirty) {
      batch.push(position);
      heatmap.dirty.delete(position);
      if (batch.length === PAINT_BUDGET) break;
    }
    paintCells(heatmap, batch);
    publishHeatmap(heatmap);
    if (heatmap.dirty.size) schedulePaint(heatmap);
  });
}

// Publishes what is painted: the counts on the canvas and <body>, the attention list.
function publishHeatmap(heatmap) {
  const { canvas, counts, layout } = heatmap;
  const drawn = counts.Healthy + counts.Degraded + counts.Unhealthy;
  canvas.dataset.gpus = String(drawn);
  canvas.dataset.nodes = String(layout.boxes.length);
  canvas.dataset.healthy = String(counts.Healthy);
  canvas.dataset.degraded = String(counts.Degraded);
  canvas.dataset.unhealthy = String(counts.Unhealthy);
  canvas.setAttribute("aria-label", `Heatmap of ${drawn} GPUs on ${layout.boxes.length} nodes by ${METRICS[state.metric].label}: ` +
    `${counts.Unhealthy} unhealthy, ${counts.Degraded} degraded`);
  document.body.dataset.gpus = String(drawn);
  if (!heatmap.healthChanged) return;
  heatmap.healthChanged = false;
  const flagged = [];
  heatmap.painted.forEach((health, position) => { if (health && health !== "Healthy") flagged.push(position); });
  flagged.sort((a, b) => (heatmap.painted[a] === "Unhealthy" ? 0 : 1) - (heatmap.painted[b] === "Unhealthy" ? 0 : 1) || a - b);
  heatmap.summary.textContent = flagged.length
    ? `Needs attention: ${counts.Unhealthy} unhealthy, ${counts.Degraded} degraded`
    : "Every GPU is healthy.";
  const items = flagged.slice(0, ATTENTION_LIMIT).map((position) => {
    const gpu = state.gpus.get(layout.cells[position].uuid);
    return element("li", { "data-uuid": gpu.uuid, "data-health": gpu.health, class: gpu.health,
      onclick: () => { location.hash = `#history?gpu=${encodeURIComponent(gpu.uuid)}`; } },
    `${gpu.node} GPU ${gpu.index} · ${gpu.health}` + (gpu.reasons && gpu.reasons.length ? ` (${gpu.reasons.join(", ")})` : ""));
  });
  if (flagged.length > ATTENTION_LIMIT) items.push(element("li", { class: "muted" }, `… and ${flagged.length - ATTENTION_LIMIT} more`));
  heatmap.attention.replaceChildren(...items);
}

// The node box and GPU cell (index into layout.cells, or null between cells) at a point.
function heatmapHit(layout, x, y) {
  const step = layout.size + layout.gap;
  for (const box of layout.boxes) {
    if (x < box.x || x >= box.x + box.width || y < box.y || y >= box.y + box.height) continue;
    const left = x - box.x - HEATMAP.padding;
    const top = y - box.y - HEATMAP.padding - layout.label;
    const column = Math.floor(left / step);
    const row = Math.floor(top / step);
    const index = row * HEATMAP.columns + column;
    const onCell = left >= 0 && top >= 0 && column < HEATMAP.columns && left - column * step < layout.size &&
      top - row * step < layout.size && index < box.node.gpus.length;
    return { box, position: onCell ? box.first + index : null };
  }
  return null;
}

function heatmapWidth() {
  return Math.max(320, document.getElementById("page").clientWidth - 32);
}

function heatmapView(fleet) {
  const canvas = element("canvas", { id: "heatmap", role: "img" });
  const tip = element("div", { class: "heatmap-tip", role: "tooltip" });
  const summary = element("span", { id: "attention-summary" });
  const attention = element("ul", { id: "attention" });
  const heatmap = { canvas, tip, summary, attention, layout: layoutHeatmap(fleet.nodes, heatmapWidth()), healthChanged: true };
  const hitAt = (event) => {
    const bounds = canvas.getBoundingClientRect();
    return heatmapHit(heatmap.layout, event.clientX - bounds.left, event.clientY - bounds.top);
  };
  canvas.addEventListener("mousemove", (event) => {
    const hit = hitAt(event);
    const gpu = hit && hit.position !== null ? state.gpus.get(heatmap.layout.cells[hit.position].uuid) : null;
    canvas.classList.toggle("pointing", Boolean(gpu));
    if (!hit) { tip.classList.remove("shown"); return; }
    tip.textContent = gpu ? describe(gpu) : `${hit.box.node.name} · ${hit.box.node.product} · ${hit.box.node.gpus.length} GPUs`;
    tip.classList.add("shown");
    const bounds = canvas.getBoundingClientRect();
    const x = event.clientX - bounds.left;
    const y = event.clientY - bounds.top;
    tip.style.left = `${x + 14 + tip.offsetWidth > heatmap.layout.width ? x - 14 - tip.offsetWidth : x + 14}px`;
    tip.style.top = `${y + 14}px`;
  });
  canvas.addEventListener("mouseleave", () => tip.classList.remove("shown"));
  canvas.addEventListener("click", (event) => {
    const hit = hitAt(event);
    if (hit && hit.position !== null) location.hash = `#history?gpu=${encodeURIComponent(heatmap.layout.cells[hit.position].uuid)}`;
  });
  drawHeatmap(heatmap);
  return heatmap;
}

// A live change to one GPU: merged into the state and repainted on the heatmap.
function updateGpu(uuid, change) {
  const gpu = state.gpus.get(uuid);
  if (!gpu) return;
  Object.assign(gpu, change);
  const heatmap = state.heatmap;
  if (!heatmap) return;
  const position = heatmap.layout.positions.get(uuid);
  if (position === undefined) return;
  heatmap.dirty.add(position);
  schedulePaint(heatmap);
}

// Lays the heatmap out again when the page's width changes.
function relayoutHeatmap() {
  const heatmap = state.heatmap;
  if (!heatmap || !heatmap.canvas.isConnected || !state.fleet) return;
  const width = heatmapWidth();
  if (width === heatmap.layout.width) return;
  heatmap.layout = layoutHeatmap(state.fleet.nodes, width);
  heatmap.healthChanged = true;
  drawHeatmap(heatmap);
}

// ---------------------------------------------------------------- live updates

function addEvent(event) {
  const list = document.getElementById("events");
  const time = new Date(event.atMs).toLocaleTimeString();
  list.prepend(element("li", { class: event.severity, "data-reason": event.reason }, `${time} ${event.reason}: ${event.message}`));
  while (list.children.length > 200) list.lastChild.remove();
}

function connect() {
  const live = document.getElementById("live");
  // `?streamSeconds=N` on the page bounds each stream (the EventSource reconnects by itself).
  const seconds = new URLSearchParams(location.search).get("streamSeconds");
  const source = new EventSource(seconds ? `/api/v1/events?seconds=${encodeURIComponent(seconds)}` : "/api/v1/events");
  source.addEventListener("open", () => { live.dataset.state = "open"; live.textContent = "live"; });
  source.addEventListener("error", () => { live.dataset.state = "closed"; live.textContent = "reconnecting…"; });
  const updated = () => {
    state.liveUpdates += 1;
    document.body.dataset.liveUpdates = String(state.liveUpdates);
  };
  source.addEventListener("telemetry", (message) => {
    const change = JSON.parse(message.data);
    showTotals(change.totals);
    for (const update of change.gpus) updateGpu(update.uuid, update);
    updated();
  });
  source.addEventListener("health", (message) => {
    const change = JSON.parse(message.data);
    updateGpu(change.uuid, { health: change.to, reasons: change.reasons });
    updated();
  });
  source.addEventListener("event", (message) => addEvent(JSON.parse(message.data)));
  source.addEventListener("resync", () => { loadFleet().then(() => { if (state.page === "fleet") render(); }); });
  source.addEventListener("placements", () => { if (state.page === "deployments") render(); });
}

// ---------------------------------------------------------------- pages

async function fleetPage(main) {
  const fleet = state.fleet || await loadFleet();
  const metricSelect = element("select", { id: "metric", onchange: (event) => {
    state.metric = event.target.value;
    if (state.heatmap) {
      paintCells(state.heatmap, state.heatmap.layout.cells.keys());
      publishHeatmap(state.heatmap);
    }
  } }, ...Object.entries(METRICS).map(([key, metric]) => {
    const option = element("option", { value: key }, metric.label);
    if (key === state.metric) option.selected = true;
    return option;
  }));
  const legend = element("span", { class: "legend" }, "0");
  for (let step = 0; step <= 10; step += 1) {
    const swatch = element("span", { class: "swatch" });
    swatch.style.backgroundColor = ramp(step / 10);
    legend.append(swatch);
  }
  legend.append("max");
  main.append(element("div", { class: "toolbar" }, "Colour by ", metricSelect, legend,
    element("span", { class: "muted" }, "hover a GPU for its readings, click it for its history; outlined: degraded (dashed) or unhealthy")));
  const heatmap = heatmapView(fleet);
  state.heatmap = heatmap;
  main.append(element("div", { class: "attention" }, heatmap.summary, heatmap.attention),
    element("div", { class: "heatmap-wrap" }, heatmap.canvas, heatmap.tip));
}

function scatter(rows, width, height) {
  const margin = { left: 60, right: 20, top: 20, bottom: 40 };
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", id: "stranded-chart" });
  const maxX = Math.max(1, ...rows.map((row) => row.freeComputeGpus));
  const maxY = Math.max(1, ...rows.map((row) => row.freeMemoryMiB / 1024));
  const x = (value) => margin.left + (value / maxX) * (width - margin.left - margin.right);
  const y = (value) => height - margin.bottom - (value / maxY) * (height - margin.top - margin.bottom);
  chart.append(svg("line", { x1: margin.left, y1: height - margin.bottom, x2: width - margin.right, y2: height - margin.bottom, stroke: "#333" }));
  chart.append(svg("line", { x1: margin.left, y1: margin.top, x2: margin.left, y2: height - margin.bottom, stroke: "#333" }));
  chart.append(svg("text", { x: width / 2, y: height - 8, "text-anchor": "middle", "font-size": 12 }, "free compute (GPU-equivalents)"));
  chart.append(svg("text", { x: 14, y: height / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${height / 2})` }, "free VRAM (GiB)"));
  for (let tick = 0; tick <= 4; tick += 1) {
    chart.append(svg("text", { x: x(maxX * tick / 4), y: height - margin.bottom + 14, "text-anchor": "middle", "font-size": 10 }, format(maxX * tick / 4, 1)));
    chart.append(svg("text", { x: margin.left - 4, y: y(maxY * tick / 4) + 3, "text-anchor": "end", "font-size": 10 }, format(maxY * tick / 4)));
  }
  const products = [...new Set(rows.map((row) => row.product))];
  const palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"];
  for (const row of rows) {
    const colour = palette[products.indexOf(row.product) % palette.length];
    const stranded = row.strandedMemoryMiB > 0 || row.strandedComputeGpus > 0;
    const dot = svg("circle", { cx: x(row.freeComputeGpus), cy: y(row.freeMemoryMiB / 1024), r: stranded ? 6 : 4, fill: colour, stroke: stranded ? "#000" : "none", "data-node": row.node });
    dot.append(svg("title", {}, `${row.node} (${row.product}): ${format(row.freeMemoryMiB / 1024)} GiB free, ${format(row.freeComputeGpus, 2)} GPUs of compute free; stranded ${format(row.strandedMemoryMiB / 1024)} GiB / ${format(row.strandedComputeGpus, 2)} GPUs`));
    chart.append(dot);
  }
  products.forEach((product, position) => {
    chart.append(svg("rect", { x: width - 200, y: margin.top + position * 16, width: 10, height: 10, fill: palette[position % palette.length] }));
    chart.append(svg("text", { x: width - 185, y: margin.top + position * 16 + 9, "font-size": 11 }, product));
  });
  return chart;
}

function capacityTable(rows, withNode) {
  const header = element("tr", {}, ...(withNode ? ["node"] : []).concat(["product", "GPUs", "unhealthy", "free VRAM GiB", "free compute GPUs", "stranded VRAM GiB", "stranded compute GPUs"])
    .map((name, position) => element("th", { class: position >= (withNode ? 2 : 1) ? "number" : "" }, name)));
  const body = rows.map((row) => element("tr", {},
    ...(withNode ? [element("td", {}, row.node)] : []),
    element("td", {}, row.product),
    element("td", { class: "number" }, format(row.gpus)),
    element("td", { class: "number" }, format(row.unhealthyGpus)),
    element("td", { class: "number" }, format(row.freeMemoryMiB / 1024)),
    element("td", { class: "number" }, format(row.freeComputeGpus, 2)),
    element("td", { class: "number" }, format(row.strandedMemoryMiB / 1024)),
    element("td", { class: "number" }, format(row.strandedComputeGpus, 2))));
  return element("table", {}, element("thead", {}, header), element("tbody", {}, ...body));
}

async function strandedPage(main) {
  const report = await api("/api/v1/fleet/stranded");
  main.append(element("p", { class: "muted" },
    "Free VRAM is stranded on GPUs whose compute is over 90 % busy; free compute is stranded on GPUs with under 10 % of their memory free. Unhealthy GPUs take no work and are left out."));
  main.append(element("h2", {}, "By product"), capacityTable(report.products, false));
  main.append(element("h2", {}, "By node: free VRAM vs free compute"), scatter(report.nodes, 900, 420));
  main.append(capacityTable(report.nodes.filter((row) => row.strandedMemoryMiB > 0 || row.strandedComputeGpus > 0), true));
}

const SCORE_TERMS = [
  ["strategyCost", "strategy", "#4e79a7"], ["fragmentationDeltaGpus", "fragmentation", "#76b7b2"],
  ["healthPenalty", "health", "#e15759"], ["thermalPenalty", "thermal", "#f28e2b"],
  ["powerPenalty", "power", "#edc948"], ["utilisationPenalty", "utilisation", "#b07aa1"],
  ["telemetryPenalty", "telemetry", "#9c755f"], ["numaPenalty", "NUMA", "#bab0ac"],
];

function scoreBar(score) {
  const width = 260;
  const bar = svg("svg", { width, height: 18, class: "score" });
  const total = SCORE_TERMS.reduce((sum, [key]) => sum + Math.abs(score[key] || 0), 0) || 1;
  let x = 0;
  for (const [key, label, colour] of SCORE_TERMS) {
    const value = score[key] || 0;
    if (!value) continue;
    const part = (Math.abs(value) / total) * width;
    const rect = svg("rect", { x, y: 2, width: Math.max(1, part), height: 14, fill: colour, "data-term": key });
    rect.append(svg("title", {}, `${label}: ${value.toFixed(3)}`));
    bar.append(rect);
    x += part;
  }
  return bar;
}

// Where a deployment's placements come from: the operator's status (`--kubernetes`: what
// really runs) or a what-if round of the dashboard's own engine (`--simulate`).
const PLACEMENT_SOURCES = {
  operator: "placed by the operator",
  whatIf: "what-if placement by the dashboard",
};

// Whether a condition says something is wrong: Degraded=True, or Available=False.
function conditionBad(condition) {
  if (condition.type === "Degraded") return condition.status === "True";
  if (condition.type === "Progressing") return false;
  return condition.status === "False";
}

function conditionList(deployment) {
  if (deployment.placementSource !== "operator") return null;
  if (!(deployment.conditions || []).length) {
    return element("p", { class: "muted conditions-missing" }, "the operator has not reported a status yet");
  }
  return element("ul", { class: "conditions" }, ...deployment.conditions.map((condition) =>
    element("li", {
      class: `condition ${conditionBad(condition) ? "bad" : "ok"}`,
      "data-condition": condition.type,
      "data-status": condition.status,
      title: condition.lastTransitionMs ? `since ${new Date(condition.lastTransitionMs).toLocaleString()}` : null,
    }, element("strong", {}, `${condition.type}: ${condition.status}`), ` ${condition.reason}`,
    condition.message ? element("span", { class: "muted" }, ` — ${condition.message}`) : null)));
}

async function deploymentsPage(main) {
  const deployments = await api("/api/v1/deployments");
  if (!deployments.length) {
    main.append(element("p", { class: "muted" }, "No InferenceDeployments."));
    return;
  }
  const legend = element("div", { class: "legend" }, "score terms (lower total wins): ");
  for (const [, label, colour] of SCORE_TERMS) {
    const swatch = element("span", { class: "swatch" });
    swatch.style.backgroundColor = colour;
    legend.append(swatch, ` ${label} `);
  }
  main.append(legend);
  for (const deployment of deployments) {
    const source = deployment.placementSource || "whatIf";
    const operator = source === "operator";
    const rows = deployment.placed.map((replica) => element("tr", {},
      element("td", {}, replica.replica),
      element("td", {}, replica.node),
      element("td", { title: replica.gpus.map((gpu) => gpu.uuid).join(", ") },
        replica.gpus.map((gpu) => (gpu.index === null || gpu.index === undefined ? gpu.uuid : gpu.index)).join(", ")),
      element("td", { class: "number" }, replica.score ? format(replica.score.total, 3) : "–"),
      element("td", {}, replica.score ? scoreBar(replica.score) : element("span", { class: "muted" }, "no score reported")),
      element("td", { class: "muted" }, replica.placedAtMs ? new Date(replica.placedAtMs).toLocaleTimeString() : "–")));
    const replicas = deployment.replicas ?? deployment.placed.length;
    const counts = [`${replicas}/${deployment.desired} placed`];
    if (deployment.readyReplicas !== null && deployment.readyReplicas !== undefined) counts.push(`${deployment.readyReplicas} Ready`);
    const card = element("div", { class: "card", "data-deployment": deployment.key, "data-placement-source": source },
      element("h3", {}, `${deployment.key} `, element("span", { class: "muted" },
        `${counts.join(" · ")} · ${deployment.strategy} · ${deployment.need}`)),
      element("p", { class: `source ${source}` }, PLACEMENT_SOURCES[source] || source),
      conditionList(deployment));
    if (operator && deployment.generation && deployment.observedGeneration && deployment.observedGeneration < deployment.generation) {
      card.append(element("p", { class: "muted stale" },
        `the status describes generation ${deployment.observedGeneration}; the spec is at ${deployment.generation} (the operator has not caught up yet)`));
    }
    card.append(element("table", {}, element("thead", {}, element("tr", {}, ...["replica", "node", "GPUs", "score", "breakdown", "placed"].map((name) => element("th", {}, name)))),
      element("tbody", {}, ...rows)));
    if (operator && deployment.placed.length < replicas) {
      card.append(element("p", { class: "muted" }, `the status lists ${deployment.placed.length} of ${replicas} placements`));
    }
    for (const unplaced of deployment.unplaced) {
      card.append(element("p", { class: "error" }, `${unplaced.replica}: ${unplaced.reason}`));
    }
    if (operator && deployment.unplacedReplicas > 0) {
      card.append(element("p", { class: "error unplaced" },
        `${deployment.unplacedReplicas} unplaced: ${deployment.unplacedReason || "the operator gave no reason"}`));
    }
    const historyBox = element("div", {});
    card.append(element("button", { onclick: async () => {
      historyBox.replaceChildren(element("span", { class: "muted" }, "loading…"));
      try {
        const detail = await api(`/api/v1/deployments/${encodeURIComponent(deployment.namespace)}/${encodeURIComponent(deployment.name)}?limit=50`);
        historyBox.replaceChildren(element("ol", {}, ...detail.decisions.map((decision) =>
          element("li", {}, `${new Date(decision.atMs).toLocaleString()} ${decision.outcome}: ${decision.message}`))));
      } catch (error) { historyBox.replaceChildren(element("span", { class: "error" }, error.message)); }
    } }, "decision history"), historyBox);
    main.append(card);
  }
}

function lineChart(points, unit, width, height) {
  const margin = { left: 60, right: 20, top: 16, bottom: 30 };
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", id: "history-chart" });
  if (!points.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no samples in this range yet"));
    return chart;
  }
  const t0 = points[0].atMs, t1 = Math.max(points[points.length - 1].atMs, t0 + 1);
  const low = Math.min(...points.map((point) => point.min)), high = Math.max(...points.map((point) => point.max));
  const span = high - low || 1;
  const x = (t) => margin.left + ((t - t0) / (t1 - t0)) * (width - margin.left - margin.right);
  const y = (v) => height - margin.bottom - ((v - low) / span) * (height - margin.top - margin.bottom);
  const band = points.map((point) => `${x(point.atMs).toFixed(1)},${y(point.max).toFixed(1)}`)
    .concat(points.slice().reverse().map((point) => `${x(point.atMs).toFixed(1)},${y(point.min).toFixed(1)}`));
  chart.append(svg("polygon", { points: band.join(" "), fill: "#bfdbfe", class: "band" }));
  chart.append(svg("polyline", { points: points.map((point) => `${x(point.atMs).toFixed(1)},${y(point.mean).toFixed(1)}`).join(" "), fill: "none", stroke: "#1d4ed8", "stroke-width": 2, class: "mean", "data-points": points.length }));
  for (let tick = 0; tick <= 4; tick += 1) {
    const value = low + span * tick / 4;
    chart.append(svg("text", { x: margin.left - 4, y: y(value) + 3, "text-anchor": "end", "font-size": 10 }, `${format(value, span < 10 ? 1 : 0)} ${unit}`));
    const t = t0 + (t1 - t0) * tick / 4;
    chart.append(svg("text", { x: x(t), y: height - 10, "text-anchor": "middle", "font-size": 10 }, new Date(t).toLocaleTimeString()));
  }
  return chart;
}

async function historyPage(main, parameters) {
  const fleet = state.fleet || await loadFleet();
  const subjectKind = parameters.get("node") ? "node" : "gpu";
  const subject = parameters.get(subjectKind) || (fleet.nodes[0] && fleet.nodes[0].gpus[0] ? fleet.nodes[0].gpus[0].uuid : "");
  const kind = element("select", { id: "history-kind" }, element("option", { value: "gpu" }, "GPU"), element("option", { value: "node" }, "node"));
  kind.value = subjectKind;
  const options = () => subjectKind === "node"
    ? fleet.nodes.map((node) => element("option", { value: node.name }, node.name))
    : [...state.gpus.values()].map((gpu) => element("option", { value: gpu.uuid }, `${gpu.node} GPU ${gpu.index}`));
  const which = element("select", { id: "history-subject" }, ...options());
  which.value = subject;
  const metric = element("select", { id: "history-metric" }, ...["utilization", "memoryUsed", "temperature", "power", "health"].map((name) => element("option", { value: name }, name)));
  metric.value = parameters.get("metric") || "utilization";
  const range = element("select", { id: "history-range" }, ...[["15m", 15], ["1h", 60], ["6h", 360], ["24h", 1440], ["7d", 10080]].map(([label, minutes]) => element("option", { value: minutes }, label)));
  range.value = parameters.get("minutes") || "15";
  const go = () => {
    const next = new URLSearchParams({ [kind.value]: kind.value === subjectKind ? which.value : "", metric: metric.value, minutes: range.value });
    if (kind.value !== subjectKind) {
      const first = kind.value === "node" ? fleet.nodes[0].name : fleet.nodes[0].gpus[0].uuid;
      next.set(kind.value, first);
    }
    location.hash = `#history?${next}`;
  };
  for (const control of [kind, which, metric, range]) control.addEventListener("change", go);
  const area = element("div", {});
  main.append(element("div", { class: "toolbar" }, kind, which, metric, range), area);
  const draw = async () => {
    const to = Date.now() + 1;
    const from = to - Number(range.value) * 60 * 1000;
    const query = new URLSearchParams({ [subjectKind]: subject, metric: metric.value, from, to });
    try {
      const answer = await api(`/api/v1/history?${query}`);
      area.replaceChildren(lineChart(answer.points, answer.unit, 900, 320),
        element("p", { class: "muted" }, `${answer.points.length} points, one per ${format(answer.query.stepMs / 1000)} s (mean line, min–max band)`));
    } catch (error) { area.replaceChildren(element("p", { class: "error" }, error.message)); }
  };
  await draw();
  state.historyTimer = setInterval(draw, 5000);
}

function comparisonChart(rows) {
  const width = 900, rowHeight = 34, left = 200;
  const chart = svg("svg", { width, height: rows.length * rowHeight + 30, class: "chart", id: "comparison-chart" });
  chart.append(svg("rect", { x: left, y: 4, width: 10, height: 10, fill: "#9ca3af" }));
  chart.append(svg("text", { x: left + 14, y: 13, "font-size": 11 }, "as written"));
  chart.append(svg("rect", { x: left + 100, y: 4, width: 10, height: 10, fill: "#2563eb" }));
  chart.append(svg("text", { x: left + 114, y: 13, "font-size": 11 }, "changed"));
  rows.forEach((row, position) => {
    const top = 24 + position * rowHeight;
    const scale = Math.max(Math.abs(row.baseline), Math.abs(row.changed)) || 1;
    const span = width - left - 120;
    chart.append(svg("text", { x: left - 8, y: top + 16, "text-anchor": "end", "font-size": 12 }, row.label));
    const group = svg("g", { class: "series", "data-series": row.id });
    group.append(svg("rect", { x: left, y: top + 2, width: Math.max(1, span * Math.abs(row.baseline) / scale), height: 12, fill: "#9ca3af" }));
    group.append(svg("rect", { x: left, y: top + 15, width: Math.max(1, span * Math.abs(row.changed) / scale), height: 12, fill: "#2563eb" }));
    const delta = row.baseline ? ((row.changed - row.baseline) / Math.abs(row.baseline)) * 100 : 0;
    group.append(svg("text", { x: left + span + 8, y: top + 18, "font-size": 11 }, `${format(row.changed, 1)} (${delta >= 0 ? "+" : ""}${format(delta, 1)} %)`));
    chart.append(group);
  });
  return chart;
}

function showRun(area, run) {
  const result = run.result;
  const chartBox = element("div", { id: "planner-chart" });
  const parsed = new DOMParser().parseFromString(result.chartSvg, "image/svg+xml");
  if (parsed.documentElement && parsed.documentElement.nodeName === "svg") {
    const chart = document.importNode(parsed.documentElement, true);
    chart.classList.add("chart");
    chartBox.append(chart);
  }
  const totals = result.plan.totals;
  area.replaceChildren(
    element("p", { id: "planner-summary", "data-run": run.id },
      `Run ${run.id}: ${run.scenario} solved in ${format(run.durationMs)} ms · objective ${format(result.plan.objective_musd, 1)} $M · ` +
      `capex ${format(totals.capex_spent_musd)} $M · utilisation ${format(100 * totals.utilisation, 1)} % · `,
      element("a", { href: `/api/v1/planner/runs/${run.id}/plan.csv`, download: `gpufleet-plan-${run.id}.csv`, id: "planner-csv" }, "download CSV")),
    element("h3", {}, "Spend split and GPU-hours by stage"), chartBox);
  if (result.comparison) area.append(element("h3", {}, "As written vs changed"), comparisonChart(result.comparison));
}

// `#planner?scenario=NAME&PARAMETER=VALUE…&run=1` fills the form (and runs it); `token=…` in the
// fragment (never sent to the server) is moved to this tab's session storage and dropped from
// the address; `show=ID` shows a stored run.
async function plannerPage(main, query) {
  state.scenarios = state.scenarios || await api("/api/v1/planner/scenarios");
  const scenario = element("select", { id: "planner-scenario" }, ...state.scenarios.map((item) => element("option", { value: item.name }, item.name)));
  const description = element("p", { class: "muted" });
  const fields = [
    ["capexBudgetMusd", "capex budget per period, $M"], ["discountRate", "discount rate per year"],
    ["electricityUsdPerKwh", "electricity, $/kWh"], ["mfu", "training MFU"], ["demandGrowthScale", "demand growth × "],
  ];
  const inputs = {};
  const parameters = element("div", { class: "parameters" }, ...fields.map(([key, label]) => {
    inputs[key] = element("input", { type: "number", step: "any", id: `parameter-${key}` });
    return element("label", {}, label, inputs[key]);
  }));
  const fill = () => {
    const chosen = state.scenarios.find((item) => item.name === scenario.value);
    description.textContent = `${chosen.description} (${chosen.periods} periods)`;
    for (const [key] of fields) inputs[key].value = chosen.parameters[key];
  };
  scenario.addEventListener("change", fill);
  const token = element("input", { type: "password", id: "planner-token", placeholder: "bearer token", autocomplete: "off" });
  if (query.get("token")) {
    sessionStorage.setItem("gpufleet-token", query.get("token"));
    query.delete("token");
    history.replaceState(null, "", `${location.pathname}${location.search}#planner?${query}`);
  }
  token.value = sessionStorage.getItem("gpufleet-token") || "";
  const area = element("div", { id: "planner-result" });
  const run = element("button", { id: "planner-run" }, "Run");
  run.addEventListener("click", async () => {
    sessionStorage.setItem("gpufleet-token", token.value);
    const chosen = state.scenarios.find((item) => item.name === scenario.value);
    const changed = {};
    for (const [key] of fields) {
      const value = Number(inputs[key].value);
      if (inputs[key].value !== "" && value !== chosen.parameters[key]) changed[key] = value;
    }
    run.disabled = true;
    area.replaceChildren(element("p", { class: "muted" }, "solving…"));
    try {
      const answer = await api("/api/v1/planner/runs", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token.value}` },
        body: JSON.stringify({ scenario: scenario.value, parameters: changed }),
      });
      showRun(area, answer);
    } catch (error) {
      area.replaceChildren(element("p", { class: "error", id: "planner-error" }, error.message));
    } finally { run.disabled = false; }
  });
  main.append(element("div", { class: "toolbar" }, "Scenario ", scenario, token, run), description, parameters, area);
  if (query.get("scenario") && state.scenarios.some((item) => item.name === query.get("scenario"))) scenario.value = query.get("scenario");
  fill();
  for (const [key] of fields) if (query.get(key) !== null) inputs[key].value = query.get(key);
  if (query.get("run") === "1") run.click();
  else if (query.get("show")) {
    const shown = await api(`/api/v1/planner/runs/${encodeURIComponent(query.get("show"))}`);
    if (state.scenarios.some((item) => item.name === shown.scenario)) {
      scenario.value = shown.scenario;
      fill();
      for (const [key, value] of Object.entries(shown.parameters || {})) if (inputs[key]) inputs[key].value = value;
    }
    showRun(area, shown);
  }
  const runs = await api("/api/v1/planner/runs?limit=10");
  if (runs.length) {
    main.append(element("h3", {}, "Earlier runs"), element("ul", {}, ...runs.map((item) => element("li", {},
      element("a", { href: "#", onclick: async (event) => { event.preventDefault(); showRun(area, await api(`/api/v1/planner/runs/${item.id}`)); } },
        `${item.id}: ${item.scenario} ${JSON.stringify(item.parameters)} (${format(item.durationMs)} ms)`)))));
  }
}

// ---------------------------------------------------------------- router

const PAGES = { fleet: fleetPage, stranded: strandedPage, deployments: deploymentsPage, history: historyPage, planner: plannerPage };

async function render() {
  const [name, query] = (location.hash.slice(1) || "fleet").split("?");
  const page = PAGES[name] ? name : "fleet";
  state.page = page;
  state.heatmap = null;
  if (state.historyTimer) { clearInterval(state.historyTimer); state.historyTimer = null; }
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  const main = document.getElementById("page");
  const fresh = element("div", { "data-page": page });
  try {
    await PAGES[page](fresh, new URLSearchParams(query || ""));
  } catch (error) {
    fresh.append(element("p", { class: "error" }, error.message));
  }
  if (state.page === page) main.replaceChildren(fresh);
  document.body.dataset.page = page;
  // The first page is usable once a frame showing it has been produced and the main thread is
  // free again: the next animation frame, then a task after it. Marked as `<page>-ready` (the
  // fleet page benchmark, dashboard/bench/fleet.sh, reports `fleet-ready`) and as milliseconds
  // since navigation start in <body data-ready-ms>.
  if (!state.readyMarked) {
    state.readyMarked = true;
    requestAnimationFrame(() => setTimeout(() => {
      performance.mark(`${page}-ready`);
      document.body.dataset.readyMs = performance.now().toFixed(0);
    }, 0));
  }
}

async function start() {
  window.addEventListener("hashchange", render);
  let resizing = null;
  window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(relayoutHeatmap, 150); });
  // The events panel and the first page load side by side.
  const events = api("/api/v1/history/events?limit=50")
    .then((list) => { for (const event of list.reverse()) addEvent(event); })
    .catch(() => { /* the events panel stays empty */ });
  // The first page reads the fleet before the stream opens: from then on, every change on screen
  // came through the stream.
  await render();
  await events;
  connect();
}

document.addEventListener("DOMContentLoaded", start);
