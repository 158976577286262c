// The model card page: render the card's Markdown with the safe renderer.
"use strict";
(function () {
  const source = document.getElementById("card-source");
  const target = document.getElementById("card-text");
  if (!source || !target) return;
  const text = JSON.parse(source.textContent);
  // Figures come from the card's own directory; "#" headings continue the page's h2.
  if (text) target.appendChild(window.TonleMarkdown.render(text, { imageBase: target.dataset.figures, headingLevel: 2, headings: JSON.parse(document.getElementById("card-headings").textContent) }));
})();
