// DeepGuard web app: one page, hash routes, plain DOM. Every piece of text from the server or from a file name
// goes into the page through textContent / attributes (never innerHTML), so it is always shown, never run.
(function () {
  "use strict";

  // ---------------------------------------------------------------------------------------------- helpers
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const SVG_NS = "http://www.w3.org/2000/svg";
  const root = document.documentElement;

  /** Create an element. attrs: class, text, on<event>, dataset-like "data-*", anything else as attribute. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k === "class") el.setAttribute("class", v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  // ---------------------------------------------------------------------------------------------- state
  const store = {
    get(k) { try { return localStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { if (v === null) localStorage.removeItem(k); else localStorage.setItem(k, v); } catch (e) { /* ignore */ } },
  };
  const state = {
    strings: null,
    config: null,
    model: null,
    file: null,
    fileUrl: null,
    xhr: null,
    job: null,
    pollTimer: null,
    lastResult: null, // {container, result, opts} of what is on screen, re-rendered on a language switch
    entryResult: null,
    history: [],
    historyMore: false,
    historyTotal: 0,
    route: null,
  };

  // ---------------------------------------------------------------------------------------------- i18n
  function lang() { return root.lang === "ar" ? "ar" : "en"; }
  function t(key, vars) {
    const table = (state.strings && state.strings[lang()]) || {};
    const fallback = (state.strings && state.strings.en) || {};
    let str = key in table ? table[key] : key in fallback ? fallback[key] : key;
    if (vars) str = str.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return str;
  }
  function nf(opts) { return new Intl.NumberFormat(lang() === "ar" ? "ar" : "en", opts); }
  function pct(p, digits) {
    if (p === null || p === undefined || Number.isNaN(p)) return "–";
    return nf({ style: "percent", maximumFractionDigits: digits === undefined ? 1 : digits }).format(p);
  }
  function num(v, digits) { return nf({ maximumFractionDigits: digits === undefined ? 2 : digits }).format(v); }
  function bytes(n) {
    const units = [["unit_gb", 1 << 30], ["unit_mb", 1 << 20], ["unit_kb", 1 << 10]];
    for (const [u, size] of units) if (n >= size) return num(n / size, 1) + " " + t(u);
    return num(n, 0) + " " + t("unit_b");
  }
  function seconds(v) {
    if (v === null || v === undefined) return "–";
    return v >= 120 ? t("unit_min", { n: num(v / 60, 1) }) : t("unit_s", { n: num(v, 1) });
  }
  function date(epoch) {
    return new Intl.DateTimeFormat(lang() === "ar" ? "ar" : "en", { dateStyle: "medium", timeStyle: "short" })
      .format(new Date(epoch * 1000));
  }

  function applyStrings() {
    for (const el of $$("[data-i18n]")) el.textContent = t(el.dataset.i18n, fmtVars());
    for (const el of $$("[data-i18n-attr]")) {
      for (const pair of el.dataset.i18nAttr.split(";")) {
        const [attr, key] = pair.split(":");
        el.setAttribute(attr, t(key));
      }
    }
    $("#lang-toggle").textContent = t("lang_switch");
    $("#lang-toggle").lang = lang() === "ar" ? "en" : "ar";
    const dark = root.dataset.theme === "dark";
    $("#theme-toggle").textContent = dark ? t("theme_light") : t("theme_dark");
    $("#theme-toggle").setAttribute("aria-pressed", String(dark));
    $("#theme-toggle").setAttribute("aria-label", t("theme_label"));
    $("#footer-text").textContent = t("footer", { version: state.config ? state.config.version : "" });
    $("#limits-hint").textContent = t("limits_hint", fmtVars());
    $("#fps-default").textContent = t("fps_default", { fps: state.config && state.config.fps ? num(state.config.fps) : "1" });
    renderFaq();
  }
  function fmtVars() {
    const lim = state.config ? state.config.limits : null;
    return lim
      ? { image: bytes(lim.image_bytes), video: bytes(lim.video_bytes), seconds: seconds(lim.video_seconds) }
      : { image: "–", video: "–", seconds: "–" };
  }

  function setLang(next) {
    root.lang = next;
    root.dir = next === "ar" ? "rtl" : "ltr";
    store.set("dg_lang", next);
    applyStrings();
    rerender();
  }
  function setTheme(next) {
    root.dataset.theme = next;
    store.set("dg_theme", next);
    applyStrings();
  }

  // ---------------------------------------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, code, message, data) {
      super(message || code || "error");
      this.status = status;
      this.code = code;
      this.data = data || {};
    }
  }
  function authHeaders() {
    const tok = store.get("dg_token");
    return tok ? { Authorization: "Bearer " + tok } : {};
  }
  async function api(path, opts) {
    opts = opts || {};
    let resp;
    try {
      resp = await fetch(path, { method: opts.method || "GET", headers: authHeaders(), credentials: "same-origin", body: opts.body });
    } catch (e) {
      throw new ApiError(0, "network", String(e));
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) {
      if (!opts.retried && (await askToken())) return api(path, Object.assign({}, opts, { retried: true }));
      throw new ApiError(401, "auth", data && data.error);
    }
    if (!resp.ok) throw new ApiError(resp.status, data && data.code, data && data.error, data);
    return data;
  }
  function askToken() {
    const dlg = $("#token-dialog");
    $("#token-input").value = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", function onClose() {
        dlg.removeEventListener("close", onClose);
        const v = $("#token-input").value.trim();
        if (dlg.returnValue === "ok" && v) { store.set("dg_token", v); resolve(true); } else resolve(false);
      });
      dlg.showModal();
    });
  }

  /** Plain words for an error; the server's own message (escaped via textContent) goes into the details. */
  function explain(err) {
    const code = err.code || "";
    const d = err.data || {};
    if (code === "too_large" || err.status === 413) {
      const kind = d.kind === "image" ? t("kind_image") : t("kind_video");
      return t("err_too_large", { size: d.size ? bytes(d.size) : "?", kind: kind, limit: d.limit ? bytes(d.limit) : "?" });
    }
    const map = {
      unsupported: "err_unsupported", empty: "err_empty", bad_media: "err_bad_media", busy: "err_busy",
      shutting_down: "err_shutting_down", network: "err_network", auth: "err_auth", internal: "err_internal",
      cancelled: "err_cancelled", not_found: "err_not_found", no_file: "err_no_file",
    };
    if (map[code]) return t(map[code]);
    if (err.status === 401) return t("err_auth");
    if (err.status === 503) return /shutting/.test(err.message) ? t("err_shutting_down") : t("err_busy");
    if (err.status === 400) return t("err_bad_media");
    if (err.status >= 500) return t("err_internal");
    return t("err_generic");
  }
  function showError(box, err, title) {
    box.replaceChildren(
      h("h2", { text: title || t("err_title") }),
      h("p", { text: explain(err) }),
      err.message && err.code !== "cancelled"
        ? h("details", {}, h("summary", { text: t("err_details") }), h("p", { class: "mono", text: err.message }))
        : null,
    );
    box.hidden = false;
  }
  function announce(text) { $("#status").textContent = text; }
  let toastTimer = null;
  function toast(text) {
    const el = $("#toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 2500);
  }
  function confirmDialog(text) {
    const dlg = $("#confirm");
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      dlg.addEventListener("close", function onClose() {
        dlg.removeEventListener("close", onClose);
        resolve(dlg.returnValue === "ok");
      });
      dlg.returnValue = "";
      dlg.showModal();
    });
  }

  // ---------------------------------------------------------------------------------------------- routing
  const TITLES = { home: "page_home", analyze: "page_analyze", history: "page_history", entry: "page_entry",
    samples: "page_samples", model: "page_model", faq: "page_faq", notfound: "not_found_title" };

  function parseRoute() {
    const hash = location.hash.replace(/^#\/?/, "");
    const parts = hash.split("/").filter(Boolean);
    if (parts.length === 0) return { page: "home" };
    if (parts[0] === "history" && parts[1]) return /^\d+$/.test(parts[1]) ? { page: "entry", id: +parts[1] } : { page: "notfound" };
    if (["analyze", "history", "samples", "model", "faq"].includes(parts[0]) && parts.length === 1) return { page: parts[0] };
    return { page: "notfound" };
  }
  function route(focus) {
    const r = parseRoute();
    state.route = r;
    for (const sec of $$("[data-page]")) sec.hidden = sec.dataset.page !== r.page;
    const navPage = r.page === "entry" ? "history" : r.page;
    for (const a of $$("#nav a")) {
      if (a.dataset.route === navPage) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = t(TITLES[r.page]) + " · DeepGuard";
    if (r.page === "history") loadHistory();
    if (r.page === "entry") loadEntry(r.id);
    if (r.page === "model") loadModel();
    if (focus) {
      const h1 = $(`[data-page="${r.page}"] h1`);
      if (h1) h1.focus({ preventScroll: true });
      window.scrollTo(0, 0);
    }
  }
  function rerender() {
    document.title = t(TITLES[(state.route || { page: "home" }).page]) + " · DeepGuard";
    if (state.lastResult) renderResult(state.lastResult.container, state.lastResult.result, state.lastResult.opts);
    if (state.entryResult && state.route && state.route.page === "entry") {
      renderResult($("#entry"), state.entryResult, { entry: true });
    }
    if (state.file) renderReview();
    renderHistory();
    if (state.model) renderModel(state.model);
  }

  // ---------------------------------------------------------------------------------------------- analyse
  const IMAGE_EXT = /\.(jpe?g|jfif|png|webp|bmp|gif|tiff?|avif|heic|heif)$/i;
  const VIDEO_EXT = /\.(mp4|m4v|mov|qt|avi|webm|mkv|mpe?g|ts|3gp|ogv|wmv|flv)$/i;
  function fileKind(f) {
    if (/^image\//.test(f.type) || IMAGE_EXT.test(f.name)) return "image";
    if (/^video\//.test(f.type) || VIDEO_EXT.test(f.name)) return "video";
    return null;
  }
  function resetAnalyze() {
    stopPolling();
    if (state.xhr) { state.xhr.abort(); state.xhr = null; }
    for (const id of ["review", "progress", "error", "result"]) $("#" + id).hidden = true;
    $("#drop").hidden = false;
    state.lastResult = null;
  }
  function selectFile(f) {
    resetAnalyze();
    if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
    state.file = f;
    state.fileUrl = URL.createObjectURL(f);
    const kind = fileKind(f);
    const lim = state.config && state.config.limits;
    if (!kind) {
      state.file = null;
      return showError($("#error"), new ApiError(400, "unsupported", f.name));
    }
    const limit = lim ? (kind === "image" ? lim.image_bytes : lim.video_bytes) : Infinity;
    if (f.size === 0) {
      state.file = null;
      return showError($("#error"), new ApiError(400, "empty", f.name));
    }
    if (f.size > limit) {
      state.file = null;
      return showError($("#error"), new ApiError(413, "too_large", f.name, { size: f.size, limit: limit, kind: kind }));
    }
    $("#keep").checked = false;
    renderReview();
    $("#drop").hidden = true;
    $("#review").hidden = false;
    $("#analyze-btn").focus();
  }
  function renderReview() {
    const f = state.file;
    if (!f) return;
    const kind = fileKind(f);
    const media = kind === "video"
      ? h("video", { src: state.fileUrl, controls: true, muted: true, preload: "metadata" })
      : h("img", { src: state.fileUrl, alt: f.name });
    const box = $("#review-media");
    if (!box.firstChild || box.firstChild.getAttribute("src") !== state.fileUrl) box.replaceChildren(media);
    $("#review-meta").replaceChildren(
      h("dt", { text: t("meta_file") }), h("dd", { class: "filename", text: f.name }),
      h("dt", { text: t("meta_type") }), h("dd", { text: t(kind === "video" ? "kind_video" : "kind_image") }),
      h("dt", { text: t("meta_size") }), h("dd", { text: bytes(f.size) }),
    );
    $("#fps-row").hidden = kind !== "video";
  }

  function startAnalysis() {
    const f = state.file;
    if (!f) return;
    const kind = fileKind(f);
    $("#review").hidden = true;
    $("#error").hidden = true;
    $("#result").hidden = true;
    $("#progress").hidden = false;
    $("#drop").hidden = true;
    setProgress("upload", 0);
    setProgress("analysis", null);
    $("#progress-text").textContent = t("status_uploading", { name: f.name });
    announce(t("status_uploading", { name: f.name }));
    $("#cancel-btn").focus();

    const form = new FormData();
    form.append("file", f, f.name);
    if ($("#keep").checked) form.append("keep", "1");
    if (kind === "video" && $("#fps").value) form.append("fps", $("#fps").value);
    const xhr = new XMLHttpRequest();
    state.xhr = xhr;
    xhr.open("POST", "/api/analyze");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) setProgress("upload", e.loaded / e.total); };
    xhr.onerror = () => { state.xhr = null; failAnalysis(new ApiError(0, "network", "network error")); };
    xhr.onabort = () => { state.xhr = null; };
    xhr.onload = async () => {
      state.xhr = null;
      const data = xhr.response || {};
      if (xhr.status === 401 && (await askToken())) return startAnalysis();
      if (xhr.status !== 202) return failAnalysis(new ApiError(xhr.status, data.code, data.error, data));
      setProgress("upload", 1);
      $("#progress-text").textContent = t("status_analyzing");
      announce(t("status_analyzing"));
      state.job = data.id;
      poll(data.id);
    };
    xhr.send(form);
  }
  function setProgress(which, frac) {
    const bar = $("#" + which + "-progress");
    const label = $("#" + which + "-pct");
    if (frac === null) { bar.removeAttribute("value"); label.textContent = ""; return; }
    bar.value = Math.round(frac * 100);
    label.textContent = pct(frac, 0);
  }
  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.job = null;
  }
  async function poll(jobId) {
    if (state.job !== jobId) return;
    let job;
    try {
      job = await api("/api/jobs/" + encodeURIComponent(jobId));
    } catch (e) {
      if (state.job === jobId) failAnalysis(e);
      return;
    }
    if (state.job !== jobId) return;
    if (job.total) {
      setProgress("analysis", Math.min(job.done / job.total, job.state === "done" ? 1 : 0.99));
      $("#progress-text").textContent = t("status_frames", { done: num(job.done, 0), total: num(job.total, 0) });
    } else if (job.done) {
      $("#progress-text").textContent = t("status_frames_nototal", { done: num(job.done, 0) });
    }
    if (job.state === "running") {
      state.pollTimer = setTimeout(() => poll(jobId), 300);
      return;
    }
    stopPolling();
    if (job.state === "done") return finishAnalysis(job.result);
    failAnalysis(new ApiError(200, job.code || "internal", job.error));
  }
  function failAnalysis(err) {
    stopPolling();
    $("#progress").hidden = true;
    $("#drop").hidden = false;
    if (state.file) $("#review").hidden = false;
    showError($("#error"), err);
    announce(explain(err));
  }
  function finishAnalysis(result) {
    setProgress("analysis", 1);
    $("#progress").hidden = true;
    const box = $("#result");
    const opts = { localUrl: fileKind(state.file || { type: "", name: "" }) === "image" ? state.fileUrl : null, fresh: true };
    box.hidden = false;
    renderResult(box, result, opts);
    state.lastResult = { container: box, result: result, opts: opts };
    announce(t("status_done", { verdict: t("verdict_" + result.verdict) }));
    const head = $(".verdict h2", box);
    if (head) head.focus();
  }
  async function cancelAnalysis() {
    if (state.xhr) {
      state.xhr.abort();
      state.xhr = null;
      failAnalysis(new ApiError(0, "cancelled", ""));
      return;
    }
    const jobId = state.job;
    stopPolling();
    if (jobId) {
      try { await api("/api/jobs/" + encodeURIComponent(jobId), { method: "DELETE" }); } catch (e) { /* gone */ }
    }
    failAnalysis(new ApiError(0, "cancelled", ""));
  }

  // ---------------------------------------------------------------------------------------------- result view
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22", "#7f7f7f"];
  function personColor(p) { return PALETTE[p % PALETTE.length]; }
  function isFake(score, thr) { return score !== null && score !== undefined && score >= thr; }

  // Graded verdict of one score, as deepguard.runtime.aggregate.verdict: real < lo <= uncertain < hi <= fake.
  function grade(score, thr, band) {
    if (band && band[1] > band[0]) return score >= band[1] ? "fake" : score >= band[0] ? "uncertain" : "real";
    return isFake(score, thr) ? "fake" : "real";
  }

  /** A face's verdict: the model's graded verdict stored with the result (older entries: graded here). */
  function faceVerdict(r, f, i, thr) {
    const v = r.face_verdicts ? r.face_verdicts[i] : null;
    return v || grade(f.score, thr, r.band);
  }
  /** A person's verdict (videos): the runtime's, else the video rule's score graded here. */
  function personVerdict(r, person, score, thr) {
    return (person && person.verdict) || grade(score, thr, r.band);
  }
  // Unicode isolates, so a number or a phrase keeps its own direction inside text of the other direction
  // (an Arabic label in an ltr SVG chart would otherwise read "35 %العتبة").
  const LRI = "\u2066", RLI = "\u2067", PDI = "\u2069";
  function isoNum(v) { return LRI + v + PDI; }
  function isoText(str) { return (lang() === "ar" ? RLI : LRI) + str + PDI; }

  function renderResult(container, r, opts) {
    opts = opts || {};
    const thr = r.threshold === null || r.threshold === undefined ? 0.5 : r.threshold;
    const faces = (r.record && r.record.faces) || [];
    const children = [verdictBanner(r, thr), metaList(r)];
    if (r.preview || opts.localUrl) children.push(boxesFigure(r, faces, thr, opts));
    if (r.crops && r.crops.length) children.push(facesSection(r, faces, thr, container));
    if (r.kind === "video" && r.record && r.record.frames && r.record.frames.length) {
      children.push(chartSection(r, thr, container.clientWidth), framesTable(r));
    }
    children.push(resultActions(r, opts));
    container.replaceChildren(...children);
    fitTags(container);
  }
  /** Size each box label's background to its text, now that the text can be measured (visible only). */
  function fitTags(container) {
    for (const g of $$("svg.boxes g.box", container)) {
      const text = $("text", g), tag = $("rect.tag", g);
      const len = text && text.getComputedTextLength ? text.getComputedTextLength() : 0;
      if (!len) continue;
      const svg = g.ownerSVGElement;
      const W = svg.viewBox.baseVal.width;
      const fs = parseFloat(text.getAttribute("font-size"));
      const w = len + fs * 0.6;
      const x1 = parseFloat(g.dataset.x1);
      const x = Math.max(0, Math.min(x1, W - w));
      tag.setAttribute("x", x);
      tag.setAttribute("width", w);
      text.setAttribute("x", text.getAttribute("direction") === "rtl" ? x + w - fs * 0.3 : x + fs * 0.3);
    }
  }

  function verdictBanner(r, thr) {
    const v = r.verdict;
    const text = v === "fake" ? t("explain_fake", { p: pct(r.score), t: pct(thr) })
      : v === "real" ? t("explain_real", { p: pct(r.score), t: pct(thr) })
      : v === "uncertain" && r.band ? t("explain_uncertain", { p: pct(r.score), lo: pct(r.band[0]), hi: pct(r.band[1]) })
      : v === "no_face" ? t("explain_no_face") : t("err_bad_media");
    const banner = h("div", { class: "verdict " + v },
      h("h2", { tabindex: "-1", text: t("verdict_" + v) }),
      h("p", { text: text }));
    if (r.score !== null && r.score !== undefined) {
      const meter = h("div", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
        "aria-valuenow": String(Math.round(r.score * 100)), "aria-label": t("prob_label"), "aria-valuetext": pct(r.score) });
      const fill = h("span", { class: "fill" });
      fill.style.inlineSize = (r.score * 100).toFixed(1) + "%";
      const mark = h("span", { class: "thr", title: t("threshold_label", { t: pct(thr) }) });
      mark.style.insetInlineStart = (thr * 100).toFixed(1) + "%";
      meter.append(fill, mark);
      if (r.band && r.band[1] > r.band[0]) {  // the uncertain range [lo, hi) of a calibrated model
        const band = h("span", { class: "band", title: t("model_band_value", { lo: pct(r.band[0]), hi: pct(r.band[1]) }) });
        band.style.insetInlineStart = (r.band[0] * 100).toFixed(1) + "%";
        band.style.inlineSize = ((r.band[1] - r.band[0]) * 100).toFixed(1) + "%";
        meter.append(band);
      }
      banner.append(
        h("p", { class: "score-line" }, h("span", { text: t("prob_label") + ": " }), h("strong", { class: "score", text: pct(r.score) })),
        meter,
        h("p", { class: "hint", text: t("threshold_label", { t: isoNum(pct(thr)) }) }));
      if (r.band && r.band[1] > r.band[0]) {
        banner.append(h("p", { class: "hint band-label" }, h("span", { class: "swatch band", "aria-hidden": "true" }),
          t("band_label", { lo: isoNum(pct(r.band[0])), hi: isoNum(pct(r.band[1])) })));
      }
    }
    return banner;
  }

  function metaList(r) {
    const dl = h("dl", { class: "meta" });
    const add = (k, v, cls) => dl.append(h("dt", { text: t(k) }), h("dd", { class: cls || null, text: v }));
    add("meta_file", r.name, "filename");
    add("meta_type", t(r.kind === "video" ? "kind_video" : "kind_image"));
    if (r.created) add("meta_date", date(r.created));
    add("meta_faces", num((r.record && r.record.faces || []).length, 0));
    if (r.kind === "video") add("meta_frames", num((r.record && r.record.frames_sampled) || 0, 0));
    if (r.size) add("meta_size", bytes(r.size));
    add("meta_model", r.model || "");
    return dl;
  }

  function boxesFigure(r, faces, thr, opts) {
    const fr = r.frame || { index: 0, width: 1, height: 1 };
    const W = fr.width || 1, H = fr.height || 1;
    const shown = faces.map((f, i) => [f, i]).filter(([f]) => f.frame === fr.index);
    const img = h("img", { alt: "", src: opts.localUrl || r.preview });
    if (opts.localUrl && r.preview) {
      // The browser's own copy is sharper; fall back to the server's preview if it cannot show the file.
      img.addEventListener("error", () => { img.src = r.preview; }, { once: true });
      img.addEventListener("load", () => {
        if (Math.abs(img.naturalWidth / img.naturalHeight - W / H) > 0.02) img.src = r.preview;
      }, { once: true });
    }
    const svg = s("svg", { class: "boxes", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true" });
    const rtl = root.dir === "rtl";
    const fs = Math.max(W, H) / 40; // about 17 px at the stage's 680 px, whatever the frame's resolution
    for (const [f, i] of shown) {
      const [x1, y1, x2, y2] = f.box;
      const person = r.face_person ? r.face_person[i] : i;
      const verdict = faceVerdict(r, f, i, thr);
      const label = (r.kind === "video" ? t("person_n", { n: person + 1 }) : t("face_n", { n: i + 1 })) + " · "
        + t("chip_" + verdict) + " · " + isoNum(pct(f.score, 0));
      const cls = "box " + verdict;
      const tagW = fs * 0.6 * label.length + fs * 0.6;
      const tagX = Math.max(0, Math.min(x1, W - tagW));
      const tagY = y1 >= fs * 1.4 ? y1 - fs * 1.4 : Math.min(y2, H - fs * 1.4);
      const g = s("g", { class: cls, "data-face": String(i), "data-person": String(person), "data-verdict": verdict, "data-x1": x1 },
        s("title", { text: label }),
        s("rect", { x: x1, y: y1, width: Math.max(1, x2 - x1), height: Math.max(1, y2 - y1), "vector-effect": "non-scaling-stroke" }),
        s("rect", { class: "tag", x: tagX, y: tagY, width: tagW, height: fs * 1.4 }),
        s("text", { x: rtl ? tagX + tagW - fs * 0.3 : tagX + fs * 0.3, y: tagY + fs * 1.05, "font-size": fs, direction: rtl ? "rtl" : "ltr", text: label }));
      svg.append(g);
    }
    const stage = h("div", { class: "stage", dir: "ltr", role: "img", "aria-label": t("boxes_label", { n: num(shown.length, 0) }) }, img, svg);
    stage.style.aspectRatio = `${W} / ${H}`;
    const caption = !shown.length ? t("boxes_caption_none")
      : r.kind === "video" ? t("boxes_caption_video", { time: seconds(fr.time) })
      : t("boxes_caption_image");
    return h("figure", { class: "boxes-figure" }, stage, h("figcaption", { text: caption }));
  }

  function facesSection(r, faces, thr, container) {
    const list = h("ul", { class: "faces" });
    for (const c of r.crops) {
      const f = faces[c.face];
      if (!f) continue;
      const isVideo = r.kind === "video";
      const person = (r.persons || []).find((p) => p.id === c.person);
      // a person's verdict score is the video rule over its faces (older history entries only have max)
      const score = isVideo && person ? (person.score ?? person.max) : f.score;
      const title = isVideo ? t("person_n", { n: c.person + 1 }) : t("face_n", { n: c.face + 1 });
      const verdict = isVideo ? personVerdict(r, person, score, thr) : faceVerdict(r, f, c.face, thr);
      const info = [h("strong", { text: title }), h("span", { class: "chip " + verdict, text: t("chip_" + verdict) })];
      const lines = [h("span", { text: t("face_score", { p: pct(score) }) })];
      if (isVideo && person) {
        lines.push(h("span", { class: "hint", text: t("person_scores", { max: pct(person.max), mean: pct(person.mean) }) }));
        lines.push(h("span", { class: "hint", text: t("person_seen", { n: num(person.faces, 0), a: seconds(person.first), b: seconds(person.last) }) }));
      }
      const dot = isVideo ? h("span", { class: "dot", "aria-hidden": "true" }) : null;
      if (dot) dot.style.backgroundColor = personColor(c.person);
      const item = h("li", { class: "face-card " + verdict, tabindex: "0", "data-verdict": verdict, "data-face": String(c.face), "data-person": String(c.person) },
        h("img", { src: c.src, alt: t("crop_alt", { n: isVideo ? c.person + 1 : c.face + 1 }), width: "96", height: "96" }),
        h("div", { class: "face-info" }, h("p", { class: "face-title" }, dot, ...info), ...lines));
      const on = () => highlight(container, r.kind === "video" ? "person" : "face", item.dataset[r.kind === "video" ? "person" : "face"], true);
      const off = () => highlight(container, null, null, false);
      item.addEventListener("mouseenter", on);
      item.addEventListener("focus", on);
      item.addEventListener("mouseleave", off);
      item.addEventListener("blur", off);
      list.append(item);
    }
    return h("section", { class: "faces-section" }, h("h3", { text: t("faces_title") }), list);
  }
  function highlight(container, attr, value, on) {
    for (const g of $$("svg.boxes g", container)) {
      g.classList.toggle("hl", on && g.getAttribute("data-" + attr) === value);
      g.classList.toggle("dim", on && g.getAttribute("data-" + attr) !== value);
    }
  }

  function chartSection(r, thr, width) {
    const frames = r.record.frames;
    const faces = r.record.faces || [];
    const useTime = frames.every((f) => f.time !== null && f.time !== undefined);
    const xs = frames.map((f, i) => (useTime ? f.time : f.index !== undefined ? f.index : i));
    const xmin = Math.min(...xs), xmax = Math.max(...xs);
    // viewBox about as wide as the screen space, so the 11 px labels stay readable on a phone
    const W = Math.max(320, Math.min(720, (width || 660) - 20)), H = 240, L = 46, R = 14, T = 14, B = 34;
    const X = (x) => L + (xmax > xmin ? ((x - xmin) / (xmax - xmin)) * (W - L - R) : (W - L - R) / 2);
    const Y = (y) => T + (1 - y) * (H - T - B);
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": t("chart_label", { n: num(frames.length, 0), max: pct(Math.max(...frames.map((f) => f.score || 0))), verdict: t("verdict_" + r.verdict) }) });
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }),
        s("text", { class: "axis", x: L - 6, y: Y(v) + 4, "text-anchor": "end", text: pct(v, 0) }));
    }
    const ticks = 5;
    for (let k = 0; k <= ticks; k++) {
      const x = xmin + ((xmax - xmin) * k) / ticks;
      svg.append(s("text", { class: "axis", x: X(x), y: H - B + 16, "text-anchor": "middle", text: num(x, xmax - xmin < 5 ? 1 : 0) }));
    }
    svg.append(s("text", { class: "axis title", x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", text: useTime ? t("chart_time") : t("col_frame") }));
    const hasBand = r.band && r.band[1] > r.band[0];
    if (hasBand) {  // the uncertain range, shaded behind the line
      svg.append(s("rect", { class: "band", x: L, width: W - R - L, y: Y(r.band[1]), height: Y(r.band[0]) - Y(r.band[1]) },
        s("title", { text: t("band_label", { lo: pct(r.band[0]), hi: pct(r.band[1]) }) })));
    }
    svg.append(s("line", { class: "threshold", x1: L, x2: W - R, y1: Y(thr), y2: Y(thr) }),
      s("text", { class: "axis thr-label", x: W - R - 4, y: Y(thr) - 5, "text-anchor": "end",
        text: isoText(t("threshold_label", { t: isoNum(pct(thr, 0)) })) }));
    // the frame shown above
    const shownX = xs[frames.findIndex((f) => f.index === r.frame.index)];
    if (shownX !== undefined) {
      svg.append(s("line", { class: "shown", x1: X(shownX), x2: X(shownX), y1: T, y2: H - B }, s("title", { text: t("chart_shown") })));
    }
    // frame score line, broken where a frame had no face
    let seg = [];
    const flush = () => {
      if (seg.length > 1) svg.append(s("polyline", { class: "line", points: seg.join(" ") }));
      seg = [];
    };
    frames.forEach((f, i) => {
      if (f.score === null || f.score === undefined) {
        flush();
        svg.append(s("rect", { class: "noface", x: X(xs[i]) - 2, y: H - B - 6, width: 4, height: 6 }, s("title", { text: t("chart_noface") + " · " + seconds(f.time) })));
      } else seg.push(`${X(xs[i]).toFixed(1)},${Y(f.score).toFixed(1)}`);
    });
    flush();
    // one dot per face, coloured by person
    const byFrame = new Map(frames.map((f, i) => [f.index, xs[i]]));
    faces.forEach((f, i) => {
      const x = byFrame.get(f.frame);
      if (x === undefined) return;
      const p = r.face_person ? r.face_person[i] : 0;
      const c = s("circle", { class: "pt", cx: X(x).toFixed(1), cy: Y(f.score).toFixed(1), r: 4 },
        s("title", { text: `${t("person_n", { n: p + 1 })} · ${seconds(f.time)} · ${pct(f.score)}` }));
      c.style.fill = personColor(p);
      svg.append(c);
    });
    const legend = h("ul", { class: "legend" },
      h("li", {}, h("span", { class: "swatch line" }), t("chart_frame")),
      h("li", {}, h("span", { class: "swatch thr" }), t("threshold_label", { t: isoNum(pct(thr, 0)) })),
      ...(hasBand ? [h("li", {}, h("span", { class: "swatch band" }), t("band_label", { lo: isoNum(pct(r.band[0], 0)), hi: isoNum(pct(r.band[1], 0)) }))] : []),
      h("li", {}, h("span", { class: "swatch noface" }), t("chart_noface")),
      ...(r.persons || []).slice(0, PALETTE.length).map((p) => {
        const sw = h("span", { class: "swatch dot" });
        sw.style.backgroundColor = personColor(p.id);
        return h("li", {}, sw, t("person_n", { n: p.id + 1 }));
      }));
    return h("section", { class: "chart-section" }, h("h3", { text: t("chart_title") }),
      h("figure", { dir: "ltr" }, svg), legend);
  }

  function framesTable(r) {
    const body = h("tbody");
    for (const f of r.record.frames) {
      body.append(h("tr", {}, h("td", { text: num(f.index, 0) }), h("td", { text: seconds(f.time) }),
        h("td", { text: num(f.n_faces, 0) }), h("td", { text: f.score === null ? "–" : pct(f.score) })));
    }
    return h("details", { class: "frames-table" }, h("summary", { text: t("table_toggle") }),
      h("table", {}, h("thead", {}, h("tr", {}, ...["col_frame", "col_time", "col_faces", "col_score"].map((k) => h("th", { scope: "col", text: t(k) })))), body));
  }

  function resultActions(r, opts) {
    const p = h("p", { class: "actions" });
    if (opts.fresh) {
      p.append(h("button", { type: "button", class: "primary", text: t("again"), onclick: () => { state.file = null; resetAnalyze(); $("#pick").focus(); } }));
      p.append(h("a", { class: "button", href: "#/history/" + r.id, text: t("nav_history") }));
      p.append(h("span", { class: "hint", text: t("saved_note") }));
    }
    if (opts.entry) {
      if (r.media_kept) p.append(h("button", { type: "button", text: t("download"), onclick: () => download(r) }));
      p.append(h("button", { type: "button", class: "danger", text: t("delete_entry"), onclick: () => deleteEntry(r, true) }));
    }
    return p;
  }
  async function download(r) {
    try {
      const resp = await fetch(`/api/history/${r.id}/media`, { headers: authHeaders(), credentials: "same-origin" });
      if (!resp.ok) throw new ApiError(resp.status, "not_found", resp.statusText);
      const url = URL.createObjectURL(await resp.blob());
      const a = h("a", { href: url, download: r.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      toast(explain(e));
    }
  }

  // ---------------------------------------------------------------------------------------------- history
  async function loadHistory(more) {
    const errBox = $("#history-error");
    errBox.hidden = true;
    try {
      const last = state.history[state.history.length - 1];
      const data = await api("/api/history" + (more && last ? "?before=" + last.id : ""));
      state.history = more ? state.history.concat(data.items) : data.items;
      state.historyMore = data.more;
      state.historyTotal = data.total;
    } catch (e) {
      showError(errBox, e, t("err_generic"));
    }
    renderHistory();
  }
  function renderHistory() {
    const items = state.history;
    const table = $("#history-table");
    $("#history-empty").hidden = items.length > 0;
    table.hidden = items.length === 0;
    $("#delete-all").hidden = items.length === 0;
    $("#load-more").hidden = !state.historyMore;
    $("#history-count").textContent = items.length ? t("history_count", { n: num(state.historyTotal, 0) }) : "";
    const rows = items.map((e) => {
      const thumb = e.thumb ? h("img", { src: e.thumb, alt: "", width: "64", height: "64", class: "thumb" }) : h("span", { class: "thumb" });
      const name = h("a", { href: "#/history/" + e.id, class: "filename", text: e.name, "aria-label": t("open_label", { name: e.name }) });
      return h("tr", { "data-id": String(e.id) },
        h("td", { "data-label": t("col_preview") }, thumb),
        h("td", { "data-label": t("col_file") }, name, e.media_kept ? h("span", { class: "hint block", text: t("media_kept") }) : null),
        h("td", { "data-label": t("col_type"), text: t(e.kind === "video" ? "kind_video" : "kind_image") }),
        h("td", { "data-label": t("col_date"), text: date(e.created) }),
        h("td", { "data-label": t("col_verdict") }, h("span", { class: "chip " + e.verdict, text: t("chip_" + e.verdict) })),
        h("td", { "data-label": t("col_score"), class: "num", text: e.score === null ? "–" : pct(e.score) }),
        h("td", { "data-label": t("col_actions"), class: "row-actions" },
          h("a", { class: "button small", href: "#/history/" + e.id, text: t("open"), "aria-label": t("open_label", { name: e.name }) }),
          h("button", { type: "button", class: "small danger", text: t("delete"), "aria-label": t("delete_label", { name: e.name }), onclick: () => deleteEntry(e, false) })));
    });
    $("tbody", table).replaceChildren(...rows);
  }
  async function deleteEntry(e, fromEntry) {
    if (!(await confirmDialog(t("confirm_delete", { name: e.name })))) return;
    try {
      await api("/api/history/" + e.id, { method: "DELETE" });
      toast(t("deleted"));
      state.history = state.history.filter((x) => x.id !== e.id);
      state.historyTotal = Math.max(0, state.historyTotal - 1);
      renderHistory();
      if (fromEntry) location.hash = "#/history";
    } catch (err) {
      toast(explain(err));
    }
  }
  async function deleteAll() {
    if (!(await confirmDialog(t("confirm_delete_all", { n: num(state.historyTotal, 0) })))) return;
    try {
      await api("/api/history", { method: "DELETE" });
      toast(t("deleted"));
      state.history = [];
      state.historyTotal = 0;
      state.historyMore = false;
      renderHistory();
      $("[data-page=history] h1").focus();
    } catch (err) {
      toast(explain(err));
    }
  }
  async function loadEntry(id) {
    const box = $("#entry");
    const err = $("#entry-error");
    err.hidden = true;
    box.replaceChildren(h("p", { class: "hint", text: t("loading") }));
    state.entryResult = null;
    try {
      const r = await api("/api/history/" + id);
      if (!state.route || state.route.id !== id) return;
      state.entryResult = r;
      renderResult(box, r, { entry: true });
    } catch (e) {
      box.replaceChildren();
      showError(err, e, t("err_generic"));
    }
  }

  // ---------------------------------------------------------------------------------------------- model
  async function loadModel() {
    if (state.model) return renderModel(state.model);
    try {
      state.model = await api("/api/model");
      renderModel(state.model);
    } catch (e) {
      const box = h("div", { class: "panel error" });
      showError(box, e, t("model_unavailable"));
      $("#model-body").replaceChildren(box);
    }
  }
  function table(headers, rows, cls) {
    return h("div", { class: "table-wrap" }, h("table", { class: cls || "data" },
      h("thead", {}, h("tr", {}, ...headers.map((x) => h("th", { scope: "col", text: x })))),
      h("tbody", {}, ...rows.map((row) => h("tr", {}, ...row.map((c, i) => (i === 0 ? h("th", { scope: "row", text: c }) : h("td", { class: "num", text: c }))))))));
  }
  // robustness columns: [row key, header string, format]
  const ROB_COLS = [
    ["n", "col_n", (v) => num(v, 0)],
    ["roc_auc", "col_auc", (v) => num(v, 4)],
    ["delta_auc", "col_delta_auc", (v) => isoNum((v > 0 ? "+" : "") + num(v, 4))],
    ["accuracy", "col_accuracy", (v) => pct(v)],
    ["tpr", "col_tpr", (v) => pct(v)],
    ["fpr", "col_fpr", (v) => pct(v)],
    ["eer", "col_eer", (v) => pct(v)],
  ];
  /** "jpeg:50+scale:0.5" -> "JPEG quality 50 + Downscaled ×0.5" (unknown kinds as written). */
  function conditionName(cond) {
    if (cond === "clean" || cond === "none") return t("cond_clean");
    const en = (state.strings && state.strings.en) || {};
    return cond.split("+").map((step) => {
      const [kind, value] = step.split(":");
      const key = "cond_" + kind;
      if (!(key in en) || value === undefined) return step;
      const v = Number(value);
      return t(key, { v: isoNum(Number.isFinite(v) ? num(v, 3) : value) });
    }).join(" + ");
  }
  function renderModel(m) {
    const meta = m.meta || {};
    const metrics = m.metrics || {};
    const out = [];
    const dl = h("dl", { class: "meta wide" });
    const add = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(h("dt", { text: t(k) }), h("dd", { text: String(v) })); };
    add("model_name", meta.name || m.model);
    add("model_version", meta.version);
    add("model_precision", meta.precision);
    add("model_created", meta.created ? date(Date.parse(meta.created) / 1000) : null);
    add("model_license", meta.license);
    add("model_data", meta.training_data);
    add("model_input", t("model_input_value", { size: m.input_size, layout: meta.input_layout || "NHWC", order: meta.color_order || "RGB" }));
    add("model_threshold", pct(m.threshold, 2));
    if (m.uncertain_low !== undefined && m.uncertain_high !== undefined) {
      add("model_band", t("model_band_value", { lo: pct(m.uncertain_low, 2), hi: pct(m.uncertain_high, 2) }));
    }
    if (meta.temperature !== undefined) add("model_temperature", Number(meta.temperature).toFixed(3));
    add("model_detector", m.detector);
    add("model_provider", m.provider);
    out.push(dl);

    const members = Array.isArray(meta.members) ? meta.members : [];
    if (members.length) {
      const alone = metrics.member_val_auc || {};
      out.push(h("h2", { text: t("model_members") }), table(
        [t("col_member"), t("col_weight"), t("col_input"), t("col_auc_alone")],
        members.map((mm) => [mm.name, num(mm.weight), mm.input_size + " px", alone[mm.name] !== undefined ? num(alone[mm.name], 4) : "–"])));
    }
    const val = metrics.val || {};
    const precs = Object.keys(val).filter((k) => val[k] && typeof val[k] === "object" && "roc_auc" in val[k]);
    if (precs.length) {
      out.push(h("h2", { text: t("model_validation") }),
        h("p", { class: "hint", text: t("model_validation_note", { n: num(val[precs[0]].n || 0, 0) }) }),
        table([t("col_precision"), t("col_auc"), t("col_accuracy"), t("col_prec"), t("col_recall"), t("col_f1"), t("col_eer")],
          precs.map((p) => [p.toUpperCase(), num(val[p].roc_auc, 4), pct(val[p].accuracy), pct(val[p].precision), pct(val[p].recall), num(val[p].f1, 3), pct(val[p].eer)])));
    }
    const checks = (m.parity && m.parity.checks) || {};
    const agree = val.int8_vs_fp32;
    if (Object.keys(checks).length || agree) {
      const ul = h("ul", { class: "checks" });
      for (const [k, ok] of Object.entries(checks)) {
        ul.append(h("li", { class: ok ? "ok" : "bad" }, h("span", { class: "chip " + (ok ? "real" : "error"), text: t(ok ? "check_passed" : "check_failed") }), " ", t("check_" + k)));
      }
      out.push(h("h2", { text: t("model_checks") }), ul);
      if (agree) out.push(h("p", { text: t("model_agreement", { a: pct(agree.decision_agreement), d: num(agree.delta_auc, 4) }) }));
    }
    const rob = metrics.robustness;
    if (rob && typeof rob === "object") {
      // deepguard.evaluation.perturb.robustness_rows: a list of {condition, n, roc_auc, ...}; older files: {name: row}
      const rows = (Array.isArray(rob) ? rob.map((v) => [v && v.condition, v]) : Object.entries(rob))
        .filter(([k, v]) => k !== undefined && k !== null && v && typeof v === "object");
      const cols = ROB_COLS.filter(([k]) => rows.some(([, v]) => typeof v[k] === "number"));
      if (rows.length && cols.length) {
        out.push(h("h3", { text: t("model_robustness") }),
          table([t("col_condition"), ...cols.map(([, label]) => t(label))],
            rows.map(([k, v]) => [conditionName(String(k)), ...cols.map(([c, , fmt]) => (typeof v[c] === "number" ? fmt(v[c]) : "–"))])));
      }
    }
    if (metrics.latency && typeof metrics.latency === "object") {
      out.push(h("h2", { text: t("model_speed") }),
        h("ul", {}, ...Object.entries(metrics.latency).map(([k, v]) => h("li", {}, h("span", { dir: "ltr", text: `${k}: ${v}` })))));
    }
    out.push(h("h2", { text: t("model_limits_title") }),
      h("ul", {}, ...["model_limit1", "model_limit2", "model_limit3", "model_limit4"].map((k) => h("li", { text: t(k) }))));
    const lim = (state.config && state.config.limits) || null;
    if (lim) {
      out.push(h("h2", { text: t("model_server_limits") }), h("ul", {},
        h("li", { text: t("limit_image", { v: bytes(lim.image_bytes) }) }),
        h("li", { text: t("limit_video", { v: bytes(lim.video_bytes) }) }),
        h("li", { text: t("limit_seconds", { v: seconds(lim.video_seconds) }) })));
    }
    $("#model-body").replaceChildren(...out);
  }

  // ---------------------------------------------------------------------------------------------- FAQ
  function renderFaq() {
    const box = $("#faq-list");
    const open = new Set($$("details[open]", box).map((d) => d.dataset.q));
    const vars = fmtVars();
    box.replaceChildren(...[1, 2, 10, 11, 3, 4, 5, 6, 7, 8, 9].map((n) =>
      h("details", { "data-q": String(n), open: open.has(String(n)) || (!box.childElementCount && n === 1) || null },
        h("summary", { text: t("faq_q" + n) }), h("p", { text: t("faq_a" + n, vars) }))));
  }

  // ---------------------------------------------------------------------------------------------- samples
  async function runSample(name) {
    try {
      const resp = await fetch("/assets/samples/" + encodeURIComponent(name));
      if (!resp.ok) throw new ApiError(resp.status, "not_found", name);
      const blob = await resp.blob();
      const file = new File([blob], name, { type: blob.type || (name.endsWith(".mp4") ? "video/mp4" : "image/jpeg") });
      location.hash = "#/analyze";
      selectFile(file);
      if (state.file) startAnalysis();
    } catch (e) {
      toast(explain(e));
    }
  }

  // ---------------------------------------------------------------------------------------------- start
  function wire() {
    $("#lang-toggle").addEventListener("click", () => setLang(lang() === "ar" ? "en" : "ar"));
    $("#theme-toggle").addEventListener("click", () => setTheme(root.dataset.theme === "dark" ? "light" : "dark"));
    const input = $("#file-input");
    $("#pick").addEventListener("click", () => input.click());
    input.addEventListener("change", () => { if (input.files && input.files[0]) selectFile(input.files[0]); input.value = ""; });
    const drop = $("#drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (f) selectFile(f);
    });
    $("#analyze-btn").addEventListener("click", startAnalysis);
    $("#other-btn").addEventListener("click", () => { state.file = null; resetAnalyze(); input.click(); });
    $("#cancel-btn").addEventListener("click", cancelAnalysis);
    $("#delete-all").addEventListener("click", deleteAll);
    $("#load-more").addEventListener("click", () => loadHistory(true));
    for (const b of $$("[data-sample]")) b.addEventListener("click", () => runSample(b.dataset.sample));
    window.addEventListener("hashchange", () => route(true));
  }

  async function start() {
    wire();
    try {
      const resp = await fetch("/assets/strings.json", { credentials: "same-origin" });
      state.strings = await resp.json();
    } catch (e) {
      state.strings = { en: {}, ar: {} };
    }
    applyStrings();
    route(false);
    root.classList.remove("booting");
    try {
      state.config = await api("/api/config");
    } catch (e) { /* the page still works; limits are checked by the server */ }
    applyStrings();
    root.classList.add("ready");
    if ("serviceWorker" in navigator && window.isSecureContext) {
      navigator.serviceWorker.register("/sw.js").catch(() => { /* offline cache is optional */ });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
