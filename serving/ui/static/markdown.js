// A small, safe Markdown renderer for CDS Hooks card details (GitHub-flavoured subset:
// paragraphs, **bold**, *italic* / _italic_, `code`, [links](https://...), lists, tables,
// headings). It builds DOM nodes with textContent only, so card text can never inject
// HTML or script; links are kept only for http(s) URLs.
"use strict";
(function (global) {
  function inline(parent, text) {
    // A backslash before ASCII punctuation is that character, literally (GFM escapes).
    const pattern = /(\\[!-\/:-@\[-`{-~]|\*\*[^*]+\*\*|\*[^*\s][^*]*\*|_[^_\s][^_]*_|`[^`]+`|\[[^\]]+\]\([^)\s]+\))/;
    let rest = text;
    while (rest.length) {
      const m = pattern.exec(rest);
      if (!m) { parent.appendChild(document.createTextNode(rest)); break; }
      if (m.index > 0) parent.appendChild(document.createTextNode(rest.slice(0, m.index)));
      const tok = m[0];
      let node;
      if (tok.startsWith("\\")) { node = document.createTextNode(tok.slice(1)); }
      else if (tok.startsWith("**")) { node = document.createElement("strong"); inline(node, tok.slice(2, -2)); }
      else if (tok.startsWith("`")) { node = document.createElement("code"); node.textContent = tok.slice(1, -1); }
      else if (tok.startsWith("[")) {
        const label = tok.slice(1, tok.indexOf("]("));
        const url = tok.slice(tok.indexOf("](") + 2, -1);
        if (/^https?:\/\//i.test(url)) {
          node = document.createElement("a"); node.href = url; node.rel = "noopener noreferrer"; node.target = "_blank";
          inline(node, label);
        } else { node = document.createTextNode(label); }
      } else { node = document.createElement("em"); inline(node, tok.slice(1, -1)); }
      parent.appendChild(node);
      rest = rest.slice(m.index + tok.length);
    }
  }

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
  }

  function render(markdown) {
    const root = document.createElement("div");
    root.className = "md";
    const blocks = String(markdown || "").replace(/\r\n/g, "\n").split(/\n\s*\n/);
    for (const block of blocks) {
      const lines = block.split("\n").filter((l) => l.trim().length);
      if (!lines.length) continue;
      if (lines.every((l) => l.trim().startsWith("|"))) {
        const table = document.createElement("table");
        table.className = "data";
        const rows = lines.filter((l) => !/^\s*\|?\s*:?-{2,}/.test(l));
        rows.forEach((line, i) => {
          const tr = document.createElement("tr");
          for (const c of cells(line)) {
            const cell = document.createElement(i === 0 ? "th" : "td");
            if (i === 0) cell.scope = "col";
            inline(cell, c);
            tr.appendChild(cell);
          }
          if (i === 0) { const th = document.createElement("thead"); th.appendChild(tr); table.appendChild(th); }
          else { let tb = table.tBodies[0]; if (!tb) { tb = document.createElement("tbody"); table.appendChild(tb); } tb.appendChild(tr); }
        });
        root.appendChild(table);
      } else if (lines.every((l) => /^\s*([-*]|\d+\.)\s+/.test(l))) {
        const ordered = /^\s*\d+\./.test(lines[0]);
        const list = document.createElement(ordered ? "ol" : "ul");
        for (const l of lines) {
          const li = document.createElement("li");
          inline(li, l.replace(/^\s*([-*]|\d+\.)\s+/, ""));
          list.appendChild(li);
        }
        root.appendChild(list);
      } else if (/^#{1,6}\s/.test(lines[0]) && lines.length === 1) {
        const h = document.createElement("h4");
        inline(h, lines[0].replace(/^#+\s*/, ""));
        root.appendChild(h);
      } else {
        const p = document.createElement("p");
        lines.forEach((l, i) => { if (i) p.appendChild(document.createElement("br")); inline(p, l); });
        root.appendChild(p);
      }
    }
    return root;
  }

  global.TonleMarkdown = { render: render };
})(window);
