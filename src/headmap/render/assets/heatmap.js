/* headmap: interactive attention heatmaps drawn on a canvas.
 *
 * Plain JavaScript written for the headmap project (Apache-2.0): no library, no CDN, no network.
 * headmapView() returns {mountNotebook, mountPanel, ...}: mountNotebook reads the JSON that
 * headmap/render/interactive.py embeds next to it, mountPanel draws what the dashboard sends.
 * Token strings are untrusted: they reach the page only as text nodes (textContent) or as canvas
 * pixels, never as HTML.
 */
function headmapView() {
  "use strict";
  var LOG_FLOOR = 1e-6, LOG_MIN = -6;

  // -- data ------------------------------------------------------------------------------------
  function bytesOf(b64) {
    var text = atob(b64), out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function inflate(bytes) {
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot unpack the embedded maps (no DecompressionStream): " +
                                      "open the file in a current browser"));
    }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
  }

  /** Raw bytes of {url} (fetched from the page's own server) or {b64}. */
  function rawOf(data) {
    if (!data.url) return Promise.resolve(bytesOf(data.b64));
    return fetch(data.url, {cache: "no-store"}).then(function (response) {
      if (!response.ok) return response.text().then(function (text) { throw new Error(text); });
      return response.arrayBuffer();
    }).then(function (buffer) { return new Uint8Array(buffer); });
  }

  /** Integer codes of {bits, deflate, url|b64}: Uint8Array or Uint16Array (stored little-endian). */
  function codesOf(data) {
    var ready = rawOf(data).then(function (bytes) { return data.deflate ? inflate(bytes) : bytes; });
    return ready.then(function (raw) {
      if (data.bits === 8) return raw;
      var out = new Uint16Array(raw.length >> 1);
      for (var i = 0; i < out.length; i++) out[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
      return out;
    });
  }

  /** Stored values of one map: lo + code * step, as headmap.render.embed.dequantize computes them. */
  function dequantize(codes, start, size, lo, hi, bits) {
    var step = (hi - lo) / (bits === 8 ? 255 : 65535), out = new Float64Array(size);
    for (var i = 0; i < size; i++) out[i] = lo + codes[start + i] * step;
    return out;
  }

  // -- the view transforms (same definitions as headmap.view) ------------------------------------
  /** Word view: sum over a word's key columns, mean over its captured query rows (Clark et al. 2019). */
  function toWords(map, rowWord, keyWord, nKeyWords) {
    var groups = {}, order = [];
    map.rows.forEach(function (q, r) {
      var w = rowWord[q];
      if (!(w in groups)) { groups[w] = []; order.push(w); }
      groups[w].push(r);
    });
    order.sort(function (a, b) { return a - b; });
    var out = new Float64Array(order.length * nKeyWords);
    order.forEach(function (w, i) {
      var rows = groups[w], base = i * nKeyWords;
      rows.forEach(function (r) {
        for (var k = 0; k < map.nc; k++) out[base + keyWord[k]] += map.values[r * map.nc + k];
      });
      for (var j = 0; j < nKeyWords; j++) out[base + j] /= rows.length;
    });
    return {values: out, nr: order.length, nc: nKeyWords, rows: order};
  }

  function topk(v, nr, nc, k) {
    if (k >= nc) return;
    var keep = new Uint8Array(nc);
    for (var r = 0; r < nr; r++) {
      var base = r * nc;
      keep.fill(0);
      for (var pass = 0; pass < k; pass++) {  // the earliest of tied weights wins, as in Python
        var best = -1, bestValue = -Infinity;
        for (var j = 0; j < nc; j++) if (!keep[j] && v[base + j] > bestValue) { best = j; bestValue = v[base + j]; }
        if (best < 0) for (j = 0; j < nc; j++) if (!keep[j]) { best = j; break; }
        keep[best] = 1;
      }
      for (j = 0; j < nc; j++) if (!keep[j]) v[base + j] = 0;
    }
  }

  /** Apply normalization steps ({name, k|w|t}) to a copy of map.values, left to right. */
  function normalize(map, steps) {
    var v = map.values.slice(), nr = map.nr, nc = map.nc, r, j;
    steps.forEach(function (step) {
      if (step.name === "topk") topk(v, nr, nc, step.k);
      else if (step.name === "window") {
        for (r = 0; r < nr; r++) for (j = 0; j < nc; j++) {
          if (j < map.rows[r] - step.w || j > map.rows[r] + step.w) v[r * nc + j] = 0;
        }
      } else if (step.name === "threshold") {
        for (j = 0; j < v.length; j++) if (v[j] < step.t) v[j] = 0;
      } else if (step.name === "log") {
        for (j = 0; j < v.length; j++) {
          v[j] = Math.min(0, Math.max(LOG_MIN, Math.log10(Math.min(1, Math.max(LOG_FLOOR, v[j])))));
        }
      } else if (step.name === "renorm") {
        for (r = 0; r < nr; r++) {
          var total = 0;
          for (j = 0; j < nc; j++) total += v[r * nc + j];
          for (j = 0; j < nc; j++) v[r * nc + j] = total > 0 ? v[r * nc + j] / total : 0;
        }
      } else throw new Error("unknown normalization step " + step.name);
    });
    return {values: v, nr: nr, nc: nc, rows: map.rows};
  }

  /** Colour range as headmap.view.downsample.color_limits: 0..max for weights, data range for logs. */
  function limits(panels, log) {
    var low = Infinity, high = -Infinity;
    panels.forEach(function (p) {
      for (var i = 0; i < p.values.length; i++) {
        var x = p.values[i];
        if (isFinite(x)) { if (x < low) low = x; if (x > high) high = x; }
      }
    });
    if (low === Infinity) { low = 0; high = 1; }
    var lo = log ? low : Math.min(0, low);
    return high > lo ? [lo, high] : [lo, lo + 1];
  }

  // -- drawing ---------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;  // text nodes only: tokens are never HTML
    return node;
  }

  function lutOf(hex) {
    var out = new Uint8Array(hex.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }

  function paint(canvas, panel, range, lut, size) {
    var nr = panel.nr, nc = panel.nc, image = new ImageData(nc, nr), px = image.data;
    var span = range[1] - range[0];
    for (var i = 0; i < nr * nc; i++) {
      var x = panel.values[i], o = 4 * i;
      if (!isFinite(x)) { px[o] = px[o + 1] = px[o + 2] = 224; px[o + 3] = 255; continue; }
      var c = Math.max(0, Math.min(255, Math.round((x - range[0]) / span * 255))) * 3;
      px[o] = lut[c]; px[o + 1] = lut[c + 1]; px[o + 2] = lut[c + 2]; px[o + 3] = 255;
    }
    var small = document.createElement("canvas");
    small.width = nc; small.height = nr;
    small.getContext("2d").putImageData(image, 0, 0);
    canvas.width = nc * size.w; canvas.height = nr * size.h;
    var ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;  // a pooled cell is a block max: smoothing would dim the peak
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  function colorbar(spec, range, lut) {
    var bar = el("div", "hm-colorbar"), strip = document.createElement("canvas");
    strip.width = 256; strip.height = 10;
    var ctx = strip.getContext("2d"), image = ctx.createImageData(256, 10);
    for (var x = 0; x < 256; x++) for (var y = 0; y < 10; y++) {
      var o = 4 * (y * 256 + x);
      image.data[o] = lut[3 * x]; image.data[o + 1] = lut[3 * x + 1]; image.data[o + 2] = lut[3 * x + 2]; image.data[o + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    bar.appendChild(el("span", "hm-lo", range[0].toFixed(4)));
    bar.appendChild(strip);
    bar.appendChild(el("span", "hm-hi", range[1].toFixed(4)));
    bar.appendChild(el("span", "hm-value-name", spec.valueName));
    return bar;
  }

  function labels(cls, texts, cell, vertical) {
    var box = el("div", cls);
    texts.forEach(function (t) {
      var label = el("div", "hm-tick", t);
      label.style[vertical ? "width" : "height"] = label.style.lineHeight = cell + "px";
      label.style.fontSize = Math.min(12, cell - 1) + "px";
      box.appendChild(label);
    });
    return box;
  }

  function hover(wrap, canvas, panel, spec, size) {
    var tip = el("div", "hm-tip");
    tip.hidden = true;
    wrap.appendChild(tip);
    canvas.addEventListener("mousemove", function (event) {
      var box = canvas.getBoundingClientRect();
      var c = Math.floor((event.clientX - box.left) / size.w), r = Math.floor((event.clientY - box.top) / size.h);
      if (r < 0 || c < 0 || r >= panel.nr || c >= panel.nc) { tip.hidden = true; return; }
      var x = panel.values[r * panel.nc + c];
      var lines = [];
      if (panel.title && spec.panels.length > 1) lines.push(panel.title);
      lines.push(spec.rowName + ": " + panel.rowLabel(r), spec.colName + ": " + panel.colLabel(c),
                 (panel.pooled ? "max " + spec.valueName + " in block" : spec.valueName) + ": " +
                 (isFinite(x) ? x.toFixed(4) : "n/a"));
      tip.textContent = lines.join("\n");
      tip.hidden = false;
      tip.style.left = (event.clientX - box.left + canvas.offsetLeft + 14) + "px";
      tip.style.top = (event.clientY - box.top + canvas.offsetTop + 14) + "px";
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  }

  /** Draw spec = {key, title, panels: [{title, values, nr, nc, rowLabel(i), colLabel(j), pooled}],
   *  rowName, colName, valueName, log, lut, target (pixels a side), square (false for tables),
   *  caption: [lines]} into host. */
  function drawPanels(host, spec) {
    var range = limits(spec.panels, spec.log), lut = lutOf(spec.lut);
    var body = el("div", "hm-body");
    body.appendChild(el("div", "hm-title", spec.title));
    var grid = el("div", spec.panels.length > 1 ? "hm-grid" : "hm-single");
    spec.panels.forEach(function (panel, index) {
      // Pixels a cell on each axis: square for square maps, taller rows when only a few rows
      // were captured (one query row over 500 keys stays hoverable).
      var size = {w: Math.max(1, Math.min(28, Math.floor(spec.target / panel.nc))),
                  h: Math.max(1, Math.min(28, Math.floor(spec.target / panel.nr)))};
      if (spec.square !== false && Math.max(panel.nr, panel.nc) <= 4 * Math.min(panel.nr, panel.nc)) {
        size.w = size.h = Math.min(size.w, size.h);
      }
      var wrap = el("div", "hm-panel");
      if (spec.panels.length > 1) wrap.appendChild(el("div", "hm-panel-title", panel.title));
      var plot = el("div", "hm-plot-area"), canvas = el("canvas", "hm-canvas");
      canvas.dataset.rows = panel.nr; canvas.dataset.cols = panel.nc; canvas.dataset.panel = index;
      paint(canvas, panel, range, lut, size);
      // Token labels where they fit (8 px a cell); the hover names every cell in any case.
      var single = spec.panels.length === 1, names = [], i;
      for (i = 0; single && size.h >= 8 && i < panel.nr; i++) names.push(panel.rowLabel(i));
      plot.appendChild(names.length ? labels("hm-rows", names, size.h, false) : el("div"));
      plot.appendChild(canvas);
      plot.appendChild(el("div"));
      for (names = [], i = 0; single && size.w >= 8 && i < panel.nc; i++) names.push(panel.colLabel(i));
      plot.appendChild(names.length ? labels("hm-cols", names, size.w, true) : el("div"));
      wrap.appendChild(plot);
      hover(wrap, canvas, panel, spec, size);
      grid.appendChild(wrap);
    });
    body.appendChild(grid);
    body.appendChild(colorbar(spec, range, lut));
    var caption = el("div", "hm-caption");
    spec.caption.forEach(function (line) { if (line) caption.appendChild(el("div", "hm-line", line)); });
    body.appendChild(caption);
    host.replaceChildren(body);
    host.dataset.hmDrawn = spec.key;
    host.dataset.hmDraws = String(Number(host.dataset.hmDraws || 0) + 1);
    host.dispatchEvent(new CustomEvent("headmap:drawn", {bubbles: true, detail: {key: spec.key}}));
  }

  /** A message in place of the picture: errors in the red-barred box, hints ("Press Show") as a neutral note. */
  function showMessage(host, text, tone) {
    var hint = tone === "hint";
    var box = el("div", hint ? "hm-hint" : "hm-message", text);
    box.setAttribute("role", hint ? "status" : "alert");
    host.replaceChildren(box);
    host.dataset.hmDrawn = "message";
    host.dispatchEvent(new CustomEvent("headmap:drawn", {bubbles: true, detail: {key: "message"}}));
  }

  // -- the notebook / standalone view ------------------------------------------------------------
  function control(box, cls, label, input) {
    var wrap = el("label", "hmv-control " + cls);
    wrap.appendChild(el("span", null, label));
    wrap.appendChild(input);
    box.appendChild(wrap);
    return input;
  }

  function options(select, texts) {
    select.replaceChildren();
    texts.forEach(function (text, i) {
      var option = el("option", null, text);
      option.value = String(i);
      select.appendChild(option);
    });
  }

  function precision(bits, step) {
    return "values stored in " + bits + " bits over each map's range: this map's step is " +
      step.toPrecision(3) + " (largest error " + (step / 2).toPrecision(2) + "); the hover shows stored values";
  }

  /** Mount the view on root, which holds the JSON element (class hmv-data) written by interactive.py. */
  function mountNotebook(root) {
    var data = JSON.parse(root.querySelector("script.hmv-data").textContent);
    var bar = el("div", "hmv-controls"), stage = el("div", "hmv-stage");
    var layerSel = control(bar, "hmv-layer", "layer", el("select"));
    var headSel = control(bar, "hmv-head", "head", el("select"));
    var normSel = control(bar, "hmv-norm", "normalization", el("select"));
    var wordsBox = el("input");
    wordsBox.type = "checkbox";
    var hasWords = data.axes.every(function (a) { return !!a.words; });
    if (hasWords) control(bar, "hmv-words", "words", wordsBox);
    options(layerSel, data.layers.map(function (l) { return l.title; }));
    options(normSel, data.presets.map(function (p) { return p.label; }));
    var codes = null;

    function fillHeads(keep) {
      var heads = data.layers[+layerSel.value].heads;
      options(headSel, heads.map(function (h) { return "head " + h; }));
      headSel.value = String(keep < heads.length ? keep : 0);
    }

    function current() {
      var L = data.layers[+layerSel.value], h = +headSel.value, index = L.offset + h;
      var nr = L.shape[0], nc = L.shape[1], pooled = L.fq > 1 || L.fk > 1;
      var qAxis = data.axes[L.q], kAxis = data.axes[L.k], unit = qAxis.unit;
      var lo = data.data.lo[index], hi = data.data.hi[index], bits = data.data.bits;
      var map = {values: dequantize(codes, data.starts[index], nr * nc, lo, hi, bits), nr: nr, nc: nc, rows: L.rows};
      wordsBox.disabled = pooled;
      Array.prototype.forEach.call(normSel.options, function (option, i) {
        option.disabled = pooled && !data.presets[i].pooledOk;
      });
      if (normSel.selectedOptions[0].disabled) normSel.value = "0";
      var preset = data.presets[+normSel.value], words = hasWords && wordsBox.checked && !pooled;
      var rowLabel, colLabel;
      if (pooled) {
        rowLabel = function (i) { return L.rowLabels[i]; };
        colLabel = function (j) { return L.colLabels[j]; };
      } else if (words) {
        map = toWords(map, qAxis.words.of, kAxis.words.of, kAxis.words.labels.length);
        unit = "word";
        rowLabel = function (i) { return qAxis.words.labels[map.rows[i]] + " [" + map.rows[i] + "]"; };
        colLabel = function (j) { return kAxis.words.labels[j] + " [" + j + "]"; };
      } else {
        rowLabel = function (i) { return qAxis.labels[map.rows[i]] + " [" + map.rows[i] + "]"; };
        colLabel = function (j) { return kAxis.labels[j] + " [" + j + "]"; };
      }
      map = normalize(map, preset.steps);
      var log = data.log || preset.log, head = L.heads[h];
      var norm = !preset.steps.length ? data.normalization
        : data.normalization === "raw" ? preset.label : data.normalization + ", then " + preset.label;
      var what = L.title + " · head " + head;
      var caption = [what + " · " + unit + "s · normalization: " + norm].concat(L.notes, data.notes, [
        precision(bits, (hi - lo) / (bits === 8 ? 255 : 65535)) +
          (words || preset.steps.length ? "; the word view and normalization are computed from them" : ""),
        data.warning]);
      return {key: [L.name, head, unit, preset.spec].join("|"), title: data.model + " · " + what,
              panels: [{title: "head " + head, values: map.values, nr: map.nr, nc: map.nc, rowLabel: rowLabel,
                        colLabel: colLabel, pooled: pooled}],
              rowName: "query " + unit, colName: "key " + unit, log: log,
              valueName: log ? "log10 weight" : "attention weight", lut: data.cmap, target: 520, caption: caption};
    }

    function redraw() {
      if (!codes) return;
      try { drawPanels(stage, current()); } catch (error) { showMessage(stage, String(error.message || error)); }
    }

    layerSel.addEventListener("change", function () { fillHeads(+headSel.value); redraw(); });
    [headSel, normSel, wordsBox].forEach(function (input) { input.addEventListener("change", redraw); });
    layerSel.value = String(data.start.layer);
    fillHeads(data.start.head);
    var fallback = root.querySelector(".hmv-fallback");
    root.insertBefore(bar, fallback);
    root.insertBefore(stage, fallback);
    codesOf(data.data).then(function (decoded) {
      codes = decoded;
      fallback.remove();
      redraw();
    }, function (error) { showMessage(stage, String(error.message || error)); });
  }

  // -- the dashboard's picture -------------------------------------------------------------------
  /** Turn a dashboard payload ({key, title, caption, panels, rows, cols, data|values, ...}) into a spec. */
  function panelSpec(p, codes) {
    var panels = p.panels.map(function (q, i) {
      var rows = q.rows || p.rows, cols = q.cols || p.cols, nr = q.shape[0], nc = q.shape[1];
      var values = q.values
        ? Float64Array.from(q.values, function (x) { return x === null ? NaN : x; })
        : dequantize(codes, q.start, nr * nc, p.data.lo[i], p.data.hi[i], p.data.bits);
      return {title: q.title, values: values, nr: nr, nc: nc, pooled: !!p.pooled,
              rowLabel: function (r) { return rows[r]; }, colLabel: function (c) { return cols[c]; }};
    });
    return {key: p.key, title: p.title, panels: panels, rowName: p.rowName, colName: p.colName, log: !!p.log,
            valueName: p.valueName, lut: p.cmap, target: p.target || 560, caption: p.caption || [],
            square: p.square !== false};
  }

  /** Gradio's js_on_load: draw props.value now and whenever the server sends a new one. */
  function mountPanel(element, props, watch) {
    var stage = element.querySelector(".hm-stage") || element, latest = 0, shown = null;
    function show() {
      var payload = props.value, seq = ++latest;
      if (!payload || typeof payload !== "object") return;
      if (payload.kind === "message") { shown = null; showMessage(stage, payload.message, payload.tone); return; }
      if (payload.digest && payload.digest === shown) return;  // the same picture again: keep it
      (payload.data ? codesOf(payload.data) : Promise.resolve(null)).then(function (codes) {
        if (seq !== latest) return null;  // a newer picture came meanwhile
        // A picture over an image (imageview.js, loaded after this script where the page has it).
        var drawn = payload.kind === "image" && typeof headmapImage === "function"
          ? headmapImage().drawImage(stage, payload, codes) : drawPanels(stage, panelSpec(payload, codes));
        return Promise.resolve(drawn).then(function () { shown = payload.digest || null; });
      }).catch(function (error) { shown = null; showMessage(stage, String(error.message || error)); });
    }
    show();
    watch("value", show);
  }

  return {bytesOf: bytesOf, codesOf: codesOf, dequantize: dequantize, toWords: toWords, normalize: normalize,
          lutOf: lutOf, colorbar: colorbar,
          limits: limits, el: el, drawPanels: drawPanels, showMessage: showMessage,
          mountNotebook: mountNotebook, mountPanel: mountPanel};
}
