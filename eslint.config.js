// ESLint for the JavaScript of the repository (scripts/test runs it): the widget, the console and
// their protocol module in widget-js/ (browser code, no build step), the widget's unit tests
// (CommonJS under node) and the browser tests in tests/browser/ (ES modules under node, with
// functions that run in the page). The recommended rules, and a few that keep it plain.
'use strict';

const js = require('@eslint/js');
const globals = require('globals');

module.exports = [
  { ignores: ['**/node_modules/', 'target/', 'tests/artifacts/'] },
  js.configs.recommended,
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      'no-unused-vars': ['error', { args: 'after-used', caughtErrors: 'all', ignoreRestSiblings: true }],
      // `x == null` is the one loose comparison allowed: null or undefined.
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-var': 'error',
      'prefer-const': 'error',
      'max-len': ['error', { code: 120, ignoreUrls: true }]
    }
  },
  {
    // The widget and the protocol module: classic scripts in the page (protocol.js also
    // exports itself to node for the unit tests, when `module` exists).
    files: ['widget-js/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser, module: 'readonly' } }
  },
  {
    // The console: native ES modules in the page.
    files: ['widget-js/console.js', 'widget-js/console/**/*.js'],
    languageOptions: { sourceType: 'module', globals: globals.browser }
  },
  {
    files: ['widget-js/test/**/*.js', 'eslint.config.js'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node }
  },
  {
    // Node drives the browser; the functions given to page.evaluate run in the page.
    files: ['tests/browser/**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: { ...globals.node, ...globals.browser } },
    // A test's title is a sentence on the line that declares it; everything else wraps.
    rules: { 'max-len': ['error', { code: 120, ignoreUrls: true, ignorePattern: '^test\\(' }] }
  }
];
