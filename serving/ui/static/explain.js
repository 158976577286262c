// Explanation pages: agree / disagree feedback (the X-ray reader is reader.js).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
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
