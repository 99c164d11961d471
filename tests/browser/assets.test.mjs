// The gateway serves the browser files compiled into it (gateway/src/http/assets.rs). These tests
// check that the binary under test serves exactly the files of this checkout (a stale binary
// would make every other browser test prove old code), with the right types, the widget
// embeddable from other origins and under its 20 KB gzipped budget as served (without its
// comment lines: widget-js/test/served.js builds what the gateway should serve); that every file
// comes compressed (brotli or gzip, as the request accepts) with validators, so that a browser
// that has it gets 304 Not Modified; and that a browser's second page view gets the widget so.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { skipReason, startGateway, setup, newPage, REPO } from './harness.mjs';
import served from '../../widget-js/test/served.js';

const file = (name) => fs.readFileSync(path.join(REPO, 'widget-js', name), 'utf8');

/** Every file the gateway serves: route -> [body, content type]. */
function expectedFiles() {
  const expected = {
    '/widget.js': [served.servedWidget(path.join(REPO, 'widget-js')), 'text/javascript'],
    '/protocol.js': [file('protocol.js'), 'text/javascript'],
    '/console.js': [file('console.js'), 'text/javascript'],
    '/console': [file('console.html'), 'text/html'],
    '/': [file('demo.html'), 'text/html']
  };
  // The console's modules and styles: every file of widget-js/console/ (a new one must be served).
  for (const name of fs.readdirSync(path.join(REPO, 'widget-js', 'console'))) {
    const type = name.endsWith('.css') ? 'text/css' : 'text/javascript';
    expected['/console/' + name] = [file('console/' + name), type];
  }
  return expected;
}

/** One request as sent, the body as received (fetch would decompress it): {status, headers, body}. */
function raw(url, { method = 'GET', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const decoders = { br: zlib.brotliDecompressSync, gzip: zlib.gunzipSync, identity: (b) => b };

test('the gateway serves this checkout\'s widget, console and demo page', { skip: skipReason(), timeout: 60000 }, async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  for (const [route, [body, type]] of Object.entries(expectedFiles())) {
    const res = await fetch(gw.url + route);
    assert.equal(res.status, 200, route);
    assert.match(res.headers.get('content-type'), new RegExp('^' + type), route);
    const served = await res.text();
    assert.ok(
      served === body,
      `${route} differs from widget-js/ in this checkout: rebuild the gateway (cargo build -p gateway)`
    );
  }
  const widget = await raw(gw.url + '/widget.js', { headers: { origin: 'https://shop.example', 'accept-encoding': 'gzip' } });
  assert.equal(widget.headers['access-control-allow-origin'], '*', 'embeddable from any site');
  assert.equal(widget.headers['content-encoding'], 'gzip');
  const gz = widget.body.length;
  assert.ok(gz < 20000, `/widget.js is ${gz} bytes gzipped as served, over the 20,000-byte budget`);
});

test('every file comes compressed as accepted, with an ETag, and a known one gets 304', { skip: skipReason(), timeout: 60000 }, async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const sizes = [];
  for (const [route, [body]] of Object.entries(expectedFiles())) {
    const plain = Buffer.from(body, 'utf8');
    const size = { route, raw: plain.length };
    const asks = [['gzip, deflate, br', 'br'], ['gzip', 'gzip'], ['br;q=0, gzip', 'gzip'], ['', 'identity']];
    for (const [accept, coding] of asks) {
      const what = `${route} (${accept || 'no accept-encoding'})`;
      const res = await raw(gw.url + route, { headers: { 'accept-encoding': accept } });
      assert.equal(res.status, 200, what);
      assert.equal(res.headers['content-encoding'] || 'identity', coding, what);
      assert.equal(res.headers.vary, 'accept-encoding', what);
      assert.equal(res.headers['cache-control'], 'no-cache', what);
      assert.match(res.headers.etag, /^"[^"]+"$/, `${what}: a strong ETag`);
      assert.ok(decoders[coding](res.body).equals(plain), `${what} decodes to the file`);
      size[coding] = res.body.length;

      // The same request again with its ETag: 304, no body, the same validators.
      const conditional = { 'accept-encoding': accept, 'if-none-match': res.headers.etag };
      const again = await raw(gw.url + route, { headers: conditional });
      assert.equal(again.status, 304, what);
      assert.equal(again.body.length, 0, what);
      assert.equal(again.headers.etag, res.headers.etag, what);
      assert.equal(again.headers.vary, 'accept-encoding', what);

      // HEAD: the same headers, no body.
      const head = await raw(gw.url + route, { method: 'HEAD', headers: { 'accept-encoding': accept } });
      assert.equal(head.status, 200, what);
      assert.equal(head.body.length, 0, what);
      assert.equal(head.headers['content-length'], String(res.body.length), what);
      assert.equal(head.headers.etag, res.headers.etag, what);
      assert.equal(head.headers['content-encoding'], res.headers['content-encoding'], what);
    }
    assert.ok(size.br < size.raw && size.gzip < size.raw, `${route} is smaller compressed`);
    sizes.push(size);
  }
  // What a first view costs, for the record (the report of the change quotes these).
  for (const s of sizes) console.log(`${s.route}: ${s.raw} bytes, ${s.gzip} gzip, ${s.br} br`);
});

test('a second page view gets /widget.js from the cache or as 304', { skip: skipReason(), timeout: 60000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const { context, page } = await newPage(browser);
  const widgetLoads = [];
  context.on('requestfinished', async (req) => {
    if (!req.url().endsWith('/widget.js')) return;
    const res = await req.response();
    const [sent, headers, sizes] = await Promise.all([req.allHeaders(), res.allHeaders(), req.sizes()]);
    widgetLoads.push({ status: res.status(), sent, headers, sizes });
  });
  await page.goto(gw.url + '/');
  await page.getByTestId('cw-launcher').waitFor();
  // A second view in the same browser (same HTTP cache): another tab, as a visitor opens one.
  const second = await context.newPage();
  await second.goto(gw.url + '/');
  await second.getByTestId('cw-launcher').waitFor();
  await waitForLoads(widgetLoads, 2);
  const [first, next] = widgetLoads;
  assert.equal(first.status, 200, 'the first view downloads it');
  assert.equal(first.headers['content-encoding'], 'br', 'compressed: Chromium takes brotli');
  assert.equal(first.sizes.responseBodySize, Number(first.headers['content-length']));
  // The second view downloads nothing: Chromium asked with the ETag and the gateway answered
  // 304 (Chromium reports the cached 200 to the page and to this listener, with the 304's
  // headers), or its cache answered alone.
  const why = JSON.stringify(next);
  assert.equal(next.sizes.responseBodySize, 0, `the second view downloaded it again: ${why}`);
  if (next.sent['if-none-match'] !== undefined) {
    assert.equal(next.sent['if-none-match'], first.headers.etag, `revalidated with its ETag: ${why}`);
    assert.equal(next.headers['content-type'], undefined, `the answer was the 304 (no body, no type): ${why}`);
  }
});

async function waitForLoads(list, n) {
  const deadline = Date.now() + 10000;
  while (list.length < n) {
    if (Date.now() > deadline) throw new Error(`saw ${list.length} loads of /widget.js, not ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
