// tilex view: a zoomable picture of one tilex output, drawn in the browser from raw tiles.
//
// The server (tilex/viewer/server.py) sends each tile of each pyramid level as
// raw arrays (the visible image in colour or grey, the evidence, the winning
// band, ...); this page applies the threshold, the band filter and the layers
// itself, so moving the threshold slider re-draws at once without asking the
// server again.
//
// Coordinates: "image" = level-0 pixels; the view is the image point at the
// canvas centre (cx, cy) and a scale in CSS pixels per image pixel. Level k's
// pixel i covers image pixels [i * 2^k, (i + 1) * 2^k).
"use strict";

(() => {
  const MAX_FETCHES = 6; // concurrent tile requests (a browser's per-host limit)
  const CACHE_BYTES = 384 * 1024 * 1024;
  const MAX_SCALE = 32; // CSS pixels per image pixel at the closest zoom
  const BACKGROUND = 32; // grey where no layer draws
  const HATCH = 40; // the dark squares of the hatch of pixels whose band is unknown

  const LAYERS = [
    { id: "visible", label: "visible", on: true, opacity: 1, fields: [] }, // its field: S.visible
    { id: "overlay", label: "overlay as stored", on: false, opacity: 1, fields: ["overlay"] },
    { id: "collage", label: "collage", on: false, opacity: 1, fields: ["collage"] },
    { id: "bandmap", label: "band's normalised map", on: false, opacity: 1, fields: [] },
    { id: "heat", label: "score heat map", on: false, opacity: 0.85, fields: [] },
    { id: "winner", label: "winning band", on: false, opacity: 0.85, fields: [] },
    { id: "hidden", label: "hidden areas (blue)", on: true, opacity: 1, fields: [] },
  ];
  const BASE_FIELDS = ["evidence", "winner"];

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");

  const S = {
    info: null,
    t: 0.5,
    filter: 0,
    bandMap: 1,
    visible: "colour", // the visible layer in "colour" (when the output has it) or "grey"
    layers: {},
    view: { cx: 0, cy: 0, scale: 1 },
    version: 0, // bumped whenever the picture of a tile changes
    palette: null, // Float32Array: rgb of "band unknown" (0) then of bands 1..n
    heat: lut([[0, 0, 0, 4], [0.25, 87, 16, 110], [0.5, 188, 55, 84], [0.75, 249, 142, 9], [1, 252, 255, 164]]),
    viridis: lut([[0, 68, 1, 84], [0.25, 59, 82, 139], [0.5, 33, 145, 140], [0.75, 94, 201, 98], [1, 253, 231, 37]]),
    fraction: null,
    firstViewMs: null,
  };
  const cache = new Map(); // "level/ty/tx" -> Tile
  let inflight = 0;
  let queue = [];
  let frameRequested = false;
  let waiters = [];
  let complete = false;
  let clock = 0;

  // ------------------------------------------------------------------ colour tables

  function lut(stops) {
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const v = i / 255;
      let k = 0;
      while (k < stops.length - 2 && v > stops[k + 1][0]) k++;
      const [a, b] = [stops[k], stops[k + 1]];
      const f = (v - a[0]) / (b[0] - a[0]);
      for (let c = 0; c < 3; c++) table[3 * i + c] = a[c + 1] + f * (b[c + 1] - a[c + 1]);
    }
    return table;
  }

  function hexToRgb(hex) {
    const n = parseInt(hex, 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  // ------------------------------------------------------------------ tiles

  class Tile {
    constructor(level, ty, tx) {
      Object.assign(this, { level, ty, tx });
      this.key = `${level}/${ty}/${tx}`;
      const tile = S.info.tile;
      const [h, w] = S.info.levels[level];
      this.y0 = ty * tile;
      this.x0 = tx * tile;
      this.h = Math.min(tile, h - this.y0);
      this.w = Math.min(tile, w - this.x0);
      this.fields = {};
      this.pending = new Set();
      this.failed = false;
      this.canvas = null;
      this.composed = -1;
      this.bytes = 0;
      this.used = 0;
    }

    has(names) {
      return names.every((n) => n in this.fields);
    }

    missing(names) {
      return names.filter((n) => !(n in this.fields) && !this.pending.has(n));
    }
  }

  function tileAt(level, ty, tx) {
    const key = `${level}/${ty}/${tx}`;
    let tile = cache.get(key);
    if (!tile) {
      tile = new Tile(level, ty, tx);
      cache.set(key, tile);
    }
    tile.used = ++clock;
    return tile;
  }

  function unpack(buffer, tile) {
    const bytes = new Uint8Array(buffer, 0, 4);
    if (String.fromCharCode(...bytes) !== "TLXT") throw new Error(`tile ${tile.key}: not a tile`);
    const length = new DataView(buffer).getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, length)));
    const base = 8 + length;
    const types = { uint8: Uint8Array, float32: Float32Array };
    for (const [name, f] of Object.entries(header.fields)) {
      const count = f.shape.reduce((a, b) => a * b, 1);
      tile.fields[name] = new types[f.dtype](buffer, base + f.offset, count);
    }
    tile.bytes += buffer.byteLength;
  }

  async function fetchFields(tile, names) {
    inflight++;
    names.forEach((n) => tile.pending.add(n));
    try {
      const url = `/api/tile/${tile.level}/${tile.ty}/${tile.tx}?fields=${names.join(",")}`;
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
      unpack(await response.arrayBuffer(), tile);
      tile.composed = -1;
    } catch (err) {
      tile.failed = true;
      console.error(`tilex view: ${err.message}`);
    } finally {
      names.forEach((n) => tile.pending.delete(n));
      inflight--;
      pump();
      schedule();
    }
  }

  function pump() {
    while (inflight < MAX_FETCHES && queue.length) {
      const [tile, names] = queue.shift();
      const missing = tile.missing(names);
      if (missing.length) fetchFields(tile, missing);
    }
  }

  function evict(keep) {
    let total = 0;
    for (const tile of cache.values()) total += tile.bytes + (tile.canvas ? 4 * tile.w * tile.h : 0);
    if (total <= CACHE_BYTES) return;
    const old = [...cache.values()].filter((t) => !keep.has(t.key) && !t.pending.size);
    old.sort((a, b) => a.used - b.used);
    for (const tile of old) {
      if (total <= CACHE_BYTES * 0.8) break;
      total -= tile.bytes + (tile.canvas ? 4 * tile.w * tile.h : 0);
      cache.delete(tile.key);
    }
  }

  // ------------------------------------------------------------------ what to draw

  function neededFields() {
    const names = [...BASE_FIELDS];
    for (const layer of LAYERS) if (S.layers[layer.id].on) names.push(...layer.fields);
    if (S.layers.visible.on) names.push(S.visible === "colour" ? "visible" : "grey");
    if (S.layers.bandmap.on && S.info.band_maps) names.push(`band:${S.bandMap - 1}`);
    return [...new Set(names)];
  }

  function size() {
    return { w: canvas.clientWidth, h: canvas.clientHeight };
  }

  function levelFor(scale) {
    const dpr = window.devicePixelRatio || 1;
    const k = Math.floor(Math.log2(1 / (scale * dpr)) + 1e-9);
    return Math.max(0, Math.min(S.info.levels.length - 1, k));
  }

  // the image rectangle in view, in image pixels
  function viewRect() {
    const { w, h } = size();
    const { cx, cy, scale } = S.view;
    return { x0: cx - w / (2 * scale), x1: cx + w / (2 * scale), y0: cy - h / (2 * scale), y1: cy + h / (2 * scale) };
  }

  function tilesInView(level) {
    const f = 2 ** level;
    const r = viewRect();
    const tile = S.info.tile;
    const [h, w] = S.info.levels[level];
    const tx0 = Math.max(0, Math.floor(r.x0 / f / tile));
    const tx1 = Math.min(Math.ceil(w / tile) - 1, Math.floor(r.x1 / f / tile));
    const ty0 = Math.max(0, Math.floor(r.y0 / f / tile));
    const ty1 = Math.min(Math.ceil(h / tile) - 1, Math.floor(r.y1 / f / tile));
    const out = [];
    for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) out.push([ty, tx]);
    const mx = (r.x0 + r.x1) / 2 / f / tile;
    const my = (r.y0 + r.y1) / 2 / f / tile;
    out.sort((a, b) => Math.hypot(a[1] + 0.5 - mx, a[0] + 0.5 - my) - Math.hypot(b[1] + 0.5 - mx, b[0] + 0.5 - my));
    return out;
  }

  // ------------------------------------------------------------------ composing a tile

  function compose(tile) {
    const names = neededFields();
    if (!tile.has(names)) return false;
    const { w, h } = tile;
    const n = w * h;
    if (!tile.canvas) {
      tile.canvas = document.createElement("canvas");
      tile.canvas.width = w;
      tile.canvas.height = h;
      tile.ctx = tile.canvas.getContext("2d");
      tile.image = tile.ctx.createImageData(w, h);
    }
    const L = S.layers;
    const F = tile.fields;
    const px = tile.image.data;
    const ev = F.evidence;
    const win = F.winner;
    const colour = L.visible.on && S.visible === "colour" ? F.visible : null;
    const grey = L.visible.on && S.visible !== "colour" ? F.grey : null;
    const ov = L.overlay.on ? F.overlay : null;
    const col = L.collage.on ? F.collage : null;
    const bm = L.bandmap.on && S.info.band_maps ? F[`band:${S.bandMap - 1}`] : null;
    const [oVis, oOv, oCol, oBm] = ["visible", "overlay", "collage", "bandmap"].map((id) => L[id].opacity);
    const heatOn = L.heat.on, winOn = L.winner.on, hidOn = L.hidden.on;
    const oHeat = L.heat.opacity, oWin = L.winner.opacity, oHid = L.hidden.opacity;
    const [lo, hi] = S.info.collage_range;
    const span = Math.max(hi - lo, 1e-12);
    const pal = S.palette;
    const nBands = S.info.bands.length;
    const heat = S.heat, viridis = S.viridis;
    const alpha = S.info.alpha;
    const t = S.t, filter = S.filter;
    for (let y = 0, i = 0; y < h; y++) for (let x = 0; x < w; x++, i++) {
      let r = BACKGROUND, g = BACKGROUND, b = BACKGROUND;
      if (colour) {
        r += (colour[i] - r) * oVis; g += (colour[n + i] - g) * oVis; b += (colour[2 * n + i] - b) * oVis;
      } else if (grey) {
        const v = grey[i];
        r += (v - r) * oVis; g += (v - g) * oVis; b += (v - b) * oVis;
      }
      if (ov) {
        r += (ov[i] - r) * oOv; g += (ov[n + i] - g) * oOv; b += (ov[2 * n + i] - b) * oOv;
      }
      const k = win[i] <= nBands ? win[i] : 0;
      if (col && k > 0) {
        let v = (col[i] - lo) / span;
        v = 0.25 + 0.75 * (v < 0 ? 0 : v > 1 ? 1 : v);
        r += (pal[3 * k] * v - r) * oCol; g += (pal[3 * k + 1] * v - g) * oCol; b += (pal[3 * k + 2] * v - b) * oCol;
      }
      if (bm) {
        const v = bm[i];
        if (v === v) {
          const j = 3 * Math.round(255 * (v < 0 ? 0 : v > 1 ? 1 : v));
          r += (viridis[j] - r) * oBm; g += (viridis[j + 1] - g) * oBm; b += (viridis[j + 2] - b) * oBm;
        }
      }
      const e = ev[i];
      if (e > t && (filter === 0 || k === filter)) {
        if (heatOn) {
          const j = 3 * Math.round(255 * (e > 1 ? 1 : e));
          r += (heat[j] - r) * oHeat; g += (heat[j + 1] - g) * oHeat; b += (heat[j + 2] - b) * oHeat;
        }
        if (winOn) {
          // a band that was not stored (flagged below the run's threshold): hatched, no band's colour
          const c = k > 0 ? 3 * k : ((x >> 1) ^ (y >> 1)) & 1 ? 0 : -1;
          const cr = c >= 0 ? pal[c] : HATCH, cg = c >= 0 ? pal[c + 1] : HATCH, cb = c >= 0 ? pal[c + 2] : HATCH;
          r += (cr - r) * oWin; g += (cg - g) * oWin; b += (cb - b) * oWin;
        }
        if (hidOn) {
          const a = alpha * (e > 1 ? 1 : e) * oHid;
          r -= a * r; g -= a * g; b += a * (255 - b);
        }
      }
      const j = 4 * i;
      px[j] = r; px[j + 1] = g; px[j + 2] = b; px[j + 3] = 255;
    }
    tile.ctx.putImageData(tile.image, 0, 0);
    tile.composed = S.version;
    return true;
  }

  // the share of the view's pixels flagged at the threshold (from the drawn level)
  function measureFraction(level, tiles) {
    const f = 2 ** level;
    const r = viewRect();
    const t = S.t, filter = S.filter;
    let flagged = 0, total = 0, missing = 0;
    for (const [ty, tx] of tiles) {
      const tile = cache.get(`${level}/${ty}/${tx}`);
      if (!tile || !tile.has(BASE_FIELDS)) {
        missing++;
        continue;
      }
      const ev = tile.fields.evidence, win = tile.fields.winner;
      const x0 = Math.max(0, Math.floor(r.x0 / f) - tile.x0), x1 = Math.min(tile.w, Math.ceil(r.x1 / f) - tile.x0);
      const y0 = Math.max(0, Math.floor(r.y0 / f) - tile.y0), y1 = Math.min(tile.h, Math.ceil(r.y1 / f) - tile.y0);
      for (let y = y0; y < y1; y++) {
        for (let i = y * tile.w + x0, end = y * tile.w + x1; i < end; i++) {
          if (ev[i] > t && (filter === 0 || win[i] === filter)) flagged++;
        }
      }
      total += Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
    }
    return { fraction: total ? flagged / total : null, partial: missing > 0 };
  }

  // ------------------------------------------------------------------ drawing

  function schedule() {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(frame);
    }
  }

  function frame() {
    frameRequested = false;
    const dpr = window.devicePixelRatio || 1;
    const { w, h } = size();
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const level = levelFor(S.view.scale);
    const top = S.info.levels.length - 1;
    const names = neededFields();
    const wanted = tilesInView(level);
    const keep = new Set();
    queue = [];
    for (const lv of level === top ? [top] : [top, level]) {
      for (const [ty, tx] of lv === level ? wanted : tilesInView(lv)) {
        const tile = tileAt(lv, ty, tx);
        keep.add(tile.key);
        if (!tile.failed && tile.missing(names).length) queue.push([tile, names]);
      }
    }
    pump();

    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = `rgb(${BACKGROUND},${BACKGROUND},${BACKGROUND})`;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    let drawn = 0;
    for (let lv = top; lv >= level; lv--) {
      for (const [ty, tx] of lv === level ? wanted : tilesInView(lv)) {
        const tile = cache.get(`${lv}/${ty}/${tx}`);
        if (!tile) continue;
        if (tile.composed !== S.version && !compose(tile)) continue;
        drawTile(tile, dpr);
        if (lv === level) drawn++;
      }
    }
    evict(keep);

    const measured = measureFraction(level, wanted);
    S.fraction = measured.fraction;
    showFraction(measured, level);
    showScale();
    complete = drawn === wanted.length && inflight === 0 && queue.length === 0;
    $("status").textContent = complete ? "" : `loading level ${level}: ${drawn} of ${wanted.length} tiles`;
    if (complete) {
      if (S.firstViewMs === null) S.firstViewMs = performance.now();
      waiters.forEach((resolve) => resolve());
      waiters = [];
    }
    rememberView();
  }

  function drawTile(tile, dpr) {
    const f = 2 ** tile.level;
    const { w, h } = size();
    const { cx, cy, scale } = S.view;
    const sx = (x) => Math.round(((x - cx) * scale + w / 2) * dpr);
    const sy = (y) => Math.round(((y - cy) * scale + h / 2) * dpr);
    const x0 = sx(tile.x0 * f), x1 = sx((tile.x0 + tile.w) * f);
    const y0 = sy(tile.y0 * f), y1 = sy((tile.y0 + tile.h) * f);
    ctx.imageSmoothingEnabled = f * scale * dpr < 1;
    ctx.drawImage(tile.canvas, x0, y0, x1 - x0, y1 - y0);
  }

  // ------------------------------------------------------------------ panel

  function fmt(v, digits = 3) {
    return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits);
  }

  function showFraction({ fraction, partial }, level) {
    const where = level > 0 ? ` (from level ${level})` : "";
    $("fraction").textContent =
      fraction === null ? "flagged: loading" : `flagged: ${(100 * fraction).toFixed(2)} % of the view${where}${partial ? ", loading" : ""}`;
  }

  function showThreshold() {
    const th = S.info.threshold;
    $("threshold-value").textContent = `${S.t.toFixed(3)} (run: ${fmt(th.run)})`;
    const out = S.info.path.includes(" ") ? `"${S.info.path}"` : S.info.path;
    $("export-command").textContent = `tilex export ${out} --format iiif --threshold ${S.t.toFixed(3)} -o ${S.info.name}-iiif`;
  }

  function nice(x) {
    const p = 10 ** Math.floor(Math.log10(x));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function showScale() {
    const um = S.info.pixel_size_um;
    const target = 120 / S.view.scale; // image pixels in about 120 CSS pixels
    let length, label;
    if (um) {
      const micrometres = nice(target * um);
      length = micrometres / um;
      label = micrometres >= 10000 ? `${micrometres / 10000} cm` : micrometres >= 1000 ? `${micrometres / 1000} mm` : `${micrometres} µm`;
    } else {
      length = nice(target);
      label = `${length} px`;
    }
    $("scalebar-bar").style.width = `${Math.round(length * S.view.scale)}px`;
    $("scalebar-label").textContent = label;
  }

  function buildLayers() {
    const box = $("layers");
    for (const layer of LAYERS) {
      S.layers[layer.id] = { on: layer.on, opacity: layer.opacity };
      const row = document.createElement("div");
      row.className = "layer";
      row.id = `row-${layer.id}`;
      const check = document.createElement("input");
      check.type = "checkbox";
      check.id = `layer-${layer.id}`;
      check.checked = layer.on;
      const label = document.createElement("label");
      label.htmlFor = check.id;
      label.textContent = layer.label;
      const opacity = document.createElement("input");
      opacity.type = "range";
      opacity.min = "0";
      opacity.max = "1";
      opacity.step = "0.05";
      opacity.value = String(layer.opacity);
      opacity.id = `opacity-${layer.id}`;
      opacity.title = `opacity of ${layer.label}`;
      check.addEventListener("change", () => {
        S.layers[layer.id].on = check.checked;
        changed();
      });
      opacity.addEventListener("input", () => {
        S.layers[layer.id].opacity = Number(opacity.value);
        changed();
      });
      row.append(check, label, opacity);
      if (layer.id === "visible") row.append(visibleChoice());
      if (layer.id === "bandmap") {
        if (!S.info.band_maps) row.classList.add("unavailable");
        const select = document.createElement("select");
        select.id = "band-map";
        select.title = "which band's normalised dissimilarity";
        S.info.bands.forEach((band) => select.append(new Option(bandName(band), String(band.index))));
        select.addEventListener("change", () => {
          S.bandMap = Number(select.value);
          changed();
        });
        row.append(select);
      }
      box.append(row);
    }
  }

  // colour (as the scan encodes it) or grey (ArtExtract's background under the blue)
  function visibleChoice() {
    const select = document.createElement("select");
    select.id = "visible-mode";
    select.append(new Option("in colour", "colour"), new Option("in grey (as under the overlay's blue)", "grey"));
    if (S.info.visible !== "colour") {
      select.options[0].disabled = true;
      select.title = "this output stores no colour image (written before tilex kept it): grey, recovered from the overlay";
      S.visible = "grey";
    } else {
      select.title = "the visible image in colour, or in grey as the overlay draws it";
    }
    select.value = S.visible;
    select.addEventListener("change", () => {
      S.visible = select.value;
      changed();
    });
    return select;
  }

  function bandName(band) {
    return `${band.index}: ${band.name}` + (band.wavelength_nm !== null && band.wavelength_nm !== undefined ? ` (${band.wavelength_nm} nm)` : "");
  }

  function buildLegend() {
    const list = $("legend");
    const entry = (rgb, text, share) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = rgb ? "swatch" : "swatch hatch";
      if (rgb) swatch.style.background = `rgb(${rgb.join(",")})`;
      const name = document.createElement("span");
      name.textContent = text;
      item.append(swatch, name);
      if (share !== null && share !== undefined) {
        const s = document.createElement("span");
        s.className = "share";
        s.textContent = `${(100 * share).toFixed(1)} %`;
        s.title = "share of the scan's pixels this band wins at the run's threshold";
        item.append(s);
      }
      list.append(item);
    };
    for (const band of S.info.bands) entry(hexToRgb(band.colour), bandName(band), band.share);
    if (S.info.threshold.source === "evidence") {
      entry(null, "band not stored (flagged below the run's threshold)", null);
    }
    const filter = $("band-filter");
    S.info.bands.forEach((band) => filter.append(new Option(`band ${bandName(band)} wins`, String(band.index))));
    filter.addEventListener("change", () => {
      S.filter = Number(filter.value);
      changed();
    });
  }

  function buildThreshold() {
    const th = S.info.threshold;
    const slider = $("threshold");
    slider.min = String(th.lowest);
    slider.max = "1";
    S.t = th.threshold;
    slider.value = String(S.t);
    $("threshold-note").textContent =
      th.source === "evidence"
        ? "Below the run's threshold, the band of a newly flagged pixel was not stored: the winning-band layer hatches it."
        : "This output stores no evidence (written before tilex kept it): the threshold can only be raised above the run's.";
    slider.addEventListener("input", () => {
      S.t = Number(slider.value);
      showThreshold();
      if (lastPixel) showPixel(lastPixel);
      changed();
    });
    showThreshold();
  }

  function changed() {
    S.version++;
    complete = false;
    schedule();
  }

  // ------------------------------------------------------------------ cursor read-out

  let pixelAsked = null;
  let pixelBusy = false;
  let lastPixel = null;

  function askPixel(x, y) {
    pixelAsked = [x, y];
    if (pixelBusy) return;
    pixelBusy = true;
    const [px, py] = pixelAsked;
    fetch(`/api/pixel?x=${px}&y=${py}`)
      .then((r) => (r.ok ? r.json() : null))
      .then((found) => {
        if (found && pixelAsked && pixelAsked[0] === found.x && pixelAsked[1] === found.y) showPixel(found);
      })
      .catch((err) => console.error(`tilex view: read-out: ${err.message}`))
      .finally(() => {
        pixelBusy = false;
        if (pixelAsked && (pixelAsked[0] !== px || pixelAsked[1] !== py)) askPixel(...pixelAsked);
      });
  }

  function showPixel(found) {
    lastPixel = found;
    const rows = [["pixel", `x ${found.x}, y ${found.y}`]];
    const um = S.info.pixel_size_um;
    if (um) rows.push(["position", `${((found.x + 0.5) * um / 1000).toFixed(3)} mm, ${((found.y + 0.5) * um / 1000).toFixed(3)} mm`]);
    const th = S.info.threshold;
    if (th.source === "evidence") rows.push(["evidence", fmt(found.evidence)]);
    rows.push(["score (run)", fmt(found.score)]);
    const flagged = found.evidence !== null && found.evidence > S.t;
    rows.push([`at ${S.t.toFixed(3)}`, flagged ? `flagged, score ${fmt(found.evidence)}` : "not flagged"]);
    const band = S.info.bands[found.winner - 1];
    rows.push(["winning band", band ? bandName(band) : flagged ? "not stored (below the run's threshold)" : "none"]);
    if (found.bands) found.bands.forEach((v, i) => rows.push([`band ${i + 1} map`, fmt(v)]));
    const list = $("readout");
    list.replaceChildren();
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      list.append(dt, dd);
    }
  }

  // ------------------------------------------------------------------ navigation

  function imageAt(x, y) {
    const { w, h } = size();
    const { cx, cy, scale } = S.view;
    return [(x - w / 2) / scale + cx, (y - h / 2) / scale + cy];
  }

  function fitScale() {
    const { w, h } = size();
    const [H, W] = S.info.shape;
    return Math.min(w / W, h / H);
  }

  function setView(cx, cy, scale) {
    const s = Math.min(MAX_SCALE, Math.max(fitScale() / 4, scale));
    S.view = { cx, cy, scale: s };
    complete = false;
    schedule();
  }

  function fit() {
    const [H, W] = S.info.shape;
    setView(W / 2, H / 2, fitScale());
  }

  function zoomAt(x, y, factor) {
    const [ix, iy] = imageAt(x, y);
    const scale = Math.min(MAX_SCALE, Math.max(fitScale() / 4, S.view.scale * factor));
    const { w, h } = size();
    setView(ix - (x - w / 2) / scale, iy - (y - h / 2) / scale, scale);
  }

  function navigation() {
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, cx: S.view.cx, cy: S.view.cy };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add("dragging");
      canvas.focus();
    });
    canvas.addEventListener("pointerup", (e) => {
      drag = null;
      canvas.releasePointerCapture(e.pointerId);
      canvas.classList.remove("dragging");
    });
    canvas.addEventListener("pointermove", (e) => {
      const rect = canvas.getBoundingClientRect();
      if (drag) {
        const s = S.view.scale;
        setView(drag.cx - (e.clientX - drag.x) / s, drag.cy - (e.clientY - drag.y) / s, s);
        return;
      }
      const [x, y] = imageAt(e.clientX - rect.left, e.clientY - rect.top);
      const [H, W] = S.info.shape;
      if (x >= 0 && y >= 0 && x < W && y < H) askPixel(Math.floor(x), Math.floor(y));
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoomAt(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-e.deltaY * 0.0015));
    }, { passive: false });
    canvas.addEventListener("dblclick", (e) => {
      const rect = canvas.getBoundingClientRect();
      zoomAt(e.clientX - rect.left, e.clientY - rect.top, 2);
    });
    const centre = () => [size().w / 2, size().h / 2];
    $("zoom-in").addEventListener("click", () => zoomAt(...centre(), 2));
    $("zoom-out").addEventListener("click", () => zoomAt(...centre(), 0.5));
    $("zoom-fit").addEventListener("click", fit);
    canvas.addEventListener("keydown", (e) => {
      const step = 100 / S.view.scale;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (e.key === "+" || e.key === "=") zoomAt(...centre(), 2);
      else if (e.key === "-") zoomAt(...centre(), 0.5);
      else if (e.key === "0") fit();
      else if (moves[e.key]) setView(S.view.cx + moves[e.key][0], S.view.cy + moves[e.key][1], S.view.scale);
      else return;
      e.preventDefault();
    });
    new ResizeObserver(() => schedule()).observe(canvas);
  }

  // the view and threshold in the address (#x=..&y=..&s=..&t=..), to share or come back to
  let remembered = "";
  function rememberView() {
    const { cx, cy, scale } = S.view;
    const hash = `#x=${cx.toFixed(1)}&y=${cy.toFixed(1)}&s=${scale.toPrecision(4)}&t=${S.t}`;
    if (hash !== remembered) {
      remembered = hash;
      history.replaceState(null, "", hash);
    }
  }

  function restoreView() {
    const p = new URLSearchParams(location.hash.slice(1));
    const num = (k) => (p.has(k) && Number.isFinite(Number(p.get(k))) ? Number(p.get(k)) : null);
    if (num("t") !== null) {
      S.t = Math.max(S.info.threshold.lowest, num("t"));
      $("threshold").value = String(S.t);
      showThreshold();
    }
    if (num("x") !== null && num("y") !== null && num("s") !== null) setView(num("x"), num("y"), num("s"));
    else fit();
  }

  // ------------------------------------------------------------------ start

  async function start() {
    const response = await fetch("/api/info");
    S.info = await response.json();
    const bands = S.info.bands;
    S.palette = new Float32Array(3 * (bands.length + 1));
    S.palette.set(S.info.threshold.unknown_band, 0);
    bands.forEach((band, i) => S.palette.set(hexToRgb(band.colour), 3 * (i + 1)));
    $("subtitle").textContent = `${S.info.name}: ${S.info.shape[1]} x ${S.info.shape[0]} px, ${S.info.levels.length} levels`;
    document.title = `tilex view: ${S.info.name}`;
    buildLayers();
    buildLegend();
    buildThreshold();
    navigation();
    restoreView();
  }

  // for scripts and tests: the state, and a promise that the view is fully drawn
  window.tilexViewer = {
    get state() {
      return { t: S.t, filter: S.filter, visible: S.visible, view: { ...S.view }, level: S.info ? levelFor(S.view.scale) : null, layers: structuredClone(S.layers) };
    },
    get fraction() {
      return S.fraction;
    },
    get firstViewMs() {
      return S.firstViewMs;
    },
    setView,
    imageAt,
    idle() {
      if (complete && !frameRequested) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
    ready: null,
  };
  window.tilexViewer.ready = start().catch((err) => {
    console.error(`tilex view: ${err.message}`);
    $("status").textContent = `error: ${err.message}`;
  });
})();
