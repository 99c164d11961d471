// Harness for the browser tests: starts the real gateway binary on a free port, mints tokens
// with its `token` subcommand, launches Debian's chromium through playwright-core, and offers
// waits that poll for a condition with a deadline (never a sleep used as synchronisation).
//
// Environment: GATEWAY_BIN (default target/debug/gateway, relative to the repo root),
// CHROMIUM (default /usr/bin/chromium), KEEP_LOGS=1 prints the gateway's output after each test
// (and keeps its data dir),
// REQUIRE_BROWSER=1 (set by scripts/test and CI) turns a missing chromium or gateway binary into
// a test failure instead of a skip: a skipped browser test in CI would prove nothing.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GATEWAY_BIN = path.resolve(REPO, process.env.GATEWAY_BIN || 'target/debug/gateway');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(REPO, 'tests', 'artifacts');

/** Default deadline of one wait. */
export const WAIT_MS = 20000;

function executable(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export const REQUIRE_BROWSER = process.env.REQUIRE_BROWSER === '1' || process.env.REQUIRE_BROWSER === 'true';

/** What is missing for the browser tests, or false when nothing is. */
export function missing() {
  if (!executable(GATEWAY_BIN)) return `gateway binary not found at ${GATEWAY_BIN} (build it, or set GATEWAY_BIN)`;
  if (!executable(CHROMIUM)) return `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`;
  return false;
}

/**
 * The `skip` option of every browser test: the reason to skip when something is missing, or
 * false. Under REQUIRE_BROWSER=1 it is always false, so the test runs and `setup` fails it.
 */
export function skipReason() {
  return REQUIRE_BROWSER ? false : missing();
}

// Terminal colour codes begin with the ESC control character.
// eslint-disable-next-line no-control-regex
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/**
 * Starts a gateway: `{url, secret, consoleLink, proc, logs, token(opts), stop()}`.
 * `sites` (optional) is written to a JSON file passed as GATEWAY_SITES. `asNewcomer` runs it
 * the way the README does, with no secret: it makes one up and prints a console link
 * (`consoleLink`), and `token()` cannot be used.
 */
export async function startGateway({ sites, env = {}, asNewcomer = false, timeoutMs = 20000 } = {}) {
  const why = missing();
  if (why) throw new Error(why);
  const secret = asNewcomer ? null : randomBytes(24).toString('hex');
  const extra = {};
  if (sites) {
    const file = path.join(os.tmpdir(), `gateway-sites-${process.pid}-${randomBytes(4).toString('hex')}.json`);
    fs.writeFileSync(file, JSON.stringify(sites, null, 2));
    extra.GATEWAY_SITES = file;
  }
  // Each gateway its own data dir (archive, kept state): nothing carries over between tests.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-browser-data-'));
  const childEnv = { ...process.env, GATEWAY_LISTEN: '127.0.0.1:0', GATEWAY_DATA_DIR: dataDir, ...extra, ...env };
  if (secret) childEnv.GATEWAY_JWT_SECRET = secret;
  else delete childEnv.GATEWAY_JWT_SECRET;
  const proc = spawn(GATEWAY_BIN, [], { cwd: REPO, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  let consoleLink = null;
  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`gateway printed no "listening on" line within ${timeoutMs} ms:\n${logs.join('')}`)),
      timeoutMs
    );
    const onData = (chunk) => {
      const s = stripAnsi(chunk.toString());
      logs.push(s);
      seen += s;
      const m = seen.match(/listening on (https?:\/\/[^\s"'`]+)/);
      const link = seen.match(/operator console\s+(https?:\/\/\S+#token=[\w.-]+)\s/);
      if (link) consoleLink = link[1];
      if (m && (consoleLink || !asNewcomer)) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/+$/, ''));
      }
    };
    // Both pipes keep being drained for the whole run, so the gateway never blocks on output.
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code ?? signal}) before listening:\n${logs.join('')}`));
    });
  });
  return {
    url,
    secret,
    consoleLink,
    proc,
    logs,
    token: (o) => mintToken(secret, o),
    stop: async () => {
      await stopProcess(proc, logs);
      // The data dir made here goes with its gateway (KEEP_LOGS keeps it, to look into).
      if (!process.env.KEEP_LOGS && childEnv.GATEWAY_DATA_DIR === dataDir) {
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
      if (extra.GATEWAY_SITES) fs.rmSync(extra.GATEWAY_SITES, { force: true });
    }
  };
}

/** `gateway token --secret … --site … --role … --sub … --name …` → the JWT it prints. */
export function mintToken(secret, { site = 'demo', role = 'operator', sub = 'op1', name = 'Olga', queues } = {}) {
  const args = ['token', '--secret', secret, '--site', site, '--role', role, '--sub', sub, '--name', name];
  if (queues) args.push('--queues', queues.join(','));
  return new Promise((resolve, reject) => {
    execFile(GATEWAY_BIN, args, { timeout: 15000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`token command failed: ${err.message}\n${stderr}`));
      const jwt = stdout.split(/\s+/).find((s) => /^[\w-]+\.[\w-]+\.[\w-]*$/.test(s));
      if (!jwt) return reject(new Error(`token command printed no JWT: ${stdout}`));
      resolve(jwt);
    });
  });
}

async function stopProcess(proc, logs) {
  if (process.env.KEEP_LOGS) process.stderr.write(`--- gateway output ---\n${logs.join('')}\n`);
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
  await exited;
  clearTimeout(t);
}

/**
 * Headless Debian Chromium. `launch` gives every browser a fresh temporary profile
 * (user-data-dir), removed on close; the flags keep it off the network except for our loopback
 * gateway.
 */
export function launchBrowser() {
  const why = missing();
  if (why) throw new Error(why);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync'
    ]
  });
}

/**
 * A page in its own context (own localStorage: a separate person). Page errors are collected
 * in `errors` so a test can assert the page ran clean. `testHooks` opts the page in to the
 * widget's test hooks: `window.__chatGatewayTestHooks` exists before any script runs, and the
 * widget fills it (drop, resume, state).
 */
export async function newPage(browser, opts = {}) {
  const { viewport = { width: 1280, height: 800 }, locale, permissions, testHooks } = opts;
  const context = await browser.newContext({ viewport, locale, permissions });
  if (testHooks) await context.addInitScript(() => (window.__chatGatewayTestHooks = {}));
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  return { context, page, errors };
}

/**
 * An operator console signed in through the URL fragment, connected and welcomed. `testHooks`
 * as in `newPage`: the console puts `client()` in it (what its protocol client follows).
 */
export async function openConsole(browser, gw, opts = {}) {
  const { sub = 'op1', name = 'Olga', role = 'operator', site = 'demo', queues, permissions, testHooks } = opts;
  const token = await gw.token({ role, sub, name, site, queues });
  const p = await newPage(browser, { viewport: { width: 1400, height: 850 }, permissions, testHooks });
  await p.page.goto(`${gw.url}/console#token=${token}`);
  await p.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await p.page.locator('[data-testid=me-name]', { hasText: name }).waitFor();
  return { ...p, token, name, sub };
}

/** Sets the operator's status and waits until the gateway confirms it. */
export async function setStatus(page, status) {
  await page.getByTestId('status-select').selectOption(status);
  await page.locator(`[data-testid=status-select][data-server=${status}]`).waitFor({ state: 'attached' });
}

/** The demo shop page (or any `url`) with the widget loaded; `testHooks` as in `newPage`. */
export async function openVisitor(browser, gw, pathname = '/', { locale, testHooks } = {}) {
  const p = await newPage(browser, { locale, testHooks });
  await p.page.goto(/^https?:/.test(pathname) ? pathname : gw.url + pathname);
  await p.page.getByTestId('cw-launcher').waitFor();
  return p;
}

/**
 * A customer's website on its own origin (another loopback port) that embeds the gateway's
 * widget with the one tag, as a real site does: `url({site, lang, htmlLang, prechat, queue, poll, preload})`
 * is a page.
 * Registers its shutdown with `t.after`.
 */
export async function startHostSite(t, gw) {
  const server = http.createServer((req, res) => {
    const q = new URL(req.url, 'http://host').searchParams;
    const esc = (v) => String(v).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
    const attrs = [`src="${esc(gw.url)}/widget.js"`, `data-site="${esc(q.get('site') || 'demo')}"`];
    if (q.get('lang')) attrs.push(`data-lang="${esc(q.get('lang'))}"`);
    if (q.get('prechat')) attrs.push('data-prechat="true"');
    if (q.get('queue')) attrs.push(`data-queue="${esc(q.get('queue'))}"`);
    if (q.get('poll')) attrs.push(`data-poll="${esc(q.get('poll'))}"`);
    const htmlLang = q.get('htmlLang') ? ` lang="${esc(q.get('htmlLang'))}"` : '';
    // `preload`: API calls the page queues before the widget has loaded.
    const preload = q.get('preload') && JSON.stringify(JSON.parse(q.get('preload'))).replace(/</g, '\\u003c');
    const pre = preload ? `<script>window.ChatWidget = { q: ${preload} };</script>` : '';
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html${htmlLang}><head><meta charset="utf-8"><title>Customer site</title>
<style>*{font-family:serif!important;color:#f0f!important}</style></head>
<body><h1>Customer site</h1><p>A page on another origin.</p>${pre}
<script ${attrs.join(' ')} async></script></body></html>`);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => server.close(r)));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    url: (o = {}) =>
      `${base}/shop?${new URLSearchParams(
        Object.entries(o)
          .filter(([, v]) => v != null && v !== false)
          .map(([k, v]) => [k, String(v)])
      )}`
  };
}


/** The widget's messages, read through its (open) shadow root. */
export function widgetMessages(page) {
  return page.evaluate(() => {
    const root = document.querySelector('chat-gateway-widget').shadowRoot;
    return Array.from(root.querySelectorAll('[data-testid=cw-msg]')).map((li) => ({
      role: li.dataset.role,
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      state: li.dataset.state || null,
      text: li.querySelector('.b').textContent
    }));
  });
}

/** The console's messages of the open conversation. */
export function consoleMessages(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll('[data-testid=conv-msg]')).map((li) => ({
      role: li.dataset.role,
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      state: li.dataset.state || null,
      text: li.querySelector('.bubble').textContent
    }))
  );
}

/** Polls `fn` until it returns a truthy value; fails with `message` after `timeout` ms. */
export async function waitUntil(fn, { timeout = WAIT_MS, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.stack : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${message}; last: ${seen}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name + '.png') });
}

/**
 * Brings up what most tests need and registers teardown with node:test's `t.after`:
 * `{gw, browser}`.
 */
export async function setup(t, opts) {
  const gw = await startGateway(opts);
  let browser = null;
  // The browser goes first: a gateway stopped under live sockets drains them over its window.
  t.after(async () => {
    if (browser) await browser.close();
    await gw.stop();
  });
  browser = await launchBrowser();
  return { gw, browser };
}

/** A visitor writes a first message from the demo page; resolves when the gateway stored it. */
export async function visitorWrites(v, text) {
  const { page } = v;
  const panel = page.getByTestId('cw-panel');
  if (!(await panel.isVisible())) await page.getByTestId('cw-launcher').click();
  await page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  await page.getByTestId('cw-input').fill(text);
  await page.getByTestId('cw-input').press('Enter');
  await page.locator('[data-testid=cw-msg][data-role=visitor]:not([data-state=sending])', { hasText: text }).waitFor();
}

/** An operator accepts the queued conversation of `visitorText`'s visitor; returns its id. */
export async function acceptFirstQueued(op) {
  const item = op.page.locator('[data-testid=queue-item]').first();
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  await item.getByTestId('queue-accept').click();
  await op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).waitFor();
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  return conv;
}

/** The operator sends `text` in the open conversation and waits for the gateway's ack. */
export async function operatorSends(op, text) {
  await op.page.getByTestId('composer').fill(text);
  await op.page.getByTestId('composer').press('Enter');
  await op.page
    .locator('[data-testid=conv-msg][data-role=operator]:not([data-state=sending])', { hasText: text })
    .waitFor();
}

/**
 * A webhook receiver on loopback for the test `t`: it keeps every call (`webhook-id`,
 * `webhook-signature`, the parsed body) in `got` and answers `answer` as JSON (200), or 204
 * without one. Resolves to `{got, url}` with `url` ending in `path`.
 */
export async function startReceiver(t, { answer = null, path: where = '/hook' } = {}) {
  const got = [];
  const http = await import('node:http');
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push({ id: req.headers['webhook-id'], signature: req.headers['webhook-signature'], body: JSON.parse(body) });
      if (answer) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(answer));
      } else res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  return { got, url: `http://127.0.0.1:${server.address().port}${where}` };
}
