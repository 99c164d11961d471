// Size budget of the embeddable widget: what GET /widget.js serves (protocol.js, a newline, then
// widget.js, without comment lines; see served.js and gateway/src/http/assets.rs) must stay
// under 20 KB gzipped, the limit the widget's issue sets. The gateway compresses it itself, once:
// gzip at the best level, brotli at quality 11 for browsers that take it (almost all). The
// browser tests check that the gateway serves exactly these bytes, and the size of its gzip.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

// 20 KB read the strict way (20,000 bytes, not 20,480).
const LIMIT = 20000;
const dir = path.join(__dirname, '..');

const { servedWidget, stripCommentLines } = require('./served.js');

test('widget.js as served is under 20 KB gzipped', () => {
  const body = Buffer.from(servedWidget(), 'utf8');
  // As the gateway sends it: gzip at level 9 (its zlib differs from node's by a few bytes).
  const gz = zlib.gzipSync(body, { level: 9 }).length;
  const br = zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  console.log(`widget.js: ${body.length} bytes, ${gz} bytes gzipped (limit ${LIMIT}), ${br} bytes with brotli`);
  assert.ok(gz < LIMIT, `widget.js is ${gz} bytes gzipped, over the ${LIMIT}-byte budget`);
});

test('the size check measures the real thing', () => {
  // Guards the test itself: both parts are present and the widget needs the protocol module.
  const body = servedWidget();
  assert.match(body, /globalThis\.ChatGatewayProtocol|root\.ChatGatewayProtocol = api/);
  assert.match(body, /W\.ChatWidget = api/);
  assert.ok(body.length > LIMIT, 'uncompressed, the widget is larger than the budget: the test would notice growth');
});

test('comment lines and indentation are left out of what is served, code never', () => {
  const src =
    '/*! keep: embed me\n * with this tag\n */\n// a line comment\nlet a = 1; // stays\n' +
    "  /** doc */\n  /* multi\n   * line\n   */\n/* x */ let b = 2;\nconst u = 'http://x//y';\n";
  // The same case as assets.rs' unit test: the two must agree.
  const want = "/*! keep: embed me\n* with this tag\n*/\nlet a = 1; // stays\n/* x */ let b = 2;\nconst u = 'http://x//y';\n";
  assert.equal(stripCommentLines(src), want);
  const full =
    fs.readFileSync(path.join(dir, 'protocol.js'), 'utf8') +
    '\n' +
    fs.readFileSync(path.join(dir, 'widget.js'), 'utf8');
  assert.ok(servedWidget().length < full.length * 0.9, 'the comments are left out');
});
