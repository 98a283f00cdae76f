// dlagraph's interactive view. The diagram is Graphviz's SVG, whose elements carry ids from the
// network: n:NODE, c:CLUSTER (a level, an HDA subtree, a head module), e:U->V. Folding hides a
// cluster's nodes and inner edges and draws one box with its totals over the cluster's area
// (the layout stays: nothing moves while reading). All data comes from #dlagraph-data.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("dlagraph-data").textContent);
  // the name-keyed maps without Object's prototype: a node or group called "constructor" or
  // "__proto__" is looked up as itself, never as an inherited property
  const own = (o) => Object.assign(Object.create(null), o || {});
  D.nodes = own(D.nodes);
  D.groups = own(D.groups);
  if (D.diff) D.diff.nodes = own(D.diff.nodes);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const nodeEl = (n) => $("n:" + n);
  const groupEl = (g) => $("c:" + g);
  const num = (x) => x.toLocaleString("en-US");
  const pct = (x, total) => (total ? (100 * x) / total : 0).toFixed(1) + "%";
  const shape = (s) => s.join("\u00d7");
  const esc = (t) =>
    String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const svg = document.querySelector("#canvas svg");
  const folded = new Set();
  const diff = D.diff || null;
  let selected = null;

  // --- structure -------------------------------------------------------------------------
  const ancestors = (g) => {
    const out = [];
    for (let p = g; p; p = D.groups[p].parent) out.push(p);
    return out; // innermost first
  };
  const foldedAbove = (g) => {
    let top = null;
    for (const p of ancestors(g)) if (folded.has(p)) top = p;
    return top; // the outermost folded group containing g (or g itself), or null
  };
  const hiddenBy = (n) => (D.nodes[n] && D.nodes[n].group ? foldedAbove(D.nodes[n].group) : null);
  const changedGroups = new Set();
  if (diff) {
    for (const n of Object.keys(diff.nodes)) {
      if (D.nodes[n] && D.nodes[n].group) ancestors(D.nodes[n].group).forEach((g) => changedGroups.add(g));
      const e = nodeEl(n);
      if (e) e.classList.add("diff-" + diff.nodes[n]);
    }
  }

  // --- folding ---------------------------------------------------------------------------
  const layer = document.createElementNS(SVG_NS, "g");
  layer.setAttribute("id", "fold-layer");
  (svg.querySelector("g.graph") || svg).appendChild(layer);

  function foldBox(g) {
    const G = D.groups[g];
    const box = groupEl(g).getBBox();
    const el = document.createElementNS(SVG_NS, "g");
    el.setAttribute("class", "fold-box" + (changedGroups.has(g) ? " changed" : ""));
    el.setAttribute("id", "fold:" + g);
    el.dataset.group = g;
    const rect = document.createElementNS(SVG_NS, "rect");
    for (const [k, v] of Object.entries({ x: box.x, y: box.y, width: box.width, height: box.height, rx: 6 }))
      rect.setAttribute(k, v);
    el.appendChild(rect);
    const lines = [
      ["title", "\u25b8 " + G.title],
      ["", `${G.blocks} blocks, ${G.aggregations} N, ${G.nodes.length} nodes`],
      ["", `${num(G.params)} params (${pct(G.params, D.params)})`],
      ["", `${num(G.macs)} MACs (${pct(G.macs, D.macs)})`],
    ];
    lines.forEach(([cls, text], i) => {
      const t = document.createElementNS(SVG_NS, "text");
      t.setAttribute("x", box.x + 8);
      t.setAttribute("y", box.y + 16 + 14 * i);
      if (cls) t.setAttribute("class", cls);
      t.textContent = text;
      el.appendChild(t);
    });
    el.addEventListener("click", (ev) => {
      ev.stopPropagation();
      toggle(g);
    });
    layer.appendChild(el);
    // a small cluster's area may be smaller than its totals: grow the box to fit them
    const texts = [...el.querySelectorAll("text")];
    const wide = Math.max(...texts.map((t) => t.getComputedTextLength())) + 16;
    rect.setAttribute("width", Math.max(box.width, wide));
    rect.setAttribute("height", Math.max(box.height, 14 * texts.length + 10));
  }

  function refresh() {
    for (const n of D.order) {
      const e = nodeEl(n);
      if (e) e.style.display = hiddenBy(n) ? "none" : "";
    }
    layer.replaceChildren();
    for (const g of D.group_order) {
      const e = groupEl(g);
      const parent = D.groups[g].parent;
      const hidden = parent && foldedAbove(parent);
      if (e) e.style.display = hidden ? "none" : "";
      if (folded.has(g) && !hidden && e) foldBox(g);
    }
    for (const [u, v] of D.edges) {
      const e = $(`e:${u}->${v}`);
      if (!e) continue;
      const hu = hiddenBy(u);
      e.style.display = hu && hu === hiddenBy(v) ? "none" : "";
    }
    for (const row of document.querySelectorAll("#outline .row")) {
      const g = row.dataset.group;
      row.querySelector(".toggle").textContent = folded.has(g) ? "\u25b8" : "\u25be";
      row.hidden = Boolean(D.groups[g].parent && foldedAbove(D.groups[g].parent));
    }
  }

  function toggle(g) {
    if (folded.has(g)) folded.delete(g);
    else folded.add(g);
    refresh();
  }

  // --- outline ---------------------------------------------------------------------------
  function outline() {
    const nav = $("outline");
    const rows = D.group_order.map((g) => {
      const G = D.groups[g];
      const row = document.createElement("div");
      row.className = "row" + (changedGroups.has(g) ? " changed" : "");
      row.dataset.group = g;
      row.style.paddingLeft = 6 + 14 * G.depth + "px";
      const p = (100 * G.params) / (D.params || 1);
      const m = (100 * G.macs) / (D.macs || 1);
      row.innerHTML =
        `<button class="toggle" title="fold / unfold"></button>` +
        `<span class="name" title="${esc(g)}">${esc(G.title)}</span>` +
        `<span class="stats">${G.blocks ? G.blocks + " B" : ""}</span>` +
        `<div class="bars"><div class="bar params" title="parameters"><i style="width:${p.toFixed(2)}%"></i></div>` +
        `<span data-field="params-share">${p.toFixed(1)}% P</span>` +
        `<div class="bar macs" title="MACs"><i style="width:${m.toFixed(2)}%"></i></div>` +
        `<span data-field="macs-share">${m.toFixed(1)}% M</span></div>`;
      row.querySelector(".toggle").addEventListener("click", (ev) => {
        ev.stopPropagation();
        toggle(g);
      });
      row.addEventListener("click", () => {
        const e = folded.has(g) ? $("fold:" + g) : groupEl(g);
        if (e) e.scrollIntoView({ block: "center", inline: "center" });
        showGroup(g);
      });
      return row;
    });
    const [h, w] = D.input_size;
    const note = document.createElement("div");
    note.className = "note";
    note.id = "computed-at";
    note.textContent =
      `Shares of ${num(D.params)} parameters (P) and ${num(D.macs)} MACs (M), ` +
      `computed at ${D.in_channels}\u00d7${h}\u00d7${w}.` +
      (D.unused_params ? ` Unused projections (in the state_dict, never run): ${num(D.unused_params)} params.` : "");
    nav.replaceChildren(note, ...rows);
    if (diff) {
      const legend = document.createElement("div");
      legend.className = "legend-diff";
      legend.innerHTML =
        `<b>vs ${esc(diff.against)}</b><br><span style="color:#e67e22">\u25a0 changed</span>` +
        `<span style="color:#27ae60">\u25a0 added</span><span style="color:#2980b9">\u25a0 renamed</span>`;
      nav.prepend(legend);
    }
  }

  // --- details ---------------------------------------------------------------------------
  const row = (k, v, field) => `<tr><td>${esc(k)}</td><td${field ? ` data-field="${field}"` : ""}>${v}</td></tr>`;

  function showNode(n) {
    const N = D.nodes[n];
    if (!N) return;
    if (selected) nodeEl(selected)?.classList.remove("selected");
    selected = n;
    nodeEl(n)?.classList.add("selected");
    const opts = Object.entries(N.options)
      .map(([k, v]) => `${esc(k)}: ${esc(typeof v === "object" ? JSON.stringify(v) : v)}`)
      .join("<br>");
    const ins = N.inputs.map(([u, s]) => `${esc(u)} <span class="where">${shape(s)}</span>`).join("<br>");
    const status = diff && diff.nodes[n] ? row("vs " + diff.against, esc(diff.nodes[n]), "diff") : "";
    const keys = N.keys.map(([k, s]) => `<tr><td>${esc(k)}</td><td>${shape(s) || "scalar"}</td></tr>`).join("");
    $("details").innerHTML =
      `<h2 data-field="name">${esc(n)}</h2><table>` +
      row("label", esc(N.label), "label") +
      row("op", esc(N.op) + (N.role ? ` (${esc(N.role)})` : ""), "op") +
      (opts ? row("options", opts, "options") : "") +
      (N.eq ? row("equation", esc(N.eq), "eq") : "") +
      row("from", esc(N.spec_path), "spec_path") +
      row("module", esc(N.module || "(none)"), "module") +
      row("inputs", ins || "(the image)", "inputs") +
      row("output", shape(N.shape), "shape") +
      row("parameters", `${num(N.params)} (${pct(N.params, D.params)})`, "params") +
      row("MACs", `${num(N.macs)} (${pct(N.macs, D.macs)})`, "macs") +
      status +
      `</table><h3>state_dict: ${N.keys.length} tensor${N.keys.length === 1 ? "" : "s"} under ${esc(N.module ? N.module + "." : "-")}</h3>` +
      `<table class="keys">${keys}</table>` +
      diffSummary();
  }

  function showGroup(g) {
    const G = D.groups[g];
    $("details").innerHTML =
      `<h2 data-field="name">${esc(G.title)}</h2><table>` +
      row("cluster", esc(g)) +
      row("nodes", `${G.nodes.length} (${G.blocks} blocks, ${G.aggregations} aggregation nodes)`) +
      row("parameters", `${num(G.params)} (${pct(G.params, D.params)})`, "params") +
      row("MACs", `${num(G.macs)} (${pct(G.macs, D.macs)})`, "macs") +
      `</table>` + diffSummary();
  }

  function diffSummary() {
    if (!diff) return "";
    const list = (xs) => xs.map((x) => `<li>${esc(x)}</li>`).join("");
    return (
      `<div class="diff"><h3>Differences from ${esc(diff.against)}</h3>` +
      `<pre>${esc(diff.levels.join("\n"))}</pre>` +
      (diff.removed.length ? `<h3>Only in ${esc(diff.against)}: ${diff.removed.length} tensors</h3><ul>${list(diff.removed.slice(0, 50))}</ul>` : "") +
      (diff.notes.length ? `<ul>${list(diff.notes)}</ul>` : "") +
      `</div>`
    );
  }

  // --- hover -----------------------------------------------------------------------------
  const tip = $("tooltip");
  function hover(n, ev) {
    const N = D.nodes[n];
    tip.innerHTML =
      `<b data-field="name">${esc(n)}</b><span data-field="label">${esc(N.label)}</span><br>` +
      `in: <span data-field="inputs">${N.inputs.map(([, s]) => shape(s)).join(", ") || "-"}</span><br>` +
      `out: <span data-field="shape">${shape(N.shape)}</span><br>` +
      `params: <span data-field="params">${num(N.params)}</span><br>` +
      `MACs: <span data-field="macs">${num(N.macs)}</span>` +
      (diff && diff.nodes[n] ? `<br>${esc(diff.nodes[n])} vs ${esc(diff.against)}` : "");
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, innerWidth - 370) + "px";
    tip.style.top = ev.clientY + 14 + "px";
  }

  for (const n of D.order) {
    const e = nodeEl(n);
    if (!e) continue;
    e.addEventListener("mousemove", (ev) => hover(n, ev));
    e.addEventListener("mouseleave", () => (tip.hidden = true));
    e.addEventListener("click", (ev) => {
      ev.stopPropagation();
      showNode(n);
    });
  }
  for (const g of D.group_order) {
    const label = groupEl(g)?.querySelector("text");
    if (label) label.addEventListener("click", () => toggle(g));
  }

  // --- search ----------------------------------------------------------------------------
  const index = [];
  for (const n of D.order) {
    const N = D.nodes[n];
    index.push([n.toLowerCase(), n, n, "node"]);
    if (N.module && N.module !== n) index.push([N.module.toLowerCase(), N.module, n, "module"]);
    for (const [k] of N.keys) index.push([k.toLowerCase(), k, n, "tensor"]);
  }
  const results = $("results");
  let hits = [];
  function search(q) {
    q = q.trim().toLowerCase();
    hits = [];
    if (q) {
      const exact = index.filter((x) => x[0] === q);
      const rest = index.filter((x) => x[0] !== q && x[0].includes(q));
      hits = exact.concat(rest).slice(0, 40);
    }
    results.innerHTML = hits
      .map(([, text, n, kind], i) => `<li data-i="${i}"${i ? "" : ' class="active"'}>${esc(text)} <span class="where">${kind === "node" ? "" : esc(kind + " of " + n)}</span></li>`)
      .join("") || (q ? `<li class="none">no node or tensor matches</li>` : "");
    results.hidden = !q;
  }
  function reveal(n) {
    if (!D.nodes[n]) return;
    if (D.nodes[n].group) ancestors(D.nodes[n].group).forEach((g) => folded.delete(g));
    refresh();
    document.querySelectorAll("g.node.found").forEach((e) => e.classList.remove("found"));
    nodeEl(n)?.classList.add("found");
    showNode(n);
    nodeEl(n)?.scrollIntoView({ block: "center", inline: "center" });
  }
  $("search").addEventListener("input", (ev) => search(ev.target.value));
  $("search").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && hits.length) {
      reveal(hits[0][2]);
      results.hidden = true;
    } else if (ev.key === "Escape") {
      ev.target.value = "";
      search("");
    }
  });
  results.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-i]");
    if (!li) return;
    reveal(hits[Number(li.dataset.i)][2]);
    results.hidden = true;
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && document.activeElement !== $("search")) {
      ev.preventDefault();
      $("search").focus();
    }
  });

  // --- zoom ------------------------------------------------------------------------------
  const vb = svg.viewBox.baseVal;
  let scale = 1;
  const zoom = (s) => {
    scale = Math.max(0.05, Math.min(8, s));
    svg.style.width = vb.width * scale + "px";
    svg.style.height = vb.height * scale + "px";
  };
  $("zoom-in").addEventListener("click", () => zoom(scale * 1.25));
  $("zoom-out").addEventListener("click", () => zoom(scale / 1.25));
  $("zoom-fit").addEventListener("click", () => zoom(($("canvas").clientWidth - 16) / vb.width));
  $("fold-all").addEventListener("click", () => {
    D.group_order.filter((g) => !D.groups[g].parent).forEach((g) => folded.add(g));
    refresh();
  });
  $("unfold-all").addEventListener("click", () => {
    folded.clear();
    refresh();
  });

  const [h, w] = D.input_size;
  $("totals").textContent =
    `${num(D.params)} params \u00b7 ${(D.macs / 1e9).toFixed(2)} GMACs at ${h}\u00d7${w} \u00b7 ${D.order.length} nodes`;
  outline();
  zoom(1);
  refresh();
  if (diff) $("details").innerHTML = diffSummary();
  document.body.dataset.readyMs = performance.now().toFixed(0); // since navigation started
  document.body.dataset.ready = "true"; // for tests and scripts: the view is interactive
})();
