// Times the fleet page in Debian's headless Chromium: how long from navigation start until the
// heatmap is usable. Driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`,
// file descriptors 3 and 4), so it needs nothing but Node and Chromium.
//
//   node dashboard/bench/fleet_page.mjs http://127.0.0.1:18090/#fleet 10004 [RUNS]
//
// "Usable" is measured the same way for any version of the page, from outside it: a probe
// injected before the page's own script polls (every 5 ms) until `#heatmap` is in the document
// and `<body data-gpus>` says every GPU is drawn; it then waits for the next animation frame
// and a task after it, i.e. until a frame showing the whole heatmap has been produced and the
// main thread is free to handle input again, and records `performance.now()` (milliseconds
// since navigation start). The page's own `fleet-ready` performance mark, where it sets one,
// is reported next to it, with the `/api/v1/fleet` download from the resource timings.
// Responsiveness afterwards: the main thread's long tasks (over 50 ms, which delay input)
// during the AFTER_MS that follow, while live updates arrive (a tick is 2 s by default).
//
// Each run uses a fresh browser profile (no cached fleet document, no ETag): a first visit.
// Prints one JSON line per run and a summary line.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, expectedText, runsText] = process.argv.slice(2);
if (!url || !expectedText) {
  console.error("usage: node fleet_page.mjs URL EXPECTED_GPUS [RUNS]");
  process.exit(2);
}
const expected = Number(expectedText);
const runs = Number(runsText || 3);
const chromium = process.env.GPUFLEET_CHROMIUM || "/usr/bin/chromium";
const TIMEOUT_MS = 60_000;
const AFTER_MS = 6_000;

const PROBE = `(() => {
  const probe = window.__fleetProbe = { usableMs: null, longTasks: [] };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) probe.longTasks.push([entry.startTime, entry.duration]);
  }).observe({ type: "longtask", buffered: true });
  const timer = setInterval(() => {
    const heatmap = document.getElementById("heatmap");
    if (!heatmap || !heatmap.isConnected || !document.body) return;
    if (document.body.dataset.gpus !== ${JSON.stringify(String(expected))}) return;
    clearInterval(timer);
    requestAnimationFrame(() => setTimeout(() => { probe.usableMs = performance.now(); }, 0));
  }, 5);
})();`;

const READ = `(() => {
  const probe = window.__fleetProbe || {};
  const mark = performance.getEntriesByName("fleet-ready")[0];
  const fleet = performance.getEntriesByType("resource").find((entry) => entry.name.includes("/api/v1/fleet"));
  const after = (probe.longTasks || []).filter(([start]) => probe.usableMs !== null && start >= probe.usableMs);
  return {
    usableMs: probe.usableMs,
    nowMs: performance.now(),
    longTasksAfterUsable: { count: after.length, maxMs: after.reduce((max, [, duration]) => Math.max(max, duration), 0) },
    fleetReadyMarkMs: mark ? mark.startTime : null,
    fleetRequest: fleet ? { url: fleet.name.replace(location.origin, ""), startMs: fleet.startTime, endMs: fleet.responseEnd,
      transferBytes: fleet.transferSize, bodyBytes: fleet.decodedBodySize } : null,
    gpus: document.body ? document.body.dataset.gpus : null,
  };
})()`;

function browser() {
  const profile = mkdtempSync(join(tmpdir(), "gpufleet-fleet-page-"));
  const child = spawn(chromium, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
    "--remote-debugging-pipe", `--user-data-dir=${profile}`, "about:blank",
  ], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });
  const commands = child.stdio[3];
  const replies = child.stdio[4];
  let next = 1;
  const pending = new Map();
  let buffer = Buffer.alloc(0);
  replies.on("data", (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (let end = buffer.indexOf(0); end >= 0; end = buffer.indexOf(0)) {
      const message = JSON.parse(buffer.subarray(0, end).toString("utf8"));
      buffer = buffer.subarray(end + 1);
      const waiter = message.id && pending.get(message.id);
      if (waiter) {
        pending.delete(message.id);
        if (message.error) waiter.reject(new Error(JSON.stringify(message.error)));
        else waiter.resolve(message.result);
      }
    }
  });
  const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject });
    commands.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + "\0");
  });
  const close = async () => {
    try { await send("Browser.close"); } catch (_) { child.kill(); }
    await new Promise((resolve) => { if (child.exitCode !== null) resolve(); else child.on("exit", resolve); });
    rmSync(profile, { recursive: true, force: true });
  };
  return { send, close };
}

async function once() {
  const { send, close } = browser();
  try {
    const { targetId } = await send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
    await send("Page.enable", {}, sessionId);
    await send("Page.addScriptToEvaluateOnNewDocument", { source: PROBE }, sessionId);
    await send("Page.navigate", { url }, sessionId);
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const { result } = await send("Runtime.evaluate", { expression: READ, returnByValue: true }, sessionId);
      const value = result.value || {};
      if (value.usableMs !== null && value.usableMs !== undefined && value.nowMs >= value.usableMs + AFTER_MS) {
        delete value.nowMs;
        return value;
      }
      if (Date.now() > deadline) throw new Error(`not usable within ${TIMEOUT_MS} ms: ${JSON.stringify(value)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await close();
  }
}

const results = [];
for (let run = 1; run <= runs; run += 1) {
  const result = await once();
  results.push(result);
  console.log(JSON.stringify({ run, ...result }));
}
const usable = results.map((result) => result.usableMs).sort((a, b) => a - b);
console.log(`fleet page usable (ms from navigation start, ${expected} GPUs): ` +
  `min ${usable[0].toFixed(0)}, median ${usable[Math.floor(usable.length / 2)].toFixed(0)}, max ${usable[usable.length - 1].toFixed(0)}`);
