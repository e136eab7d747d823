// markco's built-in editor: the page's only script. No build step, no dependencies.
// Every URL is relative to <base href> (the BASE_PATH markco strips), so the page works
// under /u/<userId>/ as well as at the root.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"), list: $("file-list"), hint: $("file-hint"), panel: $("files-panel"),
    newFile: $("new-file"), path: $("doc-path"), state: $("doc-state"), save: $("save"),
    runAll: $("run-all"), interrupt: $("interrupt"), banner: $("banner"),
    bannerText: $("banner-text"), bannerReload: $("banner-reload"),
    bannerOverwrite: $("banner-overwrite"), source: $("source"), blocks: $("blocks"),
    notice: $("notice"), noticeText: $("notice-text"), noticeDismiss: $("notice-dismiss"),
  };
  const narrow = window.matchMedia("(max-width: 720px)");
  const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;
  const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})\s*(python3?|py)\b/;

  const state = {
    path: null, version: null, dirty: false, saving: false,
    blocks: [],            // [{line, code, card, out, badge}]
    runs: new Map(),       // execId -> block
    ws: null, wsDelay: 1000,
  };

  // -- HTTP ------------------------------------------------------------------------------
  const url = (path) => new URL(path, document.baseURI);
  const filePath = (path) => "api/files/" + path.split("/").map(encodeURIComponent).join("/");

  async function api(path, options = {}) {
    const init = { ...options, headers: { "content-type": "application/json" } };
    if (options.json !== undefined) init.body = JSON.stringify(options.json);
    const resp = await fetch(url(path), init);
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      // The editor's errors carry a message to show; anything else (a proxy's page, an empty
      // body) still says what happened.
      const err = new Error((body && body.error && body.error.message) ||
        `the server answered ${resp.status}${resp.statusText ? " " + resp.statusText : ""}`);
      err.status = resp.status;
      err.code = body && body.error && body.error.code;
      throw err;
    }
    return body;
  }

  // -- status and banner ------------------------------------------------------------------
  function setStatus(text, kind) {
    el.status.textContent = text;
    el.status.dataset.state = kind;
  }
  function setDocState(text) { el.state.textContent = text; }
  function showBanner(text, withActions) {
    el.bannerText.textContent = text;
    el.bannerReload.hidden = !withActions;
    el.bannerOverwrite.hidden = !withActions;
    el.banner.hidden = false;
  }
  function hideBanner() { el.banner.hidden = true; }
  function flash(text) {
    showBanner(text, false);
    window.setTimeout(hideBanner, 5000);
  }

  // -- files ------------------------------------------------------------------------------
  async function refreshList() {
    let listing;
    try { listing = await api("api/files"); } catch (e) { flash("Cannot list files: " + e.message); return; }
    el.list.replaceChildren();
    for (const file of listing.files) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#" + encodeURI(file.path);
      a.textContent = file.path;
      if (file.path === state.path) a.className = "active";
      li.append(a);
      el.list.append(li);
    }
    el.hint.textContent = listing.files.length === 0 ? "No markdown files yet."
      : listing.truncated ? `Showing the first ${listing.files.length} files.` : "";
  }

  function markActive() {
    for (const a of el.list.querySelectorAll("a")) {
      a.classList.toggle("active", decodeURI(a.getAttribute("href").slice(1)) === state.path);
    }
  }

  // `reload`: the same file again (changed on disk): keep the cursor and the blocks' outputs.
  async function openFile(path, { reload = false } = {}) {
    let doc;
    try { doc = await api(filePath(path)); } catch (e) { flash(`Cannot open ${path}: ${e.message}`); return; }
    const cursor = el.source.selectionStart;
    state.path = doc.path;
    state.version = doc.version;
    state.dirty = false;
    el.source.value = doc.content;
    el.source.disabled = false;
    if (reload) el.source.setSelectionRange(cursor, cursor);
    el.path.textContent = doc.path;
    el.save.disabled = false;
    el.runAll.disabled = false;
    setDocState("saved");
    hideBanner();
    markActive();
    parseBlocks(!reload);
    if (narrow.matches && !reload) el.panel.open = false;
  }

  async function save(force = false) {
    if (!state.path || state.saving) return;
    state.saving = true;
    setDocState("saving…");
    const content = el.source.value;
    try {
      const entry = await api(filePath(state.path), {
        method: "PUT", json: { content, baseVersion: force ? null : state.version },
      });
      state.version = entry.version;
      state.dirty = el.source.value !== content;  // typed while saving?
      setDocState(state.dirty ? "unsaved" : "saved");
      hideBanner();
    } catch (e) {
      setDocState("unsaved");
      if (e.code === "conflict") {
        showBanner("This file changed on disk since you opened it.", true);
      } else {
        flash("Save failed: " + e.message);
      }
    } finally {
      state.saving = false;
    }
  }

  async function newFile() {
    let name = window.prompt("New markdown file (for example Projects/notes.md):", "untitled.md");
    if (!name) return;
    name = name.trim().replace(/^\/+/, "");
    if (!/\.(md|markdown)$/i.test(name)) name += ".md";
    const title = name.split("/").pop().replace(/\.(md|markdown)$/i, "");
    try {
      await api("api/files", { method: "POST", json: { path: name, content: `# ${title}\n\n` } });
    } catch (e) { flash("Cannot create it: " + e.message); return; }
    await refreshList();
    location.hash = encodeURI(name);
  }

  function onFilesChanged(changes) {
    refreshList();
    const mine = changes.find((c) => c.path === state.path);
    if (!mine || mine.version === state.version) return;
    if (mine.change === "deleted") {
      showBanner("This file was deleted on disk. Save to write it again.", false);
    } else if (state.dirty) {
      showBanner("This file changed on disk while you were editing.", true);
    } else {
      openFile(state.path, { reload: true });
    }
  }

  // -- python blocks ----------------------------------------------------------------------
  function findBlocks(text) {
    const lines = text.split("\n");
    const found = [];
    for (let i = 0; i < lines.length; i++) {
      const open = FENCE_OPEN.exec(lines[i]);
      if (!open) continue;
      const fence = open[1];
      let j = i + 1;
      while (j < lines.length) {
        const t = lines[j].trim();
        if (t.startsWith(fence) && t.replace(new RegExp("^\\" + fence[0] + "+"), "") === "") break;
        j++;
      }
      found.push({ line: i, end: j, code: lines.slice(i + 1, j).join("\n") });
      i = j;
    }
    return found;
  }

  function parseBlocks(reset) {
    const found = findBlocks(el.source.value);
    if (!reset && found.length === state.blocks.length) {
      found.forEach((b, i) => Object.assign(state.blocks[i], { line: b.line, end: b.end, code: b.code }));
      state.blocks.forEach(labelBlock);
      return;
    }
    // Outputs of removed blocks are dropped; those of surviving blocks kept by position.
    const old = reset ? [] : state.blocks;
    state.blocks = found.map((b, i) => {
      const block = old[i] || makeCard();
      Object.assign(block, { line: b.line, end: b.end, code: b.code });
      return block;
    });
    el.blocks.replaceChildren(...state.blocks.map((b) => b.card));
    state.blocks.forEach(labelBlock);
  }

  function makeCard() {
    const card = document.createElement("article");
    card.className = "block";
    const head = document.createElement("div");
    head.className = "block-head";
    const title = document.createElement("span");
    const badge = document.createElement("span");
    badge.className = "badge";
    const run = document.createElement("button");
    run.type = "button";
    run.textContent = "Run";
    const out = document.createElement("pre");
    out.className = "out";
    head.append(title, badge, run);
    card.append(head, out);
    const block = { card, title, badge, out };
    run.addEventListener("click", () => runBlock(block));
    return block;
  }

  function labelBlock(block, i) {
    const first = block.code.split("\n").find((l) => l.trim()) || "(empty)";
    block.title.textContent = `[${i + 1}] line ${block.line + 1}: ${first.slice(0, 60)}`;
  }

  function setBadge(block, text, kind) {
    block.badge.textContent = text;
    block.badge.dataset.state = kind;
  }

  function appendOutput(block, text, kind) {
    const span = document.createElement("span");
    span.className = kind;
    span.textContent = text.replace(ANSI, "").replace(/\r\n?/g, "\n");
    block.out.append(span);
  }

  function newExecId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function runBlock(block) {
    const execId = newExecId();
    state.runs.set(execId, block);
    block.out.replaceChildren();
    setBadge(block, "queued", "queued");
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "execute", code: block.code, execId }));
    } else {
      runOverHttp(block.code, execId);  // no WebSocket: the same events as a stream
    }
  }

  async function runOverHttp(code, execId) {
    let resp;
    try {
      resp = await fetch(url("api/execute"), {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ code, execId }),
      });
    } catch (e) { onExec(execId, "error", { type: "NetworkError", message: e.message }); onExec(execId, "done", {}); return; }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      onExec(execId, "error", { type: "Refused", message: (body.error || {}).message || resp.statusText });
      onExec(execId, "done", {});
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onExec(execId, name, JSON.parse(data.join("\n")));
      }
    }
  }

  function onExec(execId, event, data) {
    const block = state.runs.get(execId);
    if (!block) return;  // started elsewhere (another tab, a script)
    switch (event) {
      case "queued": setBadge(block, "queued", "queued"); break;
      case "start": setBadge(block, "running", "running"); break;
      case "stdout": appendOutput(block, data.content || "", "stdout"); break;
      case "stderr": appendOutput(block, data.content || "", "stderr"); break;
      case "result": setBadge(block, "ok", "ok"); break;
      case "error": {
        setBadge(block, "error", "error");
        const line = `${data.type || "Error"}: ${data.message || ""}`;
        if (!block.out.textContent.includes(data.message || line)) appendOutput(block, line + "\n", "stderr");
        break;
      }
      case "done":
        if (block.badge.dataset.state === "running" || block.badge.dataset.state === "queued") setBadge(block, "done", "ok");
        state.runs.delete(execId);
        break;
      default: break;
    }
  }

  function blockAtCursor() {
    const line = el.source.value.slice(0, el.source.selectionStart).split("\n").length - 1;
    return state.blocks.find((b) => line >= b.line && line <= b.end);
  }

  async function interrupt() {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "interrupt" }));
      return;
    }
    try { await api("api/interrupt", { method: "POST", json: {} }); } catch (e) { flash("Stop failed: " + e.message); }
  }

  // -- WebSocket --------------------------------------------------------------------------
  function connect() {
    const wsUrl = url("ws");
    wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";
    setStatus("connecting", "connecting");
    const ws = new WebSocket(wsUrl);
    state.ws = ws;
    ws.addEventListener("open", () => {
      state.wsDelay = 1000;
      setStatus("live", "live");
      refreshList();  // catch up on what changed while disconnected
    });
    ws.addEventListener("message", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === "files") onFilesChanged(msg.changes || []);
      else if (msg.type === "exec") onExec(msg.execId, msg.event, msg.data || {});
      else if (msg.type === "error") {
        if (msg.execId && state.runs.has(msg.execId)) {
          onExec(msg.execId, "error", { type: msg.error.code, message: msg.error.message });
          onExec(msg.execId, "done", {});
        } else flash(msg.error.message);
      } else if (msg.type === "interrupted" && !msg.interrupted) flash("Nothing was running.");
    });
    ws.addEventListener("close", () => {
      if (state.ws !== ws) return;
      setStatus("offline", "offline");
      state.ws = null;
      window.setTimeout(connect, state.wsDelay);
      state.wsDelay = Math.min(state.wsDelay * 2, 15000);
    });
  }

  // -- compute notice ---------------------------------------------------------------------
  // What compute has to tell the user (e.g. a wake that could not restore the runtime and
  // started a fresh one). Answered by the runtime front itself, so polling never wakes the
  // runtime. A dismissed notice stays dismissed (per id, in localStorage).
  const NOTICE_POLL_MS = 15000;
  const DISMISSED_KEY = "markco.dismissedNotice";
  let noticeId = null;
  function dismissedNotice() {
    try { return window.localStorage.getItem(DISMISSED_KEY); } catch (e) { return null; }
  }
  async function pollNotice() {
    let body;
    try { body = await api("api/notice"); } catch (e) { return; }  // try again later
    const text = body && body.notice;
    noticeId = text ? String(body.id || text) : null;
    if (!text || noticeId === dismissedNotice()) { el.notice.hidden = true; return; }
    el.noticeText.textContent = text;
    el.notice.hidden = false;
  }
  el.noticeDismiss.addEventListener("click", () => {
    if (noticeId) {
      try { window.localStorage.setItem(DISMISSED_KEY, noticeId); } catch (e) { /* private */ }
    }
    el.notice.hidden = true;
  });
  window.setInterval(() => { if (!document.hidden) pollNotice(); }, NOTICE_POLL_MS);
  window.addEventListener("focus", pollNotice);

  // -- wiring -----------------------------------------------------------------------------
  let parseTimer = 0;
  el.source.addEventListener("input", () => {
    state.dirty = true;
    setDocState("unsaved");
    window.clearTimeout(parseTimer);
    parseTimer = window.setTimeout(() => parseBlocks(false), 250);
  });
  el.source.addEventListener("keydown", (ev) => {
    const mod = ev.ctrlKey || ev.metaKey;
    if (mod && ev.key === "s") { ev.preventDefault(); save(); }
    if (mod && ev.key === "Enter") {
      ev.preventDefault();
      parseBlocks(false);
      const block = blockAtCursor();
      if (block) runBlock(block); else flash("The cursor is not in a python block.");
    }
  });
  el.save.addEventListener("click", () => save());
  el.runAll.addEventListener("click", () => { parseBlocks(false); state.blocks.forEach(runBlock); });
  el.interrupt.addEventListener("click", interrupt);
  el.newFile.addEventListener("click", newFile);
  el.bannerReload.addEventListener("click", () => state.path && openFile(state.path));
  el.bannerOverwrite.addEventListener("click", () => save(true));
  window.addEventListener("hashchange", () => {
    const path = decodeURI(location.hash.slice(1));
    if (!path || path === state.path) return;
    if (state.dirty && !window.confirm("Discard unsaved changes?")) {
      location.hash = encodeURI(state.path);
      return;
    }
    openFile(path);
  });
  window.addEventListener("beforeunload", (ev) => {
    if (state.dirty) { ev.preventDefault(); ev.returnValue = ""; }
  });

  if (location.hash.length > 1) openFile(decodeURI(location.hash.slice(1)));
  connect();
  pollNotice();
})();
