// The console's small things that cost operators: adding several tags in a row from the
// keyboard, the Ban action out of the way of a double click on Accept, readable message text
// (WCAG AA contrast, computed from the colours the browser uses), and no error after handing a
// conversation to someone else.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued, operatorSends,
  waitUntil, screenshot
} from './harness.mjs';

/** Keeps every toast the console shows (they disappear after a while) in window.__toasts. */
const recordToasts = (page) =>
  page.evaluate(() => {
    window.__toasts = [];
    const box = document.getElementById('toasts');
    new MutationObserver((list) => {
      for (const m of list) for (const n of m.addedNodes) window.__toasts.push(n.textContent);
    }).observe(box, { childList: true });
  });

test('console: tags are added one after another from the keyboard; a refused one comes back', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Tag me');
  await acceptFirstQueued(op);
  const field = op.page.getByTestId('tag-input');
  const focused = () => op.page.evaluate(() => document.activeElement && document.activeElement.id);
  const tags = () =>
    op.page.evaluate(() => Array.from(document.querySelectorAll('[data-testid=tag]'), (el) => el.firstChild.data));

  await field.click();
  for (const tag of ['vip', 'billing', 'urgent']) {
    await op.page.keyboard.type(tag);
    await op.page.keyboard.press('Enter');
    await op.page.getByTestId('tag').filter({ hasText: tag }).waitFor();
    assert.equal(await focused(), 'tag-input', `the field keeps the focus after "${tag}"`);
  }
  assert.deepEqual(await tags(), ['vip', 'billing', 'urgent']);

  // Bad input: nothing, blanks, a repeat, a tag longer than the gateway takes (40 bytes).
  await op.page.keyboard.press('Enter');
  await op.page.keyboard.type('   ');
  await op.page.keyboard.press('Enter');
  assert.equal(await field.inputValue(), '   ', 'blanks are not a tag');
  await field.fill('');
  await op.page.keyboard.type('vip');
  await op.page.keyboard.press('Enter');
  await waitUntil(async () => (await field.inputValue()) === '', { message: 'the repeat taken' });
  const long = 'x'.repeat(41);
  await op.page.keyboard.type(long);
  await op.page.keyboard.press('Enter');
  await op.page.getByTestId('toast').filter({ hasText: 'Could not change tags' }).waitFor();
  await waitUntil(async () => (await field.inputValue()) === long, { message: 'the refused tag back in the field' });
  assert.equal(await focused(), 'tag-input');
  assert.deepEqual(await tags(), ['vip', 'billing', 'urgent']);
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('console: a click, or a double click, where Accept was never reaches Ban', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  await recordToasts(op.page);
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Please take me');
  const item = op.page.locator('[data-testid=queue-item]').first();
  const conv = await item.getAttribute('data-conv');
  await item.click();
  const accept = op.page.getByTestId('conv-accept');
  await accept.waitFor();
  await screenshot(op.page, 'console-peek-actions');
  const box = await accept.boundingBox();
  const x = box.x + box.width / 2;
  const y = box.y + box.height / 2;

  await op.page.mouse.dblclick(x, y);
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await accept.waitFor({ state: 'hidden' });
  // Another click at the same place, after the view changed under it.
  await op.page.mouse.click(x, y);
  const there = await op.page.evaluate(([px, py]) => {
    const el = document.elementFromPoint(px, py);
    return { id: el.id, testid: el.dataset.testid || null, button: !!el.closest('button, summary') };
  }, [x, y]);
  assert.equal(there.button, false, `nothing to press where Accept was: ${JSON.stringify(there)}`);
  assert.equal(await op.page.locator('dialog[open]').count(), 0, 'no dialog opened (ban, close, transfer)');
  assert.equal(await op.page.getByTestId('more-menu').getAttribute('open'), null, 'the menu stayed shut');

  // Ban is still there, in the conversation's menu, behind its confirmation.
  await op.page.getByTestId('more-button').click();
  await screenshot(op.page, 'console-more-menu');
  await op.page.getByTestId('ban-button').click();
  await op.page.locator('[data-testid=ban-dialog][open]').waitFor();
  await op.page.keyboard.press('Escape');
  await op.page.locator('[data-testid=ban-dialog][open]').waitFor({ state: 'detached' });
  // The menu shuts on Escape and on a click elsewhere.
  await op.page.getByTestId('more-button').click();
  await op.page.locator('[data-testid=more-menu][open]').waitFor();
  await op.page.keyboard.press('Escape');
  await op.page.locator('[data-testid=more-menu][open]').waitFor({ state: 'detached' });
  await op.page.getByTestId('more-button').click();
  await op.page.getByTestId('conv-title').click();
  await op.page.locator('[data-testid=more-menu][open]').waitFor({ state: 'detached' });
  // One accept went out for the double click: no "taken" or any other complaint.
  assert.deepEqual(await op.page.evaluate(() => window.__toasts), []);
  await operatorSends(op, 'Still here');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Still here' }).waitFor();
  assert.deepEqual([...op.errors, ...v.errors], []);
});

/** The contrast of each message part's text against what is behind it, from computed colours. */
function contrasts() {
  const rgba = (c) => {
    const [r, g, b, a = 1] = c.match(/[\d.]+/g).map(Number);
    return [r, g, b, a];
  };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3]));
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reverse().reduce((acc, c) => over(c, acc), [255, 255, 255]);
  };
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      const s = v / 255;
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (el) => {
    const bg = behind(el);
    const fg = over(rgba(getComputedStyle(el).color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100;
  };
  const out = {};
  for (const li of document.querySelectorAll('[data-testid=conv-msg]')) {
    for (const part of ['bubble', 'meta']) {
      const el = li.querySelector('.' + part);
      if (el && el.textContent) out[li.dataset.role + ' ' + part] = ratio(el);
    }
  }
  return out;
}

test('console: message text meets WCAG AA contrast, light and dark', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Can you read me?');
  await acceptFirstQueued(op);
  await operatorSends(op, 'Loud and clear');
  for (const scheme of ['light', 'dark']) {
    await op.page.emulateMedia({ colorScheme: scheme });
    const seen = await op.page.evaluate(contrasts);
    for (const part of ['visitor bubble', 'visitor meta', 'operator bubble', 'operator meta', 'system bubble']) {
      const why = `${scheme}: ${part} has contrast ${seen[part]} (at least 4.5): ${JSON.stringify(seen)}`;
      assert.ok(seen[part] >= 4.5, why);
    }
  }
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('console: handing a conversation to another operator shows no error', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga', testHooks: true });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Transfer me');
  const conv = await acceptFirstQueued(a);
  await operatorSends(a, 'Let me pass you to Petr');
  await recordToasts(a.page);

  await a.page.getByTestId('transfer-button').click();
  await a.page.locator('[data-testid=transfer-operator][data-operator=op2] input').check();
  await a.page.getByTestId('transfer-confirm').click();
  await b.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).waitFor();
  await a.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).waitFor({ state: 'detached' });
  // Settled: the console's client no longer follows the conversation (so it asks nothing about
  // it) and waits for no answer, or an error has already been shown.
  const settled = await waitUntil(
    () =>
      a.page.evaluate((id) => {
        // (A console without the hook never counts as settled: only an error toast ends the wait.)
        const hook = window.__chatGatewayTestHooks.client;
        const c = hook ? hook() : { following: [id], requests: 1 };
        const done = window.__toasts.includes('Transferred.') && !c.following.includes(id) && c.requests === 0;
        return (done || window.__toasts.length > 2) && { ...c, toasts: window.__toasts };
      }, conv),
    { message: 'the transfer settled' }
  );
  assert.deepEqual(
    [...settled.toasts].sort(),
    ['Conversation with Visitor ' + (await v.page.evaluate(() => JSON.parse(localStorage.getItem('cgw:demo')).vid))
      .slice(-6) + ' left your list (transfer).', 'Transferred.'].sort(),
    'only the news of the handover, no error'
  );
  assert.ok(!settled.following.includes(conv));
  // Petr carries on; Olga's console stays quiet.
  await b.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();
  await operatorSends(b, 'Petr here');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Petr here' }).waitFor();
  assert.equal((await a.page.evaluate(() => window.__toasts)).length, 2);
  assert.deepEqual([...a.errors, ...b.errors, ...v.errors], []);
});
