// The X-ray reader: the stored display copy drawn on a canvas with window/level,
// zoom and pan (mouse, keyboard, touch), and one label's activation map over it.
// Reads stored since format 3 carry the original's own values (uint16, fetched from
// data.pixels.url): window/level maps those, not 256 grey levels. Older reads load
// their 8-bit display copy (the hidden <img>).
// No third-party code; the page's CSP allows only scripts from /ui/static.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const view = $("reader-view");
  const canvas = $("reader-canvas");
  const source = $("reader-image");
  const dataNode = $("reader-data");
  if (!view || !canvas || !dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  const stored = data.pixels || null; // the original's values, when the read kept them
  if (!stored && !source) return;
  const ctx = canvas.getContext("2d");

  // Window/level presets as parts of the image's default window (its DICOM window, else
  // the 0.5-99.5th percentiles; the whole 0-255 scale of an 8-bit copy): radiographs
  // have no Hounsfield units. Lung spreads the dark range, soft tissue and bone the
  // bright one. [level, width] as fractions of the default window.
  const PRESETS = {
    default: [0.5, 1],
    lung: [85 / 255, 150 / 255],
    soft: [165 / 255, 140 / 255],
    bone: [200 / 255, 100 / 255],
  };
  const ZOOM_MIN = 1, ZOOM_MAX = 16, ZOOM_STEP = 1.25;
  const state = { level: 128, width: 255, zoom: 1, panX: 0, panY: 0, label: data.shown };
  // The grey values' range and default window (set when the image is loaded).
  const scale = { top: 255, center: 127.5, width: 255, minWidth: 8, maxWidth: 255 };

  const presetSel = $("wl-preset"), levelIn = $("wl-level"), widthIn = $("wl-width");
  const opacityIn = $("heatmap-opacity"), toggle = $("heatmap-toggle");
  const contour = $("heatmap-contour"), mapSel = $("map-label"), dragWindow = $("drag-window");

  // The grey image, windowed, at the display copy's full resolution.
  const windowed = document.createElement("canvas");
  const wctx = windowed.getContext("2d");
  let grey = null; // the grey values, row by row (Uint16Array or Uint8ClampedArray)
  // The map, coloured, at a fixed grid (bilinear upsampling of the stored map).
  const heat = document.createElement("canvas");
  const GRID = 256;
  heat.width = GRID; heat.height = GRID;

  function lut(x) { // blue -> cyan -> yellow -> red, as the server's overlay
    const c = (v) => Math.max(0, Math.min(1, 1.5 - Math.abs(v))) * 255;
    return [c(4 * x - 3), c(4 * x - 2), c(4 * x - 1)];
  }

  function upsampled(values) {
    const rows = data.rows, cols = data.columns, out = new Float32Array(GRID * GRID);
    for (let y = 0; y < GRID; y++) {
      const fy = Math.min(rows - 1, Math.max(0, ((y + 0.5) * rows) / GRID - 0.5));
      const y0 = Math.floor(fy), y1 = Math.min(rows - 1, y0 + 1), dy = fy - y0;
      for (let x = 0; x < GRID; x++) {
        const fx = Math.min(cols - 1, Math.max(0, ((x + 0.5) * cols) / GRID - 0.5));
        const x0 = Math.floor(fx), x1 = Math.min(cols - 1, x0 + 1), dx = fx - x0;
        const top = values[y0 * cols + x0] * (1 - dx) + values[y0 * cols + x1] * dx;
        const bottom = values[y1 * cols + x0] * (1 - dx) + values[y1 * cols + x1] * dx;
        out[y * GRID + x] = top * (1 - dy) + bottom * dy;
      }
    }
    return out;
  }

  function paintHeat() {
    const values = upsampled(data.maps[state.label] || []);
    const img = heat.getContext("2d").createImageData(GRID, GRID);
    const edge = contour.checked;
    for (let i = 0; i < GRID * GRID; i++) {
      const v = values[i];
      let alpha = 0;
      if (edge) { // outlines at 50 % and 75 % of the map's range
        const x = i % GRID, y = (i / GRID) | 0;
        for (const t of [0.5, 0.75]) {
          if (v >= t && ((x > 0 && values[i - 1] < t) || (x < GRID - 1 && values[i + 1] < t) ||
              (y > 0 && values[i - GRID] < t) || (y < GRID - 1 && values[i + GRID] < t))) alpha = 1;
        }
      } else if (v >= 0.35) alpha = 0.4 + 0.6 * v;
      const [r, g, b] = lut(v);
      img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b;
      img.data[4 * i + 3] = Math.round(alpha * 255);
    }
    heat.getContext("2d").putImageData(img, 0, 0);
  }

  function paintWindow() {
    if (!grey) return;
    const low = state.level - state.width / 2, gain = 255 / state.width;
    const img = wctx.createImageData(windowed.width, windowed.height);
    const map = new Uint8ClampedArray(scale.top + 1); // one grey per value
    for (let v = 0; v <= scale.top; v++) map[v] = (v - low) * gain;
    for (let i = 0, j = 0; i < grey.length; i++, j += 4) {
      const g = map[grey[i]];
      img.data[j] = g; img.data[j + 1] = g; img.data[j + 2] = g; img.data[j + 3] = 255;
    }
    wctx.putImageData(img, 0, 0);
  }

  function fitSize() { // the canvas fills the view's width at the image's aspect ratio
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = view.clientWidth;
    const aspect = windowed.height / windowed.width || 1;
    const cssHeight = Math.min(cssWidth * aspect, Math.max(240, window.innerHeight * 0.85));
    canvas.style.height = `${cssHeight}px`;
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(cssHeight * ratio);
  }

  function clampPan() {
    const limitX = (canvas.width * (state.zoom - 1)) / 2, limitY = (canvas.height * (state.zoom - 1)) / 2;
    state.panX = Math.max(-limitX, Math.min(limitX, state.panX));
    state.panY = Math.max(-limitY, Math.min(limitY, state.panY));
  }

  function draw() {
    if (!grey) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    // Fit the image into the canvas, then zoom about the centre and pan.
    const fit = Math.min(canvas.width / windowed.width, canvas.height / windowed.height);
    const zoomed = fit * state.zoom;
    const w = windowed.width * zoomed, h = windowed.height * zoomed;
    const x = (canvas.width - w) / 2 + state.panX, y = (canvas.height - h) / 2 + state.panY;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(windowed, x, y, w, h);
    if (toggle.checked) {
      ctx.globalAlpha = Number(opacityIn.value) / 100;
      ctx.drawImage(heat, x, y, w, h);
      ctx.globalAlpha = 1;
    }
    canvas.dataset.zoom = String(state.zoom);
    canvas.dataset.scale = String(zoomed);
    canvas.dataset.level = String(state.level);
    canvas.dataset.width = String(state.width);
    canvas.dataset.opacity = String(toggle.checked ? Number(opacityIn.value) / 100 : 0);
    canvas.dataset.map = state.label;
    $("zoom-value").textContent = `${Math.round(state.zoom * 100)}%`;
    $("heatmap-opacity-value").textContent = `${opacityIn.value}%`;
    opacityIn.disabled = !toggle.checked;
    contour.disabled = !toggle.checked;
    mapSel.disabled = !toggle.checked;
  }

  function setWindow(level, width, preset) {
    state.level = Math.max(0, Math.min(scale.top, Math.round(level)));
    state.width = Math.max(scale.minWidth, Math.min(scale.maxWidth, Math.round(width)));
    levelIn.value = String(state.level);
    widthIn.value = String(state.width);
    $("wl-level-value").textContent = String(state.level);
    $("wl-width-value").textContent = String(state.width);
    presetSel.value = preset || "custom";
    paintWindow();
    draw();
  }

  function zoomTo(zoom, cx, cy) { // (cx, cy): the canvas point that stays put
    const next = Math.max(ZOOM_MIN, Math.min(ZOOM_MAX, zoom));
    const px = cx === undefined ? canvas.width / 2 : cx, py = cy === undefined ? canvas.height / 2 : cy;
    const k = next / state.zoom;
    state.panX = (px - canvas.width / 2) * (1 - k) + state.panX * k;
    state.panY = (py - canvas.height / 2) * (1 - k) + state.panY * k;
    state.zoom = next;
    clampPan();
    draw();
  }

  function canvasPoint(ev) {
    const box = canvas.getBoundingClientRect();
    return [((ev.clientX - box.left) * canvas.width) / box.width, ((ev.clientY - box.top) * canvas.height) / box.height];
  }

  // Controls
  for (const [key, label] of Object.entries(data.names)) {
    const option = document.createElement("option");
    option.value = key;
    option.textContent = label;
    option.selected = key === data.shown;
    mapSel.appendChild(option);
  }
  function applyPreset(name) {
    const [level, width] = PRESETS[name];
    const low = scale.center - scale.width / 2;
    setWindow(low + level * scale.width, width * scale.width, name);
  }
  presetSel.addEventListener("change", () => {
    if (PRESETS[presetSel.value]) applyPreset(presetSel.value);
  });
  levelIn.addEventListener("input", () => setWindow(Number(levelIn.value), state.width));
  widthIn.addEventListener("input", () => setWindow(state.level, Number(widthIn.value)));
  opacityIn.addEventListener("input", draw);
  toggle.addEventListener("change", draw);
  contour.addEventListener("change", () => { paintHeat(); draw(); });
  mapSel.addEventListener("change", () => { state.label = mapSel.value; paintHeat(); draw(); });
  $("zoom-in").addEventListener("click", () => zoomTo(state.zoom * ZOOM_STEP));
  $("zoom-out").addEventListener("click", () => zoomTo(state.zoom / ZOOM_STEP));
  $("zoom-fit").addEventListener("click", () => { state.panX = 0; state.panY = 0; zoomTo(1); });

  // Mouse wheel zooms about the pointer.
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [px, py] = canvasPoint(ev);
    zoomTo(state.zoom * (ev.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP), px, py);
  }, { passive: false });

  // One pointer drags (pan, or window/level when chosen); two pointers pinch-zoom.
  const pointers = new Map();
  let pinch = 0;
  canvas.addEventListener("pointerdown", (ev) => {
    canvas.setPointerCapture(ev.pointerId);
    pointers.set(ev.pointerId, [ev.clientX, ev.clientY]);
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      pinch = Math.hypot(a[0] - b[0], a[1] - b[1]);
    }
  });
  canvas.addEventListener("pointermove", (ev) => {
    const last = pointers.get(ev.pointerId);
    if (!last) return;
    const ratio = canvas.width / canvas.getBoundingClientRect().width;
    if (pointers.size === 2) {
      pointers.set(ev.pointerId, [ev.clientX, ev.clientY]);
      const [a, b] = [...pointers.values()];
      const distance = Math.hypot(a[0] - b[0], a[1] - b[1]);
      if (pinch > 0) zoomTo(state.zoom * (distance / pinch));
      pinch = distance;
      return;
    }
    const dx = ev.clientX - last[0], dy = ev.clientY - last[1];
    pointers.set(ev.pointerId, [ev.clientX, ev.clientY]);
    if (dragWindow.checked || ev.shiftKey) { // one CSS pixel: 1/255 of the value range
      const unit = Math.max(1, scale.top / 255);
      setWindow(state.level - dy * unit, state.width + dx * unit);
    } else {
      state.panX += dx * ratio;
      state.panY += dy * ratio;
      clampPan();
      draw();
    }
  });
  const release = (ev) => { pointers.delete(ev.pointerId); pinch = 0; };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);

  // Keyboard on the focused view: arrows pan, + / - zoom, 0 fits.
  view.addEventListener("keydown", (ev) => {
    const step = canvas.width / 10;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[ev.key]) {
      state.panX += moves[ev.key][0];
      state.panY += moves[ev.key][1];
      clampPan();
      draw();
    } else if (ev.key === "+" || ev.key === "=") zoomTo(state.zoom * ZOOM_STEP);
    else if (ev.key === "-") zoomTo(state.zoom / ZOOM_STEP);
    else if (ev.key === "0") { state.panX = 0; state.panY = 0; zoomTo(1); }
    else return;
    ev.preventDefault();
  });

  window.addEventListener("resize", () => { if (grey) { fitSize(); clampPan(); draw(); } });

  function start() {
    canvas.dataset.imageWidth = String(windowed.width);
    canvas.dataset.imageHeight = String(windowed.height);
    canvas.dataset.values = String(scale.top + 1);
    levelIn.max = String(scale.top);
    widthIn.min = String(scale.minWidth);
    widthIn.max = String(scale.maxWidth);
    fitSize();
    paintHeat();
    applyPreset("default");
    view.classList.add("ready");
  }
  const failed = () => { $("reader-status").textContent = view.dataset.failed || "!"; };

  function startWithValues(buffer) { // little-endian uint16 rows (the server's gzip undone)
    const count = stored.rows * stored.columns;
    if (buffer.byteLength !== 2 * count) { failed(); return; }
    const bytes = new DataView(buffer);
    grey = new Uint16Array(count);
    let top = 1;
    for (let i = 0; i < count; i++) {
      const v = bytes.getUint16(2 * i, true);
      grey[i] = v;
      if (v > top) top = v;
    }
    windowed.width = stored.columns;
    windowed.height = stored.rows;
    Object.assign(scale, {
      top, center: stored.center, width: stored.width, minWidth: 2,
      maxWidth: Math.max(top + 1, Math.ceil(stored.width)),
    });
    start();
  }

  function startWithImage() { // a read stored before format 3: its 8-bit copy
    windowed.width = source.naturalWidth;
    windowed.height = source.naturalHeight;
    wctx.drawImage(source, 0, 0);
    const rgba = wctx.getImageData(0, 0, windowed.width, windowed.height).data;
    grey = new Uint8ClampedArray(windowed.width * windowed.height);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
    start();
  }

  if (stored) {
    fetch(stored.url, { credentials: "same-origin" })
      .then((answer) => { if (!answer.ok) throw new Error(String(answer.status)); return answer.arrayBuffer(); })
      .then(startWithValues, failed);
  } else if (source.complete && source.naturalWidth) startWithImage();
  else {
    source.addEventListener("load", startWithImage);
    source.addEventListener("error", failed);
  }
})();
