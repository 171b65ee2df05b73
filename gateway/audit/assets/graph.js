// sluice governance-flow viewer. Self-contained: no network, no libraries. All strings from the
// log are attacker-influenced, so they only ever reach the page through textContent and
// setAttribute, never innerHTML. One SVG element per flow edge and per scope, never per envelope.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("graph-data").textContent);
  const MAX_DRAWN = (data.view && data.view.max_drawn) || 2000;
  const PALETTE = ["#2f6fb2", "#b8652a", "#7a4fb0", "#2a8c8c", "#b03a7a", "#6b8e23",
    "#8c6d1f", "#4a5a8c", "#a0522d", "#3c7d4a"];
  const UNKNOWN_TD = "#9aa5b1";
  const MAX_LABEL = 28; // characters of a scope name drawn; the details panel shows it whole
  const $ = (id) => document.getElementById(id);

  const scopes = new Map();      // name -> node
  const gatewayTd = new Map();   // gateway id -> trust domain
  const tdColour = new Map();
  const flows = [];
  for (const n of data.nodes) {
    if (n.kind === "scope") scopes.set(n.name, n);
    else if (n.kind === "gateway") gatewayTd.set(n.name, n.trust_domain);
    else if (n.kind === "trust_domain") tdColour.set(n.name, PALETTE[tdColour.size % PALETTE.length]);
  }
  for (const e of data.edges) if (e.kind === "flow") flows.push(e);
  const colourOf = (td) => tdColour.get(td) || UNKNOWN_TD;
  const el = (tag, attrs, parent) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  };
  const html = (tag, text, parent, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  };
  const fmtTime = (ms) => (ms === null || ms === undefined) ? "-" :
    new Date(ms).toISOString().replace("T", " ").replace(".000Z", "Z");
  const fmtNum = (n) => Number(n).toLocaleString("en-US");
  const toInput = (ms) => new Date(ms).toISOString().slice(0, 19);
  const fromInput = (s) => { const t = Date.parse(s + "Z"); return Number.isNaN(t) ? null : t; };

  // ---- static parts: summary, filters, legend, gateways and revisions ----
  const tdSelect = $("f-td");
  for (const td of tdColour.keys()) {
    const o = html("option", td, tdSelect); o.value = td;
  }
  const legend = $("legend");
  for (const [td, colour] of tdColour) {
    const li = html("li", null, legend);
    html("span", null, li, "swatch").style.background = colour;
    html("span", td, li);
  }
  const unknownLi = html("li", null, legend);
  html("span", null, unknownLi, "swatch").style.background = UNKNOWN_TD;
  html("span", "no known trust domain (destination only)", unknownLi);
  for (const [cls, text] of [["allow", "allowed flow"], ["deny", "refused flow"]]) {
    const li = html("li", null, legend);
    const sw = html("span", null, li, "line-swatch");
    sw.style.borderColor = cls === "allow" ? "var(--allow)" : "var(--deny)";
    if (cls === "deny") sw.style.borderTopStyle = "dashed";
    html("span", text, li);
  }
  for (const n of data.nodes) {
    if (n.kind !== "gateway" && n.kind !== "policy_revision") continue;
    const li = html("li", null, $(n.kind === "gateway" ? "gateways" : "revisions"));
    li.dataset.kind = n.kind;
    li.dataset.name = n.name;
    html("div", n.kind === "gateway" ? n.name : (n.name ? n.name.slice(0, 16) + "…" : "(none)"),
      li, "mono");
    if (n.kind === "policy_revision") li.title = n.name;
    const extra = n.kind === "gateway" ? (n.trust_domain || "invalid SPIFFE ID") + " · " : "";
    html("div", extra + fmtNum(n.allowed) + " allowed · " + fmtNum(n.denied) + " refused", li,
      "counts");
  }
  const sinceIn = $("f-since"), untilIn = $("f-until");
  if (data.first_ms !== null) {
    for (const inp of [sinceIn, untilIn]) {
      inp.min = toInput(data.first_ms);
      inp.max = toInput(data.last_ms);
    }
  }
  const resetTimes = () => {
    sinceIn.value = data.first_ms === null ? "" : toInput(data.first_ms);
    untilIn.value = data.last_ms === null ? "" : toInput(data.last_ms);
  };
  resetTimes();

  // ---- one SVG element per flow and per scope, created once ----
  const gEdges = $("edges"), gNodes = $("nodes"), gLabels = $("labels"), gArcs = $("arcs");
  const maxCount = flows.reduce((m, f) => Math.max(m, f.count), 1);
  flows.forEach((f, i) => {
    const p = el("path", { class: "flow " + f.decision, "data-kind": "flow", "data-index": i,
      "data-origin": f.origin, "data-destination": f.destination, "data-decision": f.decision,
      "marker-end": "url(#arrow-" + f.decision + ")", display: "none" }, gEdges);
    f.el = p;
  });
  const scopeEls = new Map();
  for (const [name, s] of scopes) {
    const c = el("circle", { class: "scope", r: 5, "data-kind": "scope", "data-name": name,
      fill: colourOf(s.trust_domain), display: "none" }, gNodes);
    const t = el("text", { class: "label", display: "none" }, gLabels);
    t.textContent = name.length > MAX_LABEL ? name.slice(0, MAX_LABEL - 1) + "…" : name;
    scopeEls.set(name, { c, t });
  }
  const arcEls = new Map();
  for (const [td, colour] of tdColour) {
    const a = el("path", { class: "td-arc", "data-kind": "trust_domain", "data-name": td,
      stroke: colour, display: "none" }, gArcs);
    arcEls.set(td, a);
  }

  // ---- filtering ----
  const state = { selected: null };
  function filters() {
    const since = fromInput(sinceIn.value);
    const untilRaw = fromInput(untilIn.value);
    const atEnds = since !== null && untilRaw !== null && since <= data.first_ms &&
      untilRaw >= Math.floor(data.last_ms / 1000) * 1000;
    return {
      scope: $("f-scope").value.trim().toLowerCase(),
      td: tdSelect.value,
      decision: $("f-decision").value,
      since: atEnds ? null : since,
      until: atEnds || untilRaw === null ? null : untilRaw + 1000, // the "to" second is inclusive
    };
  }
  function countIn(f, q) {
    if (q.since === null && q.until === null) return f.count;
    const w = data.bucket_ms, lo = q.since === null ? -Infinity : q.since;
    const hi = q.until === null ? Infinity : q.until;
    let n = 0;
    for (const [b, c] of f.buckets) if (b * w < hi && (b + 1) * w > lo) n += c;
    return n;
  }
  function matches(f, q) {
    if (q.decision && f.decision !== q.decision) return false;
    if (q.scope && !f.origin.toLowerCase().includes(q.scope) &&
        !f.destination.toLowerCase().includes(q.scope)) return false;
    if (q.td && !f.trust_domains.some(([td]) => td === q.td) &&
        !f.gateways.some(([g]) => gatewayTd.get(g) === q.td)) return false;
    return true;
  }

  // ---- deterministic circular layout, grouped by trust domain ----
  function layout(names) {
    const byTd = (a, b) => {
      const ta = scopes.get(a).trust_domain, tb = scopes.get(b).trust_domain;
      if (ta !== tb) return ta === "" ? 1 : tb === "" ? -1 : (ta < tb ? -1 : 1);
      return a < b ? -1 : a > b ? 1 : 0;
    };
    names.sort(byTd);
    const groups = new Set(names.map((n) => scopes.get(n).trust_domain)).size;
    const slots = names.length + (groups > 1 ? groups : 0); // one empty slot between groups
    const radius = Math.max(150, slots * 13 / (2 * Math.PI));
    const pos = new Map();
    let slot = 0, prev = null;
    for (const n of names) {
      const td = scopes.get(n).trust_domain;
      if (prev !== null && td !== prev && groups > 1) slot += 1;
      prev = td;
      const a = -Math.PI / 2 + 2 * Math.PI * slot / Math.max(slots, 1);
      pos.set(n, { x: radius * Math.cos(a), y: radius * Math.sin(a), a, td });
      slot += 1;
    }
    return { pos, radius, step: 2 * Math.PI / Math.max(slots, 1) };
  }
  function edgePath(f, pos, radius) {
    const A = pos.get(f.origin), B = pos.get(f.destination);
    if (f.origin === f.destination) {
      const ux = -Math.cos(A.a), uy = -Math.sin(A.a), s = f.decision === "allow" ? 34 : 48;
      const px = -uy, py = ux;
      return "M" + A.x + "," + A.y + "C" + (A.x + (ux + px * 0.8) * s) + "," +
        (A.y + (uy + py * 0.8) * s) + " " + (A.x + (ux - px * 0.8) * s) + "," +
        (A.y + (uy - py * 0.8) * s) + " " + A.x + "," + A.y;
    }
    const dx = B.x - A.x, dy = B.y - A.y, len = Math.hypot(dx, dy) || 1;
    const pull = 0.45 * Math.min(1, len / radius);
    const bend = (f.decision === "allow" ? 0.08 : 0.2) * len;
    const cx = (A.x + B.x) / 2 * (1 - pull) - dy / len * bend;
    const cy = (A.y + B.y) / 2 * (1 - pull) + dx / len * bend;
    // End the curve at the node's rim so the arrow head stays visible.
    const ex = B.x - cx, ey = B.y - cy, el2 = Math.hypot(ex, ey) || 1;
    const tx = B.x - ex / el2 * 6, ty = B.y - ey / el2 * 6;
    return "M" + A.x.toFixed(1) + "," + A.y.toFixed(1) + "Q" + cx.toFixed(1) + "," +
      cy.toFixed(1) + " " + tx.toFixed(1) + "," + ty.toFixed(1);
  }
  function arcPath(r, a0, a1) {
    const large = a1 - a0 > Math.PI ? 1 : 0;
    return "M" + (r * Math.cos(a0)).toFixed(1) + "," + (r * Math.sin(a0)).toFixed(1) + "A" + r +
      "," + r + " 0 " + large + " 1 " + (r * Math.cos(a1)).toFixed(1) + "," +
      (r * Math.sin(a1)).toFixed(1);
  }

  let view = { x: -300, y: -300, w: 600, h: 600 };
  const svg = $("graph");
  const applyView = () => svg.setAttribute("viewBox",
    view.x + " " + view.y + " " + view.w + " " + view.h);

  function render() {
    const q = filters();
    const shown = [];
    let matching = 0, decisions = 0;
    for (const f of flows) {
      f.shownCount = matches(f, q) ? countIn(f, q) : 0;
      if (f.shownCount > 0) { matching += 1; decisions += f.shownCount; shown.push(f); }
    }
    shown.sort((a, b) => b.shownCount - a.shownCount);
    const drawn = shown.slice(0, MAX_DRAWN);
    const drawnSet = new Set(drawn);
    const names = new Set();
    for (const f of drawn) { names.add(f.origin); names.add(f.destination); }
    const { pos, radius, step } = layout([...names]);
    const wmax = drawn.reduce((m, f) => Math.max(m, f.shownCount), 1);
    for (const f of flows) {
      if (!drawnSet.has(f)) { f.el.setAttribute("display", "none"); continue; }
      f.el.setAttribute("display", "inline");
      f.el.setAttribute("d", edgePath(f, pos, radius));
      f.el.setAttribute("stroke-width",
        (1.2 + 4.5 * Math.log1p(f.shownCount) / Math.log1p(Math.max(wmax, maxCount))).toFixed(2));
      f.el.setAttribute("data-count", f.shownCount);
    }
    const labelSize = Math.max(7, Math.min(12, step * radius * 0.9));
    for (const [name, { c, t }] of scopeEls) {
      const p = pos.get(name);
      if (!p) { c.setAttribute("display", "none"); t.setAttribute("display", "none"); continue; }
      c.setAttribute("display", "inline"); t.setAttribute("display", "inline");
      c.setAttribute("cx", p.x.toFixed(1)); c.setAttribute("cy", p.y.toFixed(1));
      const deg = p.a * 180 / Math.PI, left = Math.cos(p.a) < 0;
      const lr = radius + 14;
      t.setAttribute("x", (lr * Math.cos(p.a)).toFixed(1));
      t.setAttribute("y", (lr * Math.sin(p.a)).toFixed(1));
      t.setAttribute("text-anchor", left ? "end" : "start");
      t.setAttribute("dominant-baseline", "middle");
      t.setAttribute("font-size", labelSize.toFixed(1));
      t.setAttribute("transform", "rotate(" + (left ? deg + 180 : deg).toFixed(2) + " " +
        (lr * Math.cos(p.a)).toFixed(1) + " " + (lr * Math.sin(p.a)).toFixed(1) + ")");
    }
    const spans = new Map();
    for (const p of pos.values()) {
      if (!p.td) continue;
      const s = spans.get(p.td) || { lo: Infinity, hi: -Infinity };
      s.lo = Math.min(s.lo, p.a); s.hi = Math.max(s.hi, p.a); spans.set(p.td, s);
    }
    for (const [td, a] of arcEls) {
      const s = spans.get(td);
      if (!s) { a.setAttribute("display", "none"); continue; }
      a.setAttribute("display", "inline");
      a.setAttribute("d", arcPath(radius + 7, s.lo - step * 0.4, s.hi + step * 0.4));
    }
    let longest = 0;
    for (const n of names) longest = Math.max(longest, Math.min(n.length, MAX_LABEL));
    const margin = 40 + longest * labelSize * 0.62;
    view = { x: -radius - margin, y: -radius - margin, w: 2 * (radius + margin),
      h: 2 * (radius + margin) };
    applyView();

    const sm = $("summary");
    sm.textContent = fmtNum(data.records) + " decisions in the log · " +
      fmtNum(decisions) + " shown in " + fmtNum(drawn.length) + " flows between " +
      fmtNum(names.size) + " scopes · " + fmtTime(data.first_ms) + " to " + fmtTime(data.last_ms);
    const notes = [];
    if (matching > drawn.length) {
      notes.push("Showing the " + fmtNum(drawn.length) + " largest of " + fmtNum(matching) +
        " matching flows; narrow the filters to see the rest.");
    }
    if (data.flows_total > flows.length) {
      notes.push("This page holds the " + fmtNum(flows.length) + " largest of " +
        fmtNum(data.flows_total) + " flows (sluice audit graph --format json has all).");
    }
    if (q.since !== null || q.until !== null) {
      notes.push("Time window counts are exact to " + fmtNum(data.bucket_ms / 1000) + " s.");
    }
    if (data.overflow_records > 0) {
      notes.push(fmtNum(data.overflow_records) + " decisions were on flows beyond the graph's limit.");
    }
    $("note").textContent = notes.join(" ");
    $("graph").dataset.drawnFlows = String(drawn.length);
    if (state.selected && state.selected.kind === "flow" && !drawnSet.has(state.selected.flow)) {
      clearDetails();
    } else if (state.selected) {
      showSelected();
    }
  }

  // ---- details panel (textContent only) ----
  function clearDetails() {
    state.selected = null;
    for (const f of flows) f.el.classList.remove("selected");
    for (const { c } of scopeEls.values()) c.classList.remove("selected");
    $("details-body").replaceChildren();
    $("details-empty").style.display = "";
  }
  function table(parent, title, headers, rows) {
    html("h2", title, parent);
    const t = html("table", null, parent);
    const hr = html("tr", null, t);
    headers.forEach((h) => html("th", h, hr));
    for (const row of rows) {
      const tr = html("tr", null, t);
      row.forEach((v, i) => {
        const td = html("td", v, tr, typeof v === "number" ? "num" : (i === 0 ? "" : ""));
        if (typeof v === "number") td.textContent = fmtNum(v);
      });
    }
    return t;
  }
  const short = (hex) => hex ? hex.slice(0, 16) + "…" : "(none)";
  function showFlow(f) {
    const body = $("details-body");
    body.replaceChildren();
    body.dataset.kind = "flow";
    $("details-empty").style.display = "none";
    const h = html("h3", null, body);
    html("span", f.origin, h);
    html("span", "  →  ", h, "muted");
    html("span", f.destination, h);
    html("span", f.decision === "allow" ? "allowed" : "refused", body, "badge " + f.decision);
    const dl = html("dl", null, body);
    const item = (k, v, id) => { html("dt", k, dl); const d = html("dd", v, dl); if (id) d.id = id; };
    item("in view", fmtNum(f.shownCount), "d-shown");
    item("total", fmtNum(f.count), "d-count");
    item("first seen", fmtTime(f.first_ms));
    item("last seen", fmtTime(f.last_ms));
    table(body, "Reasons", ["reason", "count"], f.reasons).id = "d-reasons";
    table(body, "Rules that decided", ["rule", "count"],
      f.rules.map(([r, n]) => [r || "(no rule matched)", n])).id = "d-rules";
    table(body, "Policy revisions applied", ["revision", "count"],
      f.policy_revisions.map(([r, n]) => [short(r), n])).classList.add("mono");
    table(body, "Lineage revisions carried", ["lineage", "count"],
      f.lineages.map(([r, n]) => [short(r), n])).classList.add("mono");
    table(body, "Gateways", ["gateway", "count"], f.gateways);
    table(body, "Hops (from → to)", ["hop", "count"], f.hops);
    table(body, "Issuer trust domains", ["trust domain", "count"],
      f.trust_domains.map(([t, n]) => [t || "(unknown)", n]));
    const st = table(body, "Sample envelopes (most recent)", ["envelope id", "time", "rule"],
      f.samples.map((s) => [s.envelope_id || "(unreadable)", fmtTime(s.ts_ms), s.rule || "-"]));
    st.id = "d-samples";
    st.classList.add("mono");
  }
  function showScope(name) {
    const s = scopes.get(name);
    const body = $("details-body");
    body.replaceChildren();
    body.dataset.kind = "scope";
    $("details-empty").style.display = "none";
    html("h3", name, body);
    const dl = html("dl", null, body);
    const item = (k, v) => { html("dt", k, dl); html("dd", v, dl); };
    item("trust domain", s.trust_domain || "(unknown)");
    item("as origin", fmtNum(s.sent));
    item("as destination", fmtNum(s.received));
    const rows = flows.filter((f) => f.shownCount > 0 &&
      (f.origin === name || f.destination === name)).slice(0, 50)
      .map((f) => [f.origin + " → " + f.destination, f.decision, f.shownCount]);
    table(body, "Flows in view", ["flow", "decision", "count"], rows);
  }
  function showSelected() {
    if (!state.selected) return;
    if (state.selected.kind === "flow") showFlow(state.selected.flow);
    else showScope(state.selected.name);
  }
  function select(sel) {
    for (const f of flows) f.el.classList.remove("selected");
    for (const { c } of scopeEls.values()) c.classList.remove("selected");
    state.selected = sel;
    if (sel.kind === "flow") sel.flow.el.classList.add("selected");
    else scopeEls.get(sel.name).c.classList.add("selected");
    showSelected();
  }

  // ---- events: delegated, so there is one listener, not one per element ----
  let drag = null, moved = false;
  svg.addEventListener("click", (ev) => {
    if (moved) return;
    const t = ev.target;
    if (t.dataset && t.dataset.kind === "flow") select({ kind: "flow", flow: flows[+t.dataset.index] });
    else if (t.dataset && t.dataset.kind === "scope") select({ kind: "scope", name: t.dataset.name });
  });
  svg.addEventListener("mouseover", (ev) => {
    const t = ev.target, d = t.dataset || {};
    const hv = $("hover");
    if (d.kind === "flow") {
      const f = flows[+d.index];
      hv.textContent = f.origin + " → " + f.destination + " · " +
        (f.decision === "allow" ? "allowed" : "refused") + " · " + fmtNum(f.shownCount);
    } else if (d.kind === "scope") {
      hv.textContent = d.name;
    } else {
      hv.textContent = "";
    }
  });
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    const r = svg.getBoundingClientRect();
    const fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
    const nw = view.w * k, nh = view.h * k;
    view = { x: view.x + (view.w - nw) * fx, y: view.y + (view.h - nh) * fy, w: nw, h: nh };
    applyView();
  }, { passive: false });
  svg.addEventListener("mousedown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, v: { ...view } }; moved = false;
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    const s = Math.max(drag.v.w / r.width, drag.v.h / r.height);
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { moved = true; svg.classList.add("dragging"); }
    if (moved) { view = { ...drag.v, x: drag.v.x - dx * s, y: drag.v.y - dy * s }; applyView(); }
  });
  window.addEventListener("mouseup", () => { drag = null; svg.classList.remove("dragging"); });
  for (const id of ["f-scope", "f-td", "f-decision", "f-since", "f-until"]) {
    $(id).addEventListener("input", render);
    $(id).addEventListener("change", render);
  }
  $("f-reset").addEventListener("click", () => {
    $("f-scope").value = ""; tdSelect.value = ""; $("f-decision").value = "";
    resetTimes(); render();
  });
  render();
  document.body.dataset.ready = "true";
})();
