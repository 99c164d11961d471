// The site's catalogues in the operator console, against the real gateway's directory: a
// supervisor's HTTP API calls make tags (one with a keyword, one inactive), outcomes and
// parameter labels, and the open console gets them pushed. The operator's tag field offers only
// the active catalogue tags (in their colours) and adds nothing else; a tag the catalogue
// retires stays on the conversation; the visitor's keyword tags the conversation on the
// operator's screen; the close dialog offers the site's outcomes (one must be chosen) and its
// tags; parameters show under their labels, in the preview or the open conversation as their
// definitions say, and not at all with `show: none`.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, waitUntil, screenshot
} from './harness.mjs';

/** A client of the site's HTTP API with a supervisor's token (which administers the site). */
async function siteApi(gw) {
  const token = await gw.token({ role: 'supervisor', sub: 'boss', name: 'Sofia' });
  return async (method, path, body) => {
    const res = await fetch(`${gw.url}/v1/sites/demo${path}`, {
      method,
      headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined
    });
    const text = await res.text();
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/** The names of the tags the open conversation shows, and their colours. */
const shownTags = (page) =>
  page.evaluate(() =>
    Array.from(document.querySelectorAll('#tag-list > [data-testid=tag]'), (el) => ({
      name: el.dataset.tag,
      background: el.style.background,
      color: el.style.color
    }))
  );

/** The tags the field's list offers now (it opens when the field has the focus). */
const offered = (page) =>
  page.evaluate(() =>
    document.getElementById('tag-options').hidden
      ? null
      : Array.from(document.querySelectorAll('[data-testid=tag-option]'), (li) => li.dataset.tag)
  );

/** Waits until the tag list offers exactly `names`. */
const offersExactly = (page, names) =>
  waitUntil(async () => JSON.stringify(await offered(page)) === JSON.stringify(names), {
    message: 'the tag list offering ' + names.join(', ')
  });

/** The visitor panel's parameters: label → value. */
const panelParams = (page) =>
  page.evaluate(() => {
    const out = {};
    for (const dt of document.querySelectorAll('[data-testid=visitor-panel] [data-testid=param-label]')) {
      out[dt.textContent] = dt.nextElementSibling.textContent;
    }
    return out;
  });

test('catalogues: tags from the site\'s catalogue, keyword tags, outcomes from its list, labelled parameters', { skip: skipReason(), timeout: 180000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const page = op.page;

  // The directory's catalogues, made while the console is open: they reach it in a settings frame.
  const api = await siteApi(gw);
  await api('POST', '/tags', { name: 'vip', color: '#7c3aed', text_color: '#ffffff' });
  const refund = { keywords: ['refund'] };
  await api('POST', '/tags', { name: 'billing', color: '#fde68a', text_color: '#78350f', auto: refund });
  await api('POST', '/tags', { name: 'follow-up', color: '#0e7490', text_color: '#ecfeff' });
  await api('POST', '/tags', { name: 'retired', active: false });
  await api('POST', '/outcomes', { id: 'sale', name: 'Sale made' });
  await api('POST', '/outcomes', { id: 'no_sale', name: 'No sale' });
  await api('POST', '/outcomes', { id: 'old', name: 'Old outcome', active: false });
  await api('POST', '/params', { code: 'plan', label: 'Plan', show: 'both' });
  await api('POST', '/params', { code: 'cart', label: 'Cart total', show: 'preview' });
  await api('POST', '/params', { code: 'crm', label: 'CRM record', show: 'active' });
  await api('POST', '/params', { code: 'secret', label: 'Internal score', show: 'none' });

  // A visitor whose page set parameters writes.
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => {
    window.ChatWidget.identify({ name: 'Cata Logue' });
    window.ChatWidget.setParams({ plan: 'gold', cart: '3 items', crm: 'C-42', secret: '97', color: 'blue' });
  });
  await visitorWrites(v, 'Hello, a question about my order');
  const item = page.locator('[data-testid=queue-item]', { hasText: 'Cata Logue' });
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');

  // Looked at from the queue (its preview): what shows there, under the labels; an undefined
  // parameter under its code; `none` nowhere.
  await item.click();
  await page.locator(`[data-testid=conv-view][data-conv="${conv}"]`).waitFor();
  const preview = await waitUntil(async () => {
    const p = await panelParams(page);
    return p.Plan && p['Cart total'] && p;
  }, { message: 'the preview\'s parameters' });
  assert.deepEqual(preview, { Plan: 'gold', 'Cart total': '3 items', color: 'blue' });

  // Taken: the open conversation's parameters.
  await page.getByTestId('conv-accept').click();
  await page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  const active = await waitUntil(async () => {
    const p = await panelParams(page);
    return p['CRM record'] && p;
  }, { message: 'the open conversation\'s parameters' });
  assert.deepEqual(active, { Plan: 'gold', 'CRM record': 'C-42', color: 'blue' });
  assert.equal(await page.getByTestId('visitor-panel').getByText('Internal score').count(), 0);
  assert.equal(await page.getByTestId('visitor-panel').getByText('97', { exact: true }).count(), 0);

  // The tag field offers the active catalogue tags only (not the retired one).
  const input = page.getByTestId('tag-input');
  await input.focus();
  const all = await waitUntil(() => offered(page), { message: 'the tag list open' });
  assert.deepEqual([...all].sort(), ['billing', 'follow-up', 'vip']);
  // A tag the catalogue does not have is not added: the operator is told, the field keeps it.
  await input.fill('urgent');
  await page.getByTestId('tag-option-none').waitFor();
  await input.press('Enter');
  await page.getByTestId('toast').filter({ hasText: 'not one of the site\'s tags' }).waitFor();
  assert.equal(await input.inputValue(), 'urgent');
  assert.deepEqual(await shownTags(page), []);

  // Typing narrows the list; Enter adds the highlighted one, in its colours.
  await input.fill('VI');
  await offersExactly(page, ['vip']);
  await input.press('Enter');
  await page.locator('#tag-list > [data-testid=tag][data-tag=vip]').waitFor();
  const vip = { name: 'vip', background: 'rgb(124, 58, 237)', color: 'rgb(255, 255, 255)' };
  assert.deepEqual(await shownTags(page), [vip]);
  assert.equal(await input.inputValue(), '');
  // The keyboard: down to the second offered tag, Enter.
  await input.press('ArrowDown');
  const rest = await waitUntil(async () => {
    const list = await offered(page);
    return list && list.length === 2 && list;
  }, { message: 'the list open again' });
  assert.deepEqual([...rest].sort(), ['billing', 'follow-up'], 'vip is no longer offered');
  const second = (await offered(page))[1];
  await input.press('ArrowDown');
  await page.locator(`[data-testid=tag-option][data-tag="${second}"][aria-selected=true]`).waitFor();
  assert.equal(
    await input.getAttribute('aria-activedescendant'),
    await page.locator(`[data-testid=tag-option][data-tag="${second}"]`).getAttribute('id')
  );
  await input.press('Enter');
  await page.locator(`#tag-list > [data-testid=tag][data-tag="${second}"]`).waitFor();
  await input.press('Escape');
  const tagsStored = (want) =>
    waitUntil(async () => JSON.stringify([...(await api('GET', `/conversations/${conv}`)).tags].sort()) === want, {
      message: 'the tags stored: ' + want
    });
  await tagsStored(JSON.stringify([second, 'vip'].sort()));
  // Remove the second again, so the keyword and the close dialog have tags left to add.
  await page.locator(`#tag-list > [data-testid=tag][data-tag="${second}"] [data-testid=tag-remove]`).click();
  await page.locator(`#tag-list > [data-testid=tag][data-tag="${second}"]`).waitFor({ state: 'detached' });

  // The visitor's keyword tags the conversation by itself: the operator sees it at once.
  await v.page.getByTestId('cw-input').fill('I would like a REFUND please');
  await v.page.getByTestId('cw-input').press('Enter');
  const billing = page.locator('#tag-list > [data-testid=tag][data-tag=billing]');
  await billing.waitFor();
  assert.equal(await billing.evaluate((el) => el.style.background), 'rgb(253, 230, 138)');

  // The catalogue retires vip: it stays on the conversation (in no colours now), and is offered no more.
  await api('PATCH', '/tags/vip', { active: false });
  await waitUntil(
    () => page.evaluate(() => document.querySelector('#tag-list > [data-tag=vip]')?.style.background === ''),
    { message: 'vip shown without the catalogue\'s colours' }
  );
  await input.focus();
  await offersExactly(page, ['follow-up']);
  await screenshot(page, 'console-catalogue-tags');
  await input.press('Escape');
  await page.getByTestId('tag-options').waitFor({ state: 'hidden' });

  // Closing: the site's outcomes by name (ids sent), one must be chosen; its tags as boxes.
  await page.getByTestId('close-button').click();
  const dialog = page.getByTestId('close-dialog');
  await dialog.waitFor();
  const outcomes = await page.getByTestId('close-outcome').evaluate((sel) =>
    Array.from(sel.options, (o) => [o.value, o.textContent])
  );
  assert.deepEqual(outcomes[0], ['', 'Choose an outcome…'], 'no outcome chosen for the operator');
  assert.deepEqual(outcomes.slice(1).sort(), [['no_sale', 'No sale'], ['sale', 'Sale made']], 'the active ones');
  assert.ok(await page.getByTestId('close-tags').isHidden(), 'no free-text tags');
  const boxes = await page.getByTestId('close-tag-choice').evaluateAll((els) =>
    Object.fromEntries(els.map((i) => [i.value, { checked: i.checked, disabled: i.disabled }]))
  );
  assert.deepEqual(boxes, {
    billing: { checked: true, disabled: true },
    'follow-up': { checked: false, disabled: false },
    vip: { checked: true, disabled: true }
  });
  // Without an outcome the dialog does not close.
  await page.getByTestId('close-confirm').click();
  assert.ok(await page.getByTestId('close-outcome').evaluate((sel) => !sel.validity.valid));
  assert.ok(await dialog.evaluate((d) => d.open), 'still asking');
  await screenshot(page, 'console-catalogue-close');
  await page.getByTestId('close-outcome').selectOption('no_sale');
  await page.locator('[data-testid=close-tag-choice][value=follow-up]').check();
  await page.getByTestId('close-confirm').click();
  await page.locator(`[data-testid=my-item][data-conv="${conv}"][data-state=closed]`).waitFor();
  const closed = await waitUntil(async () => {
    const c = await api('GET', `/conversations/${conv}`);
    return c.state === 'closed' && c;
  }, { message: 'the conversation stored closed' });
  assert.equal(closed.outcome, 'no_sale');
  assert.deepEqual([...closed.tags].sort(), ['billing', 'follow-up', 'vip']);
  // The visitor panel says the outcome by its name.
  await page.getByTestId('visitor-panel').locator('dd', { hasText: /^No sale$/ }).waitFor();
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('catalogues: an operator changes the parameters the site marks editable, and no others', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const api = await siteApi(gw);
  await api('POST', '/params', { code: 'order', label: 'Order', editable: true });
  await api('POST', '/params', { code: 'ticket', label: 'Ticket', editable: true });
  await api('POST', '/params', { code: 'plan', label: 'Plan', editable: false });
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const page = op.page;
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => {
    window.ChatWidget.identify({ name: 'Para Meter' });
    window.ChatWidget.setParams({ order: 'A-1', plan: 'gold' });
  });
  await visitorWrites(v, 'Where is my order?');
  const item = page.locator('[data-testid=queue-item]', { hasText: 'Para Meter' });
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  await item.click();
  await page.getByTestId('conv-accept').click();
  await page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();

  // The editable ones have a pencil, the empty one too (so it can be set); the other has none.
  const panel = page.getByTestId('visitor-panel');
  const value = (code) => panel.locator(`[data-testid=param-value][data-code=${code}]`);
  await value('order').getByTestId('param-edit').waitFor();
  await value('ticket').getByTestId('param-edit').waitFor();
  assert.equal(await value('plan').getByTestId('param-edit').count(), 0);

  // The panel shows a value, or the test says what it showed instead (and any toast).
  const shows = async (code, text) => {
    try {
      await value(code).filter({ hasText: text }).waitFor();
    } catch (e) {
      const seen = await panel.innerText().catch(() => '?');
      const toasts = await page.getByTestId('toast').allInnerTexts().catch(() => []);
      const what = `panel ${JSON.stringify(seen)}, toasts ${JSON.stringify(toasts)}`;
      throw new Error(`${code} never showed ${text}: ${what}`, { cause: e });
    }
  };
  // Changed in place: saved for everyone (the API reads it), the panel shows it.
  await value('order').getByTestId('param-edit').click();
  await value('order').getByTestId('param-input').fill('A-2');
  await value('order').getByTestId('param-save').click();
  await shows('order', 'A-2');
  await value('ticket').getByTestId('param-edit').click();
  await value('ticket').getByTestId('param-input').fill('T-77');
  await value('ticket').getByTestId('param-input').press('Enter');
  await shows('ticket', 'T-77');
  const stored = await waitUntil(async () => {
    const c = await api('GET', `/conversations/${conv}`);
    const p = (c.visitor && c.visitor.params) || c.params || {};
    return p.order === 'A-2' && p.ticket === 'T-77' && p;
  }, { message: 'the parameters stored' });
  assert.equal(stored.plan, 'gold', 'the others kept');
  await screenshot(page, 'console-params-edit');
  assert.deepEqual([...op.errors, ...v.errors], []);
});
