// lab-stack balancer dashboard, the lab half: live charts from /api/live, the controls
// (algorithm, weight, drain, fault knobs), the load generator and the guided experiment.
// dashboard.js renders the tables and hands each /api/status document over ("lab:status").
"use strict";

(() => {
  const POLL_MS = 1000;
  const SLOTS = 60; // seconds on a chart
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  // The SVG namespace, taken from a chart the server rendered (no URL in this file).
  const SVG_NS = $("svg.bars") ? $("svg.bars").namespaceURI : null;
  let token = sessionStorage.getItem("lab-token") || "";
  let status = null;
  let live = null;
  let lastRun = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(1) + " ms" : Math.round(v) + " ms");

  // --- colours: the lab page's (static-site/assets/app.js), keyed by the replica's instance
  // name when a load run has learned it, else by its address.
  function hash(name) {
    let h = 0x811c9dc5;
    for (let i = 0; i < name.length; i++) {
      h ^= name.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h;
  }

  function hslToRgb(h, s, l) {
    const a = s * Math.min(l, 1 - l);
    const f = (n) => {
      const k = (n + h / 30) % 12;
      return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    };
    return [f(0), f(8), f(4)];
  }

  function luminance(rgb) {
    const c = rgb.map((v) => (v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4)));
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }

  const colours = new Map();
  function colourFor(name) {
    if (!colours.has(name)) {
      const hue = hash(name) % 360;
      let light = 0.5;
      while (light > 0.1 && 1.05 / (luminance(hslToRgb(hue, 0.7, light)) + 0.05) < 4.5) light -= 0.02;
      colours.set(name, `hsl(${hue}, 70%, ${Math.round(light * 100)}%)`);
    }
    return colours.get(name);
  }

  const instanceOf = (addr) => (live && live.instances[addr]) || "";
  const colourOf = (addr) => colourFor(instanceOf(addr) || addr);

  // --- the admin API ---------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new Error((data && data.error) || "HTTP " + r.status);
    return data;
  }

  function say(text, bad) {
    const n = $("#say");
    n.textContent = text;
    n.dataset.bad = bad ? "yes" : "no";
  }

  async function act(what, fn) {
    try {
      await fn();
      say(what + ": done");
    } catch (e) {
      say(what + ": " + e.message, true);
    }
  }

  const memberPath = (pool, addr) =>
    `/api/pools/${encodeURIComponent(pool)}/members/${encodeURIComponent(addr)}`;

  // --- charts ----------------------------------------------------------------------------
  function chartBox(card) {
    let box = $(".chart", card);
    if (!$(".figures", box)) {
      const figures = el("div", "figures");
      for (const [k, label] of [["rps", "req/s"], ["p50", "p50"], ["p99", "p99"], ["a", "in flight"], ["e", "errors/s"]]) {
        const f = el("span", "fig");
        f.dataset.fig = k;
        f.append(el("b", "", "–"), " " + label);
        figures.append(f);
      }
      box.prepend(figures);
      if (SVG_NS) box.append(svg("svg", { class: "lat", viewBox: "0 0 600 40", preserveAspectRatio: "none", role: "img", "aria-label": "p50 and p99 latency, last minute" }));
      box.append(el("ul", "legend"));
    }
    return box;
  }

  function drawPool(card, pool) {
    const box = chartBox(card);
    const bars = $("svg.bars", box);
    const samples = pool.samples;
    const offset = SLOTS - samples.length;
    const max = Math.max(1, ...samples.map((s) => s.n.reduce((a, b) => a + b, 0) + s.e));
    const w = 600 / SLOTS;
    const rects = [];
    samples.forEach((s, i) => {
      let y = 120;
      const x = (offset + i) * w;
      s.n.forEach((n, k) => {
        if (!n) return;
        const h = (n / max) * 116;
        y -= h;
        const r = svg("rect", { x: x + 0.5, y, width: w - 1, height: h, fill: colourOf(pool.keys[k]) });
        r.dataset.member = pool.keys[k];
        r.dataset.t = s.t;
        rects.push(r);
      });
      if (s.e) {
        const h = (s.e / max) * 116;
        rects.push(svg("rect", { x: x + 0.5, y: y - h, width: w - 1, height: h, class: "err" }));
      }
    });
    if (bars) bars.replaceChildren(...rects);
    const lat = $("svg.lat", box);
    if (lat) {
      const top = Math.max(1, ...samples.map((s) => s.p99 || 0));
      const line = (key, cls) => {
        const pts = samples.map((s, i) => s[key] == null ? null
          : `${((offset + i) * w + w / 2).toFixed(1)},${(38 - (s[key] / top) * 36).toFixed(1)}`).filter(Boolean);
        return svg("polyline", { points: pts.join(" "), class: cls, fill: "none" });
      };
      lat.replaceChildren(line("p99", "p99"), line("p50", "p50"));
    }
    const last = samples[samples.length - 1];
    const fig = (k, v) => { $(`[data-fig="${k}"] b`, box).textContent = v; };
    fig("rps", last ? last.n.reduce((a, b) => a + b, 0) : "–");
    fig("p50", ms(last && last.p50));
    fig("p99", ms(last && last.p99));
    fig("a", last ? last.a : "–");
    fig("e", last ? last.e : "–");
    drawLegend($(".legend", box), pool);
  }

  // One entry per member seen in the last minute: colour, name, share of the minute; a member
  // that has left the pool stays (struck through) until it leaves the window.
  function drawLegend(list, pool) {
    const totals = pool.keys.map((_, k) => pool.samples.reduce((a, s) => a + s.n[k], 0));
    const sum = totals.reduce((a, b) => a + b, 0);
    const now = status && status.pools.find((p) => p.name === pool.name);
    const present = new Set(now ? now.members.map((m) => m.addr) : pool.keys);
    const items = pool.keys.map((addr, k) => {
      const li = el("li");
      li.dataset.member = addr;
      li.dataset.share = sum ? Math.round((totals[k] * 100) / sum) : 0;
      if (!present.has(addr)) li.classList.add("gone");
      const sw = el("i", "swatch");
      sw.style.backgroundColor = colourOf(addr);
      const name = instanceOf(addr) ? `${addr} (${instanceOf(addr)})` : addr;
      li.append(sw, el("span", "who", name), el("b", "", li.dataset.share + "%"));
      return li;
    });
    if (!items.length) items.push(el("li", "empty", "no traffic in the last minute"));
    list.replaceChildren(...items);
  }

  // The chart card of a pool, made like the server's when a reload added the pool.
  function chartCard(name) {
    let card = $(`article[data-chart="${CSS.escape(name)}"]`);
    const ref = $("svg.bars");
    if (!card && ref) {
      card = el("article", "card chart-card");
      card.dataset.chart = name;
      const head = el("header");
      head.append(el("h2", "", name), el("span", "about"));
      const chart = el("div", "chart");
      chart.append(ref.cloneNode(false));
      card.append(head, chart);
      $("#charts").append(card);
    }
    return card;
  }

  function drawLive() {
    const names = new Set(live.pools.map((p) => p.name));
    for (const c of $$("article[data-chart]")) if (!names.has(c.dataset.chart)) c.remove();
    for (const p of live.pools) {
      const card = chartCard(p.name);
      if (card) drawPool(card, p);
    }
  }

  // --- controls on the pool cards --------------------------------------------------------
  function algorithmControl(card, pool) {
    let form = $("form.algo", card);
    if (!form) {
      form = el("form", "algo");
      const sel = el("select");
      sel.name = "algorithm";
      sel.setAttribute("aria-label", `algorithm of ${pool.name}`);
      form.append(sel, el("button", "", "switch"), el("button", "reset", "file's"));
      form.lastChild.type = "button";
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        const a = sel.value;
        act(`${pool.name}: ${a}`, () => api("PUT", `/api/pools/${encodeURIComponent(pool.name)}/algorithm`, { algorithm: a }));
      });
      form.lastChild.addEventListener("click", () =>
        act(`${pool.name}: file's algorithm`, () => api("DELETE", `/api/pools/${encodeURIComponent(pool.name)}/algorithm`)));
      $("header", card).append(form);
    }
    const sel = $("select", form);
    const names = (live && live.algorithms) || [pool.algorithm];
    if (sel.options.length !== names.length) {
      sel.replaceChildren(...names.map((n) => { const o = el("option", "", n); o.value = n; return o; }));
    }
    if (document.activeElement !== sel) sel.value = pool.algorithm;
    form.dataset.runtime = pool.file_algorithm ? "yes" : "no";
    $(".reset", form).hidden = !pool.file_algorithm;
  }

  const FAULTS = [["delay_ms", "delay ms"], ["cpu_ms", "cpu ms"], ["error_rate", "error rate 0–1"]];

  // One row per member under its pool in the controls card, made once, then updated.
  function memberControls(pool) {
    const root = $("#member-controls");
    let box = $(`[data-ctl-pool="${CSS.escape(pool.name)}"]`, root);
    if (!box) {
      box = el("div", "ctl-pool");
      box.dataset.ctlPool = pool.name;
      box.append(el("h3", "", pool.name), el("ul", "ctl"));
      root.append(box);
    }
    const list = $("ul", box);
    const rows = new Map($$("li[data-member]", list).map((li) => [li.dataset.member, li]));
    for (const m of pool.members) {
      let li = rows.get(m.addr);
      rows.delete(m.addr);
      if (!li) {
        li = el("li");
        li.dataset.member = m.addr;
        list.append(li);
      }
      memberActions(li, pool, m);
    }
    for (const gone of rows.values()) gone.remove();
  }

  function memberActions(td, pool, m) {
    if (!td.firstChild) {
      const who = el("span", "who", m.addr);
      const sw = el("i", "swatch");
      const st = el("span", "pill");
      td.append(sw, who, st);
      const drain = el("button", "drain");
      drain.type = "button";
      drain.addEventListener("click", () => {
        const back = drain.dataset.put === "back";
        act(`${m.addr} ${back ? "put back" : "drained"}`,
          () => api("POST", memberPath(pool.name, m.addr) + (back ? "/enable" : "/drain")));
      });
      const wf = el("form", "weight");
      const wi = el("input");
      Object.assign(wi, { type: "number", min: 0, max: 1000, name: "weight", title: "weight" });
      wi.setAttribute("aria-label", `weight of ${m.addr}`);
      wf.append(wi, el("button", "", "weight"));
      wf.addEventListener("submit", (e) => {
        e.preventDefault();
        act(`${m.addr} weight ${wi.value}`, () => api("PUT", memberPath(pool.name, m.addr) + "/weight", { weight: Number(wi.value) }));
      });
      const knobs = el("details", "fault");
      const ff = el("form");
      for (const [k, label] of FAULTS) {
        const i = el("input");
        Object.assign(i, { name: k, type: "number", min: 0, step: "any", placeholder: "0" });
        const l = el("label", "", label + " ");
        l.append(i);
        ff.append(l);
      }
      const un = el("input");
      Object.assign(un, { name: "unhealthy", type: "checkbox" });
      const ul = el("label", "", "unhealthy ");
      ul.append(un);
      ff.append(ul, el("button", "", "apply"));
      ff.addEventListener("submit", (e) => {
        e.preventDefault();
        const body = { unhealthy: un.checked };
        for (const [k] of FAULTS) body[k] = Number(ff.elements[k].value || 0);
        act(`${m.addr} fault`, () => api("PUT", memberPath(pool.name, m.addr) + "/fault", body));
      });
      knobs.append(el("summary", "", "fault knobs"), ff);
      td.append(drain, wf, knobs);
    }
    $(".swatch", td).style.backgroundColor = colourOf(m.addr);
    const pill = $(".pill", td);
    pill.className = "pill " + m.state;
    pill.textContent = m.state;
    const drain = $("button.drain", td);
    const back = m.state === "drained";
    drain.dataset.put = back ? "back" : "out";
    drain.textContent = back ? "put back" : "drain";
    const wi = $("form.weight input", td);
    if (document.activeElement !== wi) wi.placeholder = m.weight;
  }

  function onStatus(s) {
    status = s;
    const names = new Set(s.pools.map((p) => p.name));
    for (const b of $$("[data-ctl-pool]")) if (!names.has(b.dataset.ctlPool)) b.remove();
    for (const p of s.pools) {
      const card = chartCard(p.name);
      if (card) {
        const about = $(`article[data-pool="${CSS.escape(p.name)}"] .about`);
        if (about) $(".about", card).textContent = about.textContent;
        algorithmControl(card, p);
      }
      memberControls(p);
    }
  }

  // --- the load generator ----------------------------------------------------------------
  function renderRun(r) {
    const box = $("#load-report");
    if (!r || !r.run) return;
    lastRun = r;
    box.dataset.state = r.state;
    box.dataset.run = r.run;
    const lines = [
      ["state", r.state + (r.end ? ` (${r.end})` : "")],
      ["sent", `${r.sent} · ${r.responses} answered · ${r.errors} errors`],
      ["rate", `${r.requests_per_second.toFixed(1)} req/s over ${r.elapsed_seconds.toFixed(1)} s`],
      ["statuses", Object.entries(r.statuses).map(([k, v]) => `${k}: ${v}`).join(" · ") || "–"],
      ["latency", r.latency ? `p50 ${ms(r.latency.p50_ms)} · p95 ${ms(r.latency.p95_ms)} · p99 ${ms(r.latency.p99_ms)}` : "–"],
    ];
    const dl = el("dl");
    for (const [k, v] of lines) dl.append(el("dt", "", k), el("dd", "", v));
    const shares = el("ul", "shares");
    for (const [addr, m] of Object.entries(r.members)) {
      const li = el("li");
      li.dataset.member = addr;
      li.dataset.share = Math.round(m.share * 100);
      const sw = el("i", "swatch");
      if (addr !== "-") sw.style.backgroundColor = colourOf(addr);
      li.append(sw, el("span", "who", addr === "-" ? "balancer (no member)" : addr),
        el("b", "", `${li.dataset.share}%`), ` ${m.requests}`);
      shares.append(li);
    }
    box.replaceChildren(dl, shares);
  }

  async function pollLoad() {
    if (!token) return;
    try {
      renderRun(await api("GET", "/api/load"));
    } catch (e) { /* shown by the actions; the chart keeps going */ }
  }

  function loadBody() {
    const f = $("#load-form").elements;
    const body = { path: f.path.value, concurrency: Number(f.concurrency.value), seconds: Number(f.seconds.value) };
    body.rate = f.rate.value ? Number(f.rate.value) : null;
    return body;
  }

  async function startLoad(body) {
    renderRun(await api("POST", "/api/load", body));
  }

  // --- the guided experiment ---------------------------------------------------------------
  const EXPERIMENT = { path: "/api/student", concurrency: 8, rate: null, seconds: 20 };
  let slowAddr = null;
  let trial = null;

  function dynamicPool() {
    return status && status.pools.find((p) => p.name === "dynamic");
  }

  async function slowOne() {
    const p = dynamicPool();
    if (!p || !p.members.length) throw new Error("no member in pool dynamic");
    slowAddr = p.members[0].addr;
    $("#experiment").dataset.slow = slowAddr;
    await api("PUT", memberPath("dynamic", slowAddr) + "/fault", { delay_ms: 300, cpu_ms: 0, error_rate: 0, unhealthy: false });
  }

  async function tryAlgorithm(algo) {
    if (lastRun && lastRun.state !== "ended") {
      await api("DELETE", "/api/load").catch(() => null);
    }
    await api("PUT", "/api/pools/dynamic/algorithm", { algorithm: algo });
    const r = await api("POST", "/api/load", EXPERIMENT);
    trial = { algo, run: r.run };
    renderRun(r);
  }

  async function reset() {
    if (lastRun && lastRun.state !== "ended") await api("DELETE", "/api/load").catch(() => null);
    await api("DELETE", "/api/pools/dynamic/algorithm");
    if (slowAddr) await api("PUT", memberPath("dynamic", slowAddr) + "/fault", { delay_ms: 0, cpu_ms: 0, error_rate: 0, unhealthy: false });
    slowAddr = null;
    delete $("#experiment").dataset.slow;
  }

  // A finished trial adds its row: the slow member's share under that algorithm.
  function recordTrial() {
    if (!trial || !lastRun || lastRun.run !== trial.run || lastRun.state !== "ended") return;
    const share = slowAddr && lastRun.members[slowAddr] ? Math.round(lastRun.members[slowAddr].share * 100) : 0;
    const tr = el("tr");
    tr.dataset.algorithm = trial.algo;
    tr.dataset.share = share;
    tr.append(el("td", "", trial.algo), el("td", "n", share + "%"),
      el("td", "n", ms(lastRun.latency && lastRun.latency.p50_ms)), el("td", "n", ms(lastRun.latency && lastRun.latency.p99_ms)));
    $("#results").append(tr);
    trial = null;
  }

  // --- wiring ------------------------------------------------------------------------------
  async function pollLive() {
    try {
      const r = await fetch("/api/live", { cache: "no-store" });
      if (r.ok) {
        live = await r.json();
        drawLive();
      }
    } catch (e) { /* dashboard.js shows the connection state */ }
    await pollLoad();
    recordTrial();
    setTimeout(pollLive, POLL_MS);
  }

  document.addEventListener("lab:status", (e) => onStatus(e.detail));
  document.addEventListener("DOMContentLoaded", () => {
    const ti = $("#token");
    ti.value = token;
    $("#token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      token = ti.value.trim();
      sessionStorage.setItem("lab-token", token);
      say(token ? "token set for this tab" : "token cleared");
      pollLoad();
    });
    $("#load-form").addEventListener("submit", (e) => {
      e.preventDefault();
      act("load run", () => startLoad(loadBody()));
    });
    $("#load-stop").addEventListener("click", () => act("load stopped", async () => renderRun(await api("DELETE", "/api/load"))));
    $("#experiment").addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      if (b.dataset.step === "slow") act("slowed " + "one replica", slowOne);
      else if (b.dataset.step === "reset") act("experiment reset", reset);
      else if (b.dataset.algo) act(`trial ${b.dataset.algo}`, () => tryAlgorithm(b.dataset.algo));
    });
    pollLive();
  });
})();
