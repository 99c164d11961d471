// Test doubles for protocol.js: a scriptable WebSocket and a manual clock.
//
// The Client takes its WebSocket constructor, timers and random source as options, so the unit
// tests drive it frame by frame without a network or real time. (This file defines no tests; the
// runner may load it as one and find nothing to run.)
'use strict';

const path = require('node:path');
const fs = require('node:fs');

const P = require('../protocol.js');

/** A fake WebSocket: the test plays the server with open(), recv(), serverClose(). */
class FakeSocket {
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.readyState = 0;
    this.closedByClient = null;
    FakeSocket.all.push(this);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.readyState = 3;
    this.closedByClient = { code, reason };
  }
  // ---- server side
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  recv(frame) {
    this.onmessage && this.onmessage({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason, wasClean: true });
  }
  last(t) {
    for (let i = this.sent.length - 1; i >= 0; i--) if (!t || this.sent[i].t === t) return this.sent[i];
    return undefined;
  }
  ofType(t) {
    return this.sent.filter((f) => f.t === t);
  }
}
FakeSocket.all = [];

/** Manual timers: advance(ms) runs everything that falls due, in order. */
class FakeClock {
  constructor() {
    this.now = 0;
    this.seq = 0;
    this.timers = new Map();
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.now + Math.max(0, ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
}

/** Lets promise callbacks run. */
const flush = () => new Promise((r) => setImmediate(r));

function welcome(extra = {}) {
  return {
    t: 'welcome',
    conn: 'n1-1',
    node: 'n1',
    me: { role: 'visitor', id: 'v_1', site: 'demo' },
    conversations: [],
    settings: {
      routing: 'manual',
      widget_when_away: 'busy',
      show_operator_name: true,
      ping_interval_ms: 25000,
      unavailable_text: 'Sorry',
      queues: ['general']
    },
    ...extra
  };
}

function msg(conv, seq, text = 'm' + seq, extra = {}) {
  return {
    t: 'msg',
    conv,
    seq,
    from: { role: 'operator', id: 'op_1', name: 'Olga' },
    text,
    ts: 1700000000000 + seq,
    ...extra
  };
}

/** A client wired to fakes; `connect()` returns the first socket, opened and welcomed. */
function makeClient(opts = {}) {
  FakeSocket.all = [];
  const clock = new FakeClock();
  const client = new P.Client({
    url: 'ws://gw.test/v1/ws',
    token: 'tok-1',
    WebSocket: FakeSocket,
    timers: clock,
    random: () => 0.5,
    watchOnline: false,
    ...opts
  });
  const events = [];
  const msgs = [];
  client.on('msg', (m) => msgs.push(m));
  client.on('close', (c) => events.push(['close', c]));
  client.on('error', () => {});
  return {
    client,
    clock,
    events,
    msgs,
    socket: () => FakeSocket.all[FakeSocket.all.length - 1],
    sockets: () => FakeSocket.all,
    /** Opens the newest socket and answers its hello with a welcome. */
    welcome(extra) {
      const s = FakeSocket.all[FakeSocket.all.length - 1];
      if (s.readyState === 0) s.open();
      s.recv(welcome(extra));
      return s;
    },
    connect(extra) {
      client.connect();
      return this.welcome(extra);
    }
  };
}

function goldenFrames() {
  const file = path.join(__dirname, '..', '..', 'tests', 'golden', 'frames.json');
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

module.exports = { P, FakeSocket, FakeClock, flush, welcome, msg, makeClient, goldenFrames };
