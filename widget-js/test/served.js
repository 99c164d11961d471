// What GET /widget.js serves, built the way gateway/src/http/assets.rs builds it: protocol.js, a
// newline, widget.js, then without the lines that are only a comment (`//`, or part of a
// `/* … */` block; `/*!` headers stay) and without the indentation of the lines
// kept. Shared by the size budget test and the browser test
// that checks the binary serves exactly this.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

function stripCommentLines(src) {
  let out = '';
  let inBlock = false;
  for (const line of src.split('\n')) {
    const t = line.trimStart();
    if (inBlock) {
      inBlock = !t.includes('*/');
      continue;
    }
    if (t.startsWith('//')) continue;
    if (t.startsWith('/*') && !t.startsWith('/*!')) {
      const end = t.indexOf('*/');
      if (end < 0) {
        inBlock = true;
        continue;
      }
      if (!t.slice(end + 2).trim()) continue;
    }
    out += line.trimStart() + '\n';
  }
  // Rust's lines() yields no empty last line for a source ending in a newline.
  return src.endsWith('\n') ? out.slice(0, -1) : out;
}

function servedWidget(dir = path.join(__dirname, '..')) {
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  return stripCommentLines(read('protocol.js') + '\n' + read('widget.js'));
}

module.exports = { servedWidget, stripCommentLines };
