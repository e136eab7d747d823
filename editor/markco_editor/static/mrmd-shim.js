/*
 * markco's browser shim for the mrmd editor UI (npm mrmd-electron, served from ui/).
 *
 * On the desktop the UI talks to Electron's main process through window.electronAPI
 * (preload.cjs) and to local servers at http://127.0.0.1:<port> and ws://127.0.0.1:<port>.
 * In the browser this file, loaded before the UI's own scripts, provides both:
 *
 * 1. window.electronAPI: each call the server can answer is sent as
 *    POST <BASE_PATH>api/bridge {"call", "args"} -> {"value"} | {"error"}
 *    (editor/markco_editor/bridge.py, confined to the
 *    user's files, shown to the UI under the virtual home /home/user). Events the desktop pushes
 *    (files-update, project:changed, venv scans, open-with-file) are produced here. Desktop-only
 *    calls (venvs, voice, AI server, cloud sign-in, systemd, opening local folders) answer
 *    "not available in the browser": {success: false, error} where the UI expects a result
 *    object, a rejected promise otherwise.
 * 2. URL rewriting for fetch, XMLHttpRequest, WebSocket and EventSource:
 *    - http://127.0.0.1:<any port>/mrp/v1/...  ->  <BASE_PATH>mrp/v1/...  (the editor forwards
 *      it to the user's OWN runtime front; no port is ever dialled)
 *    - ws://127.0.0.1:<sync port>/<doc>        ->  <BASE_PATH>sync/<folder>/<doc>  (the Yjs
 *      document of <folder>/<doc>.md; sync ports are handed out by openFile below)
 *    - any other loopback URL is refused here ("not available in the browser"), so nothing
 *      leaves the origin (the page's Content-Security-Policy enforces the same).
 * 3. Activity: typing travels over the sync WebSocket, which markco does not count as user
 *    activity, so user input is reported as POST api/activity (at most every 30 s).
 * 4. The compute notice (GET api/notice, docs/editor-contract.md): shown as a dismissible
 *    banner, polled every 15 s and on focus.
 *
 * Opening a notebook from the address: <BASE_PATH>#file=Projects/Scratch/01-welcome.md.
 */
(function () {
  'use strict';

  const BASE = document.querySelector('meta[name="markco-base"]').getAttribute('content');
  const HOME = '/home/user';
  const NOT_IN_BROWSER = 'not available in the browser';
  const HTTP_ORIGIN = location.origin;
  const WS_ORIGIN = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;
  const LOOPBACK = /^(https?|wss?):\/\/(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)(\/[^?#]*)?(\?[^#]*)?/i;

  // ---------------------------------------------------------------------------------------
  // URL rewriting
  // ---------------------------------------------------------------------------------------

  const syncFolders = new Map(); // fake sync port -> folder relative to HOME ('' for HOME)
  let nextSyncPort = 40001;

  function syncPortFor(projectDir) {
    const folder = projectDir === HOME ? '' : projectDir.slice(HOME.length + 1);
    for (const [port, known] of syncFolders) if (known === folder) return port;
    const port = nextSyncPort++;
    syncFolders.set(port, folder);
    return port;
  }

  function encodePath(path) {
    return path.split('/').map(encodeURIComponent).join('/');
  }

  /** The same-origin URL for a loopback URL of the UI; other URLs unchanged; throws for a
   * loopback URL that has no browser equivalent. */
  function rewrite(url) {
    const text = String(url);
    const m = LOOPBACK.exec(text);
    if (!m) return text;
    const scheme = m[1].toLowerCase();
    const port = Number(m[2]);
    const path = m[3] || '/';
    const query = m[4] || '';
    if ((scheme === 'ws' || scheme === 'wss') && syncFolders.has(port)) {
      const folder = syncFolders.get(port);
      const doc = decodeURIComponent(path.slice(1));
      return WS_ORIGIN + BASE + 'sync/' + encodePath(folder ? folder + '/' + doc : doc) + query;
    }
    if ((scheme === 'http' || scheme === 'https') && path.startsWith('/mrp/v1/')) {
      return HTTP_ORIGIN + BASE + path.slice(1) + query;
    }
    throw new TypeError(`${text}: this local service is ${NOT_IN_BROWSER}`);
  }

  const nativeFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    try {
      if (input instanceof Request) {
        const target = rewrite(input.url);
        return nativeFetch(target === input.url ? input : new Request(target, input), init);
      }
      return nativeFetch(rewrite(input), init);
    } catch (err) {
      return Promise.reject(err);
    }
  };

  const NativeWebSocket = window.WebSocket;
  class ShimWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(rewrite(url), protocols);
    }
  }
  window.WebSocket = ShimWebSocket;

  if (window.EventSource) {
    const NativeEventSource = window.EventSource;
    class ShimEventSource extends NativeEventSource {
      constructor(url, options) {
        super(rewrite(url), options);
      }
    }
    window.EventSource = ShimEventSource;
  }

  const nativeOpen = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    return nativeOpen.call(this, method, rewrite(url), ...rest);
  };

  /** file:///home/user/<path> (the desktop's way to show an image) -> <BASE_PATH>files/<path>. */
  function browserAssetUrl(url) {
    if (typeof url !== 'string') return url;
    const prefix = 'file://' + HOME + '/';
    if (url.startsWith(prefix)) return BASE + 'files/' + encodePath(url.slice(prefix.length));
    if (url.startsWith('file://')) return 'data:,';
    return url;
  }

  // ---------------------------------------------------------------------------------------
  // electronAPI
  // ---------------------------------------------------------------------------------------

  async function call(name, ...args) {
    const response = await nativeFetch(BASE + 'api/bridge', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ call: name, args }),
      credentials: 'same-origin',
    });
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: reported below */ }
    if (!response.ok || !body || body.error) {
      const message = body?.error?.message || `HTTP ${response.status}`;
      throw new Error(`${name}: ${message}`);
    }
    return body.value;
  }

  /** A call that answers {success: false, error} on failure, as main.js's handlers do. */
  function soft(name) {
    return async (...args) => {
      try {
        return await call(name, ...args);
      } catch (err) {
        return { success: false, error: err.message };
      }
    };
  }

  function unavailable(name, answer) {
    return async () => {
      if (answer !== undefined) return typeof answer === 'function' ? answer() : answer;
      throw new Error(`${name} is ${NOT_IN_BROWSER}`);
    };
  }

  function unavailableResult(name) {
    return unavailable(name, () => ({ success: false, error: `${name} is ${NOT_IN_BROWSER}` }));
  }

  const listeners = {
    filesUpdate: [], venvFound: [], venvScanDone: [], projectChanged: [], syncDied: [],
    openWithFile: [],
  };
  function emit(kind, data) {
    for (const cb of listeners[kind]) {
      try { cb(data); } catch (err) { console.warn(`[markco-shim] ${kind} listener:`, err); }
    }
  }

  let scanToken = 0;
  async function scanFiles(searchDir) {
    const token = ++scanToken;
    emit('filesUpdate', { scanToken: token, reset: true, done: false, totalFiles: 0, totalDirs: 0 });
    try {
      const { files, dirs } = await call('scanFiles', searchDir || HOME);
      if (token !== scanToken) return { started: true };
      emit('filesUpdate', {
        scanToken: token, filesChunk: files, dirsChunk: dirs,
        totalFiles: files.length, totalDirs: dirs.length, done: true,
      });
    } catch (err) {
      emit('filesUpdate', { scanToken: token, error: err.message, done: true });
    }
    return { started: true };
  }

  // project:changed comes from the editor's notification socket (file created, changed,
  // deleted), debounced as the desktop's watcher is.
  let watchedRoot = null;
  let notifySocket = null;
  let changeTimer = null;
  function watchProject(root) {
    watchedRoot = root;
    if (notifySocket) return { success: true };
    const open = () => {
      notifySocket = new NativeWebSocket(WS_ORIGIN + BASE + 'ws');
      notifySocket.onmessage = (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        if (message.type !== 'files' || !watchedRoot) return;
        const structural = message.changes.some((c) => c.change !== 'modified');
        if (!structural) return;
        clearTimeout(changeTimer);
        changeTimer = setTimeout(() => emit('projectChanged', { projectRoot: watchedRoot }), 150);
      };
      notifySocket.onclose = () => { notifySocket = null; if (watchedRoot) setTimeout(open, 2000); };
    };
    open();
    return { success: true };
  }

  function bytesOf(file) {
    return Array.from(file instanceof Uint8Array ? file : new Uint8Array(file));
  }

  window.electronAPI = {
    getHomeDir: () => call('getHomeDir'),
    system: {
      info: async () => ({ platform: 'browser', appVersion: 'markco', uv: null }),
      ensureUv: unavailableResult('system.ensureUv'),
    },
    shell: {
      showItemInFolder: unavailableResult('shell.showItemInFolder'),
      openExternal: async (url) => {
        // A link the user clicked: opened in a new tab, with no access back to this page.
        window.open(String(url), '_blank', 'noopener,noreferrer');
        return { success: true };
      },
      openPath: unavailableResult('shell.openPath'),
    },
    getRecent: () => call('getRecent'),
    scanFiles,
    onFilesUpdate: (cb) => { listeners.filesUpdate.push(cb); },
    discoverVenvs: async () => { setTimeout(() => emit('venvScanDone'), 0); return { started: true }; },
    onVenvFound: (cb) => { listeners.venvFound.push(cb); },
    onVenvScanDone: (cb) => { listeners.venvScanDone.push(cb); },
    readPreview: soft('readPreview'),
    getFileInfo: soft('getFileInfo'),
    createVenv: unavailableResult('createVenv'),
    installMrmdPython: unavailableResult('installMrmdPython'),
    openFile: async (filePath) => {
      const result = await soft('openFile')(filePath);
      if (!result.success) return result;
      return { ...result, syncPort: syncPortFor(result.projectDir) };
    },
    getAi: unavailableResult('the AI server'),

    project: {
      get: (filePath) => call('project.get', filePath),
      create: (targetPath) => call('project.create', targetPath),
      nav: (projectRoot) => call('project.nav', projectRoot),
      invalidate: (projectRoot) => call('project.invalidate', projectRoot),
      watch: async (projectRoot) => watchProject(projectRoot),
      unwatch: async () => { watchedRoot = null; return { success: true }; },
      onChanged: (cb) => { listeners.projectChanged.length = 0; listeners.projectChanged.push(cb); },
    },

    runtime: {
      list: (language) => call('runtime.list', language),
      start: (config) => call('runtime.start', config),
      stop: unavailable('stopping the runtime', () => ({ success: false, error: `stopping the runtime is ${NOT_IN_BROWSER}: markco puts it to sleep when you are idle` })),
      restart: unavailable('restarting the runtime'),
      forDocument: (documentPath) => call('runtime.forDocument', documentPath),
      forDocumentLanguage: (documentPath, language) =>
        call('runtime.forDocumentLanguage', documentPath, language),
      ensureEffective: (documentPath, language, options = {}) =>
        call('runtime.ensureEffective', documentPath, language, options),
      prefs: {
        get: (documentPath, projectRoot) => call('runtime.prefs.get', documentPath, projectRoot),
        setNotebook: unavailableResult('runtime preferences'),
        setProject: unavailableResult('runtime preferences'),
        setDefault: unavailableResult('runtime preferences'),
        clearNotebook: unavailableResult('runtime preferences'),
      },
      isAvailable: (language) => call('runtime.isAvailable', language),
      languages: () => call('runtime.languages'),
    },

    notebook: {
      convert: unavailableResult('notebook conversion'),
      startSync: unavailableResult('Jupyter notebook sync'),
      stopSync: unavailableResult('Jupyter notebook sync'),
    },

    file: {
      scan: async (root) => (await call('file.scan', root)).files,
      create: soft('file.create'),
      createInProject: soft('file.createInProject'),
      move: (projectRoot, fromPath, toPath) => call('file.move', projectRoot, fromPath, toPath),
      reorder: unavailable('reordering files'),
      delete: soft('file.delete'),
      read: soft('file.read'),
      write: soft('file.write'),
    },

    asset: {
      list: (projectRoot) => call('asset.list', projectRoot),
      save: (projectRoot, file, filename) => call('asset.save', projectRoot, bytesOf(file), filename),
      read: soft('asset.read'),
      relativePath: (assetPath, documentPath) => call('asset.relativePath', assetPath, documentPath),
      orphans: (projectRoot) => call('asset.orphans', projectRoot),
      delete: unavailableResult('deleting assets'),
    },

    settings: {
      getAll: () => call('settings.getAll'),
      get: (key, defaultValue) => call('settings.get', key, defaultValue),
      set: (key, value) => call('settings.set', key, value),
      update: (updates) => call('settings.update', updates),
      reset: () => call('settings.reset'),
      // API keys stay on the desktop: markco does not keep users' provider keys.
      getApiKeys: async () => ({}),
      setApiKey: unavailable('storing API keys'),
      getApiKey: async () => null,
      getApiProviders: async () => ({}),
      hasApiKey: async () => false,
      getQualityLevels: async () => ({}),
      setQualityLevelModel: unavailable('AI model settings'),
      getCustomSections: async () => [],
      addCustomSection: unavailable('custom AI commands'),
      removeCustomSection: unavailable('custom AI commands'),
      addCustomCommand: unavailable('custom AI commands'),
      updateCustomCommand: unavailable('custom AI commands'),
      removeCustomCommand: unavailable('custom AI commands'),
      getAllCustomCommands: async () => [],
      getDefaults: async () => ({}),
      setDefaults: unavailable('AI defaults'),
      export: async () => JSON.stringify(await call('settings.getAll')),
      import: unavailable('importing settings'),
    },

    voice: {
      checkParakeet: async () => ({ available: false, error: `voice is ${NOT_IN_BROWSER}` }),
      transcribeParakeet: unavailable('voice transcription'),
    },

    cloud: {
      // On markco the user is signed in and every notebook already lives on the server.
      status: () => call('cloud.status'),
      signIn: async () => ({ success: true }),
      signOut: unavailableResult('signing out from the editor (use the dashboard)'),
      validate: async () => ({ valid: true }),
      bridgeDoc: async () => ({ success: true, bridged: false }),
      fetchAsset: async () => ({ ok: false, exists: true }),
    },

    onSyncServerDied: (cb) => { listeners.syncDied.length = 0; listeners.syncDied.push(cb); },
    onOpenWithFile: (cb) => {
      listeners.openWithFile.length = 0;
      listeners.openWithFile.push(cb);
      openFromHashWhenReady();
    },
  };

  /** #file=<path under the home> opens that notebook (a link one can share or bookmark). */
  function openFromHash() {
    const match = /^#file=(.+)$/.exec(location.hash);
    if (!match) return;
    const rel = decodeURIComponent(match[1]).replace(/^\/+/, '');
    emit('openWithFile', { filePath: HOME + '/' + rel });
    // The UI shows its file picker on start; a notebook named in the address replaces it.
    if (typeof window.hideFilePicker === 'function') window.hideFilePicker();
  }
  window.addEventListener('hashchange', openFromHash);

  /** After the UI's init (it knows its home, and shows its file picker 100 ms later). */
  function openFromHashWhenReady() {
    const ready = () => {
      try { return typeof state !== 'undefined' && Boolean(state.homeDir); } catch { return false; }
    };
    const poll = () => (ready() ? setTimeout(openFromHash, 150) : setTimeout(poll, 50));
    poll();
  }

  window.markcoShim = { rewrite, browserAssetUrl, HOME, BASE, NOT_IN_BROWSER };

  // ---------------------------------------------------------------------------------------
  // Activity and the compute notice
  // ---------------------------------------------------------------------------------------

  let lastReport = 0;
  function reportActivity() {
    const now = Date.now();
    if (now - lastReport < 30000) return;
    lastReport = now;
    nativeFetch(BASE + 'api/activity', { method: 'POST', credentials: 'same-origin' })
      .catch(() => { lastReport = 0; });
  }
  for (const kind of ['keydown', 'pointerdown', 'input', 'paste']) {
    window.addEventListener(kind, reportActivity, { capture: true, passive: true });
  }

  const DISMISSED = 'markco-notice-dismissed';
  async function pollNotice() {
    let notice;
    try {
      const response = await nativeFetch(BASE + 'api/notice', { credentials: 'same-origin' });
      if (!response.ok) return;
      notice = await response.json();
    } catch { return; }
    const existing = document.getElementById('markco-notice');
    if (!notice.notice || localStorage.getItem(DISMISSED) === String(notice.id)) {
      existing?.remove();
      return;
    }
    if (existing) return;
    const bar = document.createElement('div');
    bar.id = 'markco-notice';
    bar.setAttribute('role', 'status');
    bar.style.cssText = 'position:fixed;left:50%;transform:translateX(-50%);bottom:16px;z-index:99999;'
      + 'max-width:min(640px,92vw);padding:10px 14px;border-radius:8px;background:#3b3520;'
      + 'color:#f5e9c4;font:14px system-ui,sans-serif;box-shadow:0 4px 16px rgba(0,0,0,.4)';
    const text = document.createElement('span');
    text.textContent = notice.notice;
    const close = document.createElement('button');
    close.textContent = 'Dismiss';
    close.style.cssText = 'margin-left:12px;background:none;border:1px solid currentColor;color:inherit;border-radius:4px;cursor:pointer';
    close.addEventListener('click', () => {
      if (notice.id) localStorage.setItem(DISMISSED, String(notice.id));
      bar.remove();
    });
    bar.append(text, close);
    document.body.appendChild(bar);
  }
  window.addEventListener('load', () => { pollNotice(); setInterval(pollNotice, 15000); });
  window.addEventListener('focus', pollNotice);
})();
