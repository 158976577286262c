// A small, safe Markdown renderer for CDS Hooks card details and model cards (GitHub-
// flavoured subset: paragraphs, **bold**, *italic* / _italic_ (never inside a word, so
// "A05GBDR_014_SEA" stays as written), `code`, [links](https://...), ![figures](name.png),
// lists, tables, headings). It builds DOM nodes with textContent only, so card text can
// never inject HTML or script; links are kept only for http(s) URLs, figures only as plain
// file names under options.imageBase (elsewhere their caption is shown as text).
"use strict";
(function (global) {
  const FIGURE = /^[A-Za-z0-9][A-Za-z0-9_-]*\.png$/;

  function inline(parent, text, options) {
    // A backslash before ASCII punctuation is that character, literally (GFM escapes).
    // Underscore emphasis needs a non-word character (or the text's edge) on both sides.
    const pattern = /(\\[!-\/:-@\[-`{-~]|\*\*[^*]+\*\*|\*[^*\s][^*]*\*|(?<![\p{L}\p{N}_])_[^_\s][^_]*_(?![\p{L}\p{N}_])|`[^`]+`|!?\[[^\]]+\]\([^)\s]+\))/u;
    let rest = text;
    while (rest.length) {
      const m = pattern.exec(rest);
      if (!m) { parent.appendChild(document.createTextNode(rest)); break; }
      if (m.index > 0) parent.appendChild(document.createTextNode(rest.slice(0, m.index)));
      const tok = m[0];
      let node;
      if (tok.startsWith("\\")) { node = document.createTextNode(tok.slice(1)); }
      else if (tok.startsWith("**")) { node = document.createElement("strong"); inline(node, tok.slice(2, -2), options); }
      else if (tok.startsWith("`")) { node = document.createElement("code"); node.textContent = tok.slice(1, -1); }
      else if (tok.startsWith("![")) {
        const alt = tok.slice(2, tok.indexOf("]("));
        const src = tok.slice(tok.indexOf("](") + 2, -1);
        if (options && options.imageBase && FIGURE.test(src)) {
          const img = document.createElement("img"); img.alt = alt; img.loading = "lazy";
          // A figure the server refuses (missing, a link) is named, not shown broken.
          img.addEventListener("error", () => { const span = document.createElement("span"); span.className = "small"; span.textContent = `[${alt}]`; img.replaceWith(span); });
          img.src = options.imageBase + src;
          node = img;
        } else { node = document.createElement("span"); node.textContent = alt; }
      } else if (tok.startsWith("[")) {
        const label = tok.slice(1, tok.indexOf("]("));
        const url = tok.slice(tok.indexOf("](") + 2, -1);
        if (/^https?:\/\//i.test(url)) {
          node = document.createElement("a"); node.href = url; node.rel = "noopener noreferrer"; node.target = "_blank";
          inline(node, label, options);
        } else { node = document.createTextNode(label); }
      } else { node = document.createElement("em"); inline(node, tok.slice(1, -1), options); }
      parent.appendChild(node);
      rest = rest.slice(m.index + tok.length);
    }
  }

  // A wide table scrolls inside its own box (reachable by keyboard), never the page.
  function scroller(table) {
    const wrap = document.createElement("div"); wrap.className = "table-scroll"; wrap.tabIndex = 0;
    wrap.setAttribute("role", "region");
    wrap.setAttribute("aria-label", (table.tHead && table.tHead.textContent.trim().slice(0, 60)) || "table");
    wrap.appendChild(table);
    return wrap;
  }

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
  }

  // options: imageBase (URL prefix of the figures), headingLevel (the level of "#",
  // default 4), headings (known heading text -> the text to show), collapseTables (a summary text: each table is folded away behind it, or
  // behind the bold line just before it).
  function render(markdown, options) {
    options = options || {};
    const base = options.headingLevel || 4;
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
            inline(cell, c, options);
            tr.appendChild(cell);
          }
          if (i === 0) { const th = document.createElement("thead"); th.appendChild(tr); table.appendChild(th); }
          else { let tb = table.tBodies[0]; if (!tb) { tb = document.createElement("tbody"); table.appendChild(tb); } tb.appendChild(tr); }
        });
        if (options.collapseTables) {
          // A bold line just before the table is its title: it becomes the summary.
          const prev = root.lastElementChild;
          const title = prev && prev.tagName === "P" && prev.childNodes.length === 1 && prev.firstChild.tagName === "STRONG" ? prev : null;
          const details = document.createElement("details"); details.className = "data-used";
          const summary = document.createElement("summary");
          summary.textContent = title ? title.textContent : options.collapseTables;
          if (title) title.remove();
          const wrap = scroller(table);
          details.append(summary, wrap);
          root.appendChild(details);
        } else {
          const wrap = scroller(table);
          root.appendChild(wrap);
        }
      } else if (lines.every((l) => /^\s*([-*]|\d+\.)\s+/.test(l))) {
        const ordered = /^\s*\d+\./.test(lines[0]);
        const list = document.createElement(ordered ? "ol" : "ul");
        for (const l of lines) {
          const li = document.createElement("li");
          inline(li, l.replace(/^\s*([-*]|\d+\.)\s+/, ""), options);
          list.appendChild(li);
        }
        root.appendChild(list);
      } else if (/^#{1,6}\s/.test(lines[0]) && lines.length === 1) {
        const level = Math.min(6, base + lines[0].match(/^#+/)[0].length - 1);
        const h = document.createElement(`h${level}`);
        const text = lines[0].replace(/^#+\s*/, "").trim();
        // A known section heading in the page's language (options.headings: text -> text).
        const known = options.headings && Object.prototype.hasOwnProperty.call(options.headings, text);
        if (known) h.textContent = options.headings[text]; else inline(h, text, options);
        root.appendChild(h);
      } else {
        const p = document.createElement("p");
        lines.forEach((l, i) => { if (i) p.appendChild(document.createElement("br")); inline(p, l, options); });
        root.appendChild(p);
      }
    }
    return root;
  }

  global.TonleMarkdown = { render: render };
})(window);
