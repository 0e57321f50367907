// The concept dashboard's script (inlined into each page by dashboard_page.py).
// Data: the JSON in <script id="data">, from csae_jax/evaluation/browser.py page_data.
(function () {
  var t0 = performance.now();
  var data = JSON.parse(document.getElementById("data").textContent);
  var PAGE_ROWS = 100;
  var hashOpts = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("="); if (p[0]) hashOpts[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  var SVGNS = "http://www.w3.org/2000/svg";
  function sv(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function fmt(v, d) { return v === null || v === undefined ? "n/a" : Number(v).toFixed(d === undefined ? 3 : d); }
  function labelName(l) { return l >= 0 && l < data.label_names.length ? data.label_names[l] : "unlabelled"; }
  function labelColor(l) { return l >= 0 && l < data.label_colors.length ? data.label_colors[l] : "#aaa"; }
  function imgInfo(i) { return data.images[String(i)] || ["?", -1, ""]; }
  function thumb(i, cls) {
    var info = imgInfo(i), im = el("img", cls);
    im.src = info[2]; im.alt = info[0];
    im.title = info[0] + " (label " + labelName(info[1]) + ")";
    im.style.outline = "2px solid " + labelColor(info[1]);
    return im;
  }

  // ------------------------------------------------------------------ Level-1 details
  function histogram(node) {
    var bins = node.h || [], w = 300, h = 54, max = Math.max.apply(null, bins.concat([1]));
    var s = sv("svg", {"class": "hist", width: w, height: h + 14});
    var bw = (w - 2) / Math.max(bins.length, 1);
    bins.forEach(function (c, k) {
      var bh = c > 0 ? Math.max(1, h * c / max) : 0;
      var r = sv("rect", {x: 1 + k * bw, y: h - bh, width: Math.max(bw - 1, 1), height: bh, fill: "#4c78a8"});
      var t = sv("title", {}); t.textContent = c + " images in [" + fmt(node.hx * k / bins.length) + ", " + fmt(node.hx * (k + 1) / bins.length) + ")";
      r.appendChild(t); s.appendChild(r);
    });
    s.appendChild(sv("line", {x1: 0, x2: w, y1: h, y2: h, stroke: "#999"}));
    var a = sv("text", {x: 1, y: h + 11, "font-size": 9, fill: "#555"}); a.textContent = "0";
    var b = sv("text", {x: w - 1, y: h + 11, "font-size": 9, fill: "#555", "text-anchor": "end"});
    b.textContent = fmt(node.hx) + " (max image-level code)";
    s.appendChild(a); s.appendChild(b);
    return s;
  }
  function heatImage(node, j) {
    var box = el("div", "heat-img"), i = node.img[j];
    box.appendChild(thumb(i));
    var hm = node.heat && node.heat[j];
    if (hm && hm[0] > 0) {
      var grid = el("div", "grid"), bytes = atob(hm[2]);
      grid.style.gridTemplateRows = "repeat(" + hm[0] + ", 1fr)";
      grid.style.gridTemplateColumns = "repeat(" + hm[1] + ", 1fr)";
      for (var k = 0; k < hm[0] * hm[1]; k++) {
        var c = el("div"), a = bytes.charCodeAt(k) / 255;
        c.style.background = "rgba(0, 0, 0, " + (0.7 * (1 - a)).toFixed(3) + ")";
        if (a >= 0.5) c.style.boxShadow = "inset 0 0 0 " + (a > 0.8 ? 2 : 1) + "px rgba(255, 230, 0, " + a.toFixed(3) + ")";
        grid.appendChild(c);
      }
      box.appendChild(grid);
    }
    box.appendChild(el("div", "val", fmt(node.val[j], 2)));
    return box;
  }
  function level1Card(node) {
    var box = el("div", "unit level-1" + (node.fires ? "" : " no-evidence"));
    box.setAttribute("data-unit", node.u);
    var t = el("div", "title", "L1 #" + node.u);
    if (!node.fires) t.appendChild(el("span", "badge flag", "never fires"));
    box.appendChild(t);
    if (!node.fires) {   // nothing to show but where it sits: keep the card small
      box.appendChild(el("div", "stats", "no evaluation image has a positive code \u00b7 cos(atom, parent) " + fmt(node.cos, 3)));
      return box;
    }
    if (node.d !== undefined) {
      box.appendChild(el("div", "stats", "density " + fmt(100 * node.d, 1) + "% of " + data.eval_images +
          " images \u00b7 mean code " + fmt(node.m, 4) + " \u00b7 cos(atom, parent) " + fmt(node.cos, 3)));
      box.appendChild(histogram(node));
    }
    var imgs = el("div", "imgs top-images");
    node.img.forEach(function (_, j) { imgs.appendChild(heatImage(node, j)); });
    if (!node.img.length) imgs.appendChild(el("span", "muted", "no image with a positive code"));
    box.appendChild(imgs);
    if (node.q && node.q.length) {
      var qs = el("div", "quantiles"), nb = node.q.length;
      node.q.forEach(function (band, b) {
        if (!band.length) return;
        var row = el("div", "band");
        row.appendChild(el("span", "", "ranks " + Math.round(100 * b / nb) + "-" + Math.round(100 * (b + 1) / nb) + "%"));
        band.forEach(function (e) { var im = thumb(e[0]); im.title += " code " + fmt(e[1], 4); row.appendChild(im); });
        qs.appendChild(row);
      });
      box.appendChild(qs);
    }
    if (node.lab && node.lab.length) {
      var lb = el("div", "labels");
      node.lab.forEach(function (x) {
        var bar = el("div", "bar");
        bar.appendChild(el("span", "name", labelName(x[0])));
        var f = el("span", "fill"); f.style.width = Math.max(2, 150 * x[2]) + "px"; f.style.background = labelColor(x[0]);
        bar.appendChild(f);
        bar.appendChild(el("span", "muted", fmt(100 * x[2], 0) + "% of mass, " + x[1] + " imgs"));
        lb.appendChild(bar);
      });
      box.appendChild(lb);
    }
    return box;
  }

  // ------------------------------------------------------------------ tree rows
  function unitRow(node) {
    var box = el("div", "unit level-" + node.level + (node.ev ? "" : " no-evidence"));
    box.setAttribute("data-unit", node.u);
    var head = el("div", "head");
    var tw = el("span", "tw", "\u25b8");
    head.appendChild(tw);
    head.appendChild(el("span", "", "Level " + node.level + " #" + node.u));
    head.appendChild(el("span", "badge hms", node.hms === null ? "HMS n/a (<2 children)" : "HMS " + fmt(node.hms, 4)));
    head.appendChild(el("span", "badge", node.n + " children"));
    if (!node.ev) head.appendChild(el("span", "badge flag", "no evidence: no descendant fires"));
    else {   // a preview: the top images of its strongest firing Level-1 descendant
      var best = null;
      descendantsL1(node, []).forEach(function (k) { if (k.fires && (!best || k.val[0] > best.val[0])) best = k; });
      if (best) {
        var pv = el("span", "preview");
        pv.title = "top images of L1 #" + best.u;
        best.img.slice(0, 4).forEach(function (i) { pv.appendChild(thumb(i)); });
        head.appendChild(pv);
      }
    }
    box.appendChild(head);
    var kids = null;
    function toggle(deep) {
      if (kids === null) {
        kids = el("div", "children");
        var cards = null;
        node.kids.forEach(function (k) {
          if (k.level === 1) { if (!cards) { cards = el("div", "cards"); kids.appendChild(cards); } cards.appendChild(level1Card(k)); }
          else { var r = unitRow(k); kids.appendChild(r); if (deep) r.toggle(true); }
        });
        box.appendChild(kids);
      } else kids.style.display = kids.style.display === "none" ? "" : "none";
      var open = kids.style.display !== "none";
      tw.textContent = open ? "\u25be" : "\u25b8";
      box.setAttribute("data-open", open ? "1" : "0");
    }
    head.addEventListener("click", function () { toggle(false); });
    box.toggle = toggle;
    return box;
  }

  // ------------------------------------------------------------------ filters
  function descendantsL1(node, out) {
    node.kids.forEach(function (k) { if (k.level === 1) out.push(k); else descendantsL1(k, out); });
    return out;
  }
  data.units.forEach(function (t) {
    var l1 = descendantsL1(t, []), units = {}, labels = {};
    (function walk(n) { units[n.level + ":" + n.u] = 1; (n.kids || []).forEach(walk); })(t);
    l1.forEach(function (k) { (k.lab || []).forEach(function (x) { labels[labelName(x[0]).toLowerCase()] = 1; }); });
    t._units = units; t._labels = Object.keys(labels);
  });
  var q = document.getElementById("q"), hmin = document.getElementById("hmin"),
      hmax = document.getElementById("hmax"), hideNo = document.getElementById("hide-noev");
  if (hashOpts.q) q.value = hashOpts.q;
  if (hashOpts.hmin) hmin.value = hashOpts.hmin;
  if (hashOpts.hmax) hmax.value = hashOpts.hmax;
  if (hashOpts.hide === "noev") hideNo.checked = true;
  function matches(t) {
    var s = q.value.trim().toLowerCase();
    if (hideNo.checked && !t.ev) return false;
    var lo = parseFloat(hmin.value), hi = parseFloat(hmax.value);
    if (!isNaN(lo) && (t.hms === null || t.hms < lo)) return false;
    if (!isNaN(hi) && (t.hms === null || t.hms > hi)) return false;
    if (!s) return true;
    var m = s.match(/^(?:l(\d+)\s*)?#?(\d+)$/);
    if (m) {
      var u = m[2];
      if (m[1]) return !!t._units[m[1] + ":" + u];
      return Object.keys(t._units).some(function (k) { return k.split(":")[1] === u; });
    }
    return t._labels.some(function (l) { return l.indexOf(s) >= 0; });
  }
  var root = document.getElementById("units"), shown = [], rendered = 0;
  var moreBtn = document.getElementById("more");
  function renderMore() {
    var stop = Math.min(rendered + PAGE_ROWS, shown.length);
    for (; rendered < stop; rendered++) {
      var row = unitRow(shown[rendered]);
      root.appendChild(row);
      if (hashOpts.expand === "all") row.toggle(true);
    }
    moreBtn.style.display = rendered < shown.length ? "" : "none";
    moreBtn.textContent = "show " + Math.min(PAGE_ROWS, shown.length - rendered) + " more of " + (shown.length - rendered);
    document.body.setAttribute("data-rendered-units", String(rendered));
  }
  function refresh() {
    shown = data.units.filter(matches);
    root.textContent = ""; rendered = 0;
    document.getElementById("count").textContent = shown.length + " of " + data.units.length + " top-level units match";
    renderMore();
  }
  [q, hmin, hmax, hideNo].forEach(function (e) { e.addEventListener("input", refresh); });
  moreBtn.addEventListener("click", renderMore);
  document.getElementById("expand").addEventListener("click", function () {
    Array.prototype.forEach.call(root.children, function (r) { if (r.getAttribute("data-open") !== "1") r.toggle(true); });
  });
  document.getElementById("collapse").addEventListener("click", function () {
    Array.prototype.forEach.call(root.querySelectorAll(".unit[data-open='1']"), function (r) { r.toggle(); });
  });

  // ------------------------------------------------------------------ summary + legend
  var s = document.getElementById("summary");
  Object.keys(data.summary).forEach(function (k) {
    var v = data.summary[k];
    s.appendChild(el("div", "", k + ": HMS mean " + fmt(v.mean, 4) + ", median " + fmt(v.median, 4) + " over " + v.count + " parents with >= 2 children"));
  });
  if (data.recon && data.recon.fvu !== undefined)
    s.appendChild(el("div", "", "Level-1 reconstruction on held-out tokens: FVU " + fmt(data.recon.fvu, 4) + ", L0 " + fmt(data.recon.l0, 1)));
  s.appendChild(el("div", "", data.units.length + " top-level units shown, " + data.without_evidence + " without evidence (sorted last)"));
  var leg = document.getElementById("label-legend");
  data.label_names.forEach(function (n, l) {
    var d = el("div", "legend-item"), sw = el("span", "sw");
    sw.style.background = labelColor(l); d.appendChild(sw); d.appendChild(document.createTextNode(n));
    leg.appendChild(d);
  });
  if (!data.label_names.length) leg.appendChild(el("div", "muted", "the store has no labels"));
  if (!data.planted) document.getElementById("planted-note").style.display = "none";
  if (!data.has_stats) document.getElementById("no-stats").style.display = "";
  refresh();
  document.body.setAttribute("data-render-ms", String(Math.round(performance.now() - t0)));
  document.body.setAttribute("data-ready", "1");
})();
