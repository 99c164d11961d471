// What the console shows from the data the gateway sends with each conversation: the visitor's
// last message in the queue (refreshed as they write), the conversation fetched whole (`get`)
// when a waiting one is looked at (queue listings leave out the visitor's parameters), transfer
// notes in the conversation, read receipts that survive a reload and a transfer, and the site's
// settings applied as soon as a supervisor changes them.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued, operatorSends, waitUntil,
  widgetMessages, screenshot
} from './harness.mjs';

/** The text of the queue item's last-message line, or null when it has none. */
const queueLast = (op, conv) =>
  op.page.evaluate((id) => {
    const el = document.querySelector(`[data-testid=queue-item][data-conv="${id}"] [data-testid=queue-last]`);
    return el ? { text: el.textContent, elements: el.children.length } : null;
  }, conv);

test('console: queue items show the visitor\'s last message as text, updated as they write', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Is the <b>blue</b> one in stock?');
  const item = op.page.locator('[data-testid=queue-item]').first();
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  await item.getByTestId('queue-last').filter({ hasText: 'Is the <b>blue</b> one in stock?' }).waitFor();
  const first = await queueLast(op, conv);
  assert.deepEqual(first, { text: 'Is the <b>blue</b> one in stock?', elements: 0 }, 'markup is text');

  // The waiting visitor writes again: the listing comes again, with the newer message.
  await v.page.getByTestId('cw-input').fill('Or the red one');
  await v.page.getByTestId('cw-input').press('Enter');
  await item.getByTestId('queue-last').filter({ hasText: /^Or the red one$/ }).waitFor();

  // A long message: the gateway sends at most 200 bytes of it, and that is what shows.
  await v.page.getByTestId('cw-input').fill('ž'.repeat(300));
  await v.page.getByTestId('cw-input').press('Enter');
  const long = await waitUntil(async () => {
    const last = await queueLast(op, conv);
    return last && last.text.startsWith('žž') && last;
  }, { message: 'the long message in the queue item' });
  const bytes = new TextEncoder().encode(long.text).length;
  assert.ok(bytes <= 200 && bytes >= 190, `cut to at most 200 bytes, got ${bytes}`);
  // It stays on one line of the item.
  const box = await item.getByTestId('queue-last').boundingBox();
  assert.ok(box.height < 24, `one line, got ${box.height}px`);
  await screenshot(op.page, 'console-queue-last-message');
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('console: a waiting conversation is fetched whole when looked at, with the visitor\'s parameters', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { testHooks: true });
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => {
    window.ChatWidget.identify({ name: 'Gina Params' });
    window.ChatWidget.setParams({ plan: 'gold', cart: '<img src=x onerror="window.__pwned=1">' });
  });
  await visitorWrites(v, 'Which plan am I on?');
  const item = op.page.locator('[data-testid=queue-item]', { hasText: 'Gina Params' });
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  const panel = op.page.getByTestId('visitor-panel');
  const param = (name) =>
    panel.locator('dl.kv dt', { hasText: new RegExp(`^${name}$`) }).locator('xpath=following-sibling::dd[1]');

  await item.click();
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"]`).waitFor();
  await param('plan').filter({ hasText: /^gold$/ }).waitFor();
  // A hostile value is text, never markup.
  await param('cart').filter({ hasText: '<img src=x onerror="window.__pwned=1">' }).waitFor();
  assert.equal(await panel.locator('img').count(), 0);
  assert.equal(await op.page.evaluate(() => window.__pwned), undefined);
  // Looking is not following: the console's client does not track a conversation it does not hold.
  await waitUntil(
    () =>
      op.page.evaluate((id) => {
        const c = window.__chatGatewayTestHooks.client();
        return c.requests === 0 && !c.following.includes(id);
      }, conv),
    { message: 'the peek settled, not followed' }
  );

  // The visitor's page changes a parameter while they wait: the open view shows the new value.
  await v.page.evaluate(() => window.ChatWidget.setParams({ plan: 'platinum' }));
  await param('plan').filter({ hasText: /^platinum$/ }).waitFor();
  await param('cart').waitFor();

  // Another look, and taking it: the parameters stay.
  await setStatus(op.page, 'active');
  await op.page.getByTestId('conv-accept').click();
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await param('plan').filter({ hasText: /^platinum$/ }).waitFor();
  await screenshot(op.page, 'console-peek-params');
  assert.deepEqual([...op.errors, ...v.errors], []);
});

/** Transfers the open conversation from the console `op` to `{operator}` or `{queue}`, with `note`. */
async function transfer(op, to, note) {
  await op.page.getByTestId('transfer-button').click();
  const choice = to.operator
    ? `[data-testid=transfer-operator][data-operator="${to.operator}"] input`
    : `[data-testid=transfer-queue][data-queue="${to.queue}"] input`;
  await op.page.locator(choice).check();
  await op.page.getByTestId('transfer-note').fill(note || '');
  await op.page.getByTestId('transfer-confirm').click();
  await op.page.getByTestId('toast').filter({ hasText: 'Transferred.' }).waitFor();
}

/** The notes shown in the open conversation: [{meta, text}], and whether any holds an element it should not. */
const shownNotes = (op) =>
  op.page.evaluate(() =>
    Array.from(document.querySelectorAll('[data-testid=conv-notes]:not([hidden]) [data-testid=conv-note]'), (li) => ({
      meta: li.querySelector('.note-meta').textContent.replace(/ · .*/, ''),
      text: li.querySelector('.note-text').textContent,
      markup: li.querySelector('.note-text').children.length
    }))
  );

test('console: transfer notes show in the conversation for whoever gets it, after a reload too', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'I want a refund');
  const conv = await acceptFirstQueued(a);
  assert.ok(await a.page.getByTestId('conv-notes').isHidden(), 'no notes yet, no empty block');

  // Olga hands it to Petr with a note (markup and entities in it are text).
  const note = 'VIP <i>refund</i> of order 42 &amp; the invoice';
  await transfer(a, { operator: 'op2' }, note);
  const mine = b.page.locator(`[data-testid=my-item][data-conv="${conv}"]`);
  await mine.click();
  await b.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await b.page.getByTestId('conv-note').first().waitFor();
  assert.deepEqual(await shownNotes(b), [{ meta: 'Note from Olga', text: note, markup: 0 }]);
  await screenshot(b.page, 'console-transfer-note');

  // After a reload the note is still with the conversation (it comes in welcome).
  await b.page.reload();
  await b.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await mine.click();
  await b.page.getByTestId('conv-note').first().waitFor();
  assert.deepEqual(await shownNotes(b), [{ meta: 'Note from Olga', text: note, markup: 0 }]);

  // Petr sends it back to the queue with a note of his own: Olga, looking at the waiting
  // conversation, sees both, oldest first.
  await transfer(b, { queue: 'general' }, 'Back to the queue: he wants Olga');
  const waiting = a.page.locator(`[data-testid=queue-item][data-conv="${conv}"]`);
  await waiting.click();
  await a.page.locator('[data-testid=conv-note]').nth(1).waitFor();
  assert.deepEqual(await shownNotes(a), [
    { meta: 'Note from Olga', text: note, markup: 0 },
    { meta: 'Note from Petr', text: 'Back to the queue: he wants Olga', markup: 0 }
  ]);
  // Visitors never see notes.
  const widgetText = await v.page.evaluate(() => document.querySelector('chat-gateway-widget').shadowRoot.textContent);
  assert.ok(!/VIP|wants Olga/.test(widgetText), 'the visitor sees no note');
  // A conversation without notes shows none: the next visitor's.
  const w = await openVisitor(browser, gw);
  await visitorWrites(w, 'Plain question');
  await a.page.locator('[data-testid=queue-item]', { hasText: 'Plain question' }).click();
  await a.page.getByTestId('conv-notes').waitFor({ state: 'hidden' });
  assert.deepEqual([...a.errors, ...b.errors, ...v.errors, ...w.errors], []);
});

/** The receipt state of the open conversation's message saying `text` in the console `op`. */
const receipt = (op, text) =>
  op.page.evaluate((t) => {
    const li = Array.from(document.querySelectorAll('[data-testid=conv-msg]')).find(
      (el) => el.querySelector('.bubble').textContent === t
    );
    return li ? li.dataset.state : null;
  }, text);

test('console: read receipts are right after a reload and after a transfer', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Hello?');
  const conv = await acceptFirstQueued(a);
  // The visitor's panel is open: they read the answer at once.
  await operatorSends(a, 'Hi, how can I help?');
  await a.page.locator('[data-testid=conv-msg][data-state=read]', { hasText: 'how can I help' }).waitFor();
  // The panel closed, the next answer stays unread.
  await v.page.evaluate(() => window.ChatWidget.close());
  await operatorSends(a, 'Are you still there?');
  await waitUntil(async () => (await widgetMessages(v.page)).some((m) => m.text === 'Are you still there?'), {
    message: 'the answer reached the closed widget'
  });
  assert.equal(await receipt(a, 'Are you still there?'), 'sent');

  // A reload: the receipts come back as they were, from the conversation's read marks.
  await a.page.reload();
  await a.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await a.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();
  await a.page.locator('[data-testid=conv-msg]', { hasText: 'Are you still there?' }).waitFor();
  assert.equal(await receipt(a, 'Hi, how can I help?'), 'read', 'read before the reload, read after it');
  assert.equal(await receipt(a, 'Are you still there?'), 'sent', 'the unread one is not marked read');

  // A transfer: Petr sees what the visitor has read of Olga's answers.
  await transfer(a, { operator: 'op2' }, '');
  await b.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();
  await b.page.locator('[data-testid=conv-msg]', { hasText: 'Are you still there?' }).waitFor();
  assert.equal(await receipt(b, 'Hi, how can I help?'), 'read');
  assert.equal(await receipt(b, 'Are you still there?'), 'sent');
  await screenshot(b.page, 'console-receipts-after-transfer');
  // The visitor opens the chat again and reads: the receipt follows, live.
  await v.page.evaluate(() => window.ChatWidget.open());
  await b.page.locator('[data-testid=conv-msg][data-state=read]', { hasText: 'Are you still there?' }).waitFor();
  await operatorSends(b, 'Petr here, I can help.');
  await b.page.locator('[data-testid=conv-msg][data-state=read]', { hasText: 'Petr here' }).waitFor();
  assert.deepEqual([...a.errors, ...b.errors, ...v.errors], []);
});

/** PATCHes the site's settings as a supervisor; resolves with the HTTP status. */
async function patchSettings(gw, body) {
  const sup = await gw.token({ role: 'supervisor', sub: 'boss', name: 'Sofia' });
  const res = await fetch(`${gw.url}/v1/sites/demo/settings`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${sup}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  });
  await res.arrayBuffer();
  return res.status;
}

/** The canned responses the reply box offers for `//query`: [{shortcut, text}]. */
async function cannedOffered(op, query) {
  const box = op.page.getByTestId('composer');
  await box.fill('');
  // The list follows each key at once (no request): what it shows after the last key is the answer.
  await box.pressSequentially('//' + query);
  const items = await op.page.evaluate(() =>
    document.querySelector('[data-testid=canned-picker]').hidden
      ? []
      : Array.from(document.querySelectorAll('[data-testid=canned-item]'), (li) => ({
        shortcut: li.dataset.shortcut,
        text: li.querySelector('span').textContent
      }))
  );
  await box.press('Escape');
  await box.fill('');
  return items;
}

test('console: the site\'s settings changed by a supervisor apply at once, without a reload', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Ann' }));
  await visitorWrites(v, 'Where is my refund?');
  await acceptFirstQueued(op);
  const site = op.page.getByTestId('site-settings');
  await site.filter({ hasText: 'Manual routing · visitors see operator names' }).waitFor();
  assert.deepEqual((await cannedOffered(op, 'hi')).map((c) => c.text), [
    'Hello Ann, my name is Olga. How can I help you?'
  ]);

  // Bad settings are refused whole: nothing reaches the console.
  assert.equal(await patchSettings(gw, { routing: 'sideways', canned: [{ shortcut: 'x', text: 'never' }] }), 422);
  assert.equal(await patchSettings(gw, '[1, 2]'), 400);

  // A good change: routing, operators' names, canned responses.
  const canned = [
    { shortcut: 'refund', text: 'Your refund, {{visitor.name}}, left today. {{operator.name}} from billing.' },
    { shortcut: 'bye', text: 'Goodbye <b>{{visitor.name}}</b>!' }
  ];
  assert.equal(await patchSettings(gw, { routing: 'offer', show_operator_name: false, canned }), 200);
  await site.filter({ hasText: 'Offer routing · operator names hidden from visitors' }).waitFor();
  assert.equal(await site.getAttribute('data-routing'), 'offer');
  // The site's own canned responses replace the defaults; the hidden name stays hidden.
  assert.deepEqual(await cannedOffered(op, ''), [
    { shortcut: 'refund', text: 'Your refund, Ann, left today. Operator from billing.' },
    { shortcut: 'bye', text: 'Goodbye <b>Ann</b>!' }
  ]);
  assert.deepEqual(await cannedOffered(op, 'hi'), [], 'the default "hi" is gone');
  assert.deepEqual(await cannedOffered(op, 'never'), [], 'the refused change did not apply');
  // One is picked and sent, as text.
  await op.page.getByTestId('composer').fill('');
  await op.page.getByTestId('composer').pressSequentially('//bye');
  await op.page.locator('[data-testid=canned-item][data-shortcut=bye]').waitFor();
  await op.page.getByTestId('composer').press('Enter');
  assert.equal(await op.page.getByTestId('composer').inputValue(), 'Goodbye <b>Ann</b>!');
  await op.page.getByTestId('composer').press('Enter');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Goodbye <b>Ann</b>!' }).waitFor();

  // Back to no canned responses of the site: the defaults return, with the name still hidden.
  assert.equal(await patchSettings(gw, { canned: [], routing: 'auto' }), 200);
  await site.filter({ hasText: 'Auto routing' }).waitFor();
  assert.deepEqual((await cannedOffered(op, 'hi')).map((c) => c.text), [
    'Hello Ann, my name is Operator. How can I help you?'
  ]);
  await screenshot(op.page, 'console-settings-pushed');
  assert.deepEqual([...op.errors, ...v.errors], []);
});
