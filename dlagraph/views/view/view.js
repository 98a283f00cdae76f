// dlagraph's interactive view. The drawing is Graphviz's SVG, whose elements carry ids from the
// network: n:NODE, fold:CLUSTER (a folded level, HDA subtree or head module), c:CLUSTER, e:U->V.
// Folding or unfolding lays the drawing out again: the page assembles the DOT text of the new fold
// state from the parts in #dlagraph-data (`assemble`, the rules of dlagraph/views/folds.py) and
// runs Graphviz, compiled to WebAssembly and shipped in #dlagraph-graphviz, on it. The page opens
// on the overview Python laid out the same way: every level folded, fitted to the window.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("dlagraph-data").textContent);
  // the name-keyed maps without Object's prototype: a node or group called "constructor" or
  // "__proto__" is looked up as itself, never as an inherited property
  const own = (o) => Object.assign(Object.create(null), o || {});
  D.nodes = own(D.nodes);
  D.groups = own(D.groups);
  if (D.diff) D.diff.nodes = own(D.diff.nodes);
  const $ = (id) => document.getElementById(id);
  const nodeEl = (n) => $("n:" + n);
  const groupEl = (g) => $("c:" + g);
  const num = (x) => x.toLocaleString("en-US");
  const pct = (x, total) => (total ? (100 * x) / total : 0).toFixed(1) + "%";
  const shape = (s) => s.join("\u00d7");
  const esc = (t) =>
    String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  // a name or shape that may wrap: after its dots, underscores and "x"s, not inside a word
  const brk = (t) => esc(t).replace(/([._\u00d7])/g, "$1<wbr>");
  let svg = document.querySelector("#canvas svg");
  const P = D.layout;
  const folded = new Set(D.folded);
  const diff = D.diff || null;
  let selected = null;
  let found = null;

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
    }
  }

  // --- the DOT text of a fold state (dlagraph/views/folds.py's `assemble`, line for line) ---
  function assemble(fold) {
    const lines = [P.head.replace(/\n+$/, "")];
    const emit = (items, indent) => {
      for (const item of items) {
        if (item[0] === "n") lines.push(indent + P.nodes[item[1]]);
        else if (fold.has(item[1])) lines.push(indent + P.folds[item[1]]);
        else {
          lines.push(indent + P.opens[item[1]]);
          lines.push(indent + "\t" + P.clusters[item[1]]);
          emit(item[2], indent + "\t");
          lines.push(indent + "}");
        }
      }
    };
    emit(P.items, "\t");
    const drawnAs = (n) => {
      const c = P.paths[n].find((x) => fold.has(x));
      return c === undefined ? [n, P.dot_ids[n]] : [c, P.fold_ids[c]];
    };
    const seen = new Set();
    for (const [u, v, intoNode, intoFold] of P.edges) {
      const [du, iu] = drawnAs(u);
      const [dv, iv] = drawnAs(v);
      const key = du + "\u0000" + dv;
      if (du === dv || seen.has(key)) continue;
      seen.add(key);
      let a = iv === P.dot_ids[v] ? intoNode : intoFold;
      if (P.ids) a = (a ? a.slice(0, -1) + " " : "[") + `id="e:${du}->${dv}"]`;
      lines.push(`\t${iu} -> ${iv} ${a}`.trimEnd());
    }
    if (P.tail) lines.push(P.tail.replace(/\n+$/, ""));
    lines.push("}");
    return lines.join("\n") + "\n";
  }
  window.dlagraphAssemble = (groups) => assemble(new Set(groups)); // for tests: equal to Python's

  // --- Graphviz, compiled to WebAssembly (a WASI module: the few system calls it makes are
  // answered here; it reads no file, and its clock and randomness are fixed, so a fold state
  // is laid out the same way each time)
  let graphviz = null;
  async function loadGraphviz() {
    const b64 = $("dlagraph-graphviz").textContent.trim();
    const gz = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"));
    const module = await WebAssembly.compile(await new Response(stream).arrayBuffer());
    let ex = null;
    const dv = () => new DataView(ex.memory.buffer);
    const messages = [];
    const EBADF = 8, ENOENT = 44, ESPIPE = 70;
    const wasi = {
      environ_get: () => 0,
      environ_sizes_get: (count, size) => (dv().setUint32(count, 0, true), dv().setUint32(size, 0, true), 0),
      clock_time_get: (id, precision, out) => (dv().setBigUint64(out, 0n, true), 0),
      fd_close: () => 0,
      fd_fdstat_get: (fd, out) => {
        if (fd > 2) return EBADF;
        for (let i = 0; i < 24; i++) dv().setUint8(out + i, 0);
        dv().setUint8(out, 2); // a character device
        return 0;
      },
      fd_fdstat_set_flags: () => 0,
      fd_filestat_get: () => EBADF,
      fd_prestat_get: () => EBADF, // no folders
      fd_prestat_dir_name: () => EBADF,
      fd_read: (fd, iovs, n, nread) => (dv().setUint32(nread, 0, true), 0),
      fd_seek: () => ESPIPE,
      fd_write: (fd, iovs, n, nwritten) => {
        let total = 0;
        for (let i = 0; i < n; i++) {
          const ptr = dv().getUint32(iovs + 8 * i, true);
          const len = dv().getUint32(iovs + 8 * i + 4, true);
          messages.push(new TextDecoder().decode(new Uint8Array(ex.memory.buffer, ptr, len)));
          total += len;
        }
        dv().setUint32(nwritten, total, true);
        return 0;
      },
      path_filestat_get: () => ENOENT,
      path_open: () => ENOENT,
      proc_exit: (code) => {
        throw new Error(`Graphviz exited (${code})`);
      },
      random_get: (buf, len) => (new Uint8Array(ex.memory.buffer, buf, len).fill(0), 0),
    };
    const put = (text) => {
      const b = new TextEncoder().encode(text + "\0");
      const p = ex.malloc(b.length);
      new Uint8Array(ex.memory.buffer, p, b.length).set(b);
      return p;
    };
    const cstring = (p) => {
      const mem = new Uint8Array(ex.memory.buffer);
      let end = p;
      while (mem[end]) end++;
      return new TextDecoder().decode(mem.slice(p, end));
    };
    return (dot) => {
      // a fresh instance of the compiled module per layout: Graphviz keeps about 19 KB of each
      // layout in its memory, which would grow for as long as the page is used
      ex = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi }).exports;
      messages.length = 0;
      const args = [put(dot), put("svg"), put("dot"), ex.malloc(4)];
      try {
        const out = ex.graphviz_render(...args);
        if (!out) throw new Error(cstring(ex.graphviz_last_error()) || messages.join("") || "Graphviz failed");
        const len = dv().getUint32(args[3], true);
        const text = new TextDecoder().decode(new Uint8Array(ex.memory.buffer, out, len).slice());
        ex.graphviz_free(out);
        return text;
      } finally {
        args.forEach((p) => ex.free(p));
      }
    };
  }

  // --- folding: lay the drawing out again ------------------------------------------------
  let queue = Promise.resolve();
  let layouts = 0;
  function relayout(then, before) {
    document.body.dataset.busy = "true";
    const busy = $("busy");
    busy.textContent = "laying out\u2026";
    busy.hidden = false;
    const state = new Set(folded); // the state this layout draws
    queue = queue
      .then(async () => {
        graphviz = graphviz || (await loadGraphviz());
        // let the browser paint "laying out" first: a large layout holds the page for seconds
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        const text = graphviz(assemble(state));
        // Graphviz's SVG inline: no prolog, no <title> (the page shows its own tooltips)
        $("canvas").innerHTML = text.slice(text.indexOf("<svg")).replace(/<title>[^<]*<\/title>\n?/g, "");
        svg = $("canvas").querySelector("svg");
        bind();
        autoZoom();
        if (then) then();
      })
      .then(() => (busy.hidden = true))
      .catch((err) => {
        // the drawing stays as it was: so do the fold state and the outline
        if (before) {
          folded.clear();
          before.forEach((g) => folded.add(g));
          refreshOutline();
        }
        busy.textContent = "cannot lay the drawing out in this browser: " + err.message;
        console.warn(err);
      })
      .finally(() => {
        layouts += 1;
        document.body.dataset.layouts = String(layouts);
        document.body.dataset.busy = "false";
      });
    refreshOutline();
    return queue;
  }

  function refreshOutline() {
    for (const row of document.querySelectorAll("#outline .row")) {
      const g = row.dataset.group;
      row.querySelector(".toggle").textContent = folded.has(g) ? "\u25b8" : "\u25be";
      row.hidden = Boolean(D.groups[g].parent && foldedAbove(D.groups[g].parent));
    }
  }

  function toggle(g) {
    const before = [...folded];
    if (folded.has(g)) folded.delete(g);
    else folded.add(g);
    return relayout(() => {
      const e = folded.has(g) ? $("fold:" + g) : groupEl(g);
      if (e) e.scrollIntoView({ block: "center", inline: "center" });
    }, before);
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
        `<span class="name" title="${esc(g)}">${brk(G.title)}</span>` +
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
    const ins = N.inputs.map(([u, s]) => `${brk(u)} <span class="where">${shape(s)}</span>`).join("<br>");
    const status = diff && diff.nodes[n] ? row("vs " + diff.against, esc(diff.nodes[n]), "diff") : "";
    const keys = N.keys.map(([k, s]) => `<tr><td>${brk(k)}</td><td>${shape(s) || "scalar"}</td></tr>`).join("");
    $("details").innerHTML =
      `<h2 data-field="name">${brk(n)}</h2><table>` +
      row("label", esc(N.label), "label") +
      row("op", esc(N.op) + (N.role ? ` (${esc(N.role)})` : ""), "op") +
      (opts ? row("options", opts, "options") : "") +
      (N.eq ? row("equation", esc(N.eq), "eq") : "") +
      row("from", esc(N.spec_path), "spec_path") +
      row("module", brk(N.module || "(none)"), "module") +
      row("inputs", ins || "(the image)", "inputs") +
      row("output", shape(N.shape), "shape") +
      row("parameters", `${num(N.params)} (${pct(N.params, D.params)})`, "params") +
      row("MACs", `${num(N.macs)} (${pct(N.macs, D.macs)})`, "macs") +
      status +
      `</table><h3>state_dict: ${N.keys.length} tensor${N.keys.length === 1 ? "" : "s"} under ${brk(N.module ? N.module + "." : "-")}</h3>` +
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

  // the level table in the panel's width: module, channels, depth and the two deltas; every
  // column in the row's tooltip
  function levelTable() {
    if (!diff.levels.length) return "";
    const [head, ...rows] = diff.levels;
    const cols = [0, 1, 2, 6, 9];
    const line = (r, tag) =>
      `<tr title="${esc(head.map((h, i) => `${h}: ${r[i]}`).join("\n"))}">` +
      cols.map((i) => `<${tag}>${esc(r[i])}</${tag}>`).join("") + "</tr>";
    return `<table class="levels">${line(head, "th")}${rows.map((r) => line(r, "td")).join("")}</table>`;
  }

  function diffSummary() {
    if (!diff) return "";
    const list = (xs) => xs.map((x) => `<li>${esc(x)}</li>`).join("");
    return (
      `<div class="diff"><h3>Differences from ${esc(diff.against)}</h3>` +
      levelTable() +
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

  // the drawing's elements, after each layout: hover and click, folding, the marks
  function bind() {
    for (const n of D.order) {
      const e = nodeEl(n);
      if (!e) continue;
      e.addEventListener("mousemove", (ev) => hover(n, ev));
      e.addEventListener("mouseleave", () => (tip.hidden = true));
      e.addEventListener("click", (ev) => {
        ev.stopPropagation();
        showNode(n);
      });
      if (diff && diff.nodes[n]) e.classList.add("diff-" + diff.nodes[n]);
      if (n === selected) e.classList.add("selected");
      if (n === found) e.classList.add("found");
    }
    for (const g of D.group_order) {
      const label = groupEl(g)?.querySelector("text");
      if (label) label.addEventListener("click", () => toggle(g));
      const box = $("fold:" + g);
      if (!box) continue;
      box.classList.add("fold-box");
      if (changedGroups.has(g)) box.classList.add("changed");
      box.addEventListener("click", (ev) => {
        ev.stopPropagation();
        toggle(g);
      });
    }
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
    document.querySelectorAll("g.node.found").forEach((e) => e.classList.remove("found"));
    found = n;
    const show = () => {
      nodeEl(n)?.classList.add("found");
      showNode(n);
      nodeEl(n)?.scrollIntoView({ block: "center", inline: "center" });
    };
    const way = D.nodes[n].group ? ancestors(D.nodes[n].group).filter((g) => folded.has(g)) : [];
    if (!way.length) {
      queue.then(show); // after any layout still pending: the node is in the drawing it gives
      return;
    }
    const before = [...folded];
    way.forEach((g) => folded.delete(g)); // only the way to the node is unfolded
    relayout(show, before);
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

  // --- zoom: the page opens fitted to the window; a new layout is fitted again (never below
  // 3/4 size, where labels stop being readable, nor above 1:1) until the reader zooms by hand
  let scale = 1;
  let byHand = false;
  const zoom = (s) => {
    const vb = svg.viewBox.baseVal;
    scale = Math.max(0.05, Math.min(8, s));
    svg.style.width = vb.width * scale + "px";
    svg.style.height = vb.height * scale + "px";
  };
  const fitScale = () => {
    const vb = svg.viewBox.baseVal;
    const c = $("canvas");
    return Math.min((c.clientWidth - 16) / vb.width, (c.clientHeight - 16) / vb.height);
  };
  let opened = false;
  const autoZoom = () => {
    if (!opened) {
      opened = true; // the page opens on the whole drawing, however small that makes it
      return zoom(Math.min(1, fitScale()));
    }
    zoom(byHand ? scale : Math.max(0.75, Math.min(1, fitScale())));
  };
  const byHandZoom = (s) => {
    byHand = true;
    zoom(s);
  };
  $("zoom-in").addEventListener("click", () => byHandZoom(scale * 1.25));
  $("zoom-out").addEventListener("click", () => byHandZoom(scale / 1.25));
  $("zoom-fit").addEventListener("click", () => {
    byHand = false;
    zoom(fitScale());
  });
  $("fold-all").addEventListener("click", () => {
    const before = [...folded];
    folded.clear();
    D.group_order.filter((g) => !D.groups[g].parent).forEach((g) => folded.add(g));
    relayout(null, before);
  });
  $("unfold-all").addEventListener("click", () => {
    const before = [...folded];
    folded.clear();
    relayout(null, before);
  });

  const [h, w] = D.input_size;
  $("totals").textContent =
    `${num(D.params)} params \u00b7 ${(D.macs / 1e9).toFixed(2)} GMACs at ${h}\u00d7${w} \u00b7 ${D.order.length} nodes`;
  outline();
  refreshOutline();
  bind();
  autoZoom();
  if (diff) $("details").innerHTML = diffSummary();
  document.body.dataset.busy = "false";
  document.body.dataset.layouts = "0";
  document.body.dataset.readyMs = performance.now().toFixed(0); // since navigation started
  document.body.dataset.ready = "true"; // for tests and scripts: the view is interactive
})();
