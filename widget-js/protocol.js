/*! chat-gateway protocol client (wire protocol v1, JSON encoding).
 *
 * The one client of the gateway's WebSocket protocol, shared by the embeddable widget and the
 * operator console. It is a plain script (no modules, no build step): the gateway serves it on
 * its own as /protocol.js and concatenated in front of widget.js as /widget.js. It defines
 * `globalThis.ChatGatewayProtocol` and, under node, `module.exports` (the unit tests).
 *
 * What it guarantees to its users: every stored message is emitted once (`msg` event), in seq
 * order per conversation, across reconnects; gaps are filled with `history`; sends are retried
 * with the same `cid` until the server acks them (the server dedups by cid); reconnection obeys
 * the close codes of protocol-v1.md with exponential backoff and jitter.
 */
(function (root, factory) {
  'use strict';
  var api = factory(root);
  root.ChatGatewayProtocol = api;
  if (typeof module === 'object' && module && module.exports) module.exports = api;
})(typeof globalThis !== 'undefined' ? globalThis : this, function (root) {
  'use strict';

  var SUBPROTOCOL = 'chat.v1.json';

  /** Close codes of protocol v1 (the server's) plus the one we use for our own drops. */
  var CLOSE = {
    NORMAL: 1000,
    RESTART: 1012,
    PROTOCOL: 4000,
    TOKEN: 4001,
    FORBIDDEN: 4003,
    SLOW: 4008,
    LIMIT: 4029,
    ABNORMAL: 1006,
    CLIENT_DROP: 3000
  };

  var DEFAULTS = {
    pingIntervalMs: 25000, // until welcome.settings.ping_interval_ms says otherwise
    livenessSlackMs: 10000, // "nothing received for ping interval + 10 s" => reconnect
    backoffBaseMs: 500,
    backoffMaxMs: 30000,
    restartJitterMs: 1000, // 1012: reconnect at once, spread over this window
    requestTimeoutMs: 20000,
    fillDelayMs: 150, // lets frames already on the wire arrive before asking history for a gap
    historyPage: 100,
    maxCursors: 100
  };

  // ---------------------------------------------------------------- encoding

  /** Encodes one frame as a text frame of `chat.v1.json`. */
  function encode(frame) {
    if (!frame || typeof frame !== 'object' || Array.isArray(frame) || typeof frame.t !== 'string') {
      throw new TypeError('a frame is an object with a string "t"');
    }
    return JSON.stringify(frame);
  }

  /** Decodes one text frame; throws on anything that is not an object with a string "t". */
  function decode(data) {
    if (typeof data !== 'string') {
      if (data && typeof TextDecoder !== 'undefined' && (data instanceof ArrayBuffer || ArrayBuffer.isView(data))) {
        data = new TextDecoder().decode(data);
      } else {
        throw new TypeError('expected a text frame');
      }
    }
    var f = JSON.parse(data);
    if (!f || typeof f !== 'object' || Array.isArray(f) || typeof f.t !== 'string') {
      throw new TypeError('malformed frame');
    }
    return f;
  }

  /** Drops keys whose value is undefined or null, so optional fields are absent, not null. */
  function compact(o) {
    var out = {};
    for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k) && o[k] !== undefined && o[k] !== null) out[k] = o[k];
    return out;
  }

  /** A client message id: unique per message, at most 64 characters. */
  function newCid() {
    var c = root.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    return Date.now().toString(36) + '-' + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
  }

  // ---------------------------------------------------------------- reconnect policy

  /**
   * Exponential backoff with "equal jitter": the window doubles per attempt up to the maximum
   * and the delay is drawn from its upper half, so a crowd of clients spreads out but nobody
   * retries sooner than half the window.
   */
  function backoffDelay(attempt, rnd, opts) {
    var o = opts || DEFAULTS;
    var base = o.backoffBaseMs || DEFAULTS.backoffBaseMs;
    var max = o.backoffMaxMs || DEFAULTS.backoffMaxMs;
    var cap = Math.min(max, base * Math.pow(2, Math.max(0, Math.min(attempt, 30))));
    var r = typeof rnd === 'number' ? Math.min(Math.max(rnd, 0), 1) : Math.random();
    return Math.floor(cap / 2 + (r * cap) / 2);
  }

  /**
   * What to do after a close: `{action: 'stop'|'reconnect'|'token', delay}`.
   * `attempt` counts reconnects since the last welcome (0 = this connection was healthy).
   */
  function reconnectPlan(code, attempt, rnd, opts) {
    var o = opts || DEFAULTS;
    attempt = attempt || 0;
    switch (code) {
      case CLOSE.NORMAL:
      case CLOSE.FORBIDDEN:
        return { action: 'stop', delay: 0 };
      case CLOSE.TOKEN:
        return { action: 'token', delay: attempt ? backoffDelay(attempt, rnd, o) : 0 };
      case CLOSE.RESTART:
        return {
          action: 'reconnect',
          delay: attempt ? backoffDelay(attempt, rnd, o) : Math.floor(rnd * (o.restartJitterMs || DEFAULTS.restartJitterMs))
        };
      case CLOSE.LIMIT:
        return { action: 'reconnect', delay: backoffDelay(attempt + 3, rnd, o) };
      case CLOSE.SLOW:
        return { action: 'reconnect', delay: backoffDelay(attempt + 1, rnd, o) };
      default: // 4000, 1001, 1006, 1011, our own drops…
        return { action: 'reconnect', delay: backoffDelay(attempt, rnd, o) };
    }
  }

  // ---------------------------------------------------------------- events

  function Emitter() {
    this._h = {};
  }
  Emitter.prototype.on = function (ev, fn) {
    (this._h[ev] || (this._h[ev] = [])).push(fn);
    return this;
  };
  Emitter.prototype.off = function (ev, fn) {
    var l = this._h[ev];
    if (l) this._h[ev] = l.filter(function (f) { return f !== fn; });
    return this;
  };
  Emitter.prototype.once = function (ev, fn) {
    var self = this;
    function w() { self.off(ev, w); fn.apply(this, arguments); }
    return this.on(ev, w);
  };
  Emitter.prototype.emit = function (ev) {
    var args = Array.prototype.slice.call(arguments, 1);
    var l = (this._h[ev] || []).slice();
    for (var i = 0; i < l.length; i++) {
      try {
        l[i].apply(this, args);
      } catch (e) {
        // A broken listener must not break the connection nor the other listeners.
        if (ev !== 'error' && this._h.error && this._h.error.length) this.emit('error', e);
        else if (root.console) root.console.error(e);
      }
    }
    return l.length > 0;
  };

  function protoError(code, message, frame) {
    var e = new Error(message || code);
    e.code = code;
    if (frame) e.frame = frame;
    return e;
  }

  function noop() {}

  // ---------------------------------------------------------------- client

  /**
   * new Client({url, token?, getToken?, cursors?, WebSocket?, timers?, random?, ...DEFAULTS})
   *
   * Events: state(s), welcome(frame), msg(m), sent(ack), failed({cid,conv,error}), outbox(items),
   * cursor(conv, seq), resync(conv), gap({conv,from,to}), close({code,reason,action,delay}),
   * unauthorized(), frame(f), and one event per other server frame type: typing, read, conv,
   * queue, offer, operator, notice, draft, ok, error.
   * States: idle → connecting → open ⇄ waiting (reconnect timer) … → closed.
   */
  function Client(opts) {
    Emitter.call(this);
    var o = opts || {};
    this.opts = {};
    for (var k in DEFAULTS) this.opts[k] = o[k] !== undefined ? o[k] : DEFAULTS[k];
    this.url = o.url;
    this.token = o.token || null;
    this.getToken = o.getToken || null;
    this.WebSocket = o.WebSocket || root.WebSocket;
    this.timers = o.timers || {
      setTimeout: function (f, ms) { return setTimeout(f, ms); },
      clearTimeout: function (t) { clearTimeout(t); }
    };
    this.random = o.random || Math.random;
    this.state = 'idle';
    this.ready = false; // welcome received on the current socket
    this.me = null;
    this.settings = null;
    this.attempt = 0;
    this.outbox = [];
    this._rid = 0;
    this._pending = new Map(); // rid -> {resolve, reject, timer} | {item}
    this._convs = new Map(); // conv -> {cursor, known, ahead: Map(seq -> msg), timer, filling}
    this._drafts = new Map();
    this._waiters = [];
    this._sock = 0; // id of the current socket; stale sockets' events are ignored
    this._ws = null;
    this._stopped = true;
    this._hold = false;
    this._needToken = false;
    this._live = null;
    this._retry = null;
    var cur = o.cursors || {};
    for (var c in cur) if (cur[c] > 0) this.track(c, cur[c]);
    var self = this;
    if (o.watchOnline !== false && root.addEventListener) {
      // Back online: skip the rest of the backoff wait.
      root.addEventListener('online', function () {
        if (self.state === 'waiting' && !self._hold) self._reopen();
      });
    }
  }
  Client.prototype = Object.create(Emitter.prototype);
  Client.prototype.constructor = Client;

  Client.prototype._setTimeout = function (f, ms) { return this.timers.setTimeout(f, ms); };
  Client.prototype._clearTimeout = function (t) { if (t != null) this.timers.clearTimeout(t); };

  Client.prototype._setState = function (s) {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  };

  /** Starts connecting (no-op when already started). */
  Client.prototype.connect = function () {
    if (!this._stopped) return this;
    this._stopped = false;
    this._hold = false;
    this.attempt = 0;
    this._open();
    return this;
  };

  /** Closes for good (code 1000); connect() starts again. Unacked sends stay in the outbox. */
  Client.prototype.disconnect = function () {
    this._stopped = true;
    this._clearTimeout(this._retry);
    this._retry = null;
    if (this._ws) this._drop(CLOSE.NORMAL, 'client closed');
    this._setState('closed');
    this._rejectWaiters(protoError('closed', 'client closed'));
  };

  /** Drops the socket as if the network failed; reconnects per policy (tests, liveness). */
  Client.prototype.drop = function () {
    if (this._ws) this._drop(CLOSE.ABNORMAL, 'dropped');
  };

  /** Drops the socket and does not reconnect until resume() (page frozen, tests). */
  Client.prototype.suspend = function () {
    this._hold = true;
    this._clearTimeout(this._retry);
    this._retry = null;
    if (this._ws) this._drop(CLOSE.ABNORMAL, 'suspended');
    else if (!this._stopped) this._setState('waiting');
  };

  Client.prototype.resume = function () {
    if (!this._hold) return;
    this._hold = false;
    if (!this._stopped && !this._ws) this._reopen();
  };

  /** Resolves at the next welcome (at once when connected). */
  Client.prototype.whenReady = function () {
    var self = this;
    if (this.ready) return Promise.resolve(this);
    return new Promise(function (resolve, reject) { self._waiters.push({ resolve: resolve, reject: reject }); });
  };

  Client.prototype._rejectWaiters = function (err) {
    var w = this._waiters;
    this._waiters = [];
    w.forEach(function (x) { x.reject(err); });
  };

  Client.prototype._reopen = function () {
    this._clearTimeout(this._retry);
    this._retry = null;
    var self = this;
    if (this._stopped || this._hold) return;
    if (this._needToken || (!this.token && this.getToken)) {
      if (!this.getToken) {
        this._stopped = true;
        this._setState('closed');
        this.emit('unauthorized');
        this._rejectWaiters(protoError('unauthorized', 'token rejected'));
        return;
      }
      this._setState('connecting');
      Promise.resolve()
        .then(function () { return self.getToken(); })
        .then(function (tok) {
          if (!tok) throw protoError('unauthorized', 'no token');
          self.token = tok;
          self._needToken = false;
          self.emit('token', tok);
          self._open();
        }, function (e) {
          self.emit('error', e);
          self._schedule(backoffDelay(self.attempt++, self.random(), self.opts));
        });
      return;
    }
    this._open();
  };

  Client.prototype._open = function () {
    if (this._stopped || this._hold) return;
    if (this._needToken || (!this.token && this.getToken)) return this._reopen();
    var self = this;
    var id = ++this._sock;
    var ws;
    this.ready = false;
    this._setState('connecting');
    try {
      ws = new this.WebSocket(this.url, SUBPROTOCOL);
    } catch (e) {
      this.emit('error', e);
      return this._schedule(backoffDelay(this.attempt++, this.random(), this.opts));
    }
    this._ws = ws;
    this._welcomed = false;
    this._arm(); // a handshake that hangs counts as silence too
    ws.onopen = function () {
      if (id !== self._sock) return;
      var hello = { t: 'hello', token: self.token };
      var cur = self.cursors();
      if (Object.keys(cur).length) hello.cursors = cur;
      self._raw(hello);
    };
    ws.onmessage = function (ev) { if (id === self._sock) self._onData(ev.data); };
    ws.onclose = function (ev) { if (id === self._sock) self._onClose(ev.code, ev.reason); };
    ws.onerror = noop; // a close event follows
  };

  Client.prototype._schedule = function (delay) {
    var self = this;
    this._clearTimeout(this._retry);
    if (this._stopped) return;
    this._setState('waiting');
    if (this._hold) return;
    this._retry = this._setTimeout(function () { self._retry = null; self._reopen(); }, delay);
  };

  /** Liveness: the server pings every interval; silence for interval + slack means a dead link. */
  Client.prototype._arm = function () {
    var self = this;
    var ping = (this.settings && this.settings.ping_interval_ms) || this.opts.pingIntervalMs;
    this._clearTimeout(this._live);
    this._live = this._setTimeout(function () {
      self._live = null;
      self.emit('timeout');
      self._drop(CLOSE.ABNORMAL, 'nothing received');
    }, ping + this.opts.livenessSlackMs);
  };

  /** Closes the current socket without waiting for its close event and handles it as `code`. */
  Client.prototype._drop = function (code, reason) {
    var ws = this._ws;
    var sock = this._sock;
    this._sock++; // events of the old socket are ignored from now on
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = noop;
      try { ws.close(code === CLOSE.NORMAL ? 1000 : CLOSE.CLIENT_DROP, reason); } catch (e) { /* already closed */ }
    }
    this._onClose(code, reason, sock);
  };

  Client.prototype._onClose = function (code, reason, sock) {
    var closedSock = sock || this._sock;
    this._ws = null;
    this._clearTimeout(this._live);
    this._live = null;
    this.ready = false;
    var self = this;
    // Requests die with their socket; sends live on in the outbox and go again after welcome.
    this._pending.forEach(function (p, rid) {
      self._pending.delete(rid);
      if (p.item) {
        if (code === CLOSE.PROTOCOL && p.item.sock === closedSock) {
          // 4000: "do not retry the same frames" — give up on what was in flight.
          self._fail(p.item, protoError('protocol', 'closed for a protocol violation'));
        } else {
          p.item.sock = 0;
        }
      } else {
        self._clearTimeout(p.timer);
        p.reject(protoError('disconnected', 'connection lost'));
      }
    });
    this.outbox.forEach(function (it) { if (it.sock) it.sock = 0; });
    if (this._stopped) {
      this._setState('closed');
      this.emit('close', { code: code, reason: reason, action: 'stop', delay: 0 });
      return;
    }
    var plan = reconnectPlan(code, this.attempt, this.random(), this.opts);
    this.emit('close', { code: code, reason: reason, action: plan.action, delay: plan.delay });
    if (plan.action === 'stop') {
      this._stopped = true;
      this._setState('closed');
      this._rejectWaiters(protoError(code === CLOSE.FORBIDDEN ? 'forbidden' : 'closed', 'closed by server'));
      return;
    }
    if (plan.action === 'token') this._needToken = true;
    this.attempt++;
    this._schedule(plan.delay);
  };

  Client.prototype._raw = function (frame) {
    if (!this._ws) return false;
    try {
      this._ws.send(encode(frame));
      return true;
    } catch (e) {
      this.emit('error', e);
      return false;
    }
  };

  Client.prototype._onData = function (data) {
    var f;
    try {
      f = decode(data);
    } catch (e) {
      this.emit('error', e);
      return;
    }
    this._arm();
    this.emit('frame', f);
    switch (f.t) {
      case 'ping':
        this._raw({ t: 'pong' });
        return;
      case 'pong':
        return;
      case 'welcome':
        return this._onWelcome(f);
      case 'ok':
        return this._onOk(f);
      case 'error':
        return this._onError(f);
      case 'msg':
        this._ingest(f);
        return;
      case 'conv':
        // Only conversations we already follow: a supervisor sees events of many others.
        if (f.conv && this._convs.has(f.conv.id)) this._seeConv(f.conv);
        break;
    }
    this.emit(f.t, f);
  };

  Client.prototype._onWelcome = function (f) {
    var self = this;
    this.ready = true;
    this._welcomed = true;
    this.attempt = 0;
    this.me = f.me || null;
    this.settings = f.settings || {};
    this._arm();
    (f.conversations || []).forEach(function (c) { self._seeConv(c, true); });
    this._setState('open');
    this.emit('welcome', f);
    var w = this._waiters;
    this._waiters = [];
    w.forEach(function (x) { x.resolve(self); });
    this.outbox.forEach(function (it) { self._transmit(it); });
    this._drafts.forEach(function (text, conv) { self._raw({ t: 'draft', conv: conv, text: text }); });
    this._drafts.clear();
    this._convs.forEach(function (st, conv) { self._scheduleFill(conv); });
  };

  Client.prototype._onOk = function (f) {
    if (f.conv && typeof f.conv === 'object') this._seeConv(f.conv);
    var p = this._pending.get(f.rid);
    if (!p) return this.emit('ok', f);
    this._pending.delete(f.rid);
    if (p.item) return this._acked(p.item, f);
    this._clearTimeout(p.timer);
    p.resolve(f);
  };

  Client.prototype._onError = function (f) {
    var p = f.rid !== undefined ? this._pending.get(f.rid) : null;
    if (!p) return this.emit('error', protoError(f.code, f.message, f));
    this._pending.delete(f.rid);
    var err = protoError(f.code, f.message, f);
    if (p.item) {
      var it = p.item;
      if (f.code === 'unavailable' || f.code === 'rate_limited') {
        // Not stored: retry later with the same cid (the server dedups by cid).
        var self = this;
        it.sock = 0;
        this._setTimeout(function () { self._transmit(it); }, backoffDelay(it.tries++, this.random(), this.opts));
        return;
      }
      return this._fail(it, err);
    }
    this._clearTimeout(p.timer);
    p.reject(err);
  };

  // ---------------------------------------------------------------- requests

  /** Sends `frame` with a fresh rid; resolves with the `ok` frame, rejects with the error. */
  Client.prototype.request = function (frame, opts) {
    var self = this;
    if (!this.ready) return Promise.reject(protoError('disconnected', 'not connected'));
    var rid = ++this._rid;
    var f = { t: frame.t, rid: rid };
    for (var k in frame) if (k !== 't' && k !== 'rid' && frame[k] !== undefined && frame[k] !== null) f[k] = frame[k];
    var timeout = (opts && opts.timeout) || this.opts.requestTimeoutMs;
    return new Promise(function (resolve, reject) {
      var timer = self._setTimeout(function () {
        if (self._pending.delete(rid)) reject(protoError('timeout', 'no answer'));
      }, timeout);
      self._pending.set(rid, { resolve: resolve, reject: reject, timer: timer });
      if (!self._raw(f)) {
        self._pending.delete(rid);
        self._clearTimeout(timer);
        reject(protoError('disconnected', 'not connected'));
      }
    });
  };

  /**
   * Sends a chat message. The promise resolves with the ack `{conv,cid,seq,ts}` once stored,
   * whatever number of reconnects it takes: the same cid is sent again after each welcome.
   */
  Client.prototype.send = function (conv, text, opts) {
    var cid = (opts && opts.cid) || newCid();
    for (var i = 0; i < this.outbox.length; i++) if (this.outbox[i].cid === cid) return this.outbox[i].promise;
    var it = { conv: conv, cid: cid, text: text, sock: 0, tries: 0, rid: null };
    it.promise = new Promise(function (resolve, reject) { it.resolve = resolve; it.reject = reject; });
    it.promise.catch(noop); // callers may ignore failures; they are also emitted as `failed`
    this.outbox.push(it);
    this.emit('outbox', this.outbox);
    this._transmit(it);
    return it.promise;
  };

  Client.prototype._transmit = function (it) {
    if (!this.ready || it.sock === this._sock || this.outbox.indexOf(it) < 0) return;
    var rid = ++this._rid;
    it.rid = rid;
    it.sock = this._sock;
    this._pending.set(rid, { item: it });
    this._raw({ t: 'send', rid: rid, conv: it.conv, cid: it.cid, text: it.text });
  };

  Client.prototype._unqueue = function (it) {
    var i = this.outbox.indexOf(it);
    if (i < 0) return false;
    this.outbox.splice(i, 1);
    if (it.rid != null) this._pending.delete(it.rid);
    this.emit('outbox', this.outbox);
    return true;
  };

  Client.prototype._acked = function (it, f) {
    if (!this._unqueue(it)) return;
    var ack = { conv: f.conv || it.conv, cid: it.cid, seq: f.seq, ts: f.ts };
    it.resolve(ack);
    this.emit('sent', ack);
  };

  Client.prototype._fail = function (it, err) {
    if (!this._unqueue(it)) return;
    it.reject(err);
    this.emit('failed', { conv: it.conv, cid: it.cid, text: it.text, error: err });
  };

  /** Gives up on an unacked send (the UI's "delete" of a failed message). */
  Client.prototype.cancel = function (cid) {
    for (var i = 0; i < this.outbox.length; i++) {
      if (this.outbox[i].cid === cid) return this._fail(this.outbox[i], protoError('cancelled', 'cancelled'));
    }
  };

  // ---------------------------------------------------------------- ordering, dedup, gaps

  Client.prototype._st = function (conv) {
    var st = this._convs.get(conv);
    if (!st) {
      st = { cursor: 0, known: 0, ahead: new Map(), timer: null, filling: false };
      this._convs.set(conv, st);
    }
    return st;
  };

  /** Starts tracking a conversation from `seq` (messages up to seq are already known). */
  Client.prototype.track = function (conv, seq) {
    var st = this._st(conv);
    if (seq > st.cursor) st.cursor = seq;
    if (seq > st.known) st.known = seq;
    return st.cursor;
  };

  /** Stops tracking a conversation (it is no longer named in hello's cursors). */
  Client.prototype.forget = function (conv) {
    var st = this._convs.get(conv);
    if (st) this._clearTimeout(st.timer);
    this._convs.delete(conv);
  };

  Client.prototype.cursor = function (conv) {
    var st = this._convs.get(conv);
    return st ? st.cursor : 0;
  };

  /** `{conv: last contiguous seq seen}` as sent in hello (the most recent conversations first). */
  Client.prototype.cursors = function () {
    var out = {};
    var n = 0;
    var all = Array.from(this._convs.entries()).reverse();
    for (var i = 0; i < all.length && n < this.opts.maxCursors; i++) {
      if (all[i][1].cursor > 0) { out[all[i][0]] = all[i][1].cursor; n++; }
    }
    return out;
  };

  /** Notes a Conversation object of a conversation we are attached to (its last_seq). */
  Client.prototype._seeConv = function (c, fromWelcome) {
    if (!c || !c.id) return;
    var st = this._st(c.id);
    if (fromWelcome && c.recovered === false) {
      // The log no longer reaches our cursor: reload the latest page, tell the UI to start over.
      st.ahead.clear();
      var from = Math.max(st.cursor, (c.last_seq || 0) - this.opts.historyPage);
      if (from > st.cursor) {
        this.emit('gap', { conv: c.id, from: st.cursor + 1, to: from });
        st.cursor = from;
      }
      this.emit('resync', c.id);
    }
    if ((c.last_seq || 0) > st.known) st.known = c.last_seq;
    this._scheduleFill(c.id);
  };

  Client.prototype._ingest = function (m) {
    if (!m || !m.conv || typeof m.seq !== 'number') return false;
    var st = this._st(m.conv);
    if (m.seq > st.known) st.known = m.seq;
    if (m.seq <= st.cursor || st.ahead.has(m.seq)) {
      this.emit('duplicate', m);
      return false;
    }
    if (m.seq !== st.cursor + 1) {
      st.ahead.set(m.seq, m);
      this._scheduleFill(m.conv);
      return true;
    }
    this._deliver(st, m);
    while (st.ahead.has(st.cursor + 1)) {
      var n = st.ahead.get(st.cursor + 1);
      st.ahead.delete(n.seq);
      this._deliver(st, n);
    }
    this.emit('cursor', m.conv, st.cursor);
    return true;
  };

  Client.prototype._deliver = function (st, m) {
    st.cursor = m.seq;
    if (m.cid) {
      // Our own message came back before its ok (e.g. the ok was lost with a socket).
      for (var i = 0; i < this.outbox.length; i++) {
        var it = this.outbox[i];
        if (it.cid === m.cid && it.conv === m.conv) { this._acked(it, { conv: m.conv, seq: m.seq, ts: m.ts }); break; }
      }
    }
    var msg = {};
    for (var k in m) if (k !== 't') msg[k] = m[k];
    this.emit('msg', msg);
  };

  Client.prototype._gapEnd = function (st) {
    if (!st.ahead.size) return st.known + 1;
    var min = Infinity;
    st.ahead.forEach(function (v, k) { if (k < min) min = k; });
    return min;
  };

  Client.prototype._scheduleFill = function (conv) {
    var st = this._convs.get(conv);
    var self = this;
    if (!st || st.timer != null || st.filling || !this.ready) return;
    if (this._gapEnd(st) - st.cursor - 1 <= 0) return;
    st.timer = this._setTimeout(function () { st.timer = null; self._fill(conv); }, this.opts.fillDelayMs);
  };

  /** Fetches missing messages (cursor, gap end) with `history`, page by page downwards. */
  Client.prototype._fill = function (conv) {
    var self = this;
    var st = this._convs.get(conv);
    if (!st || st.filling || !this.ready) return Promise.resolve();
    st.filling = true;
    var rounds = 0;
    function step() {
      if (self._convs.get(conv) !== st) return;
      var end = self._gapEnd(st);
      var need = end - st.cursor - 1;
      if (need <= 0 || rounds++ > 50) return;
      var cursorBefore = st.cursor;
      return self.request({ t: 'history', conv: conv, before: end, limit: Math.min(need, self.opts.historyPage) }).then(function (res) {
        var msgs = (res.messages || []).slice().sort(function (a, b) { return a.seq - b.seq; });
        var low = msgs.length ? msgs[0].seq : end;
        if (res.complete && low > st.cursor + 1) {
          // Nothing older exists any more: what lies between is gone, do not wait for it.
          self.emit('gap', { conv: conv, from: st.cursor + 1, to: low - 1 });
          st.cursor = low - 1;
        }
        msgs.forEach(function (m) { self._ingest(m.conv ? m : Object.assign({ conv: conv }, m)); });
        if (st.cursor === cursorBefore && self._gapEnd(st) >= end) {
          if (st.ahead.size === 0 && st.known > st.cursor && res.complete) st.known = st.cursor;
          return; // no progress: stop, a later event retries
        }
        return step();
      });
    }
    var run;
    try {
      run = Promise.resolve(step()); // the first request goes out synchronously
    } catch (e) {
      run = Promise.reject(e);
    }
    return run
      .catch(function (e) { if (e.code !== 'disconnected') self.emit('error', e); })
      .then(function () { st.filling = false; });
  };

  // ---------------------------------------------------------------- frames

  /** Fire-and-forget frames return whether they were written to a connected socket. */
  Client.prototype.typing = function (conv, on, preview) {
    var f = { t: 'typing', conv: conv, on: !!on };
    if (on && preview) f.preview = String(preview).slice(0, 200);
    return this.ready && this._raw(f);
  };

  Client.prototype.read = function (conv, seq) {
    return this.ready && this._raw({ t: 'read', conv: conv, seq: seq });
  };

  /** Drafts are kept until connected: the latest one per conversation is sent after welcome. */
  Client.prototype.draft = function (conv, text) {
    if (this.ready && this._raw({ t: 'draft', conv: conv, text: text })) return true;
    this._drafts.set(conv, text);
    return false;
  };

  Client.prototype.history = function (conv, o) {
    o = o || {};
    return this.request(compact({ t: 'history', conv: conv, before: o.before, limit: o.limit }));
  };

  /** Every message of a conversation, oldest first (for transcripts). */
  Client.prototype.fullHistory = function (conv) {
    var self = this;
    var all = new Map();
    function page(before, n) {
      return self.history(conv, { before: before, limit: self.opts.historyPage }).then(function (res) {
        var msgs = res.messages || [];
        var low = before || Infinity;
        msgs.forEach(function (m) { all.set(m.seq, m); if (m.seq < low) low = m.seq; });
        if (res.complete || !msgs.length || low <= 1 || n > 100) return;
        return page(low, n + 1);
      });
    }
    return page(undefined, 0).then(function () {
      return Array.from(all.values()).sort(function (a, b) { return a.seq - b.seq; });
    });
  };

  Client.prototype.start = function (o) {
    o = o || {};
    return this.request(compact({ t: 'start', queue: o.queue, prechat: o.prechat, params: o.params, page: o.page }));
  };

  Client.prototype.closeConv = function (conv, o) {
    o = o || {};
    return this.request(compact({ t: 'close', conv: conv, outcome: o.outcome, tags: o.tags }));
  };

  Client.prototype.setStatus = function (status) {
    return this.request({ t: 'status', status: status });
  };

  Client.prototype.accept = function (conv) {
    return this.request({ t: 'accept', conv: conv });
  };

  Client.prototype.decline = function (conv) {
    return this.request({ t: 'decline', conv: conv });
  };

  /** `to` is {operator: id} or {queue: id}. */
  Client.prototype.transfer = function (conv, to, note) {
    return this.request(compact({ t: 'transfer', conv: conv, to: to, note: note || undefined }));
  };

  Client.prototype.tag = function (conv, add, remove) {
    var f = { t: 'tag', conv: conv };
    if (add && add.length) f.add = add;
    if (remove && remove.length) f.remove = remove;
    return this.request(f);
  };

  Client.prototype.assign = function (conv, operator) {
    return this.request({ t: 'assign', conv: conv, operator: operator });
  };

  Client.prototype.watch = function (conv, on) {
    return this.request({ t: 'watch', conv: conv, on: on !== false });
  };

  /** ws(s)://host/v1/ws for an http(s) base URL. */
  function wsUrl(base) {
    return String(base).replace(/\/+$/, '').replace(/^http/, 'ws') + '/v1/ws';
  }

  return {
    SUBPROTOCOL: SUBPROTOCOL,
    CLOSE: CLOSE,
    DEFAULTS: DEFAULTS,
    encode: encode,
    decode: decode,
    newCid: newCid,
    wsUrl: wsUrl,
    backoffDelay: backoffDelay,
    reconnectPlan: reconnectPlan,
    Emitter: Emitter,
    Client: Client
  };
});
