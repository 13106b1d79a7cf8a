// lab-stack balancer dashboard: polls /api/status every second and updates the page in place.
// No inline code and no external assets (the page's CSP allows only this file and the API).
"use strict";

const POLL_MS = 1000;
const EVENTS_SHOWN = 12;
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtMs(ms) {
  if (ms < 1) return Math.round(ms * 1000) + " µs";
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  return (ms / 1000).toFixed(2) + " s";
}

function fmtTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}

function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

function setZero(node, value) {
  node.classList.toggle("zero", value === 0);
  setText(node, value);
}

function recent(m) {
  return m.latency ? m.latency.samples : 0;
}

// One table row per member, created once and then updated. Each cell carries its column's
// label: narrow cards show the rows stacked, each value under its label (dashboard.css).
const CELLS = ["addr", "state", "n weight", "n active", "share", "n ok", "n c4", "n c5",
  "n retries", "n p50", "n p95", "n p99", "check", "load"];
const LABELS = ["member", "state", "weight", "active", "requests · share of last %s s", "2xx",
  "4xx", "5xx", "retries", "p50", "p95", "p99", "last check", "load seen"];

function label(i, window) {
  return LABELS[i].replace("%s", window);
}

function newRow(addr, window) {
  const tr = el("tr");
  tr.dataset.member = addr;
  CELLS.forEach((c, i) => {
    const td = el("td", c);
    td.dataset.label = label(i, window);
    tr.append(td);
  });
  const addrCell = tr.children[0];
  addrCell.append(document.createTextNode(addr), el("small"));
  tr.children[1].append(el("span", "pill"));
  const bar = el("span", "bar");
  bar.append(el("i"));
  tr.children[4].append(el("span", "count"), bar, el("span", "pct"));
  tr.children[12].append(el("span", "dot"), document.createTextNode(""), el("small"));
  tr.children[13].append(document.createTextNode(""), el("small"));
  return tr;
}

// What the pool's algorithm sees of a member (same rules as dashboard.rs's load_text and
// load_detail): peak-ewma's estimate, reported-load's weight in use, the last load report.
function loadText(m, algorithm) {
  const l = m.load;
  if (algorithm === "peak-ewma") return l.ewma_ms === null ? "rtt –" : "rtt " + fmtMs(l.ewma_ms);
  if (algorithm === "reported-load") {
    const w = l.weight_in_use === null ? "–" : Math.round(l.weight_in_use);
    return `weight ${w} · ${l.weight_state}`;
  }
  return "–";
}

function loadDetail(m, algorithm) {
  const l = m.load;
  const r = l.report;
  let out = r
    ? `util ${r.utilization.toFixed(2)} · ${r.rps.toFixed(1)} rps · ${r.eps.toFixed(1)} eps`
    : "no report";
  if (algorithm === "reported-load" && l.reported_weight !== null && l.weight_age_seconds !== null) {
    out += ` · reported ${Math.round(l.reported_weight)}, ${Math.round(l.weight_age_seconds)} s ago`;
  }
  if (l.malformed_reports > 0) out += ` · ${l.malformed_reports} malformed`;
  return out;
}

function updateRow(tr, m, recentTotal, algorithm) {
  const c = tr.children;
  setText($("small", c[0]), m.origin === m.addr ? "" : m.origin);
  const pill = $(".pill", c[1]);
  pill.className = "pill " + m.state;
  setText(pill, m.state);
  const w = m.effective_weight !== m.weight ? `${m.effective_weight} → ${m.weight}` : String(m.weight);
  // A weight set at run time is shown as such, beside the file's (dashboard.rs says the same).
  setText(c[2], m.weight === m.file_weight ? w : `${w} run-time, file ${m.file_weight}`);
  setText(c[3], m.active);
  const share = recentTotal ? Math.floor((recent(m) * 100) / recentTotal) : 0;
  setText($(".count", c[4]), m.requests);
  $(".bar i", c[4]).style.width = share + "%";
  setText($(".pct", c[4]), share + "%");
  setText(c[5], m.responses[1]);
  setZero(c[6], m.responses[3]);
  setZero(c[7], m.responses[4]);
  setZero(c[8], m.retries);
  setText(c[9], m.latency ? fmtMs(m.latency.p50_ms) : "–");
  setText(c[10], m.latency ? fmtMs(m.latency.p95_ms) : "–");
  setText(c[11], m.latency ? fmtMs(m.latency.p99_ms) : "–");
  const check = m.last_check;
  $(".dot", c[12]).className = "dot " + (check ? check.result : "none");
  c[12].childNodes[1].textContent = check ? check.result : "none";
  setText($("small", c[12]), check
    ? (check.detail ? check.detail + " · " : "") + Math.round(check.age_seconds) + " s ago"
    : "no check");
  c[13].childNodes[0].textContent = loadText(m, algorithm);
  setText($("small", c[13]), loadDetail(m, algorithm));
}

function newCard(pool, window) {
  const card = el("article", "card pool");
  card.dataset.pool = pool.name;
  const head = el("header");
  const total = el("span", "total");
  total.append(el("b", "requests"), " requests · ", el("b", "rps"), "/s · hedges ",
    el("b", "hedges"));
  head.append(el("h2", "", pool.name), el("span", "about"), total);
  const table = el("table");
  const tr = el("tr");
  CELLS.forEach((c, i) => {
    const th = el("th", c.startsWith("n ") ? "n" : c);
    const [first, rest] = label(i, window).split(" · ");
    // Wide cards wrap the long heading at its dot, not inside "share of last N s".
    if (rest) th.append(first + " · ", el("span", "nowrap", rest));
    else th.textContent = first;
    tr.append(th);
  });
  const thead = el("thead");
  thead.append(tr);
  table.append(thead, el("tbody"));
  card.append(head, table);
  return card;
}

function updateCard(card, pool, status) {
  const routes = status.routes.filter((r) => r.pool === pool.name)
    .map((r) => (r.host || "") + r.path);
  const algo = pool.file_algorithm
    ? `${pool.algorithm} (run-time; file: ${pool.file_algorithm})` : pool.algorithm;
  setText($(".about", card),
    `${algo} · sticky ${pool.sticky} · ${routes.length ? routes.join(" ") : "no route"}`);
  setText($(".requests", card), pool.requests);
  setText($(".hedges", card), pool.hedging ? `${pool.hedges} (${pool.hedges_won} won)` : "off");
  const recentTotal = pool.members.reduce((a, m) => a + recent(m), 0);
  setText($(".rps", card), (recentTotal / status.latency_window_seconds).toFixed(1));
  const tbody = $("tbody", card);
  const rows = new Map();
  for (const tr of tbody.querySelectorAll("tr[data-member]")) rows.set(tr.dataset.member, tr);
  tbody.querySelectorAll("tr.empty").forEach((e) => e.remove());
  pool.members.forEach((m, i) => {
    let tr = rows.get(m.addr);
    if (!tr) tr = newRow(m.addr, status.latency_window_seconds);
    rows.delete(m.addr);
    updateRow(tr, m, recentTotal, pool.algorithm);
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  for (const gone of rows.values()) gone.remove();
  if (!pool.members.length) {
    const tr = el("tr", "empty");
    const td = el("td", "", "no members");
    td.colSpan = CELLS.length;
    tr.append(td);
    tbody.append(tr);
  }
}

let newestEvent = 0;

function renderEvents(events) {
  const list = $("#events");
  const shown = events.slice(-EVENTS_SHOWN).reverse();
  const items = shown.map((e) => {
    const li = el("li");
    const t = el("time", "", fmtTime(e.at));
    li.append(t, el("span", "kind " + e.kind, e.kind),
      el("span", "subject", [e.pool, e.member].filter(Boolean).join(" ")),
      el("span", "msg", e.message));
    if (newestEvent && e.at > newestEvent) li.classList.add("fresh");
    return li;
  });
  if (!items.length) items.push(el("li", "empty", "nothing yet"));
  const key = shown.map((e) => e.at + e.message).join("|");
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...items);
  }
  if (shown.length) newestEvent = Math.max(newestEvent, shown[0].at);
}

function render(s) {
  setText($("#version"), s.version);
  setText($("#source"), s.config_source);
  setText($("#clients b"), s.client_connections.join(" · "));
  const reload = $("#reload");
  if (!s.reload.at) {
    reload.className = "chip reload none";
    setText(reload, "no reload yet");
  } else if (s.reload.ok) {
    reload.className = "chip reload ok";
    setText(reload, `last reload ok at ${fmtTime(s.reload.at)} · ${s.reload.applied} applied, ${s.reload.rejected} rejected`);
  } else {
    reload.className = "chip reload bad";
    setText(reload, `reload rejected at ${fmtTime(s.reload.at)}: ${s.reload.error}`);
  }
  setText($("#actions"), s.actions_enabled ? "actions enabled" : "actions disabled (no token)");
  const pools = $("#pools");
  const cards = new Map();
  for (const c of pools.querySelectorAll("article[data-pool]")) cards.set(c.dataset.pool, c);
  s.pools.forEach((p, i) => {
    let card = cards.get(p.name);
    if (!card) card = newCard(p, s.latency_window_seconds);
    cards.delete(p.name);
    updateCard(card, p, s);
    if (pools.children[i] !== card) pools.insertBefore(card, pools.children[i] || null);
  });
  for (const gone of cards.values()) gone.remove();
  renderEvents(s.events);
  // The lab script (charts, controls) follows the same document.
  document.dispatchEvent(new CustomEvent("lab:status", { detail: s }));
}

function setLive(ok) {
  const live = $("#live");
  live.dataset.state = ok ? "live" : "offline";
  setText(live, ok ? "live · " + new Date().toLocaleTimeString([], { hour12: false })
    : "offline · retrying");
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    setLive(true);
  } catch (e) {
    setLive(false);
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  // Server-rendered parts the script owns: bar widths (no inline styles) and local times.
  for (const i of document.querySelectorAll(".bar i[data-share]")) i.style.width = i.dataset.share + "%";
  for (const t of document.querySelectorAll("time[data-at]")) t.textContent = fmtTime(Number(t.dataset.at));
  poll();
});
