// The gateway serves the browser files compiled into it (gateway/src/http/assets.rs). This test
// checks that the binary under test serves exactly the files of this checkout (a stale binary
// would make every other browser test prove old code), with the right types, the widget
// embeddable from other origins and under its 20 KB gzipped budget as served (without its
// comment lines: widget-js/test/served.js builds what the gateway should serve).
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { skipReason, startGateway, REPO } from './harness.mjs';
import served from '../../widget-js/test/served.js';

const file = (name) => fs.readFileSync(path.join(REPO, 'widget-js', name), 'utf8');

test('the gateway serves this checkout\'s widget, console and demo page', { skip: skipReason(), timeout: 60000 }, async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const expected = {
    '/widget.js': [served.servedWidget(path.join(REPO, 'widget-js')), 'text/javascript'],
    '/protocol.js': [file('protocol.js'), 'text/javascript'],
    '/console.js': [file('console.js'), 'text/javascript'],
    '/console': [file('console.html'), 'text/html'],
    '/': [file('demo.html'), 'text/html']
  };
  // The console's modules and styles: every file of widget-js/console/ (a new one must be served).
  for (const name of fs.readdirSync(path.join(REPO, 'widget-js', 'console'))) {
    expected['/console/' + name] = [file('console/' + name), name.endsWith('.css') ? 'text/css' : 'text/javascript'];
  }
  for (const [route, [body, type]] of Object.entries(expected)) {
    const res = await fetch(gw.url + route);
    assert.equal(res.status, 200, route);
    assert.match(res.headers.get('content-type'), new RegExp('^' + type), route);
    const served = await res.text();
    assert.ok(
      served === body,
      `${route} differs from widget-js/ in this checkout: rebuild the gateway (cargo build -p gateway)`
    );
  }
  const widget = await fetch(gw.url + '/widget.js', { headers: { origin: 'https://shop.example' } });
  assert.equal(widget.headers.get('access-control-allow-origin'), '*', 'embeddable from any site');
  const gz = zlib.gzipSync(Buffer.from(await widget.arrayBuffer()), { level: 6 }).length;
  assert.ok(gz < 20000, `/widget.js is ${gz} bytes gzipped, over the 20,000-byte budget`);
});
