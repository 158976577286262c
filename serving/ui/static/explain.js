// Explanation pages: heatmap toggle / opacity, and agree / disagree feedback.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const heat = $("cxr-heatmap");
  const toggle = $("heatmap-toggle");
  const range = $("heatmap-opacity");
  function apply() {
    if (!heat) return;
    const value = Number(range.value) / 100;
    heat.style.opacity = toggle.checked ? String(value) : "0";
    $("heatmap-opacity-value").textContent = `${range.value}%`;
    range.disabled = !toggle.checked;
  }
  if (heat && toggle && range) { toggle.addEventListener("change", apply); range.addEventListener("input", apply); apply(); }

  const form = $("feedback");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = $("fb-status");
    const choice = form.querySelector("input[name=agree]:checked");
    const reason = $("fb-reason").value.trim();
    if (!choice) return;
    const agree = choice.value === "yes";
    if (!agree && !reason) { status.textContent = form.dataset.needReason; $("fb-reason").focus(); return; }
    const r = await fetch("/ui/api/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ card: form.dataset.card, kind: form.dataset.kind, exp: form.dataset.exp, sig: form.dataset.sig, agree, reason }),
    });
    if (r.ok) {
      status.textContent = form.dataset.thanks;
      for (const el of form.querySelectorAll("input, textarea, button")) el.disabled = true;
    } else {
      let error = String(r.status);
      try { error = (await r.json()).error || error; } catch (e) { /* keep status */ }
      status.textContent = form.dataset.failed.replace("{error}", error);
    }
  });
})();
