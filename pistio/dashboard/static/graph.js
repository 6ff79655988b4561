// pistio dashboard: draws /api/graph as a layered SVG graph and /api/proxies as a table,
// refreshed every few seconds. Plain DOM and SVG, no libraries (the page works offline).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLUMN = 250;      // horizontal distance between layers
const ROW = 96;          // vertical distance between nodes of a layer
const MARGIN_X = 90;
const MARGIN_Y = 60;
const RADIUS = 17;

let refreshMs = 5000;
let selected = null;     // id of the node or edge whose details are shown
let lastGraph = null;

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, cls, content) {
  const t = el("text", { x, y, class: cls }, parent);
  t.textContent = content;
  return t;
}

function fmtRate(rps) {
  if (rps >= 100) return rps.toFixed(0);
  if (rps >= 10) return rps.toFixed(1);
  return rps.toFixed(2);
}

function fmtBytes(bps) {
  if (bps >= 1048576) return (bps / 1048576).toFixed(1) + " MB/s";
  if (bps >= 1024) return (bps / 1024).toFixed(1) + " kB/s";
  return bps.toFixed(0) + " B/s";
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  return ms >= 100 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms";
}

function fmtPercent(p) {
  if (p === null || p === undefined) return "0%";
  if (p === 0) return "0%";
  return p < 1 ? p.toFixed(2) + "%" : p.toFixed(1) + "%";
}

function positions(graph) {
  const layers = {};
  for (const n of graph.nodes) (layers[n.layer] = layers[n.layer] || []).push(n);
  const tallest = Math.max(1, ...Object.values(layers).map((l) => l.length));
  const pos = {};
  for (const [layer, members] of Object.entries(layers)) {
    const offset = ((tallest - members.length) * ROW) / 2;  // centre short layers
    for (const n of members) {
      pos[n.id] = { x: MARGIN_X + Number(layer) * COLUMN, y: MARGIN_Y + offset + n.row * ROW };
    }
  }
  const width = MARGIN_X * 2 + (Object.keys(layers).length - 1) * COLUMN;
  const height = MARGIN_Y * 2 + (tallest - 1) * ROW + 20;
  return { pos, width: Math.max(width, 400), height: Math.max(height, 160) };
}

function drawAppBoxes(svg, graph, pos) {
  // Kiali boxes the versions of one app together; we do when they share a layer.
  const apps = {};
  for (const n of graph.nodes) {
    if (n.kind === "workload" && n.app && n.version) {
      (apps[n.namespace + "/" + n.app] = apps[n.namespace + "/" + n.app] || []).push(n);
    }
  }
  for (const members of Object.values(apps)) {
    if (members.length < 2 || new Set(members.map((m) => m.layer)).size !== 1) continue;
    const ys = members.map((m) => pos[m.id].y);
    const x = pos[members[0].id].x;
    const top = Math.min(...ys) - RADIUS - 22;
    const bottom = Math.max(...ys) + RADIUS + 34;
    el("rect", { x: x - 58, y: top, width: 116, height: bottom - top, rx: 8,
                 class: "app-box", "data-app": members[0].app }, svg);
    text(svg, x - 52, top + 13, "app-box-label", members[0].app);
  }
}

function padlock(parent, x, y) {
  const g = el("g", { class: "padlock-icon", transform: `translate(${x},${y})` }, parent);
  el("path", { d: "M2.5,6 v-2.5 a3.5,3.5 0 0 1 7,0 v2.5", class: "padlock-shackle" }, g);
  el("rect", { x: 0, y: 6, width: 12, height: 8, rx: 1.5, class: "padlock" }, g);
  return g;
}

function edgeLabelLines(e) {
  const lines = [];
  if (e.rps > 0) {
    lines.push(`${fmtRate(e.rps)} rps · ${fmtPercent(e.errorPercent)}`);
    if (e.p99Ms !== null && e.p99Ms !== undefined) lines.push(`p99 ${fmtMs(e.p99Ms)}`);
  }
  if (e.tcpBytesPerSecond > 0) lines.push(fmtBytes(e.tcpBytesPerSecond));
  return lines;
}

function drawEdge(svg, e, pos) {
  const a = pos[e.source];
  const b = pos[e.target];
  if (!a || !b) return;
  const g = el("g", {
    class: `edge ${e.health}`, "data-edge-id": e.id, "data-source": e.source,
    "data-target": e.target, "data-rps": e.rps, "data-mtls": e.mtls ? "true" : "false",
    "data-p99": e.p99Ms === null ? "" : e.p99Ms,
    "data-error-percent": e.errorPercent === null ? "" : e.errorPercent,
  }, svg);
  const x1 = a.x + RADIUS + 2;
  const x2 = b.x - RADIUS - 6;
  const bend = Math.max(40, (x2 - x1) / 2);
  const backwards = x2 <= x1;  // an edge closing a cycle: loop below
  const d = backwards
    ? `M${a.x},${a.y + RADIUS} C${a.x},${a.y + 110} ${b.x},${b.y + 110} ${b.x},${b.y + RADIUS + 4}`
    : `M${x1},${a.y} C${x1 + bend},${a.y} ${x2 - bend},${b.y} ${x2},${b.y}`;
  el("path", { d, "marker-end": `url(#arrow-${e.health})` }, g);
  const lines = edgeLabelLines(e);
  if (!lines.length) return;
  const mx = backwards ? (a.x + b.x) / 2 : (x1 + x2) / 2;
  const my = backwards ? Math.max(a.y, b.y) + 80 : (a.y + b.y) / 2;
  const label = el("g", { class: "edge-label" }, g);
  const lockSpace = e.mtls ? 16 : 0;
  const width = Math.max(...lines.map((l) => l.length)) * 6.1 + 10 + lockSpace;
  const height = lines.length * 13 + 6;
  const left = mx - width / 2;
  el("rect", { x: left, y: my - height / 2, width, height, rx: 3 }, label);
  lines.forEach((line, i) => {
    text(label, left + 5 + lockSpace, my - height / 2 + 13 + i * 13, "edge-text", line);
  });
  if (e.mtls) {
    const lock = padlock(label, left + 5, my - 7);
    const title = el("title", {}, lock);
    title.textContent = `mutual TLS: ${fmtPercent(e.mtlsPercent)} of requests`;
  }
  g.addEventListener("click", () => { selected = e.id; showDetails(); });
}

function drawNode(svg, n, pos) {
  const p = pos[n.id];
  const g = el("g", {
    class: `node ${n.kind} ${n.health}`, "data-node-id": n.id, "data-kind": n.kind,
    "data-label": n.label, "data-app": n.app, "data-version": n.version,
    "data-health": n.health, transform: `translate(${p.x},${p.y})`,
  }, svg);
  if (n.kind === "service") {
    el("polygon", { points: `0,${-RADIUS} ${RADIUS},${RADIUS - 3} ${-RADIUS},${RADIUS - 3}` }, g);
  } else {
    el("circle", { cx: 0, cy: 0, r: RADIUS }, g);
    text(g, 0, 4, "glyph", n.kind === "unknown" ? "?" : "W");
  }
  text(g, 0, RADIUS + 15, "name", n.label);
  if (n.kind === "workload" && n.namespace) text(g, 0, RADIUS + 28, "sub", n.namespace);
  if (n.kind === "service") text(g, 0, RADIUS + 28, "sub", "service");
  g.addEventListener("click", () => { selected = n.id; showDetails(); });
}

function drawGraph(graph) {
  const svg = document.getElementById("graph");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const empty = document.getElementById("graph-empty");
  if (!graph.nodes.length) {
    svg.setAttribute("height", 0);
    empty.hidden = false;
    empty.textContent = graph.error
      ? "No graph: " + graph.error
      : `No traffic in the last ${graph.window}. Send some requests through the mesh.`;
    return;
  }
  empty.hidden = true;
  const { pos, width, height } = positions(graph);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  svg.style.maxWidth = width + "px";
  const defs = el("defs", {}, svg);
  for (const h of ["healthy", "degraded", "failure", "idle"]) {
    const m = el("marker", { id: `arrow-${h}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
                             markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: `arrow ${h}` }, m);
  }
  const styles = getComputedStyle(document.documentElement);
  for (const h of ["healthy", "degraded", "failure"]) {
    defs.querySelector(`#arrow-${h} path`).setAttribute("fill", styles.getPropertyValue(`--${h}`));
  }
  defs.querySelector("#arrow-idle path").setAttribute("fill", styles.getPropertyValue("--tcp"));
  drawAppBoxes(svg, graph, pos);
  const edges = el("g", { class: "edges" }, svg);
  for (const e of graph.edges) drawEdge(edges, e, pos);
  const nodes = el("g", { class: "nodes" }, svg);
  for (const n of graph.nodes) drawNode(nodes, n, pos);
}

function showDetails() {
  const box = document.getElementById("details");
  const graph = lastGraph;
  if (!graph || !selected) { box.hidden = true; return; }
  const node = graph.nodes.find((n) => n.id === selected);
  const edge = graph.edges.find((e) => e.id === selected);
  if (!node && !edge) { box.hidden = true; return; }
  const names = Object.fromEntries(graph.nodes.map((n) => [n.id, n.label]));
  const rows = [];
  if (node) {
    rows.push(["node", `${node.label} (${node.kind})`]);
    if (node.namespace) rows.push(["namespace", node.namespace]);
    if (node.workload) rows.push(["workload", node.workload]);
    if (node.service) rows.push(["service", node.service]);
    rows.push(["inbound", `${fmtRate(node.inboundRps)} rps, ${fmtPercent(node.errorPercent)} 5xx`]);
  } else {
    rows.push(["edge", `${names[edge.source]} → ${names[edge.target]}`]);
    rows.push(["requests", `${fmtRate(edge.rps)} rps, ${fmtPercent(edge.errorPercent)} 5xx`]);
    for (const [code, rps] of Object.entries(edge.responses)) {
      rows.push([`  ${code || "-"}`, `${fmtRate(rps)} rps`]);
    }
    if (edge.p99Ms !== null) rows.push(["p99", fmtMs(edge.p99Ms)]);
    if (edge.tcpBytesPerSecond > 0) rows.push(["tcp", fmtBytes(edge.tcpBytesPerSecond)]);
    rows.push(["mTLS", edge.mtlsPercent === null ? "unknown" : fmtPercent(edge.mtlsPercent)]);
  }
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
  box.replaceChildren(table);
  box.hidden = false;
}

function drawProxies(data) {
  const body = document.querySelector("#proxies tbody");
  const rows = [];
  for (const p of data.proxies) {
    const tr = document.createElement("tr");
    tr.dataset.proxy = p.proxy;
    tr.dataset.synced = p.synced ? "true" : "false";
    tr.insertCell().textContent = p.name;
    tr.insertCell().textContent = p.namespace;
    for (const t of ["CDS", "LDS", "EDS", "RDS"]) {
      const info = p.types[t];
      const td = tr.insertCell();
      td.dataset.type = t;
      const status = document.createElement("span");
      status.className = "sync " + info.status.replace(" ", "-");
      status.textContent = info.status;
      td.appendChild(status);
      const version = info.versionAcked || info.versionSent;
      if (version) {
        const v = document.createElement("span");
        v.className = "version";
        v.textContent = version.length > 14 ? version.slice(0, 14) + "…" : version;
        v.title = version;
        td.appendChild(v);
      }
      if (info.error) td.title = "rejected: " + info.error;
    }
    tr.insertCell().textContent = p.version;
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const synced = data.proxies.filter((p) => p.synced).length;
  document.getElementById("proxy-summary").textContent = data.error
    ? ""
    : `${data.proxies.length} connected to the discovery at ${data.discovery}, ${synced} synced`;
}

function showProblems(graph, proxies) {
  const banner = document.getElementById("banner");
  const errors = [];
  if (graph && graph.error) errors.push("Metrics: " + graph.error);
  if (proxies && proxies.error) errors.push("Proxies: " + proxies.error);
  const warnings = graph ? graph.warnings || [] : [];
  if (!errors.length && !warnings.length) { banner.hidden = true; return; }
  banner.className = errors.length ? "banner" : "banner warn";
  banner.replaceChildren(...[...errors, ...warnings].map((line) => {
    const div = document.createElement("div");
    div.textContent = line;
    return div;
  }));
  banner.hidden = false;
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [graph, proxies] = await Promise.all([getJSON("/api/graph"), getJSON("/api/proxies")]);
    lastGraph = graph;
    refreshMs = Math.max(1000, (graph.interval || 5) * 1000);
    drawGraph(graph);
    drawProxies(proxies);
    showProblems(graph, proxies);
    showDetails();
    const at = new Date(graph.timestamp * 1000).toLocaleTimeString();
    status.textContent = `${graph.source} · rates over ${graph.window} · updated ${at}`;
    document.body.dataset.updated = String(graph.timestamp);
  } catch (err) {
    status.textContent = "dashboard server unreachable: " + err.message;
  }
  setTimeout(refresh, refreshMs);
}

refresh();
