// The model card page: render the card's Markdown with the safe renderer.
"use strict";
(function () {
  const source = document.getElementById("card-source");
  const target = document.getElementById("card-text");
  if (!source || !target) return;
  const text = JSON.parse(source.textContent);
  if (text) target.appendChild(window.TonleMarkdown.render(text));
})();
