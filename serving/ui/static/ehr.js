// The demo EHR: behaves like an EHR's CDS Hooks client, against Tonle's public API.
// discovery -> prefetch (from the demo FHIR data) -> JWT from the demo issuer ->
// POST /cds-services/{id} -> render cards -> accept / override -> POST feedback.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const S = boot.strings;
  const $ = (id) => document.getElementById(id);
  const fmt = (key, params) => String(S[key] || key).replace(/\{(\w+)\}/g, (_, k) => (params && k in params ? params[k] : ""));
  let services = null;
  let exchanges = [];

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // A fresh token per call: the JWT's aud is the exact endpoint URL, its jti single-use.
  async function token(path) {
    const aud = `${boot.publicUrl.replace(/\/$/, "")}${path}`;
    const r = await fetch("/ui/api/demo/token", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ aud }),
    });
    if (r.status === 404) return null; // no demo issuer: a dev-mode service takes no token
    if (!r.ok) throw new Error(`token ${r.status}`);
    return (await r.json()).access_token;
  }

  function redact(headers) {
    const out = Object.assign({}, headers);
    if (out.Authorization) out.Authorization = out.Authorization.slice(0, 19) + "…";
    return out;
  }

  function showRaw() {
    $("raw-request").textContent = exchanges.map((x) => `${x.method} ${x.url}\n${JSON.stringify(redact(x.headers), null, 2)}${x.body === undefined ? "" : "\n" + JSON.stringify(x.body, null, 2)}`).join("\n\n");
    $("raw-response").textContent = exchanges.map((x) => `${x.url} -> ${x.status}\n${JSON.stringify(x.response, null, 2)}`).join("\n\n");
  }

  async function call(method, url, body) {
    const headers = { "Content-Type": "application/json", "Accept-Language": boot.lang };
    const jwt = url.startsWith("/cds-services") ? await token(url) : null;
    if (jwt) headers.Authorization = `Bearer ${jwt}`;
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let response = null;
    try { response = await r.json(); } catch (e) { response = null; }
    exchanges.push({ method, url, headers, body, status: r.status, response });
    showRaw();
    return { status: r.status, body: response };
  }

  async function discovery() {
    if (services) return services;
    const r = await call("GET", "/cds-services");
    if (r.status !== 200) throw new Error(`discovery ${r.status}`);
    services = (r.body.services || []).filter((s) => s.hook === "patient-view");
    return services;
  }

  function renderChart(p) {
    $("chart-empty").hidden = true;
    $("chart-body").hidden = false;
    $("chart-name").textContent = p.name;
    $("chart-age").textContent = p.age_sex;
    $("chart-born").textContent = p.born;
    $("chart-site").textContent = p.site;
    $("chart-note").textContent = p.note;
    const body = $("chart-obs");
    body.textContent = "";
    for (const o of p.observations) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.scope = "row"; th.textContent = o.label; tr.appendChild(th);
      for (const v of [o.value, o.date]) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
      body.appendChild(tr);
    }
    $("chart-conditions").textContent = p.conditions.length ? p.conditions.join(", ") : S["ui.ehr.none"];
    $("chart-imaging").hidden = !p.xray;
    $("xray-status").textContent = "";
    $("send-xray").disabled = false;
  }

  async function sendFeedback(service, card, item, statusEl, okKey) {
    item.card = card.uuid;
    item.outcomeTimestamp = new Date().toISOString();
    const r = await call("POST", `/cds-services/${service.id}/feedback`, { feedback: [item] });
    statusEl.textContent = r.status === 200 ? S[okKey] : fmt("ui.card.feedback_failed", { error: r.status });
    return r.status === 200;
  }

  // The page's footer carries the advisory statement once; a card repeating it word for
  // word (as cards for other EHRs must) is shown without that line here.
  const advisory = (document.getElementById("advisory") || {}).textContent || "";
  function withoutAdvisory(detail) {
    const line = advisory.trim();
    if (!line) return detail;
    return detail.split(/\n\s*\n/).filter((block) => block.trim().replace(/^_(.*)_$/s, "$1").trim() !== line).join("\n\n");
  }

  function renderCard(service, card) {
    const el = document.createElement("article");
    el.className = `card card-${card.indicator}`;
    el.dataset.card = card.uuid;
    el.setAttribute("aria-label", card.summary);
    const head = document.createElement("header");
    const badge = document.createElement("span");
    badge.className = `indicator indicator-${card.indicator}`;
    badge.textContent = S[`ui.card.indicator.${card.indicator}`] || card.indicator;
    const h = document.createElement("h3"); h.className = "summary"; h.textContent = card.summary;
    head.append(badge, h);
    el.appendChild(head);
    if (card.detail) el.appendChild(window.TonleMarkdown.render(withoutAdvisory(card.detail), { collapseTables: S["ui.card.data_used"] }));
    const src = document.createElement("p"); src.className = "small source";
    src.textContent = `${S["ui.card.source"]}: `;
    if (card.source && card.source.url && /^https?:/.test(card.source.url)) {
      const a = document.createElement("a"); a.href = card.source.url; a.target = "_blank"; a.rel = "noopener"; a.textContent = card.source.label; src.appendChild(a);
    } else { src.appendChild(document.createTextNode(card.source ? card.source.label : "")); }
    el.appendChild(src);
    for (const link of card.links || []) {
      if (!/^https?:/.test(link.url)) continue;
      const a = document.createElement("a");
      a.className = "card-link"; a.href = link.url; a.target = "_blank"; a.rel = "noopener"; a.textContent = link.label;
      el.appendChild(a);
    }
    const status = document.createElement("p"); status.className = "feedback-status"; status.setAttribute("role", "status");
    const actions = document.createElement("div"); actions.className = "card-actions";
    const accept = document.createElement("button"); accept.type = "button"; accept.className = "accept";
    const suggestion = (card.suggestions || [])[0];
    accept.textContent = suggestion ? `${S["ui.card.accept"]}: ${suggestion.label}` : S["ui.card.accept"];
    accept.addEventListener("click", async () => {
      const ok = await sendFeedback(service, card, { outcome: "accepted", acceptedSuggestions: suggestion ? [{ id: suggestion.uuid }] : [] }, status, "ui.card.accepted");
      if (ok) { accept.disabled = true; overrideBtn.disabled = true; }
    });
    const overrideBtn = document.createElement("button"); overrideBtn.type = "button"; overrideBtn.className = "override";
    overrideBtn.textContent = S["ui.card.override"];
    overrideBtn.setAttribute("aria-expanded", "false");
    const form = document.createElement("form"); form.className = "override-form"; form.hidden = true;
    const selId = `reason-${card.uuid}`;
    const label = document.createElement("label"); label.htmlFor = selId; label.textContent = S["ui.card.override_reason"];
    const select = document.createElement("select"); select.id = selId; select.required = true;
    // No reason is chosen for the clinician: the first entry asks for one.
    const none = document.createElement("option"); none.value = ""; none.textContent = S["ui.card.choose_reason"]; none.selected = true; none.disabled = true;
    select.appendChild(none);
    for (const reason of card.overrideReasons || []) {
      const o = document.createElement("option"); o.value = reason.code; o.textContent = reason.display; o.dataset.system = reason.system; select.appendChild(o);
    }
    const comment = document.createElement("input"); comment.type = "text"; comment.maxLength = 2000; comment.id = `comment-${card.uuid}`;
    const commentLabel = document.createElement("label"); commentLabel.htmlFor = comment.id; commentLabel.textContent = S["ui.card.override_comment"];
    const send = document.createElement("button"); send.type = "submit"; send.textContent = S["ui.card.send_override"];
    form.append(label, select, commentLabel, comment, send);
    function showForm(show) {
      form.hidden = !show; overrideBtn.setAttribute("aria-expanded", String(show));
      if (show) select.focus();
    }
    overrideBtn.addEventListener("click", () => showForm(form.hidden));
    // Escape closes the form and gives focus back to the button that opened it.
    form.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.preventDefault(); showForm(false); overrideBtn.focus(); }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const opt = select.selectedOptions[0];
      const item = { outcome: "overridden", overrideReason: { reason: opt ? { system: opt.dataset.system, code: opt.value, display: opt.textContent } : undefined, userComment: comment.value || undefined } };
      const ok = await sendFeedback(service, card, item, status, "ui.card.overridden");
      if (ok) { accept.disabled = true; overrideBtn.disabled = true; send.disabled = true; }
    });
    actions.append(accept, overrideBtn);
    // A card with nothing to accept and no reasons to override (the no-advice info card)
    // is read, not acted on: no feedback buttons.
    if (suggestion || (card.overrideReasons || []).length) el.append(actions, form, status);
    return el;
  }

  const RANK = { critical: 0, warning: 1, info: 2 };
  function tbReferral(card) {
    return (card.suggestions || []).some((s) => (s.actions || []).some((a) =>
      a.resource && a.resource.resourceType === "ServiceRequest" &&
      ((a.resource.code || {}).coding || []).some((c) => c.code === "tb-rapid-test")));
  }

  async function fire(patientId) {
    const container = $("cards");
    container.textContent = "";
    exchanges = [];
    $("cds-status").textContent = S["ui.ehr.waiting"];
    try {
      const list = await discovery();
      let count = 0;
      const shown = [];
      for (const service of list) {
        const pf = await fetch("/ui/api/demo/prefetch", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ patientId, templates: service.prefetch || {} }),
        });
        const prefetch = (await pf.json()).prefetch;
        const request = {
          hook: "patient-view", hookInstance: uuid(),
          context: { userId: "Practitioner/demo-clinician", patientId },
          prefetch,
        };
        const r = await call("POST", `/cds-services/${service.id}`, request);
        for (const card of (r.body && r.body.cards) || []) shown.push([service, card]);
      }
      // Most urgent first (critical, warning, info); a TB referral first within one.
      shown.sort((a, b) => (RANK[a[1].indicator] - RANK[b[1].indicator]) || (tbReferral(b[1]) - tbReferral(a[1])));
      for (const [service, card] of shown) { container.appendChild(renderCard(service, card)); count += 1; }
      $("cds-status").textContent = count ? "" : S["ui.ehr.no_cards"];
      // On a phone or tablet the cards sit below the chart: bring them into view.
      if (window.matchMedia("(max-width: 1024px)").matches) $("cards-title").scrollIntoView({ block: "start" });
    } catch (e) {
      $("cds-status").textContent = fmt("ui.ehr.error", { error: e.message });
    }
  }

  let current = null;
  for (const btn of document.querySelectorAll("button.patient")) {
    btn.addEventListener("click", () => {
      for (const b of document.querySelectorAll("button.patient")) b.setAttribute("aria-pressed", String(b === btn));
      current = boot.patients.find((p) => p.id === btn.dataset.patient);
      renderChart(current);
      fire(current.id);
    });
  }
  $("fire").addEventListener("click", () => { if (current) fire(current.id); });
  // The demo PACS: the X-ray reaches Tonle, is analysed and stored; the next
  // patient-view then gets the cxr-triage card, as after a real study arrives.
  $("send-xray").addEventListener("click", async () => {
    if (!current) return;
    const patient = current.id;
    $("send-xray").disabled = true;
    $("xray-status").textContent = S["ui.ehr.waiting"];
    const r = await fetch("/ui/api/demo/xray", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ patientId: patient }),
    });
    if (!r.ok) {
      let error = String(r.status);
      try { error = (await r.json()).error || error; } catch (e) { /* keep status */ }
      $("xray-status").textContent = fmt("ui.ehr.xray_failed", { error });
      $("send-xray").disabled = false;
      return;
    }
    $("xray-status").textContent = S["ui.ehr.xray_sent"];
    if (current && current.id === patient) await fire(patient);
  });
})();
