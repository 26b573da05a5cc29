/**
 * DOC: `dmabuf trace view` — a Chrome trace as one self-contained HTML timeline
 *
 * A pure function from a checked trace (cli/trace.ts `readChromeTrace`) to the
 * text of an HTML page with everything inline (CSS, a small script, the events
 * as pre-rendered SVG): no network fetch, so the file opens anywhere, offline.
 *
 * - One lane per (pid, tid), grouped by process, in the processes' and threads'
 *   sort order, labelled by their `thread_name`. Each lane is an element with
 *   `data-lane`: `thread:<name>` in the "threads" process, `buffer:<ino>` in
 *   "buffers" (the `dmabuf demo --trace` layout), `<process>:<thread>` otherwise.
 * - Each event is an SVG `rect.ev` in its lane with a hover title (name, start,
 *   duration, args): "X" spans (and B/E pairs) as bars, stacked in rows where
 *   they overlap, instants ("i", "I", "n") as ticks in a row above. Classes
 *   name the phase (`x`, `i`), the category (`c-<cat>`) and a usage (`u-<usage>`).
 * - A time axis from the first event; zoom with the buttons or Ctrl + wheel (at
 *   the pointer), scroll to pan. Tracks are SVGs in time units stretched to the
 *   track width, so zooming only changes one CSS variable.
 * Other phases (counters, flows, samples) are not drawn.
 */
import type { ChromeEvent, ChromeTrace } from './trace.js';

interface Item {
  ts: number;
  dur: number;
  bar: boolean;
  ev: ChromeEvent;
}

interface Lane {
  key: string;
  label: string;
  pid: number;
  sort: number;
  items: Item[];
}

const ROW_PX = 18;
const LABEL_PX = 200;

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const cls = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_');
const ms = (us: number): string => `${(us / 1000).toFixed(3)} ms`;
/** Short decimals for coordinates (µs, ns resolution). */
const num = (v: number): string => String(Math.round(v * 1000) / 1000);

function laneKey(proc: string | undefined, thread: string | undefined, pid: number, tid: number): string {
  const t = thread ?? `tid ${tid}`;
  if (proc === 'threads') return `thread:${t}`;
  if (proc === 'buffers') return `buffer:${t.replace(/^buffer /, '')}`;
  return `${proc ?? `pid ${pid}`}:${t}`;
}

/** Lanes of the trace, each with its drawable items; processes and threads in their sort order. */
function lanes(trace: ChromeTrace): { lanes: Lane[]; procs: Map<number, string>; procSort: Map<number, number> } {
  const procs = new Map<number, string>();
  const procSort = new Map<number, number>();
  const threads = new Map<string, string>();
  const threadSort = new Map<string, number>();
  const id = (e: ChromeEvent): string => `${e.pid}:${e.tid}`;
  for (const e of trace.traceEvents) {
    if (e.ph !== 'M') continue;
    const a = e.args ?? {};
    if (e.name === 'process_name' && typeof a['name'] === 'string') procs.set(e.pid, a['name']);
    if (e.name === 'process_sort_index' && typeof a['sort_index'] === 'number') procSort.set(e.pid, a['sort_index']);
    if (e.name === 'thread_name' && typeof a['name'] === 'string') threads.set(id(e), a['name']);
    if (e.name === 'thread_sort_index' && typeof a['sort_index'] === 'number') threadSort.set(id(e), a['sort_index']);
  }
  const byId = new Map<string, Lane>();
  const lane = (pid: number, tid: number): Lane => {
    const k = `${pid}:${tid}`;
    let l = byId.get(k);
    if (!l) {
      const label = threads.get(k) ?? `tid ${tid}`;
      l = { key: laneKey(procs.get(pid), threads.get(k), pid, tid), label, pid, sort: threadSort.get(k) ?? tid, items: [] };
      byId.set(k, l);
    }
    return l;
  };
  for (const k of threads.keys()) {
    const [pid, tid] = k.split(':').map(Number) as [number, number];
    lane(pid, tid); // named lanes are shown even without events
  }
  const begun = new Map<string, ChromeEvent[]>();
  for (const e of trace.traceEvents) {
    if (e.ph === 'X') lane(e.pid, e.tid).items.push({ ts: e.ts, dur: e.dur ?? 0, bar: true, ev: e });
    else if (e.ph === 'i' || e.ph === 'I' || e.ph === 'n') lane(e.pid, e.tid).items.push({ ts: e.ts, dur: 0, bar: false, ev: e });
    else if (e.ph === 'B') {
      const open = begun.get(id(e)) ?? [];
      open.push(e);
      begun.set(id(e), open);
    }
    else if (e.ph === 'E') {
      const b = begun.get(id(e))?.pop();
      if (b) lane(e.pid, e.tid).items.push({ ts: b.ts, dur: Math.max(0, e.ts - b.ts), bar: true, ev: b });
    }
  }
  const order = (l: Lane): [number, number, number] => [procSort.get(l.pid) ?? l.pid, l.pid, l.sort];
  const sorted = [...byId.values()].sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  return { lanes: sorted, procs, procSort };
}

/** Rows for the bars: each bar in the lowest row free at its start (nested spans go below their parent). */
function pack(items: Item[]): Map<Item, number> {
  const rowEnds: number[] = [];
  const rows = new Map<Item, number>();
  for (const it of items.filter((i) => i.bar).sort((a, b) => a.ts - b.ts || b.dur - a.dur)) {
    let r = rowEnds.findIndex((end) => end <= it.ts);
    if (r < 0) r = rowEnds.push(0) - 1;
    rowEnds[r] = it.ts + it.dur;
    rows.set(it, r);
  }
  return rows;
}

function title(it: Item, t0: number): string {
  const e = it.ev;
  const when = it.bar ? `${ms(it.ts - t0)} → ${ms(it.ts + it.dur - t0)} (${ms(it.dur)})` : ms(it.ts - t0);
  const args = Object.entries(e.args ?? {}).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${String(v)}`);
  return [e.name, when, ...args].join('\n');
}

function renderLane(l: Lane, t0: number, span: number): string {
  const rows = pack(l.items);
  const ticks = l.items.some((i) => !i.bar) ? 1 : 0;
  let barRows = 0;
  for (const r of rows.values()) barRows = Math.max(barRows, r + 1);
  const height = Math.max(1, ticks + barRows);
  const minW = span / 1e6; // a zero-width rect is not drawn; its 1px stroke shows it
  const shapes = l.items.map((it) => {
    const e = it.ev;
    const usage = typeof e.args?.['usage'] === 'string' ? ` u-${cls(e.args['usage'])}` : '';
    const unfinished = e.args?.['unfinished'] ? ' unfinished' : '';
    const c = `ev ${it.bar ? 'x' : 'i'} c-${cls(e.cat ?? 'none')}${usage}${unfinished}`;
    const y = it.bar ? ticks + rows.get(it)! + 0.12 : 0.1;
    return `<rect class="${c}" x="${num(it.ts - t0)}" y="${y}" width="${num(Math.max(it.dur, minW))}" height="${it.bar ? 0.76 : 0.8}">`
      + `<title>${esc(title(it, t0))}</title></rect>`;
  });
  return `<div class="lane" data-lane="${esc(l.key)}" data-events="${l.items.length}">`
    + `<div class="label" title="${esc(l.key)}"><span class="name">${esc(l.label)}</span>`
    + `<span class="count" title="events">${l.items.length}</span></div>`
    + `<svg class="track" viewBox="0 0 ${num(span)} ${height}" preserveAspectRatio="none" style="height:${height * ROW_PX}px">`
    + `<rect class="bg" x="0" y="0" width="${num(span)}" height="${height}"/>${shapes.join('')}</svg></div>`;
}

const LEGEND: ReadonlyArray<[string, string]> = [
  ['c-dma_buf_wait', 'wait on a buffer (CPU access, map)'], ['c-dma_fence_wait', 'wait on a fence'],
  ['c-dma_fence_init', 'fence created'], ['c-dma_fence_signaled', 'fence signalled'],
  ['c-dma_buf_add_fence u-write', 'write fence on a buffer, added → signalled'],
  ['c-dma_buf_add_fence u-read', 'read fence on a buffer, added → signalled'],
];

const CSS = `
:root{--w:calc(100vw - ${LABEL_PX + 40}px);font:13px/1.35 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2937}
*{box-sizing:border-box}
body{margin:0;height:100vh;display:flex;flex-direction:column;background:#f8fafc}
header{padding:10px 16px 8px;border-bottom:1px solid #e2e8f0;background:#fff}
h1{font-size:16px;margin:0 0 2px}
.summary{margin:0 0 6px;color:#475569}
.controls{display:flex;gap:6px;align-items:center;flex-wrap:wrap}
.controls button{font:inherit;padding:1px 10px;border:1px solid #cbd5e1;border-radius:4px;background:#f1f5f9;cursor:pointer}
.controls button:hover{background:#e2e8f0}
.hint{color:#64748b;margin-left:6px}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 16px;margin:6px 0 0;padding:0;color:#334155}
.legend svg{width:18px;height:10px;vertical-align:-1px;margin-right:5px}
#scroller{flex:1;min-height:0;overflow:auto}
#content{width:calc(${LABEL_PX}px + var(--w));padding-bottom:24px}
.axis-row{position:sticky;top:0;z-index:3;display:flex;background:#fff;border-bottom:1px solid #cbd5e1}
.axis{position:relative;height:22px;width:var(--w)}
.axis span{position:absolute;top:4px;font-size:11px;color:#475569;white-space:nowrap;padding-left:3px;border-left:1px solid #94a3b8;height:18px}
.group-title{position:sticky;left:0;width:max-content;padding:8px 10px 3px;font-weight:600;color:#334155;text-transform:uppercase;font-size:11px;letter-spacing:.06em}
.lane{display:flex;align-items:stretch;border-bottom:1px solid #eef2f7}
.label{position:sticky;left:0;z-index:2;flex:0 0 ${LABEL_PX}px;width:${LABEL_PX}px;padding:0 10px;background:#fff;border-right:1px solid #e2e8f0;display:flex;align-items:center;gap:8px;overflow:hidden;white-space:nowrap}
.label .name{font-weight:600;overflow:hidden;text-overflow:ellipsis}
.label .count{margin-left:auto;font-size:11px;color:#64748b}
.track{display:block;width:var(--w);min-height:${ROW_PX}px}
.bg{fill:#fff}
.ev,.swatch{vector-effect:non-scaling-stroke;stroke-width:1px;fill:#64748b;stroke:#64748b}
.ev.i{stroke-width:1.5px}
.ev:hover{stroke:#0f172a;stroke-width:2px}
.c-dma_buf_wait{fill:#14b8a6;stroke:#0f766e}
.c-dma_fence_wait{fill:#a78bfa;stroke:#6d28d9}
.c-dma_fence_init{fill:#16a34a;stroke:#16a34a}
.c-dma_fence_signaled{fill:#dc2626;stroke:#dc2626}
.c-dma_buf_add_fence.u-write{fill:#fb923c;stroke:#c2410c}
.c-dma_buf_add_fence.u-read{fill:#60a5fa;stroke:#1d4ed8}
.c-dma_buf_add_fence.u-kernel{fill:#94a3b8;stroke:#475569}
.unfinished{fill-opacity:.35;stroke-dasharray:3 2}
.empty{padding:24px 16px;color:#64748b}
`;

/** The page's script: zoom (buttons, Ctrl + wheel at the pointer) and the time axis. */
function script(span: number): string {
  return `(() => {
  const SPAN = ${span}, LABEL = ${LABEL_PX};
  const root = document.documentElement, scroller = document.getElementById('scroller'), axis = document.getElementById('axis');
  let zoom = 1;
  const fit = () => Math.max(300, scroller.clientWidth - LABEL - 2);
  const width = () => fit() * zoom;
  function nice(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }
  function label(us, step) {
    const digits = step >= 1000 ? 0 : step >= 100 ? 1 : step >= 10 ? 2 : 3;
    return (us / 1000).toFixed(digits) + ' ms';
  }
  function drawAxis(w) {
    const step = nice(SPAN / Math.max(2, w / 110));
    const parts = [];
    for (let t = 0; t <= SPAN; t += step) parts.push('<span style="left:' + (t / SPAN * w).toFixed(1) + 'px">' + label(t, step) + '</span>');
    axis.innerHTML = parts.join('');
  }
  function apply(z, anchorX) {
    const old = width();
    zoom = Math.min(Math.max(z, 1), 4000);
    const w = width();
    const x = anchorX === undefined ? scroller.clientWidth / 2 - LABEL : anchorX;
    const at = (scroller.scrollLeft + x) / old;
    root.style.setProperty('--w', w + 'px');
    drawAxis(w);
    scroller.scrollLeft = Math.max(0, at * w - x);
  }
  document.getElementById('zoom-in').onclick = () => apply(zoom * 2);
  document.getElementById('zoom-out').onclick = () => apply(zoom / 2);
  document.getElementById('zoom-fit').onclick = () => apply(1, 0);
  scroller.addEventListener('wheel', (e) => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    const x = e.clientX - scroller.getBoundingClientRect().left - LABEL;
    apply(zoom * Math.exp(-e.deltaY * 0.002), Math.max(0, x));
  }, { passive: false });
  window.addEventListener('resize', () => apply(zoom));
  apply(1, 0);
})();`;
}

/**
 * The HTML page for `trace`, titled `name` (the file it came from).
 * @returns the page's text: one file, no external references.
 */
export function renderTraceHtml(trace: ChromeTrace, name: string): string {
  const { lanes: all, procs, procSort } = lanes(trace);
  const items = all.flatMap((l) => l.items);
  let t0 = items.length ? Infinity : 0;
  let t1 = 0;
  for (const it of items) {
    t0 = Math.min(t0, it.ts);
    t1 = Math.max(t1, it.ts + it.dur);
  }
  const span = Math.max(t1 - t0, 1);
  const dropped = typeof trace.otherData['dropped'] === 'number' ? trace.otherData['dropped'] : 0;
  const pids = [...new Set(all.map((l) => l.pid))].sort((a, b) => (procSort.get(a) ?? a) - (procSort.get(b) ?? b) || a - b);
  const groups = pids.map((pid) => {
    const group = procs.get(pid) ?? `pid ${pid}`;
    return `<section class="group" data-group="${esc(group)}"><div class="group-title">${esc(group)}</div>`
      + `${all.filter((l) => l.pid === pid).map((l) => renderLane(l, t0, span)).join('\n')}</section>`;
  });
  const legend = LEGEND.map(([c, text]) => `<li><svg viewBox="0 0 18 10"><rect class="swatch ${c}" x="1" y="1" width="16" height="8"/></svg>${esc(text)}</li>`);
  const summary = `${ms(span)} · ${all.length} lanes · ${items.length} events${dropped ? ` · ${dropped} events dropped while recording` : ''}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(name)} — dmabuf trace</title><style>${CSS}</style></head>
<body>
<header><h1>${esc(name)}</h1><p class="summary">${esc(summary)}</p>
<div class="controls"><button id="zoom-out" title="zoom out">−</button><button id="zoom-in" title="zoom in">+</button>`
    + `<button id="zoom-fit" title="whole trace">fit</button><span class="hint">Ctrl + wheel zooms at the pointer; hover an event for details</span></div>
<ul class="legend">${legend.join('')}</ul></header>
<div id="scroller"><div id="content">
<div class="axis-row"><div class="label">time</div><div id="axis" class="axis"></div></div>
${groups.length ? groups.join('\n') : '<p class="empty">This trace has no events to draw.</p>'}
</div></div>
<script>${script(span)}</script>
</body></html>
`;
}
