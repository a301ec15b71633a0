// zlogcollect's live web viewer: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// Records come from /events (Server-Sent Events: a backlog from the collector's in-memory window,
// then live records) and from /search (the files on disk) when the window holds fewer than asked.
// Every piece of log text is inserted with textContent, never as HTML: log text is untrusted.
// The page keeps at most MAX_RECORDS records in its DOM; older ones leave the page, not the files.
"use strict";

(function () {
  const MAX_RECORDS = 5000;
  const BACKLOG = 500;
  const CONTEXT_LINES = 20;
  const TYPING_DELAY_MS = 300;
  const FLUSH_MS = 100; // new records are added to the page at most ten times a second
  const MAX_PER_FLUSH = 1000; // and at most this many at a time

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("controls"),
    q: $("q"),
    level: $("level"),
    source: $("source"),
    errors: $("errors"),
    pause: $("pause"),
    download: $("download"),
    status: $("status"),
    arrived: $("arrived"),
    log: $("log"),
    records: $("records"),
    older: $("older"),
    history: $("history"),
    max: $("max"),
    context: $("context"),
    contextRecords: $("context-records"),
  };
  ui.max.textContent = MAX_RECORDS.toLocaleString("en");

  const state = {
    source: null, // the EventSource
    generation: 0, // bumped on every (re)connect with new filters: stale answers are ignored
    connectedOnce: false, // a backlog-end after the first one is a reconnect: no history fetch
    paused: false,
    following: true,
    pending: [], // records that arrived while paused (bounded like the page)
    arrivals: 0, // records that arrived since the view stopped following
    queue: [], // records to insert at the next flush
    frame: 0, // the timer of the next flush
    skipped: 0, // records not shown because they arrived faster than the page can lay them out
    nextFlush: 0, // a flush that took T ms is followed by at least 2T ms for the user (input, scrolling)
    keys: new Set(), // what is shown, so the window and the files never show a record twice
    fromFiles: new Map(), // loose key -> created times of the last search's records (a live one may follow)
    sources: new Set(),
    oldest: null, // `created` of the oldest record shown
    typingTimer: 0,
  };

  // ---- filters and the URL ------------------------------------------------------------------------

  function filters() {
    return { level: ui.level.value, source: ui.source.value, q: ui.q.value };
  }

  function query(extra) {
    const params = new URLSearchParams();
    const f = filters();
    for (const name of ["level", "source", "q"]) {
      if (f[name]) params.set(name, f[name]);
    }
    for (const [name, value] of Object.entries(extra || {})) {
      if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
    }
    return params.toString();
  }

  function ensureOption(select, value) {
    if (!value) return;
    for (const option of select.options) {
      if (option.value === value) return;
    }
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    select.appendChild(option);
  }

  function fromUrl() {
    const params = new URLSearchParams(window.location.search);
    const level = (params.get("level") || "").trim();
    const source = params.getAll("source").join(",");
    ensureOption(ui.level, level.toUpperCase());
    ui.level.value = level.toUpperCase();
    ensureOption(ui.source, source);
    ui.source.value = source;
    ui.q.value = params.get("q") || "";
    ui.errors.setAttribute("aria-pressed", String(ui.level.value === "ERROR"));
  }

  function toUrl() {
    const search = query();
    const url = window.location.pathname + (search ? "?" + search : "");
    if (url !== window.location.pathname + window.location.search) {
      window.history.pushState(null, "", url);
    }
  }

  function addSource(name) {
    if (typeof name !== "string" || !name || state.sources.has(name)) return;
    state.sources.add(name);
    for (const option of ui.source.options) {
      if (option.value === name) return;
    }
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    let before = null;
    for (const other of ui.source.options) {
      if (other.value && other.value.localeCompare(name) > 0) {
        before = other;
        break;
      }
    }
    ui.source.insertBefore(option, before);
  }

  async function loadSources() {
    try {
      const response = await fetch("/sources", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      for (const name of body.sources || []) addSource(name);
    } catch (err) {
      // the list still fills from the records seen
    }
  }

  // ---- one record -----------------------------------------------------------------------------------

  function levelClass(levelno) {
    const n = Number(levelno) || 0;
    if (n >= 50) return "l-critical";
    if (n >= 40) return "l-error";
    if (n >= 30) return "l-warning";
    if (n >= 20) return "l-info";
    return "l-debug";
  }

  function keyOf(rec) {
    return [rec.created, rec.source, rec.levelno, rec.subtopic, rec.message].join("\u0000");
  }

  function who(rec) {
    if (rec.host === undefined && rec.pid === undefined) return "";
    return (rec.host === undefined ? "" : String(rec.host)) + (rec.pid === undefined ? "" : ":" + String(rec.pid));
  }

  function text(value) {
    return value === undefined || value === null ? "" : String(value);
  }

  // The record as one line of text (what Download saves), the way the files show it.
  function plain(rec) {
    const parts = [text(rec.time), text(rec.levelname), text(rec.source)];
    if (who(rec)) parts.push(who(rec));
    if (rec.peer) parts.push(text(rec.peer));
    if (rec.subtopic) parts.push(text(rec.subtopic));
    let line = parts.join(" ") + " | " + text(rec.message);
    if (rec.exc) line += "\n" + text(rec.exc);
    return line;
  }

  function span(cls, value) {
    const el = document.createElement("span");
    el.className = cls;
    el.textContent = value;
    return el;
  }

  function render(rec, withContext) {
    const li = document.createElement("li");
    li.className = "rec " + levelClass(rec.levelno);
    li.appendChild(span("time", text(rec.time)));
    li.appendChild(span("lvl", text(rec.levelname)));
    li.appendChild(span("src", text(rec.source)));
    if (who(rec)) li.appendChild(span("who", who(rec)));
    if (rec.peer) li.appendChild(span("peer", "peer=" + text(rec.peer)));
    if (rec.subtopic) li.appendChild(span("sub", text(rec.subtopic)));
    const msg = span("msg", "");
    const message = text(rec.message);
    const rest = [];
    const newline = message.indexOf("\n");
    const first = newline < 0 ? message : message.slice(0, newline);
    if (newline >= 0) rest.push(message.slice(newline + 1));
    if (rec.exc) rest.push(text(rec.exc));
    if (rest.length) {
      // A traceback or a multi-line message stays one record: its first line, expandable.
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = first;
      const pre = document.createElement("pre");
      pre.textContent = rest.join("\n");
      details.appendChild(summary);
      details.appendChild(pre);
      msg.appendChild(details);
    } else {
      msg.textContent = first;
    }
    li.appendChild(msg);
    if (withContext && rec.file && rec.line) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ctx";
      button.textContent = "context";
      button.title = "The records around this one in " + text(rec.file);
      button.addEventListener("click", () => openContext(rec));
      li.appendChild(button);
    }
    li._key = keyOf(rec);
    li._text = plain(rec);
    li._created = Number(rec.created);
    li._loose = looseKey(rec);
    return li;
  }

  // ---- the list ---------------------------------------------------------------------------------------

  function atBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 8;
  }

  function trim() {
    while (ui.records.childElementCount > MAX_RECORDS) {
      const gone = ui.records.firstElementChild;
      state.keys.delete(gone._key);
      ui.records.removeChild(gone);
    }
    const first = ui.records.firstElementChild;
    state.oldest = first ? first._created : null;
  }

  function showArrivals() {
    if (state.arrivals > 0) {
      ui.arrived.hidden = false;
      ui.arrived.textContent = state.arrivals.toLocaleString("en") + " new" + (state.paused ? " (paused)" : " below");
    } else {
      ui.arrived.hidden = true;
      ui.arrived.textContent = "";
    }
  }

  // Adds the queued records at the bottom (*whole*: all of them, else at most MAX_PER_FLUSH).
  function flush(whole) {
    window.clearTimeout(state.frame);
    state.frame = 0;
    const started = performance.now();
    let batch = state.queue.splice(0, state.queue.length);
    const cap = whole ? MAX_RECORDS : MAX_PER_FLUSH;
    if (batch.length > cap) {
      // More arrived than the page can lay out and stay usable: the newest are shown, the rest
      // counted (they are in the files; Filter or Load older finds them).
      state.skipped += batch.length - cap;
      batch = batch.slice(-cap);
      ui.history.textContent =
        state.skipped.toLocaleString("en") + " records skipped to keep the page responsive (they are in the files)";
    }
    const fragment = document.createDocumentFragment();
    for (const rec of batch) {
      const key = keyOf(rec);
      if (state.keys.has(key)) continue;
      // Logged just as the page opened, a record can come from the files before its live event:
      // that event is the same record (its time has more digits, so its key differs).
      const times = state.fromFiles.size ? state.fromFiles.get(looseKey(rec)) : undefined;
      if (times && times.some((t) => Math.abs(t - Number(rec.created)) <= 0.002)) continue;
      state.keys.add(key);
      fragment.appendChild(render(rec, true));
    }
    const follow = state.following;
    ui.records.appendChild(fragment);
    trim();
    if (follow) ui.log.scrollTop = ui.log.scrollHeight; // (this lays the list out now, so it is timed)
    const now = performance.now();
    state.nextFlush = now + Math.max(FLUSH_MS, 2 * (now - started));
  }

  // A live record: shown at the bottom, or held while paused.
  function arrive(rec) {
    addSource(rec.source);
    if (state.paused) {
      state.pending.push(rec);
      if (state.pending.length > MAX_RECORDS) state.pending.splice(0, state.pending.length - MAX_RECORDS);
      state.arrivals += 1;
      showArrivals();
      return;
    }
    if (!state.following) {
      state.arrivals += 1;
      showArrivals();
    }
    state.queue.push(rec);
    if (state.queue.length > 2 * MAX_RECORDS) {
      state.skipped += state.queue.length - MAX_RECORDS;
      state.queue.splice(0, state.queue.length - MAX_RECORDS);
    }
    if (!state.frame) state.frame = window.setTimeout(() => flush(false), Math.max(0, state.nextFlush - performance.now()));
  }

  // The same record read back from a file: its time has only milliseconds, its traceback is in
  // the message. What identifies it across the two: source, level, subtopic, the message's first line.
  function looseKey(rec) {
    const message = text(rec.message);
    const newline = message.indexOf("\n");
    return [rec.source, rec.levelno, rec.subtopic, newline < 0 ? message : message.slice(0, newline)].join("\u0000");
  }

  // The records shown that one from the files could repeat: those within 2 ms of the oldest shown.
  function nearOldest() {
    const near = new Map();
    for (const li of ui.records.children) {
      if (state.oldest === null || li._created > state.oldest + 0.002) break;
      const times = near.get(li._loose) || [];
      times.push(li._created);
      near.set(li._loose, times);
    }
    return near;
  }

  // Records from the files, older than everything shown: inserted at the top, oldest first.
  function prepend(records) {
    // The backlog still waiting for its flush goes in first: it is what the files may repeat.
    if (state.frame) flush(true);
    const fragment = document.createDocumentFragment();
    const near = nearOldest();
    state.fromFiles = new Map();
    let added = 0;
    for (const rec of records) {
      addSource(rec.source);
      const key = keyOf(rec);
      const times = near.get(looseKey(rec));
      if (times && times.some((t) => Math.abs(t - Number(rec.created)) <= 0.002)) continue;
      if (state.keys.has(key)) continue;
      state.keys.add(key);
      const loose = looseKey(rec);
      state.fromFiles.set(loose, [...(state.fromFiles.get(loose) || []), Number(rec.created)]);
      fragment.appendChild(render(rec, true));
      added += 1;
    }
    const wasAtBottom = atBottom();
    ui.records.insertBefore(fragment, ui.records.firstElementChild);
    trim(); // the page keeps the newest records: history beyond the limit is not shown
    if (wasAtBottom && state.following) ui.log.scrollTop = ui.log.scrollHeight;
    return added;
  }

  function clear() {
    ui.records.textContent = "";
    state.keys.clear();
    state.fromFiles = new Map();
    state.queue = [];
    state.pending = [];
    state.arrivals = 0;
    state.skipped = 0;
    state.oldest = null;
    showArrivals();
  }

  // ---- the stream -----------------------------------------------------------------------------------

  function setStatus(message, kind) {
    ui.status.textContent = message;
    ui.status.className = kind || "";
  }

  function parse(data) {
    try {
      const value = JSON.parse(data);
      return value && typeof value === "object" ? value : null;
    } catch (err) {
      return null;
    }
  }

  function connect() {
    if (state.source) state.source.close();
    state.generation += 1;
    const generation = state.generation;
    state.connectedOnce = false;
    clear();
    ui.history.textContent = "";
    setStatus("connecting");
    const es = new EventSource("/events?" + query({ backlog: BACKLOG }));
    state.source = es;
    es.addEventListener("open", () => {
      if (generation === state.generation) setStatus(state.paused ? "paused" : "live", "live");
    });
    // One event per read on the server (up to 1,000 records, a JSON array): at 20,000 records/s the
    // page handles tens of events a second, not one task and one JSON.parse per record.
    es.addEventListener("records", (event) => {
      if (generation !== state.generation) return;
      let batch;
      try {
        batch = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (!Array.isArray(batch)) return;
      for (const rec of batch) {
        if (rec && typeof rec === "object") arrive(rec);
      }
    });
    es.addEventListener("backlog-end", (event) => {
      if (generation !== state.generation) return;
      const info = parse(event.data) || {};
      const count = Number(info.count) || 0;
      const reconnect = state.connectedOnce;
      state.connectedOnce = true;
      // The window held fewer than asked: the rest comes from the files, older than its oldest.
      if (!reconnect && count < BACKLOG) {
        searchHistory(generation, info.oldest === null || info.oldest === undefined ? null : info.oldest, BACKLOG - count);
      }
    });
    es.addEventListener("missed", (event) => {
      const info = parse(event.data) || {};
      if (generation === state.generation && info.missed) {
        ui.history.textContent = Number(info.missed).toLocaleString("en") + " records missed while away (they are in the files)";
      }
    });
    es.addEventListener("error", () => {
      if (generation !== state.generation) return;
      if (es.readyState === EventSource.CLOSED) {
        explain(generation);
      } else {
        setStatus("reconnecting", "trouble");
      }
    });
  }

  // The stream was refused (a bad filter, or auth): say why, then try again later.
  async function explain(generation) {
    let message = "disconnected";
    let refused = false; // a 4xx (a bad filter, no credentials): asking again would not help
    try {
      const controller = new AbortController();
      const response = await fetch("/events?" + query(), { signal: controller.signal });
      if (!response.ok) message = (await response.text()).split("\n")[0] || response.statusText;
      refused = response.status >= 400 && response.status < 500;
      controller.abort();
    } catch (err) {
      // the collector is away
    }
    if (generation !== state.generation) return;
    setStatus(message, "trouble");
    if (refused) return;
    window.setTimeout(() => {
      if (generation === state.generation && state.source && state.source.readyState === EventSource.CLOSED) connect();
    }, 3000);
  }

  // /search answers JSON lines, oldest first, and a last {"done": ...} line.
  async function search(params) {
    const response = await fetch("/search?" + query(params));
    const body = await response.text();
    if (!response.ok) throw new Error(body.split("\n")[0] || response.statusText);
    const records = [];
    let done = null;
    for (const line of body.split("\n")) {
      const value = line ? parse(line) : null;
      if (!value) continue;
      if (value.done === true) done = value;
      else records.push(value);
    }
    return { records, done };
  }

  async function searchHistory(generation, until, limit) {
    ui.history.textContent = "searching the files…";
    try {
      const { records, done } = await search({ until: until, limit: limit });
      if (generation !== state.generation) return;
      const added = prepend(records);
      let note = added ? added.toLocaleString("en") + " earlier records from the files" : "nothing earlier in the files";
      if (done && done.truncated && done.reason === "deadline") note += " (search stopped at its time limit)";
      ui.history.textContent = note;
    } catch (err) {
      if (generation === state.generation) ui.history.textContent = "history unavailable: " + err.message;
    }
  }

  function loadOlder() {
    const until = state.oldest === null ? null : state.oldest;
    searchHistory(state.generation, until, BACKLOG);
  }

  // ---- context --------------------------------------------------------------------------------------

  async function openContext(rec) {
    ui.contextRecords.textContent = "";
    const title = $("context-title");
    title.textContent = "Context: " + text(rec.file) + " line " + text(rec.line);
    try {
      const params = new URLSearchParams({
        file: text(rec.file),
        line: text(rec.line),
        before: String(CONTEXT_LINES),
        after: String(CONTEXT_LINES),
      });
      const response = await fetch("/context?" + params.toString());
      const body = await response.text();
      if (!response.ok) throw new Error(body.split("\n")[0] || response.statusText);
      for (const line of body.split("\n")) {
        const value = line ? parse(line) : null;
        if (!value || value.done === true) continue;
        const li = render(value, false);
        if (value.line === rec.line && value.file === rec.file) li.classList.add("here");
        ui.contextRecords.appendChild(li);
      }
    } catch (err) {
      const li = document.createElement("li");
      li.textContent = "context unavailable: " + err.message;
      ui.contextRecords.appendChild(li);
    }
    if (!ui.context.open) ui.context.showModal();
    const here = ui.contextRecords.querySelector(".here");
    if (here) here.scrollIntoView({ block: "center" });
  }

  // ---- controls -------------------------------------------------------------------------------------

  function setPaused(paused) {
    state.paused = paused;
    ui.pause.textContent = paused ? "Resume" : "Pause";
    ui.pause.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      const held = state.pending;
      state.pending = [];
      state.following = true;
      state.arrivals = 0;
      for (const rec of held) state.queue.push(rec);
      flush(true);
      ui.log.scrollTop = ui.log.scrollHeight;
    }
    showArrivals();
    if (state.source && state.source.readyState === EventSource.OPEN) setStatus(paused ? "paused" : "live", "live");
  }

  function changed() {
    ui.errors.setAttribute("aria-pressed", String(ui.level.value === "ERROR"));
    toUrl();
    connect();
  }

  function download() {
    const lines = [];
    for (const li of ui.records.children) lines.push(li._text);
    const blob = new Blob([lines.join("\n") + (lines.length ? "\n" : "")], { type: "text/plain;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    link.download = "zlogcollect-" + stamp + ".txt";
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.clearTimeout(state.typingTimer);
    changed();
  });
  ui.q.addEventListener("input", () => {
    window.clearTimeout(state.typingTimer);
    state.typingTimer = window.setTimeout(changed, TYPING_DELAY_MS);
  });
  ui.level.addEventListener("change", changed);
  ui.source.addEventListener("change", changed);
  ui.errors.addEventListener("click", () => {
    ui.level.value = ui.level.value === "ERROR" ? "" : "ERROR";
    changed();
  });
  ui.pause.addEventListener("click", () => setPaused(!state.paused));
  ui.arrived.addEventListener("click", () => setPaused(false));
  ui.download.addEventListener("click", download);
  ui.older.addEventListener("click", loadOlder);
  ui.log.addEventListener("scroll", () => {
    const bottom = atBottom();
    if (bottom && !state.following && !state.paused) {
      state.following = true;
      state.arrivals = 0;
      showArrivals();
    } else if (!bottom && state.following) {
      state.following = false;
    }
  });
  window.addEventListener("popstate", () => {
    fromUrl();
    connect();
  });

  fromUrl();
  loadSources();
  connect();
})();
