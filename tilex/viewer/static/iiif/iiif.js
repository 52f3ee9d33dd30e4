// The page of a tilex IIIF export: the manifest's layers in OpenSeadragon, with a legend.
//
// Each layer's info.json is read here and its "id" replaced by the folder's
// address as this page sees it, so the page works wherever the folder is
// served (the ids written are those of --base-url, for other IIIF clients).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DEFAULT_OPACITY = { visible: 1, overlay: 1, collage: 0 };
  const state = { viewer: null, items: {}, waiters: [] };

  async function json(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  function addLayer(viewer, info, index, opacity) {
    return new Promise((resolve, reject) => {
      viewer.addTiledImage({
        tileSource: info,
        index,
        opacity,
        preload: true,
        success: (event) => resolve(event.item),
        error: (event) => reject(new Error(event.message || "cannot add a layer")),
      });
    });
  }

  function layerRow(name, description, item) {
    const row = document.createElement("div");
    row.className = "layer";
    const check = document.createElement("input");
    check.type = "checkbox";
    check.id = `layer-${name}`;
    check.checked = item.getOpacity() > 0;
    const text = document.createElement("label");
    text.htmlFor = check.id;
    text.textContent = name;
    text.title = description;
    const opacity = document.createElement("input");
    opacity.type = "range";
    opacity.min = "0";
    opacity.max = "1";
    opacity.step = "0.05";
    opacity.value = "1";
    opacity.id = `opacity-${name}`;
    opacity.title = `opacity of ${name}`;
    const apply = () => item.setOpacity(check.checked ? Number(opacity.value) : 0);
    check.addEventListener("change", apply);
    opacity.addEventListener("input", apply);
    row.append(check, text, opacity);
    $("layers").append(row);
  }

  function legend(record) {
    const list = $("legend");
    for (const band of record.bands) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `#${band.colour}`;
      const text = document.createElement("span");
      const nm = band.wavelength_nm === null ? "" : ` (${band.wavelength_nm} nm)`;
      text.textContent = `${band.index}: ${band.name}${nm}`;
      item.append(swatch, text);
      list.append(item);
    }
    $("threshold").textContent =
      `Drawn at threshold ${record.threshold} (the run's: ${record.run_threshold}).` +
      (record.threshold < record.run_threshold ? " Grey in the collage: flagged below the run's threshold, band not stored." : "");
  }

  async function start() {
    const record = await json("tilex-iiif.json");
    const manifest = await json("manifest.json");
    $("subtitle").textContent = `${record.width} x ${record.height} px, from ${record.source}`;
    const viewer = OpenSeadragon({
      element: $("osd"),
      showNavigationControl: false,
      drawer: "canvas",
      maxZoomPixelRatio: 16,
      visibilityRatio: 0.5,
      gestureSettingsMouse: { clickToZoom: false },
    });
    state.viewer = viewer;
    viewer.addHandler("fully-loaded-change", settle);
    const annotations = manifest.items[0].items[0].items; // painting annotations, bottom layer first
    for (const [index, annotation] of annotations.entries()) {
      const name = annotation.body.service[0].id.split("/").pop();
      const info = await json(`${name}/info.json`);
      info.id = new URL(name, location.href).href;
      const item = await addLayer(viewer, info, index, DEFAULT_OPACITY[name] ?? 1);
      state.items[name] = item;
      layerRow(name, annotation.label.en[0], item);
    }
    legend(record);
    settle();
  }

  function settle() {
    if (state.viewer && state.viewer.world.getItemCount() === Object.keys(state.items).length && state.viewer.getFullyLoaded()) {
      state.waiters.forEach((resolve) => resolve());
      state.waiters = [];
    }
  }

  // for scripts and tests: the OpenSeadragon viewer, and a promise that every layer is loaded
  window.tilexIIIF = {
    get viewer() {
      return state.viewer;
    },
    items: state.items,
    idle() {
      return new Promise((resolve) => {
        state.waiters.push(resolve);
        settle();
      });
    },
    ready: null,
  };
  window.tilexIIIF.ready = start().catch((err) => console.error(`tilex IIIF page: ${err.message}`));
})();
