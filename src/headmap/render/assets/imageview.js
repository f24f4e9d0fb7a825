/* headmap: attention drawn over the image a model saw; hover a patch to look from it.
 *
 * Plain JavaScript written for the headmap project (Apache-2.0): no library, no CDN, no network.
 * Needs heatmap.js first (headmapView: codes, dequantizing, elements, messages).
 * headmapImage() returns {mountImage, drawImage}: mountImage reads the JSON that
 * headmap/render/image_view.py embeds next to it (every layer and head behind selectors),
 * drawImage draws one picture the dashboard sends (kind "image").
 * Unit labels are untrusted: they reach the page only as text nodes or option texts.
 */
function headmapImage() {
  "use strict";
  var base = headmapView(), el = base.el;
  // Each host keeps its query and whether it is pinned (on the element, so that the dashboard's
  // next picture, drawn by a fresh headmapImage(), keeps a pinned patch as the sliders move).
  var STATE = "headmapImageState";

  function imageOf(b64) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("the image could not be decoded")); };
      img.src = "data:image/png;base64," + b64;
    });
  }

  /** The unit at each grid cell (row-major), from the units' cells. */
  function cellUnits(units) {
    var out = new Int32Array(units.grid[0] * units.grid[1]).fill(-1);
    units.cells.forEach(function (cell, u) { if (cell) out[cell[0] * units.grid[1] + cell[1]] = u; });
    return out;
  }

  /** Row ``q`` of a picture as an array over units, or null where the picture lacks that row. */
  function rowOf(pic, q) {
    var r = pic.rows.indexOf(q), n = pic.shape[1];
    return r < 0 ? null : pic.values.subarray(r * n, (r + 1) * n);
  }

  function bars(units, row) {
    var box = el("div", "hmi-bars"), prefix = units.prefix.slice(), shown = prefix;
    if (prefix.length > units.maxBars) {
      shown = prefix.slice().sort(function (a, b) { return row[b] - row[a]; }).slice(0, units.maxBars);
      shown.sort(function (a, b) { return a - b; });
    }
    var items = shown.map(function (i) { return [units.labels[i], row[i], "hmi-prefix"]; });
    var rest = prefix.filter(function (i) { return shown.indexOf(i) < 0; });
    if (rest.length) {
      items.push([rest.length + " other tokens", rest.reduce(function (s, i) { return s + row[i]; }, 0), "hmi-prefix"]);
    }
    var patches = 0;
    units.cells.forEach(function (cell, u) { if (cell) patches += row[u]; });
    items.push(["all patches", patches, "hmi-patches"]);
    items.forEach(function (item) {
      var line = el("div", "hmi-bar " + item[2]), track = el("span", "hmi-track"), fill = el("span", "hmi-fill");
      fill.style.width = Math.max(0, Math.min(100, item[1] * 100)).toFixed(1) + "%";
      track.appendChild(fill);
      line.appendChild(el("span", "hmi-label", item[0]));
      line.appendChild(track);
      line.appendChild(el("span", "hmi-value", item[1].toFixed(4)));
      box.appendChild(line);
    });
    return box;
  }

  /** Paint the image, the query's row over its patches, the query outlined and the heaviest patch dashed. */
  function paint(canvas, view, row, query) {
    var units = view.units, R = units.grid[0], C = units.grid[1], at = view.cellUnit;
    var ctx = canvas.getContext("2d"), lut = view.lut, ph = canvas.height / R, pw = canvas.width / C;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(view.image, 0, 0, canvas.width, canvas.height);
    var top = 0, best = -1;
    for (var k = 0; k < at.length; k++) if (at[k] >= 0 && row[at[k]] > top) { top = row[at[k]]; best = k; }
    var scale = top > 0 ? top : 1;
    for (k = 0; k < at.length; k++) {
      if (at[k] < 0) continue;
      var c = Math.max(0, Math.min(255, Math.round(row[at[k]] / scale * 255))) * 3;
      ctx.fillStyle = "rgba(" + lut[c] + "," + lut[c + 1] + "," + lut[c + 2] + ",0.6)";
      ctx.fillRect((k % C) * pw, Math.floor(k / C) * ph, pw, ph);
    }
    function outline(k, color, dash) {
      ctx.save();
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.setLineDash(dash);
      ctx.strokeRect((k % C) * pw + 1, Math.floor(k / C) * ph + 1, pw - 2, ph - 2);
      ctx.restore();
    }
    if (best >= 0) outline(best, "#ffffff", [5, 3]);
    var cell = units.cells[query];
    if (cell) outline(cell[0] * C + cell[1], "#00e5ff", []);
    return top;
  }

  /** Draw view = {units, image, lut, cellUnit, key, title, caption, pic} into host, keeping its query. */
  function render(host, view) {
    var units = view.units, pic = view.pic, state = host[STATE];
    var sameUnits = state && state.labels === units.labels.join("\u0000");
    if (!sameUnits) state = {query: view.query, pinned: false, labels: units.labels.join("\u0000")};
    if (pic.rows.indexOf(state.query) < 0) state.query = pic.rows.indexOf(view.query) >= 0 ? view.query : pic.rows[0];
    host[STATE] = state;
    var body = el("div", "hm-body"), info = el("div", "hmi-info"), stage = el("div", "hmi-row");
    var wrap = el("div", "hm-panel"), canvas = el("canvas", "hmi-canvas"), tip = el("div", "hm-tip");
    var side = 360, size = units.size, s = Math.max(1, Math.floor(side / Math.max(size[0], size[1])));
    canvas.width = size[1] * s; canvas.height = size[0] * s;
    tip.hidden = true;
    wrap.appendChild(canvas);
    wrap.appendChild(tip);
    var querySel = el("select"), pick = el("label", "hmv-control hmi-query");
    pick.appendChild(el("span", null, "query"));
    pick.appendChild(querySel);
    var barsBox = el("div"), barHost = el("div", "hmi-side");
    barHost.appendChild(pick);
    barHost.appendChild(barsBox);
    stage.appendChild(wrap);
    stage.appendChild(barHost);
    var scaleBox = el("div");
    body.appendChild(el("div", "hm-title", view.title));
    body.appendChild(info);
    body.appendChild(stage);
    body.appendChild(scaleBox);
    var caption = el("div", "hm-caption");
    view.caption.forEach(function (line) { if (line) caption.appendChild(el("div", "hm-line", line)); });
    body.appendChild(caption);

    var patchOption = el("option", null, "a patch (hover the image)");
    patchOption.value = "patch";
    querySel.appendChild(patchOption);
    units.prefix.forEach(function (i) {
      if (pic.rows.indexOf(i) < 0) return;
      var option = el("option", null, units.labels[i]);
      option.value = String(i);
      querySel.appendChild(option);
    });

    function update() {
      var row = rowOf(pic, state.query);
      var top = paint(canvas, view, row, state.query);
      info.textContent = "query: " + units.labels[state.query] + " [" + state.query + "]" +
        (state.pinned ? " (pinned: click the image to release)" : "");
      barsBox.replaceChildren(bars(units, row));
      scaleBox.replaceChildren(base.colorbar({valueName: "weight on each patch (from the query)"}, [0, top], view.lut));
      querySel.value = units.cells[state.query] ? "patch" : String(state.query);
      host.dataset.hmDrawn = view.key + "|q" + state.query + (state.pinned ? "|pinned" : "");
      host.dispatchEvent(new CustomEvent("headmap:drawn", {bubbles: true, detail: {key: host.dataset.hmDrawn}}));
    }

    function unitAt(event) {
      var box = canvas.getBoundingClientRect();
      var c = Math.floor((event.clientX - box.left) / box.width * units.grid[1]);
      var r = Math.floor((event.clientY - box.top) / box.height * units.grid[0]);
      if (r < 0 || c < 0 || r >= units.grid[0] || c >= units.grid[1]) return -1;
      return view.cellUnit[r * units.grid[1] + c];
    }

    function showTip(event) {
      var u = unitAt(event);
      if (u < 0) { tip.hidden = true; return; }
      var row = rowOf(pic, state.query);
      tip.textContent = "query: " + units.labels[state.query] + "\nkey: " + units.labels[u] +
        (pic.rows.indexOf(u) < 0 ? "\n(this picture keeps no row for it)" : "") +
        "\nattention weight: " + row[u].toFixed(4);
      tip.hidden = false;
      var box = canvas.getBoundingClientRect();
      tip.style.left = (event.clientX - box.left + 14) + "px";
      tip.style.top = (event.clientY - box.top + 14) + "px";
    }

    canvas.addEventListener("mousemove", function (event) {
      var u = unitAt(event);
      if (!state.pinned && u >= 0 && u !== state.query && pic.rows.indexOf(u) >= 0) { state.query = u; update(); }
      showTip(event);
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    canvas.addEventListener("click", function (event) {
      // A click pins the patch under the pointer as the query, or releases the pin (the patch under
      // the pointer then becomes the query, as hovering makes it).
      var u = unitAt(event), has = u >= 0 && pic.rows.indexOf(u) >= 0;
      state.pinned = !state.pinned && has;
      if (has) state.query = u;
      update();
      showTip(event);
    });
    querySel.addEventListener("change", function () {
      if (querySel.value === "patch") { state.pinned = false; }
      else { state.query = +querySel.value; state.pinned = true; }
      update();
    });
    host.replaceChildren(body);
    update();
  }

  function prepare(units) {
    return imageOf(units.pixels).then(function (image) {
      return {units: units, image: image, lut: base.lutOf(units.cmap), cellUnit: cellUnits(units)};
    });
  }

  function pictureOf(data, codes, index) {
    var p = data.pictures[index], size = p.shape[0] * p.shape[1];
    return {title: p.title, rows: p.rows, shape: p.shape,
            values: base.dequantize(codes, p.start, size, data.data.lo[index], data.data.hi[index], data.data.bits)};
  }

  /** The dashboard: one picture of a payload (kind "image") and its codes. */
  function drawImage(host, payload, codes) {
    return prepare(payload).then(function (view) {
      view.pic = pictureOf(payload, codes, 0);
      view.key = payload.key; view.title = payload.title; view.caption = payload.caption; view.query = payload.query;
      render(host, view);
    });
  }

  /** The notebook / standalone page: layer and picture selectors over every embedded picture. */
  function mountImage(root) {
    var data = JSON.parse(root.querySelector("script.hmi-data").textContent);
    var bar = el("div", "hmv-controls"), stage = el("div", "hm-stage hmi-stage");
    var layerSel = el("select"), picSel = el("select");
    var layerBox = el("label", "hmv-control hmi-layer"), picBox = el("label", "hmv-control hmi-picture");
    layerBox.appendChild(el("span", null, "layer")); layerBox.appendChild(layerSel);
    picBox.appendChild(el("span", null, "draw")); picBox.appendChild(picSel);
    bar.appendChild(layerBox); bar.appendChild(picBox);
    data.layers.forEach(function (title, i) {
      var option = el("option", null, title); option.value = String(i); layerSel.appendChild(option);
    });
    var codes = null, view = null;

    function fillPictures(keepTitle) {
      var layer = +layerSel.value;
      picSel.replaceChildren();
      data.pictures.forEach(function (p, i) {
        if (p.layer !== layer && p.layer !== -1) return;
        var option = el("option", null, p.title); option.value = String(i); picSel.appendChild(option);
      });
      var same = Array.prototype.find.call(picSel.options, function (o) { return o.textContent === keepTitle; });
      if (same) picSel.value = same.value;
    }

    function redraw() {
      if (!codes || !view) return;
      var index = +picSel.value, p = data.pictures[index];
      layerSel.disabled = p.layer === -1;
      view.pic = pictureOf(data, codes, index);
      view.key = (p.layer === -1 ? "rollout" : data.layers[p.layer]) + "|" + p.title;
      view.title = data.model + " · " + (p.layer === -1 ? "" : data.layers[p.layer] + " · ") + p.title;
      view.caption = [view.title.split(" · ").slice(1).join(" · ") + " · normalization: " + data.normalization,
                      data.help].concat(data.notes, [data.precision, data.warning]);
      try { render(stage, view); } catch (error) { base.showMessage(stage, String(error.message || error)); }
    }

    var first = data.pictures[data.picture];
    layerSel.value = String(first.layer < 0 ? 0 : first.layer);
    fillPictures(first.title);
    picSel.value = String(data.picture);
    layerSel.addEventListener("change", function () {
      fillPictures(picSel.selectedOptions[0] ? picSel.selectedOptions[0].textContent : ""); redraw();
    });
    picSel.addEventListener("change", redraw);
    var fallback = root.querySelector(".hmv-fallback");
    root.insertBefore(bar, fallback);
    root.insertBefore(stage, fallback);
    Promise.all([base.codesOf(data.data), prepare(data)]).then(function (ready) {
      codes = ready[0]; view = ready[1]; view.query = data.query;
      fallback.remove();
      redraw();
    }, function (error) { base.showMessage(stage, String(error.message || error)); });
  }

  return {mountImage: mountImage, drawImage: drawImage};
}
