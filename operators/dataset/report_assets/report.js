// The dataset viewer: overview from data/summary.js, videos one page at a time from
// data/page-NNNN.js, loaded by <script> on demand (fetch is refused on file:// pages).
(function () {
  "use strict";
  var S = window.SG4V;
  var pageCount = S.pageCount;
  var current = -1;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent, child) { parent.appendChild(child); return child; }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function money(x) { return "$" + (x || 0).toFixed(x >= 100 ? 2 : 4); }
  function secs(t) { return t === null || t === undefined ? "?" : t.toFixed(2) + " s"; }
  function src(path) {
    // Packed keyframes come as data: thumbnails; plain files are read from the output itself.
    if (path.indexOf("data:") === 0) return path;
    return S.root + "/" + path.split("/").map(encodeURIComponent).join("/");
  }

  function renderOverview() {
    var u = S.usage;
    document.getElementById("where").textContent = S.output + " \u00b7 generated " + S.generated;
    var avg = S.kept ? S.keyframesTotal / S.kept : 0;
    var cards = [
      ["Kept videos", num(S.kept), num(S.captioned) + " with API captions"],
      ["Rejected", num(S.rejected), num(S.duplicatesTotal) + (S.duplicatesTotal === 1 ? " duplicate" : " duplicates")],
      ["Keyframes", num(S.keyframesTotal), avg.toFixed(1) + " per video"],
      ["Tokens", num(u.input_tokens + u.output_tokens),
       num(u.input_tokens) + " in \u00b7 " + num(u.output_tokens) + " out"],
      ["API calls", num(u.calls), num(u.cached_calls) + " from the cache"],
      ["Cost", money(u.cost_usd), money(S.captioned ? u.cost_usd / S.captioned : 0) + " per captioned video"],
    ];
    if (S.lastRun.wall_seconds !== undefined) {
      cards.push(["Last run", S.lastRun.wall_seconds.toFixed(1) + " s",
                  num(S.lastRun.inputs) + " inputs processed"]);
    }
    var box = document.getElementById("cards");
    cards.forEach(function (c) {
      var card = add(box, el("div", "card"));
      add(card, el("div", "card-label", c[0]));
      add(card, el("div", "card-value", c[1]));
      add(card, el("div", "card-note", c[2]));
    });
    var reasons = document.getElementById("reasons");
    row(reasons, ["Stage", "Reason", "Videos"], "th");
    S.byReason.forEach(function (r) { row(reasons, r); });
    if (!S.byReason.length) row(reasons, ["\u2014", "nothing rejected", 0]);
    renderHistogram();
    var dups = document.getElementById("duplicate-table");
    row(dups, ["Duplicate", "Its file", "Nearest kept video", "Similarity"], "th");
    S.duplicates.forEach(function (d) {
      var tr = row(dups, [d.id, d.uri, "", d.similarity === null ? "?" : d.similarity.toFixed(3)]);
      if (d.nearest) tr.children[2].appendChild(videoLink(d.nearest));
    });
    if (S.duplicatesTotal > S.duplicates.length) {
      row(dups, ["\u2026 and " + num(S.duplicatesTotal - S.duplicates.length) + " more", "", "", ""]);
    }
    if (S.duplicatesTotal && S.duplicatesTotal <= 10) document.getElementById("duplicates").open = true;
    document.querySelector("#duplicates summary h2").textContent =
      "Duplicates and their nearest kept video (" + num(S.duplicatesTotal) + ")";
  }

  function row(table, cells, tag) {
    var tr = add(table, el("tr"));
    cells.forEach(function (c) { add(tr, el(tag || "td", null, c)); });
    return tr;
  }

  function renderHistogram() {
    var box = document.getElementById("histogram");
    var max = Math.max.apply(null, S.keyframesHist.map(function (h) { return h[1]; }).concat([1]));
    S.keyframesHist.forEach(function (h) {
      var col = add(box, el("div", "bar-col"));
      col.title = h[1] + " videos with " + h[0] + " keyframes";
      add(col, el("div", "bar-count", h[1]));
      add(col, el("div", "bar")).style.height = Math.max(2, 100 * h[1] / max) + "px";
      add(col, el("div", "bar-label", h[0]));
    });
    if (!S.keyframesHist.length) add(box, el("p", "muted", "No kept videos yet."));
  }

  function videoLink(id) {
    var a = el("a", null, id);
    a.href = "#video=" + encodeURIComponent(id);
    return a;
  }

  function renderVideo(v) {
    var card = el("article", "video");
    card.id = "video-" + v.id;
    var head = add(card, el("header", "video-head"));
    add(head, el("h3", "video-id", v.id));
    var meta = [v.source, "duration " + secs(v.duration), v.keyframes.length + " keyframes"];
    if (v.clip) meta.push("clip " + secs(v.clip[0]) + " \u2013 " + secs(v.clip[1]));
    add(head, el("span", "muted", meta.join(" \u00b7 ")));
    var u = v.usage;
    add(head, el("span", "cost", u ? money(u.cost_usd) + " \u00b7 " + u.calls + " calls \u00b7 " +
      num(u.input_tokens) + " in / " + num(u.output_tokens) + " out tokens" : "no API cost yet"));
    add(card, el("div", "uri", v.uri));
    var short = add(card, el("p", "short"));
    add(short, el("span", "label", "Short caption"));
    add(short, el("span", null, v.short || "\u2014"));
    card.appendChild(renderTimeline(v));
    var summary = add(card, el("div", "summary"));
    add(summary, el("span", "label", "Summary"));
    add(summary, el("p", v.summary ? null : "muted", v.summary || "No API captions yet."));
    return card;
  }

  function renderTimeline(v) {
    var box = el("div", "timeline");
    var end = Math.max(v.duration || 0, v.keyframes.length ? v.keyframes[v.keyframes.length - 1].t : 0) || 1;
    var axis = add(box, el("div", "axis"));
    add(axis, el("span", "axis-end axis-start", "0 s"));
    add(axis, el("span", "axis-end", secs(end)));
    var strip = add(box, el("ol", "frames"));
    v.keyframes.forEach(function (k, i) {
      var mark = add(axis, el("span", "mark", i));
      mark.style.left = (100 * k.t / end) + "%";
      mark.title = "keyframe " + i + " at " + secs(k.t);
      var li = add(strip, el("li", "frame"));
      if (k.src) {
        var img = add(li, el("img"));
        img.loading = "lazy";
        img.alt = "keyframe " + i + " of " + v.id;
        img.src = src(k.src);
      }
      var ts = add(li, el("div", "ts"));
      add(ts, el("b", null, "#" + i + " \u00b7 " + secs(k.t)));
      if (k.kind) add(ts, el("span", "kind", k.kind));
      add(li, el("p", k.text ? "caption" : "caption muted", k.text || "no caption yet"));
    });
    return box;
  }

  function loadScript(name, ready, then) {
    if (ready()) return then();
    var script = document.createElement("script");
    script.src = "data/" + name;
    script.onload = then;
    script.onerror = function () {
      document.getElementById("videos").textContent = "Could not load " + script.src;
    };
    document.head.appendChild(script);
  }

  function loadPage(n, then) {
    loadScript("page-" + String(n).padStart(4, "0") + ".js",
               function () { return SG4V_PAGES[n]; }, function () { then(SG4V_PAGES[n]); });
  }

  function showPage(n, focusId) {
    if (!pageCount) {
      document.getElementById("page-label").textContent = "No kept videos";
      return;
    }
    n = Math.max(0, Math.min(pageCount - 1, n));
    loadPage(n, function (videos) {
      var turned = current >= 0 && n !== current;
      if (n !== current) {
        var box = document.getElementById("videos");
        box.textContent = "";
        videos.forEach(function (v) { box.appendChild(renderVideo(v)); });
        current = n;
      }
      var first = n * S.pageSize + 1;
      document.getElementById("page-label").textContent = "Page " + (n + 1) + " of " + pageCount +
        " \u00b7 videos " + first + "\u2013" + (first + videos.length - 1) + " of " + num(S.kept);
      document.getElementById("prev").disabled = n === 0;
      document.getElementById("next").disabled = n === pageCount - 1;
      document.querySelectorAll(".focus").forEach(function (x) { x.classList.remove("focus"); });
      var target = focusId && document.getElementById("video-" + focusId);
      if (target) {
        target.classList.add("focus");
        target.scrollIntoView();
      } else if (turned) {
        document.getElementById("pager").scrollIntoView();
      }
    });
  }

  // Which page holds a video: the id lists come in groups of S.idsPages pages, loaded one
  // group at a time until the id is found, so a large report never loads every id at once.
  function findPage(id, then, group) {
    group = group || 0;
    if (group * S.idsPages >= pageCount) return then(-1);
    loadScript("ids-" + String(group).padStart(4, "0") + ".js",
      function () { return SG4V_IDS[group]; },
      function () {
        var pages = SG4V_IDS[group];
        for (var i = 0; i < pages.length; i++) {
          if (pages[i].indexOf(id) >= 0) return then(group * S.idsPages + i);
        }
        findPage(id, then, group + 1);
      });
  }

  function route() {
    var hash = decodeURIComponent(location.hash.slice(1));
    if (hash.indexOf("video=") === 0) {
      var id = hash.slice(6);
      return findPage(id, function (n) {
        if (n >= 0) return showPage(n, id);
        document.getElementById("page-label").textContent = "No kept video " + id;
      });
    }
    var m = /^page=(\d+)$/.exec(hash);
    showPage(m ? parseInt(m[1], 10) - 1 : 0);
  }

  document.getElementById("prev").onclick = function () { location.hash = "page=" + current; };
  document.getElementById("next").onclick = function () { location.hash = "page=" + (current + 2); };
  document.getElementById("find").onsubmit = function (e) {
    e.preventDefault();
    location.hash = "video=" + encodeURIComponent(document.getElementById("find-id").value.trim());
  };
  window.addEventListener("hashchange", route);
  renderOverview();
  route();
})();
