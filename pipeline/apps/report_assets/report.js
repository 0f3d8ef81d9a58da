/* avel report: draws the index, the players and their timelines from the data embedded in
   the page (#avel-data: the localization or CML JSON, see pipeline/apps/report.py). Inlined into
   the page at build time. It computes nothing the data does not say: times become pixels,
   numbers become text, and that is all. */
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const PAD_LEFT = 52;      // room for the y-axis labels and row names
  const PAD_RIGHT = 14;
  const AXIS_HEIGHT = 24;
  const CHAR_PX = 7;        // about one character of the 12-px labels
  const TICK_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  const CURVES = {          // told apart by dash pattern and width as well as colour
    relevance: { name: "event relevance", colour: "#111111", width: 2.6, dash: null },
    audio_relevance: { name: "audio relevance", colour: "#1f5fbf", width: 1.7, dash: "7 3" },
    visual_relevance: { name: "visual relevance", colour: "#d9480f", width: 1.7, dash: "2 3" },
    probability: { name: "probability of the label", colour: "#111111", width: 2.4, dash: null },
    score: { name: "score", colour: "#111111", width: 2.4, dash: null },
  };
  const BEST_COLOUR = "#8fd18f";
  const QUERY_COLOUR = "#9ec5ea";
  const FALLBACK_COLOUR = "#b0b0b0";

  const envelope = JSON.parse(document.getElementById("avel-data").textContent);
  let uid = 0;

  // -- small helpers ----------------------------------------------------------------------
  function build(make, tag, attrs, children) {
    const node = make(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of [].concat(children === undefined ? [] : children)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const h = (tag, attrs, children) => build((t) => document.createElement(t), tag, attrs, children);
  const s = (tag, attrs, children) => build((t) => document.createElementNS(SVG_NS, t), tag, attrs, children);

  const pad2 = (n) => String(n).padStart(2, "0");
  function clock(seconds) {
    const t = Math.max(0, Math.floor(seconds + 1e-6));
    const hours = Math.floor(t / 3600), minutes = Math.floor(t / 60) % 60;
    return hours ? `${hours}:${pad2(minutes)}:${pad2(t % 60)}` : `${minutes}:${pad2(t % 60)}`;
  }
  const num = (x, digits = 3) => (x === null || x === undefined ? "\u2013" : Number(x).toFixed(digits));
  const basename = (path) => String(path).split(/[\\/]/).pop();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const colourOf = (label) => (envelope.colours && envelope.colours[label]) || FALLBACK_COLOUR;

  function fitText(options, widthPx) {
    // the first of the texts that fits the width, else the first one shortened with an ellipsis
    for (const text of options) if (text.length * CHAR_PX <= widthPx) return text;
    const n = Math.floor(widthPx / CHAR_PX) - 1;
    return n >= 1 ? options[options.length - 1].slice(0, n) + "\u2026" : "";
  }

  function play(media) {
    const p = media.play();
    if (p && p.catch) p.catch(() => {});  // refused autoplay: the user presses play
  }

  // -- the timeline: rows drawn under one time axis, a playhead that follows the media ---------
  // rows: [{name, height, draw(group, ctx)}]; ctx: {x (seconds -> px), left, right, height, defs, id}
  // hover(t) -> nodes describing the time t, or null; valueText(t) -> the slider's spoken value
  function timeline({ media, duration, rows, hover, valueText, label }) {
    const id = `tl${uid++}`;
    const span = Math.max(duration, 1e-6);
    const height = rows.reduce((total, row) => total + row.height, 0) + AXIS_HEIGHT;
    const tip = h("div", { class: "tip", id: `${id}-tip`, role: "status", hidden: true });
    const root = s("svg", {
      role: "slider", tabindex: 0, "aria-label": label, "aria-valuemin": 0, "aria-valuemax": span.toFixed(2),
      "aria-valuenow": 0, height,
    });
    const wrap = h("div", { class: "timeline" }, [root, tip]);
    let width = 0, x = null, playhead = null, band = null, hoverRect = null;

    function draw() {
      const w = Math.round(wrap.clientWidth);
      if (!w || w === width) return;
      width = w;
      const plot = Math.max(1, width - PAD_LEFT - PAD_RIGHT);
      x = (t) => PAD_LEFT + (t / span) * plot;
      root.replaceChildren();
      root.setAttribute("viewBox", `0 0 ${width} ${height}`);
      root.setAttribute("width", width);
      const defs = s("defs");
      root.append(defs);
      let y = 0;
      for (const row of rows) {
        const g = s("g", { class: `row ${row.name}`, transform: `translate(0 ${y})` });
        row.draw(g, { x, left: PAD_LEFT, right: width - PAD_RIGHT, height: row.height, defs, id });
        root.append(g);
        y += row.height;
      }
      root.append(axis(x, span, plot, y));
      hoverRect = s("rect", { class: "hover", x: 0, y: 0, width: 0, height: y, visibility: "hidden" });
      playhead = s("g", { class: "playhead" }, [
        s("line", { x1: 0, x2: 0, y1: 0, y2: y }), s("path", { d: "M -6 0 L 6 0 L 0 8 Z" }),
      ]);
      root.append(hoverRect, playhead);
      movePlayhead();
    }

    function movePlayhead() {
      const t = clamp(media.currentTime || 0, 0, span);
      if (playhead) playhead.setAttribute("transform", `translate(${x(t).toFixed(2)} 0)`);
      root.setAttribute("aria-valuenow", t.toFixed(2));
      root.setAttribute("aria-valuetext", valueText(t));
    }

    function timeAt(event) {
      const box = root.getBoundingClientRect();
      const px = (event.clientX - box.left) * (width / box.width);
      return clamp(((px - PAD_LEFT) / (width - PAD_LEFT - PAD_RIGHT)) * span, 0, span);
    }

    function showTip(t, px) {
      const nodes = hover(t);
      if (!nodes) return hideTip();
      const second = Math.floor(t);
      hoverRect.setAttribute("x", x(Math.min(second, span)));
      hoverRect.setAttribute("width", Math.max(0, x(Math.min(second + 1, span)) - x(Math.min(second, span))));
      hoverRect.setAttribute("visibility", "visible");
      tip.replaceChildren(...nodes);
      tip.hidden = false;
      const left = clamp(px + 14, 0, Math.max(0, wrap.clientWidth - tip.offsetWidth));
      tip.style.left = `${left}px`;
      tip.style.top = `${Math.max(0, height - rows[rows.length - 1].height - tip.offsetHeight - 30)}px`;
    }
    function hideTip() {
      tip.hidden = true;
      if (hoverRect) hoverRect.setAttribute("visibility", "hidden");
    }

    root.addEventListener("click", (event) => {
      // a bar of a range (or its text) seeks to the range's start, as its entry in the list does;
      // anywhere else, to the time under the pointer
      const range = event.target.closest("[data-start]");
      media.currentTime = range ? clamp(Number(range.getAttribute("data-start")), 0, span) : timeAt(event);
    });
    root.addEventListener("pointermove", (event) => {
      const box = root.getBoundingClientRect();
      showTip(timeAt(event), event.clientX - box.left);
    });
    root.addEventListener("pointerleave", hideTip);
    root.addEventListener("blur", hideTip);
    root.addEventListener("keydown", (event) => {
      const now = media.currentTime || 0;
      const to = {
        ArrowRight: now + 1, ArrowUp: now + 1, ArrowLeft: now - 1, ArrowDown: now - 1,
        PageUp: now + 10, PageDown: now - 10, Home: 0, End: span,
      }[event.key];
      if (event.key === " " || event.key === "k") {
        event.preventDefault();
        if (media.paused) play(media); else media.pause();
      } else if (to !== undefined) {
        event.preventDefault();
        media.currentTime = clamp(to, 0, span);
        showTip(clamp(to, 0, span), x(clamp(to, 0, span)) + 8);
      }
    });

    let frame = 0;
    function follow() {
      movePlayhead();
      frame = media.paused || media.ended ? 0 : requestAnimationFrame(follow);
    }
    for (const name of ["timeupdate", "seeking", "seeked", "loadedmetadata", "emptied", "pause", "ended"]) {
      media.addEventListener(name, movePlayhead);
    }
    media.addEventListener("play", () => {
      if (!frame) frame = requestAnimationFrame(follow);
    });
    new ResizeObserver(draw).observe(wrap);
    return { node: wrap, draw };
  }

  function axis(x, span, plotPx, y) {
    const g = s("g", { class: "axis", transform: `translate(0 ${y})` });
    const most = Math.max(2, Math.floor(plotPx / 64));
    const step = TICK_STEPS_S.find((st) => span / st <= most) || TICK_STEPS_S[TICK_STEPS_S.length - 1];
    g.append(s("line", { x1: x(0), x2: x(span), y1: 0, y2: 0 }));
    for (let t = 0; t <= span + 1e-9; t += step) {
      const text = span > 120 ? clock(t) : `${t} s`;
      g.append(s("line", { x1: x(t), x2: x(t), y1: 0, y2: 5 }),
        s("text", { x: x(t), y: 17, "text-anchor": t === 0 ? "start" : "middle" }, text));
    }
    return g;
  }

  // -- rows ---------------------------------------------------------------------------------
  // ranges: [{start_s, end_s, colour, texts (longest first), title}]: labelled bars
  function barsRow(name, height, ranges, rowLabel) {
    return {
      name, height,
      draw(g, c) {
        g.append(s("text", { class: "ylabel", x: 4, y: height / 2 + 4 }, rowLabel));
        ranges.forEach((r, i) => {
          const x0 = c.x(r.start_s), x1 = c.x(r.end_s);
          const fill = r.pattern ? `url(#${c.id}-${r.pattern})` : r.colour;
          if (r.pattern) hatch(c, r.pattern, r.colour);
          g.append(s("rect", {
            class: "bar", x: x0, y: 3, width: Math.max(1, x1 - x0), height: height - 6, rx: 3, fill,
            "data-range": i, "data-start": r.start_s,
          }, s("title", {}, r.title)));
          const text = fitText(r.texts, x1 - x0 - 8);
          if (text) {
            g.append(s("text", {
              class: "bar-label", x: (x0 + x1) / 2, y: height / 2 + 4, "text-anchor": "middle", "data-start": r.start_s,
            }, text));
          }
        });
      },
    };
  }

  function hatch(c, name, colour) {
    const pid = `${c.id}-${name}`;
    if (c.defs.querySelector(`#${pid}`)) return;
    c.defs.append(s("pattern", {
      id: pid, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)",
    }, [s("rect", { width: 6, height: 6, fill: colour }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#8a919c", "stroke-width": 1.4 })]));
  }

  // curves: [{key, values: [{start_s, end_s, value}]}] on [lo, hi]; threshold: {value, text} or null
  function curvesRow(height, curves, lo, hi, yName, threshold) {
    const top = 10, bottom = 8;
    return {
      name: "curves", height,
      draw(g, c) {
        const y = (v) => top + (1 - (v - lo) / (hi - lo || 1)) * (height - top - bottom);
        const middle = (top + height - bottom) / 2;
        g.append(s("text", { class: "ylabel", x: 0, y: 0, "text-anchor": "middle", transform: `translate(14 ${middle}) rotate(-90)` }, yName));
        for (const v of [lo, (lo + hi) / 2, hi]) {
          g.append(s("line", { class: "grid", x1: c.left, x2: c.right, y1: y(v), y2: y(v) }),
            s("text", { class: "ylabel", x: c.left - 6, y: y(v) + 4, "text-anchor": "end" }, Number(v.toFixed(3)).toString()));
        }
        if (threshold) {
          g.append(s("line", { class: "threshold", x1: c.left, x2: c.right, y1: y(threshold.value), y2: y(threshold.value) }),
            s("text", { class: "threshold-label", x: c.right - 2, y: y(threshold.value) - 4, "text-anchor": "end" }, threshold.text));
        }
        for (const curve of curves) {
          const style = CURVES[curve.key];
          const d = curve.values.map((p, i) => `${i ? "V" : "M " + c.x(p.start_s).toFixed(2)} ${y(p.value).toFixed(2)} H ${c.x(p.end_s).toFixed(2)}`).join(" ");
          g.append(s("path", {
            class: `curve ${curve.key}`, d, stroke: style.colour, "stroke-width": style.width, "stroke-dasharray": style.dash,
          }));
        }
      },
    };
  }

  // the label of every second: one rect a second, background hatched
  function labelsRow(segments) {
    return {
      name: "labels", height: 24,
      draw(g, c) {
        hatch(c, "background", colourOf("background"));
        g.append(s("text", { class: "ylabel", x: 4, y: 16 }, "label"));
        segments.forEach((seg, i) => {
          const fill = seg.label === "background" ? `url(#${c.id}-background)` : colourOf(seg.label);
          g.append(s("rect", {
            class: "second", x: c.x(seg.start_s), y: 3, width: Math.max(0.5, c.x(seg.end_s) - c.x(seg.start_s)), height: 18,
            fill, "data-second": i,
          }));
        });
      },
    };
  }

  function legend(items) {
    return h("ul", { class: "legend" }, items.map(([kind, text, colour]) => {
      let mark;
      if (kind in CURVES) {
        const st = CURVES[kind];
        mark = s("svg", { width: 28, height: 10, "aria-hidden": "true" },
          s("line", { x1: 1, x2: 27, y1: 5, y2: 5, stroke: st.colour, "stroke-width": st.width, "stroke-dasharray": st.dash }));
      } else if (kind === "threshold") {
        mark = s("svg", { width: 28, height: 10, "aria-hidden": "true" },
          s("line", { x1: 1, x2: 27, y1: 5, y2: 5, stroke: "#c0392b", "stroke-width": 1.3, "stroke-dasharray": "7 4" }));
      } else {
        mark = h("span", { class: `swatch ${kind}`, style: `background-color: ${colour}`, "aria-hidden": "true" });
      }
      return h("li", {}, [mark, text]);
    }));
  }

  // buttons that seek to a range's start and play; the one being played is marked
  function rangeList(ranges, media, label, svgRoot) {
    const buttons = ranges.map((r) => h("button", { type: "button", "data-start": r.start_s, "data-end": r.end_s }, r.button));
    const list = h("ol", { class: "events", "aria-label": label }, buttons.map((b) => h("li", {}, b)));
    buttons.forEach((b, i) => b.addEventListener("click", () => {
      media.currentTime = ranges[i].start_s;
      play(media);
    }));
    const mark = () => {
      const t = media.currentTime || 0;
      buttons.forEach((b, i) => {
        const on = ranges[i].start_s <= t && t < ranges[i].end_s;
        b.setAttribute("aria-current", on ? "true" : "false");
        const bar = svgRoot.querySelector(`.bar[data-range="${i}"]`);
        if (bar) bar.classList.toggle("active", on);
      });
    };
    for (const name of ["timeupdate", "seeked"]) media.addEventListener(name, mark);
    return list;
  }

  const MEDIA_ERRORS = { 1: "loading was aborted", 2: "a read error", 3: "it cannot be decoded",
    4: "the file is missing (moved or deleted?) or not playable here" };

  // a player; when its file cannot be loaded, one line under it says which file and why
  function player(entry, name) {
    const tag = entry.element === "audio" ? "audio" : "video";
    const media = h(tag, { class: "player", controls: true, preload: "metadata", src: entry.src, playsinline: true, "aria-label": `${tag}: ${name}` });
    media.addEventListener("error", () => {
      if (media.nextElementSibling && media.nextElementSibling.classList.contains("media-error")) return;
      let file = entry.src;
      try { file = decodeURIComponent(entry.src); } catch (e) { /* shown as written */ }
      const why = media.error ? MEDIA_ERRORS[media.error.code] || `error ${media.error.code}` : "unknown error";
      media.after(h("p", { class: "media-error", role: "alert" },
        `cannot play ${file} (relative to this page): ${why}`));
    });
    return media;
  }

  function modelLine(m) {
    if (!m) return "";
    return `${m.task}/${m.model} \u00b7 embedding ${m.embedding} \u00b7 matching ${m.matching}` +
      (m.window !== undefined ? ` \u00b7 window ${m.window} s \u00b7 stride ${m.stride} s` : "") +
      ` \u00b7 checkpoint ${m.checkpoint}`;
  }

  // -- localization -----------------------------------------------------------------------------
  function secondTip(seg) {
    const rel = seg.relevance === null ? [] : [
      h("br"), `relevance ${num(seg.relevance)} (audio ${num(seg.audio_relevance)}, visual ${num(seg.visual_relevance)})`,
    ];
    return [`${clock(seg.start_s)}\u2013${clock(seg.end_s)} `, h("b", {}, seg.label), h("br"),
      `probability ${num(seg.probability)}`, ...rel];
  }

  function renderVideo(section, k) {
    const d = envelope.data[k], media = envelope.media[k];
    const body = section.querySelector(".body");
    section.classList.remove("pending");
    section.dataset.rendered = "true";
    if (d.error) {
      body.append(h("p", { class: "error" }, `failed (${d.error_kind}): ${d.error}`));
      return;
    }
    const name = basename(d.video);
    const video = player(media, name);
    const segs = d.segments;
    const hasRelevance = segs.length > 0 && segs[0].relevance !== null;
    const events = d.events.map((e) => ({
      start_s: e.start_s, end_s: e.end_s, colour: colourOf(e.label),
      texts: [`${e.label} ${num(e.score, 2)}`, e.label],
      title: `${e.label}: ${clock(e.start_s)}\u2013${clock(e.end_s)}, score ${num(e.score)}`,
      button: [h("span", { class: "swatch", style: `background-color: ${colourOf(e.label)}`, "aria-hidden": "true" }),
        h("span", { class: "when" }, `${clock(e.start_s)}\u2013${clock(e.end_s)}`), h("b", {}, e.label),
        h("span", { class: "score" }, `score ${num(e.score)}`)],
    }));
    const keys = hasRelevance ? ["audio_relevance", "visual_relevance", "relevance"] : ["probability"];
    const curves = keys.map((key) => ({ key, values: segs.map((g) => ({ start_s: g.start_s, end_s: g.end_s, value: g[key] })) }));
    const threshold = hasRelevance && d.model && d.model.threshold !== null && d.model.threshold !== undefined
      ? { value: d.model.threshold, text: `threshold ${d.model.threshold}: event above` } : null;
    const tl = timeline({
      media: video, duration: d.duration_s, label: `timeline of ${name}: arrow keys seek`,
      rows: [barsRow("events", 28, events, "events"),
        curvesRow(150, curves, 0, 1, hasRelevance ? "relevance" : "probability", threshold), labelsRow(segs)],
      hover: (t) => {
        const seg = segs[Math.floor(t)];
        return seg && seg.start_s <= t && t <= seg.end_s ? secondTip(seg) : null;
      },
      valueText: (t) => {
        const seg = segs[Math.floor(t)];
        return `${clock(t)} of ${clock(d.duration_s)}` + (seg ? `, ${seg.label}` : "");
      },
    });
    const present = [];
    for (const seg of segs) if (seg.label !== "background" && !present.includes(seg.label)) present.push(seg.label);
    const items = keys.map((key) => [key, CURVES[key].name]);
    if (threshold) items.push(["threshold", `threshold ${d.model.threshold}`]);
    for (const label of present) items.push(["label", label, colourOf(label)]);
    items.push(["background", "background (hatched)", colourOf("background")]);
    const list = events.length
      ? rangeList(events, video, `events of ${name}: Enter seeks to the start and plays`, tl.node)
      : h("p", { class: "none" }, "No event found: every second is background.");
    body.append(video, tl.node, legend(items), list);
    tl.draw();
  }

  function renderLocalization() {
    const data = envelope.data;
    const first = data.find((d) => d.model);
    document.getElementById("model").textContent = first ? modelLine(first.model) : "";
    const main = document.getElementById("main");
    const sections = data.map((d, k) => {
      const sid = `video-${k}`;
      const facts = d.error ? `failed: ${d.error_kind}` :
        `${num(d.duration_s, 2)} s \u00b7 ${d.summary.num_events} event${d.summary.num_events === 1 ? "" : "s"}` +
        (d.summary.top_label ? ` \u00b7 top label ${d.summary.top_label}` : "");
      return h("section", { class: "video pending", id: sid, "aria-labelledby": `${sid}-title` }, [
        h("h2", { id: `${sid}-title` }, h("a", { href: `#${sid}` }, basename(d.video))),
        h("p", { class: "meta" }, `${d.video} \u00b7 ${facts}`),
        h("div", { class: "body" }),
      ]);
    });
    main.append(...sections);
    if (data.length > 1) document.getElementById("index").append(indexTable(data));

    const render = (section) => {
      if (section && section.classList.contains("pending")) renderVideo(section, Number(section.id.slice(6)));
    };
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) if (entry.isIntersecting) { render(entry.target); observer.unobserve(entry.target); }
    }, { rootMargin: "300px 0px" });
    sections.forEach((section) => observer.observe(section));
    const reveal = () => {
      const target = location.hash.startsWith("#video-") ? document.getElementById(location.hash.slice(1)) : null;
      if (!target) return;
      render(target);
      target.scrollIntoView();
    };
    window.addEventListener("hashchange", reveal);
    reveal();
  }

  function indexTable(data) {
    const head = h("tr", {}, [h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "file"),
      h("th", { scope: "col", class: "num" }, "duration"), h("th", { scope: "col", class: "num" }, "events"),
      h("th", { scope: "col" }, "top label")]);
    const rows = data.map((d, k) => h("tr", { class: d.error ? "failed" : null }, [
      h("td", { class: "num" }, String(k + 1)),
      h("td", { class: "file" }, h("a", { href: `#video-${k}` }, d.video)),
      h("td", { class: "num" }, d.error ? "\u2013" : `${clock(d.duration_s)}`),
      h("td", { class: "num" }, d.error ? "failed" : String(d.summary.num_events)),
      h("td", {}, d.error ? d.error_kind : d.summary.top_label || "\u2013"),
    ]));
    return h("table", { class: "index" }, [h("caption", {}, `${data.length} videos`), h("thead", {}, head), h("tbody", {}, rows)]);
  }

  // -- cml -------------------------------------------------------------------------------------
  const SCORE_NAMES = {
    relevance: "relevance to the query", distance: "distance to the query", "cosine-distance": "cosine distance of windows",
  };

  function renderCml() {
    const d = envelope.data, media = envelope.media;
    const q = basename(d.query), target = basename(d.target), best = d.best;
    const better = d.higher_is_better ? "higher" : "lower";
    document.getElementById("model").textContent =
      `${d.direction.toUpperCase()}: the ${d.query_modality} of ${d.query} (${d.query_start_s}\u2013${d.query_end_s} s) ` +
      `best matches the ${d.target_modality} of ${d.target} at ${clock(best.start_s)}\u2013${clock(best.end_s)} ` +
      `(${best.start_s}\u2013${best.end_s} s; ${d.score_kind} ${num(best.score)}, ${better} is better) \u00b7 ` + modelLine(d.model);
    const main = document.getElementById("main");

    // the query, its range marked
    const qMedia = player(media.query, q);
    const qRange = [{
      start_s: d.query_start_s, end_s: d.query_end_s, colour: QUERY_COLOUR,
      texts: [`query ${d.query_start_s}\u2013${d.query_end_s} s`, "query"], title: `the query: ${d.query_start_s}\u2013${d.query_end_s} s`,
      button: [h("span", { class: "swatch", style: `background-color: ${QUERY_COLOUR}`, "aria-hidden": "true" }),
        h("span", { class: "when" }, `${clock(d.query_start_s)}\u2013${clock(d.query_end_s)}`), h("b", {}, "the query range")],
    }];
    const qDuration = d.query_duration_s === null ? d.query_end_s : d.query_duration_s;
    const qTl = timeline({
      media: qMedia, duration: qDuration, label: `timeline of the query ${q}: arrow keys seek`,
      rows: [barsRow("range", 30, qRange, "query")],
      hover: (t) => [`${clock(t)} `, h("b", {}, d.query_start_s <= t && t < d.query_end_s ? "in the query range" : "outside the query range")],
      valueText: (t) => `${clock(t)} of ${clock(qDuration)}`,
    });
    const qSection = h("section", { class: "video", id: "query", "aria-labelledby": "query-title" }, [
      h("h2", { id: "query-title" }, `Query: the ${d.query_modality} of ${q}`),
      h("p", { class: "meta" }, `${d.query} \u00b7 seconds ${d.query_start_s}\u2013${d.query_end_s} (${d.query_length_s} s)`),
      qMedia, qTl.node, rangeList(qRange, qMedia, "the query range: Enter plays it", qTl.node),
    ]);

    // the target: the best window and the score of every second
    const tMedia = player(media.target, target);
    const ranges = [{
      start_s: best.start_s, end_s: best.end_s, colour: BEST_COLOUR,
      texts: [`best match ${best.start_s}\u2013${best.end_s} s \u00b7 ${num(best.score, 2)}`, `best ${best.start_s}\u2013${best.end_s} s`, "best"],
      title: `best match: ${clock(best.start_s)}\u2013${clock(best.end_s)}, ${d.score_kind} ${num(best.score)}`,
      button: [h("span", { class: "swatch", style: `background-color: ${BEST_COLOUR}`, "aria-hidden": "true" }),
        h("span", { class: "when" }, `${clock(best.start_s)}\u2013${clock(best.end_s)}`), h("b", {}, "best match"),
        h("span", { class: "score" }, `${d.score_kind} ${num(best.score)}`)],
    }];
    const own = media.query.src === media.target.src ? [barsRow("own", 24, [{  // the query was cut from the target
      start_s: d.query_start_s, end_s: d.query_end_s, colour: "#dfe6ee", pattern: "query",
      texts: ["the query's own seconds", "query"], title: "the query's own seconds",
    }], "query")] : [];
    const scoreName = SCORE_NAMES[d.score_kind] || d.score_kind;
    const [lo, hi] = d.score_range;
    const tTl = timeline({
      media: tMedia, duration: d.target_duration_s, label: `timeline of the target ${target}: arrow keys seek`,
      rows: [barsRow("match", 28, ranges, "match"), ...own,
        curvesRow(140, [{ key: "score", values: d.seconds.map((x) => ({ start_s: x.start_s, end_s: x.end_s, value: x.score })) }],
          lo, hi, d.score_kind.replace("-", " "), null)],
      hover: (t) => {
        const k = Math.floor(t), sec = d.seconds[k];
        if (!sec) return null;
        const nodes = [`${clock(sec.start_s)}\u2013${clock(sec.end_s)} `, h("br"), `${scoreName} `, h("b", {}, num(sec.score))];
        if (k < d.window_scores.length) {
          nodes.push(h("br"), `window ${clock(k)}\u2013${clock(k + d.query_length_s)}: mean ${num(d.window_scores[k])}`);
        }
        return nodes;
      },
      valueText: (t) => `${clock(t)} of ${clock(d.target_duration_s)}`,
    });
    const tSection = h("section", { class: "video", id: "target", "aria-labelledby": "target-title" }, [
      h("h2", { id: "target-title" }, `Target: the ${d.target_modality} of ${target}`),
      h("p", { class: "meta" }, `${d.target} \u00b7 ${num(d.target_duration_s, 2)} s \u00b7 ${d.window_scores.length} candidate windows \u00b7 ${better} score is a better match`),
      tMedia, tTl.node,
      legend([["score", `${scoreName}${d.higher_is_better ? "" : " (lower = closer)"}`], ["best", "best window", BEST_COLOUR]]),
      rangeList(ranges, tMedia, "the best match: Enter plays it", tTl.node),
    ]);
    main.append(qSection, tSection);
    qTl.draw();
    tTl.draw();
  }

  if (envelope.report === "cml") renderCml(); else renderLocalization();
})();
