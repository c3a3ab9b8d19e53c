/* Parley operator console: the agents graph of the live view.
 *
 * The visitor and the agents sit on an ellipse; turns, handoffs and agent messages are
 * curved arrows with their count in a pill at the middle. Elements are kept by key, so
 * an edge or node that changes lights up in place.
 */

import { $, flash, h, s, title } from "./console.js";

export function makeGraph(container) {
  const W = 760;
  const H = 320;
  const NW = 156;
  const NH = 54;
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "graph-title graph-desc",
  });
  const desc = s("desc", { id: "graph-desc" });
  svg.append(
    s("title", { id: "graph-title", text: "The visitor and the agents, with turns, handoffs and messages between them" }),
    desc,
    s("defs", {}, ...["turn", "handoff", "message"].map((kind) =>
      s("marker", {
        id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "9", markerHeight: "9", orient: "auto-start-reverse", markerUnits: "userSpaceOnUse",
      }, s("path", { d: "M0 0 L10 5 L0 10 z", cls: `arrow-${kind}` })))));
  const edgeLayer = s("g", { cls: "edges" });
  const nodeLayer = s("g", { cls: "nodes" });
  svg.append(edgeLayer, nodeLayer);
  container.append(svg);
  const nodeEls = new Map();
  const edgeEls = new Map();

  function layout(ids) {
    const places = new Map();
    const cx = W / 2;
    const cy = H / 2;
    const rx = W / 2 - NW / 2 - 12;
    const ry = H / 2 - NH / 2 - 12;
    ids.forEach((nodeId, i) => {
      const a = Math.PI + (2 * Math.PI * i) / ids.length;
      places.set(nodeId, { x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a) });
    });
    return places;
  }

  function border(center, toward) {
    const dx = toward.x - center.x;
    const dy = toward.y - center.y;
    const t = Math.min(
      dx ? (NW / 2 + 3) / Math.abs(dx) : Infinity,
      dy ? (NH / 2 + 3) / Math.abs(dy) : Infinity);
    return { x: center.x + dx * t, y: center.y + dy * t };
  }

  function curve(a, b, bend) {
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const c = { x: (a.x + b.x) / 2 - (dy / len) * bend, y: (a.y + b.y) / 2 + (dx / len) * bend };
    const p0 = border(a, c);
    const p2 = border(b, c);
    const mid = {
      x: 0.25 * p0.x + 0.5 * c.x + 0.25 * p2.x,
      y: 0.25 * p0.y + 0.5 * c.y + 0.25 * p2.y,
    };
    const f = (n) => n.toFixed(1);
    return { d: `M${f(p0.x)} ${f(p0.y)} Q${f(c.x)} ${f(c.y)} ${f(p2.x)} ${f(p2.y)}`, mid };
  }

  const kindClass = (kind) => (kind === "turn" || kind === "handoff" ? kind : "message");
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  function nodeEl(node) {
    let el = nodeEls.get(node.id);
    if (!el) {
      el = s("g", { cls: `node ${node.type}`, "data-node": node.id },
        s("title"),
        s("rect", { cls: "box", x: -NW / 2, y: -NH / 2, width: NW, height: NH, rx: node.type === "visitor" ? NH / 2 : 10 }),
        s("text", { cls: "name", "text-anchor": "middle", y: -3 }),
        s("text", { cls: "stats", "text-anchor": "middle", y: 15 }),
        s("g", { cls: "tag", "aria-hidden": "true" },
          s("rect", { x: NW / 2 - 54, y: -NH / 2 - 9, width: 48, height: 17, rx: 8.5 }),
          s("text", { x: NW / 2 - 30, y: -NH / 2 - 0.5, text: "ACTIVE" })));
      nodeLayer.append(el);
      nodeEls.set(node.id, el);
    }
    return el;
  }

  function edgeEl(key, edge) {
    let el = edgeEls.get(key);
    if (!el) {
      const kind = kindClass(edge.kind);
      el = s("g", { cls: `edge ${kind}`, "data-edge": key },
        s("title"),
        s("path", { "marker-end": `url(#arrow-${kind})` }),
        s("rect", { cls: "pill", height: 20, rx: 10 }),
        s("text", { cls: "count" }));
      edgeLayer.append(el);
      edgeEls.set(key, el);
    }
    return el;
  }

  function draw(state) {
    const places = layout(state.order);
    const turns = [...state.edges.values()]
      .filter((e) => e.from === "visitor")
      .reduce((n, e) => n + e.count, 0);
    for (const nodeId of state.order) {
      const node = state.nodes.get(nodeId);
      const el = nodeEl(node);
      const place = places.get(nodeId);
      el.setAttribute("transform", `translate(${place.x.toFixed(1)} ${place.y.toFixed(1)})`);
      const name = node.type === "visitor" ? "Visitor" : node.title || title(node.id);
      const stats = node.type === "visitor"
        ? plural(turns, "turn", "turns")
        : `${plural(node.replies || 0, "reply", "replies")} · ${plural(node.tool_calls || 0, "tool", "tools")}`;
      const active = node.id === state.info.active_agent;
      el.classList.toggle("active", active);
      el.classList.toggle("busy", node.id === state.busy);
      el.children[0].textContent = `${name}${active ? " (active)" : ""}: ${stats}`;
      el.children[2].textContent = name;
      el.children[3].textContent = stats;
      if (state.flashNodes.has(nodeId)) flash(el);
    }
    for (const [nodeId, el] of nodeEls) {
      if (!state.nodes.has(nodeId)) {
        el.remove();
        nodeEls.delete(nodeId);
      }
    }
    // Edges between the same two nodes in the same direction bend further apart.
    const lanes = new Map();
    const described = [];
    for (const [key, edge] of state.edges) {
      const a = places.get(edge.from);
      const b = places.get(edge.to);
      if (!a || !b) continue;
      const pair = `${edge.from}>${edge.to}`;
      const lane = lanes.get(pair) || 0;
      lanes.set(pair, lane + 1);
      const { d, mid } = curve(a, b, 26 + lane * 24);
      const el = edgeEl(key, edge);
      const label = String(edge.count);
      const width = 14 + 8 * label.length;
      el.children[1].setAttribute("d", d);
      el.children[2].setAttribute("x", (mid.x - width / 2).toFixed(1));
      el.children[2].setAttribute("y", (mid.y - 10).toFixed(1));
      el.children[2].setAttribute("width", width);
      el.children[3].setAttribute("x", mid.x.toFixed(1));
      el.children[3].setAttribute("y", mid.y.toFixed(1));
      el.children[3].textContent = label;
      const ends = [edge.from, edge.to].map((n) => (n === "visitor" ? "Visitor" : title(n)));
      const words = `${ends[0]} → ${ends[1]}: ${edge.count} ${edge.kind}${edge.count === 1 ? "" : "s"}`;
      el.children[0].textContent = words;
      described.push({ key, words });
      if (state.flashEdges.has(key)) flash(el);
    }
    for (const [key, el] of edgeEls) {
      if (!state.edges.has(key)) {
        el.remove();
        edgeEls.delete(key);
      }
    }
    desc.textContent = described.map((e) => e.words).join("; ") || "No turns yet.";
    $("#edge-list").replaceChildren(
      ...described.map((e) => h("li", { "data-edge": e.key, text: e.words })));
    state.flashEdges.clear();
    state.flashNodes.clear();
  }

  return { draw };
}
