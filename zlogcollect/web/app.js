// zlogcollect's live web viewer: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// Records come from /events (Server-Sent Events: a backlog from the collector's in-memory window,
// then live records) and from /search (the files on disk) when the window holds fewer than asked.
// Every piece of log text is inserted with textContent, never as HTML: log text is untrusted.
//
// The page keeps at most MAX_KEPT records in a JavaScript array (older ones leave the page, not the
// files) and puts only a slice of them into the document: at most RENDER rows around what is on
// screen (the newest while following). Scrolling near either end of the slice moves it by CHUNK
// rows. So the work of one flush, and the document's size, stay bounded whatever the rate.
"use strict";

(function () {
  const MAX_KEPT = 20000;
  const RENDER = 200; // rows in the document at most (a screen is about 40)
  const CHUNK = 100; // rows the slice moves by when scrolling reaches its edge
  const BACKLOG = 500;
  const CONTEXT_LINES = 20;
  const TYPING_DELAY_MS = 300;
  const FLUSH_MS = 100; // new records are added to the page at most ten times a second

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
  ui.max.textContent = MAX_KEPT.toLocaleString("en");

  const state = {
    source: null, // the EventSource
    generation: 0, // bumped on every (re)connect with new filters: stale answers are ignored
    connectedOnce: false, // a backlog-end after the first one is a reconnect: no history fetch
    paused: false,
    following: true,
    pending: [], // records that arrived while paused (bounded like the page)
    arrivals: 0, // records that arrived since the view stopped following
    queue: [], // records to add at the next flush
    frame: 0, // the timer of the next flush
    nextFlush: 0, // a flush that took T ms is followed by at least 2T ms for the user (input, scrolling)
    items: [], // the records kept, oldest first: {rec, key, loose, created}
    base: 0, // the number of items[0]; items[i] is number base + i (older ones from the files: lower)
    start: 0, // the slice in the document: numbers start .. end - 1
    end: 0,
    shownTail: 0, // the newest number when the slice was last made (did it reach the newest?)
    keys: new Set(), // what is kept, so the window and the files never show a record twice
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
    if (withContext) {
      // One listener on the list handles every row's button (see "controls").
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ctx";
      button.textContent = "context";
      button.title = "The records around this one in its file";
      li.appendChild(button);
    }
    return li;
  }

  // ---- the list ---------------------------------------------------------------------------------------

  function atBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 8;
  }

  function tail() {
    return state.base + state.items.length;
  }

  function item(rec) {
    return { rec: rec, key: keyOf(rec), loose: looseKey(rec), created: Number(rec.created) };
  }

  function row(number) {
    const li = render(state.items[number - state.base].rec, true);
    li._number = number;
    return li;
  }

  // Drops the oldest kept records beyond MAX_KEPT (they stay in the files).
  function trim() {
    const extra = state.items.length - MAX_KEPT;
    if (extra > 0) {
      for (const gone of state.items.splice(0, extra)) state.keys.delete(gone.key);
      state.base += extra;
    }
    state.oldest = state.items.length ? state.items[0].created : null;
    ui.records.dataset.kept = String(state.items.length);
  }

  // The first row at least partly on screen, and where it is (to keep it there).
  function anchor() {
    const rows = ui.records.children;
    const top = ui.log.getBoundingClientRect().top;
    let lo = 0;
    let hi = rows.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rows[mid].getBoundingClientRect().bottom <= top) lo = mid + 1;
      else hi = mid;
    }
    return rows.length ? rows[lo] : null;
  }

  // Makes the document hold the slice the view needs, and no more: following, the newest RENDER
  // records; otherwise state.start .. state.end (extended while it reaches the newest), bounded to
  // RENDER rows. Rows already there stay; a row on screen stays where it is.
  function sync() {
    const last = tail();
    const list = ui.records;
    const wasTail = list.childElementCount === 0 || state.end >= state.shownTail;
    let start;
    let end;
    if (state.following) {
      end = last;
      start = Math.max(state.base, end - RENDER);
    } else {
      start = Math.min(Math.max(state.start, state.base), last);
      end = Math.min(Math.max(state.end, start), last);
      if (wasTail) end = last; // the slice reached the newest: records arriving join it (up to RENDER)
      end = Math.min(end, start + RENDER);
    }
    const keep = state.following ? null : anchor();
    const keptTop = keep && keep._number >= start && keep._number < end ? keep.getBoundingClientRect().top : null;
    // What the document holds now (state.start and state.end may have been moved already by slide()).
    const domStart = list.firstElementChild ? list.firstElementChild._number : 0;
    const domEnd = list.lastElementChild ? list.lastElementChild._number + 1 : 0;
    if (end <= domStart || start >= domEnd || list.childElementCount === 0) {
      list.textContent = "";
      const fragment = document.createDocumentFragment();
      for (let n = start; n < end; n++) fragment.appendChild(row(n));
      list.appendChild(fragment);
    } else {
      while (list.firstElementChild && list.firstElementChild._number < start) list.firstElementChild.remove();
      while (list.lastElementChild && list.lastElementChild._number >= end) list.lastElementChild.remove();
      if (start < domStart) {
        const fragment = document.createDocumentFragment();
        for (let n = start; n < domStart; n++) fragment.appendChild(row(n));
        list.insertBefore(fragment, list.firstElementChild);
      }
      if (end > domEnd) {
        const fragment = document.createDocumentFragment();
        for (let n = domEnd; n < end; n++) fragment.appendChild(row(n));
        list.appendChild(fragment);
      }
    }
    state.start = start;
    state.end = end;
    state.shownTail = last;
    if (state.following) {
      ui.log.scrollTop = ui.log.scrollHeight; // (this lays the slice out now, so a flush is timed whole)
    } else if (keptTop !== null && keep.isConnected) {
      ui.log.scrollTop += keep.getBoundingClientRect().top - keptTop;
    }
  }

  // Scrolled near an end of the slice: move it by CHUNK rows that way (older above, newer below).
  function slide() {
    const log = ui.log;
    if (log.scrollTop < log.clientHeight && state.start > state.base) {
      state.start = Math.max(state.base, state.start - CHUNK);
      state.end = Math.min(state.end, state.start + RENDER);
      sync();
    } else if (log.scrollHeight - log.scrollTop - log.clientHeight < log.clientHeight && state.end < tail()) {
      state.end = Math.min(tail(), state.end + CHUNK);
      state.start = Math.max(state.start, state.end - RENDER);
      sync();
    }
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

  // Keeps the queued records and brings the document up to date. The work is one pass over the
  // queue (cheap: no document) and at most RENDER new rows, however many records arrived.
  function flush() {
    window.clearTimeout(state.frame);
    state.frame = 0;
    const started = performance.now();
    const batch = state.queue;
    state.queue = [];
    for (const rec of batch) {
      const kept = item(rec);
      if (state.keys.has(kept.key)) continue;
      // Logged just as the page opened, a record can come from the files before its live event:
      // that event is the same record (its time has more digits, so its key differs).
      const times = state.fromFiles.size ? state.fromFiles.get(kept.loose) : undefined;
      if (times && times.some((t) => Math.abs(t - kept.created) <= 0.002)) continue;
      state.keys.add(kept.key);
      state.items.push(kept);
    }
    trim();
    sync();
    const now = performance.now();
    state.nextFlush = now + Math.max(FLUSH_MS, 2 * (now - started));
  }

  // A live record: kept (shown at the bottom while following), or held while paused.
  function arrive(rec) {
    addSource(rec.source);
    if (state.paused) {
      state.pending.push(rec);
      if (state.pending.length > 2 * MAX_KEPT) state.pending.splice(0, state.pending.length - MAX_KEPT);
      state.arrivals += 1;
      showArrivals();
      return;
    }
    if (!state.following) {
      state.arrivals += 1;
      showArrivals();
    }
    state.queue.push(rec);
    // More than the page keeps would only pass through it: the oldest of them leave at once.
    if (state.queue.length > 2 * MAX_KEPT) state.queue.splice(0, state.queue.length - MAX_KEPT);
    if (!state.frame) state.frame = window.setTimeout(flush, Math.max(0, state.nextFlush - performance.now()));
  }

  // The same record read back from a file: its time has only milliseconds, its traceback is in
  // the message. What identifies it across the two: source, level, subtopic, the message's first line.
  function looseKey(rec) {
    const message = text(rec.message);
    const newline = message.indexOf("\n");
    return [rec.source, rec.levelno, rec.subtopic, newline < 0 ? message : message.slice(0, newline)].join("\u0000");
  }

  // The records kept that one from the files could repeat: those within 2 ms of the oldest kept.
  function nearOldest() {
    const near = new Map();
    for (const kept of state.items) {
      if (state.oldest === null || kept.created > state.oldest + 0.002) break;
      const times = near.get(kept.loose) || [];
      times.push(kept.created);
      near.set(kept.loose, times);
    }
    return near;
  }

  // Records from the files, older than everything kept: they go before it, oldest first.
  function prepend(records) {
    // The backlog still waiting for its flush goes in first: it is what the files may repeat.
    if (state.frame) flush();
    const near = nearOldest();
    state.fromFiles = new Map();
    const older = [];
    for (const rec of records) {
      addSource(rec.source);
      const kept = item(rec);
      const times = near.get(kept.loose);
      if (times && times.some((t) => Math.abs(t - kept.created) <= 0.002)) continue;
      if (state.keys.has(kept.key)) continue;
      state.keys.add(kept.key);
      state.fromFiles.set(kept.loose, [...(state.fromFiles.get(kept.loose) || []), kept.created]);
      older.push(kept);
    }
    if (older.length) {
      const wasOldest = state.start <= state.base;
      state.items.unshift(...older);
      state.base -= older.length;
      if (wasOldest) state.start = state.base; // the slice showed the oldest: it shows these too
      trim(); // the page keeps the newest records: history beyond the limit is not kept
      sync();
    }
    return older.length;
  }

  function clear() {
    ui.records.textContent = "";
    state.keys.clear();
    state.fromFiles = new Map();
    state.queue = [];
    state.pending = [];
    state.items = [];
    state.base = 0;
    state.start = 0;
    state.end = 0;
    state.shownTail = 0;
    state.arrivals = 0;
    state.oldest = null;
    ui.records.dataset.kept = "0";
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

  // A live record has no file and line: the collector's files are searched for it, by its source,
  // level and time (to the millisecond, as the files hold it) and its first line of text.
  async function locate(rec) {
    if (rec.file && rec.line) return rec;
    const created = Number(rec.created);
    if (!Number.isFinite(created)) throw new Error("the record has no time to find it by");
    const params = new URLSearchParams({
      since: (created - 0.01).toFixed(3),
      until: (created + 0.01).toFixed(3),
      limit: "1000",
    });
    if (rec.source) params.set("source", text(rec.source));
    if (Number.isFinite(Number(rec.levelno))) params.set("level", String(Math.trunc(Number(rec.levelno))));
    const response = await fetch("/search?" + params.toString());
    const body = await response.text();
    if (!response.ok) throw new Error(body.split("\n")[0] || response.statusText);
    const loose = looseKey(rec);
    for (const line of body.split("\n")) {
      const value = line ? parse(line) : null;
      if (!value || value.done === true || !value.file || !value.line) continue;
      if (looseKey(value) === loose && Math.abs(Number(value.created) - created) <= 0.002) return value;
    }
    throw new Error("not in the files yet (the collector writes records within a second or so); try again");
  }

  async function openContext(live) {
    ui.contextRecords.textContent = "";
    const title = $("context-title");
    title.textContent = "Context";
    try {
      const rec = await locate(live);
      title.textContent = "Context: " + text(rec.file) + " line " + text(rec.line);
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
      flush();
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
    for (const kept of state.items) lines.push(plain(kept.rec));
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
  ui.records.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button.ctx") : null;
    const li = button ? button.closest("li") : null;
    if (!li || li._number === undefined) return;
    const kept = state.items[li._number - state.base];
    if (kept) openContext(kept.rec);
  });
  ui.log.addEventListener("scroll", () => {
    const bottom = atBottom();
    if (bottom && !state.following && !state.paused && state.end >= tail()) {
      state.following = true;
      state.arrivals = 0;
      showArrivals();
      if (state.queue.length) flush();
    } else if (!bottom && state.following) {
      state.following = false;
    }
    if (!state.following) slide();
  });
  window.addEventListener("popstate", () => {
    fromUrl();
    connect();
  });

  fromUrl();
  loadSources();
  connect();
})();
