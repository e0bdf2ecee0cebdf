// chatling's dashboard: status, the live feed of replies with their candidates, and
// the controls. Data from /api/... (the same JSON other tools may use); updates pushed
// by server-sent events. Every text goes in with textContent (chat is untrusted).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const feed = $("feed");
  const MAX_FEED = 100;

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function say(text) { $("message").textContent = text; }

  async function call(method, path, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body || {});
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }

  async function act(method, path, body, done) {
    try {
      const data = await call(method, path, body);
      say("");
      if (done) done(data);
    } catch (error) {
      say(error.message);
    }
  }

  const fmt = (v, unit = "") => (v === null || v === undefined ? "–" : `${v}${unit}`);
  const ms = (s) => (s === null || s === undefined ? "–" : `${Math.round(s * 1000)} ms`);

  function showStatus(s) {
    const state = $("state");
    state.textContent = s.paused ? "paused" : "replying";
    state.className = s.paused ? "badge paused" : "badge";
    $("pause").disabled = s.paused;
    $("resume").disabled = !s.paused;
    const rows = [
      ["mode", s.mode], ["sources", s.sources.join(", ") || "–"],
      ["messages in", s.chat_in], ["speech lines", s.utterances_in],
      ["replies posted", s.posted], ["blocked", s.blocked],
      ["rate-limited", s.rate_limited], ["failed", s.failed],
      ["engine latency p50", ms(s.engine_latency_p50_s)],
      ["first token p50", ms(s.first_token_p50_s)],
      ["transcription lag p50", s.transcription_lag_p50_s === null ? "–" : `${s.transcription_lag_p50_s} s`],
      ["model", s.model], ["adapter", fmt(s.adapter || "base model")],
      ["log", s.store_healthy ? "ok" : "NOT WRITING"],
      ["pages open", `${s.pages.dashboard} dashboard, ${s.pages.overlay} overlay`],
    ];
    $("status").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));
  }

  function markButtons(r) {
    if (r.status !== "posted") return null;
    const box = el("span", { class: "marks" });
    if (r.mark) box.append(el("span", { class: "marked", textContent: `marked ${r.mark}` }));
    for (const mark of ["good", "bad"]) {
      box.append(" ", el("button", {
        type: "button", textContent: mark,
        data: { mark },
        onclick: () => act("POST", `/api/replies/${r.id}/mark`, { mark }),
      }));
    }
    return box;
  }

  function replyItem(r) {
    const rows = r.candidates.map((c) => el("tr", { class: c.text === r.chosen && r.status === "posted" ? "chosen" : (c.allowed ? "" : "blocked") },
      el("td", { textContent: c.text }),
      el("td", { textContent: c.reason }),
      el("td", { class: "score", textContent: c.score.toFixed(2) })));
    const when = new Date(r.at * 1000).toLocaleTimeString();
    return el("li", { class: `reply ${r.status}`, data: { id: String(r.id) } },
      el("div", { class: "head" },
        el("span", { class: "status", textContent: r.status }),
        el("span", { class: "meta", textContent: `#${r.id} ${when} · ${r.trigger}${r.reply_to_user ? " → @" + r.reply_to_user : ""} · ${ms(r.latency_s)} · ${r.adapter || "base model"}` }),
        markButtons(r)),
      r.chosen ? el("div", { class: "chosen", textContent: r.chosen }) : null,
      el("details", {}, el("summary", { textContent: `prompt and ${r.candidates.length} candidates` }),
        el("pre", { textContent: r.prompt }),
        el("table", { class: "candidates" },
          el("thead", {}, el("tr", {}, el("th", { textContent: "candidate" }), el("th", { textContent: "verdict" }), el("th", { textContent: "score" }))),
          el("tbody", {}, ...rows))));
  }

  const replies = new Map();
  function addReply(r) {
    replies.set(r.id, r);
    const old = feed.querySelector(`li[data-id="${r.id}"]`);
    const item = replyItem(r);
    if (old) old.replaceWith(item); else feed.prepend(item);
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
  }

  function showAdapters(data) {
    const rows = data.versions.slice().reverse().map((v) => el("tr", { data: { version: v.version } },
      el("td", { textContent: v.version + (v.active ? " (active)" : "") }),
      el("td", { textContent: v.summary }),
      el("td", {}, v.active ? null : el("button", {
        type: "button", textContent: "Promote",
        onclick: () => act("POST", "/api/adapters/promote", { version: v.version }, showAdapters),
      }))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 3, textContent: "no adapters yet: the base model serves" })));
    $("adapters").tBodies[0].replaceChildren(...rows);
  }

  function metrics(m) {
    if (!m || typeof m !== "object") return "–";
    return Object.entries(m).filter(([, v]) => typeof v === "number").slice(0, 4)
      .map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ");
  }

  function showRuns(data) {
    const rows = data.runs.map((r) => el("tr", {},
      el("td", { textContent: String(r.id) }),
      el("td", { textContent: new Date(r.started_at * 1000).toLocaleString() }),
      el("td", { textContent: r.status }),
      el("td", { textContent: r.reason || "" }),
      el("td", { textContent: `${metrics(r.current_metrics)} → ${metrics(r.candidate_metrics)}` })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 5, textContent: "no nightly runs yet" })));
    $("runs").tBodies[0].replaceChildren(...rows);
  }

  async function load() {
    try {
      showStatus(await call("GET", "/api/status"));
      feed.replaceChildren();
      for (const r of (await call("GET", "/api/replies")).replies) addReply(r);
      showAdapters(await call("GET", "/api/adapters"));
    } catch (error) {
      say(error.message);
    }
    call("GET", "/api/runs").then(showRuns, (error) => showRuns({ runs: [] }) || say(error.message));
  }

  function connect() {
    const source = new EventSource("/api/events?topics=dashboard");
    source.addEventListener("open", () => {
      $("link").textContent = "live";
      $("link").className = "badge";
      load(); // after a restart the bot's counters and feed start afresh
    });
    source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
    source.addEventListener("reply", (e) => addReply(JSON.parse(e.data)));
    source.addEventListener("mark", (e) => {
      const m = JSON.parse(e.data);
      const r = replies.get(m.id);
      if (r) { r.mark = m.mark; addReply(r); }
    });
    source.addEventListener("error", () => {
      $("link").textContent = "offline";
      $("link").className = "badge off";
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    });
  }

  $("pause").onclick = () => act("POST", "/api/pause", {}, () => showStatusSoon());
  $("resume").onclick = () => act("POST", "/api/resume", {}, () => showStatusSoon());
  $("say").onclick = () => act("POST", "/api/say", {}, () => say("asked for a reply…"));
  $("rollback").onclick = () => act("POST", "/api/adapters/rollback", {}, showAdapters);
  function showStatusSoon() { call("GET", "/api/status").then(showStatus, (e) => say(e.message)); }

  connect();
})();
