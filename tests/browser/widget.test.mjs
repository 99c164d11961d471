// The visitor widget on a customer's page (another origin, hostile CSS): Shadow DOM isolation,
// languages from the tag, the page or the browser, the pre-chat form, the JS API and its events,
// the unread badge (operator messages only), the operator's typing indicator and name (or not, per show_operator_name),
// and the transcript download.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  skipReason, setup, newPage, openConsole, setStatus, openVisitor, startHostSite, visitorWrites, acceptFirstQueued,
  operatorSends, screenshot
} from './harness.mjs';

test('widget: shadow DOM isolation and languages', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const host = await startHostSite(t, gw);

  // The demo page styles every button brown with !important; the widget's stay its own.
  const demo = await openVisitor(browser, gw);
  const launcherBg = await demo.page.getByTestId('cw-launcher').evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(launcherBg, 'rgb(37, 99, 235)');
  const pageButtonBg = await demo.page
    .locator('main button')
    .first()
    .evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(pageButtonBg, 'rgb(124, 45, 18)', 'the page keeps its own styles');
  assert.equal(
    await demo.page.evaluate(() => document.querySelectorAll('style').length),
    1,
    'the widget adds no style to the page'
  );

  // A page with `* { color: magenta !important; font-family: serif !important }`.
  const ru = await openVisitor(browser, gw, host.url({ htmlLang: 'ru' }));
  await ru.page.getByTestId('cw-launcher').click();
  const input = ru.page.getByTestId('cw-input');
  assert.equal(await input.getAttribute('placeholder'), 'Напишите сообщение…', 'language of the page');
  const style = await input.evaluate((el) => ({
    color: getComputedStyle(el).color,
    font: getComputedStyle(el).fontFamily
  }));
  assert.notEqual(style.color, 'rgb(255, 0, 255)');
  assert.doesNotMatch(style.font, /^serif$/);
  assert.equal(await ru.page.locator('h1').evaluate((el) => getComputedStyle(el).color), 'rgb(255, 0, 255)');
  await screenshot(ru.page, 'widget-ru');

  // The tag's data-lang wins over the page; the browser's language is the last resort.
  const cs = await openVisitor(browser, gw, host.url({ htmlLang: 'ru', lang: 'cs' }));
  await cs.page.getByTestId('cw-launcher').click();
  assert.equal(await cs.page.getByTestId('cw-input').getAttribute('placeholder'), 'Napište zprávu…');
  const browserCs = await openVisitor(browser, gw, host.url({}), { locale: 'cs-CZ' });
  await browserCs.page.getByTestId('cw-launcher').click();
  assert.equal(await browserCs.page.getByTestId('cw-input').getAttribute('placeholder'), 'Napište zprávu…');
  // An unknown language falls back to English.
  const de = await openVisitor(browser, gw, host.url({ htmlLang: 'de' }), { locale: 'de-DE' });
  await de.page.getByTestId('cw-launcher').click();
  assert.equal(await de.page.getByTestId('cw-input').getAttribute('placeholder'), 'Write a message…');

  // Calls queued by the page before the script loaded are played once it has.
  const early = await openVisitor(
    browser,
    gw,
    host.url({
      preload: JSON.stringify([
        ['setParams', [{ from: 'preload' }]],
        ['open', []]
      ])
    })
  );
  await early.page.getByTestId('cw-panel').waitFor();
  assert.equal(await early.page.getByTestId('cw-launcher').getAttribute('aria-expanded'), 'true');
  assert.deepEqual(await early.page.evaluate(() => JSON.parse(localStorage.getItem('cgw:demo')).params), {
    from: 'preload'
  });
  assert.deepEqual(
    [...demo.errors, ...ru.errors, ...cs.errors, ...browserCs.errors, ...de.errors, ...early.errors],
    []
  );
});

test('widget: pre-chat form, API events, unread badge, typing, transcript', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const host = await startHostSite(t, gw);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');

  const v = await openVisitor(browser, gw, host.url({ prechat: true }));
  await v.page.evaluate(() => {
    window.__events = [];
    for (const e of ['open', 'close', 'message', 'conversation'])
      window.ChatWidget.on(e, (x) => window.__events.push([e, x && (x.text || x.event)]));
  });
  await v.page.evaluate(() => window.ChatWidget.setParams({ plan: 'pro', cart: 3 }));
  await v.page.evaluate(() => window.ChatWidget.open());
  await v.page.locator('[data-testid=cw-panel][data-mode=prechat]').waitFor();
  // The name is required.
  await v.page.getByTestId('cw-pre-submit').click();
  assert.equal(await v.page.locator('[data-testid=cw-panel]').getAttribute('data-mode'), 'prechat');
  await v.page.getByTestId('cw-pre-name').fill('Vera');
  await v.page.getByTestId('cw-pre-email').fill('vera@example.com');
  await v.page.getByTestId('cw-pre-submit').click();
  await visitorWrites(v, 'Hello from the pre-chat form');

  await op.page.locator('[data-testid=queue-item]', { hasText: 'Vera' }).waitFor();
  const conv = await acceptFirstQueued(op);
  const panel = op.page.getByTestId('visitor-panel');
  await panel.locator('dd', { hasText: 'vera@example.com' }).waitFor();
  await panel.locator('dt', { hasText: 'plan' }).waitFor();
  await panel.locator('dd', { hasText: 'pro' }).waitFor();

  // The operator's typing, with their name.
  await op.page.getByTestId('composer').pressSequentially('Let me');
  await v.page.locator('[data-testid=cw-typing]', { hasText: 'Olga is typing' }).waitFor();
  await op.page.getByTestId('composer').fill('');
  await operatorSends(op, 'Hi Vera!');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Hi Vera!' }).waitFor();
  await v.page.getByTestId('cw-typing').waitFor({ state: 'hidden' });

  // Closed widget: the launcher counts unread messages, for the eyes and for screen readers.
  await v.page.getByTestId('cw-close').click();
  await v.page.getByTestId('cw-panel').waitFor({ state: 'hidden' });
  await operatorSends(op, 'Are you there?');
  await operatorSends(op, 'I found your order.');
  await v.page.locator('[data-testid=cw-badge]', { hasText: /^2$/ }).waitFor();
  assert.match(await v.page.getByTestId('cw-launcher').getAttribute('aria-label'), /2 unread/);
  // The operator sees that nothing was read yet.
  assert.equal(
    await op.page
      .locator('[data-testid=conv-msg][data-role=operator][data-state=read]', { hasText: 'found your order' })
      .count(),
    0
  );
  await screenshot(v.page, 'widget-unread-badge');
  await v.page.getByTestId('cw-launcher').click();
  await v.page.getByTestId('cw-badge').waitFor({ state: 'hidden' });
  await op.page
    .locator('[data-testid=conv-msg][data-role=operator][data-state=read]', { hasText: 'found your order' })
    .waitFor();

  // The transcript: every message, as a downloaded text file.
  const [download] = await Promise.all([v.page.waitForEvent('download'), v.page.getByTestId('cw-transcript').click()]);
  assert.equal(download.suggestedFilename(), `chat-${conv}.txt`);
  const text = fs.readFileSync(await download.path(), 'utf8');
  for (const line of [
    'You: Hello from the pre-chat form',
    'Olga: Hi Vera!',
    'Olga: Are you there?',
    'Olga: I found your order.'
  ])
    assert.ok(text.includes(line), `transcript has "${line}":\n${text}`);

  const events = await v.page.evaluate(() => window.__events);
  assert.deepEqual(
    events
      .filter(([e]) => e === 'message')
      .map(([, x]) => x)
      .filter((x) => /Vera|there|order/.test(x)),
    ['Hi Vera!', 'Are you there?', 'I found your order.']
  );
  assert.ok(events.some(([e, x]) => e === 'conversation' && x === 'started'));
  assert.deepEqual(events.filter(([e]) => e === 'open' || e === 'close').map(([e]) => e), ['open', 'close', 'open']);
  assert.deepEqual([...v.errors, ...op.errors], []);
});

test('widget: the unread badge counts the operator\'s messages, not system lines', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Anyone there?');
  await v.page.getByTestId('cw-close').click();
  await v.page.getByTestId('cw-panel').waitFor({ state: 'hidden' });

  // While the panel is closed: "Olga joined the conversation" (a system message), then Olga.
  await acceptFirstQueued(op);
  await operatorSends(op, 'Yes, Olga here.');
  await v.page.locator('[data-testid=cw-msg][data-role=system]', { hasText: 'joined' }).waitFor({ state: 'attached' });
  await v.page
    .locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Olga here' })
    .waitFor({ state: 'attached' });
  // Both arrived (in seq order, the system line first): the badge has counted what it counts.
  assert.equal(await v.page.getByTestId('cw-badge').innerText(), '1');
  assert.match(await v.page.getByTestId('cw-launcher').getAttribute('aria-label'), /1 unread/);
  assert.deepEqual([...v.errors, ...op.errors], []);
});

test('widget: show_operator_name off hides the operator\'s name', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t, { sites: [{ id: 'demo', settings: { show_operator_name: false } }] });
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Who am I talking to?');
  await acceptFirstQueued(op);
  await op.page.getByTestId('composer').pressSequentially('Your');
  await v.page.locator('[data-testid=cw-typing]', { hasText: 'Operator is typing' }).waitFor();
  await operatorSends(op, 'Your operator.');
  const reply = v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Your operator.' });
  await reply.waitFor();
  assert.doesNotMatch(
    await v.page.getByTestId('cw-panel').innerText(),
    /Olga/,
    'the name appears nowhere in the widget'
  );
  await v.page.locator('[data-testid=cw-msg][data-role=system]', { hasText: 'An operator joined' }).waitFor();
  // No initials either: a person beside the message, and "Operator" in the header.
  assert.equal(await reply.locator('.av').innerText(), '');
  assert.equal(await reply.locator('.av svg').count(), 1);
  assert.equal(await v.page.getByTestId('cw-operator').innerText(), 'Operator');
  assert.deepEqual([...v.errors, ...op.errors], []);
});

test('bad input: corrupted storage, and markup in names and messages stays text', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  // Whatever another version (or a curious visitor) left in localStorage must not break it. The
  // junk is in storage before the widget loads, each in a profile of its own: a widget already
  // running on the page would store its own state over it (it saves when its connection opens).
  const junks = ['{not json', '[1,2,3]', '"text"'];
  junks.push(JSON.stringify({ msgs: 5, out: 'x', cursors: [1], convs: {}, token: 7, conv: {}, rd: null }));
  const pages = [];
  for (const junk of junks) {
    const p = await newPage(browser);
    pages.push(p);
    await p.context.addInitScript((j) => localStorage.setItem('cgw:demo', j), junk);
    await p.page.goto(gw.url + '/');
    await p.page.getByTestId('cw-launcher').click();
    await p.page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  }
  // The last one goes on to chat.
  const v = pages.at(-1);
  const evil = '<img src=x onerror="window.__pwned=1">';
  await v.page.evaluate((name) => window.ChatWidget.identify({ name }), `<b>Eve</b>${evil}`);
  await visitorWrites(v, `Hi ${evil}`);
  await acceptFirstQueued(op);
  await op.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: `Hi ${evil}` }).waitFor();
  await op.page.locator('[data-testid=conv-title]', { hasText: '<b>Eve</b>' }).waitFor();
  await operatorSends(op, `Reply ${evil}`);
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: `Reply ${evil}` }).waitFor();
  for (const p of [v.page, op.page]) {
    assert.equal(await p.evaluate(() => window.__pwned), undefined, 'no markup ran');
    assert.equal(await p.locator('img[src=x]').count(), 0, 'no element was created from text');
  }
  assert.deepEqual([...pages.flatMap((p) => p.errors), ...op.errors], []);
});

test('widget: the test hooks stay off customers\' pages', { skip: skipReason(), timeout: 60000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const host = await startHostSite(t, gw);
  const served = await (await fetch(gw.url + '/widget.js')).text();
  assert.doesNotMatch(served, /_debug/, 'the served widget names no _debug hook');

  // A customer's page as it is: the API has no hook, and the opt-in object is not made up.
  const plain = await openVisitor(browser, gw, host.url({}));
  const seen = await plain.page.evaluate(() => ({
    api: Object.getOwnPropertyNames(window.ChatWidget),
    hooks: typeof window.__chatGatewayTestHooks
  }));
  assert.ok(seen.api.includes('open'), 'the API itself is there');
  assert.deepEqual(seen.api.filter((k) => /^_debug|^(drop|resume|state)$/.test(k)), [], 'no hook on ChatWidget');
  assert.equal(seen.hooks, 'undefined', 'no hooks object on a page that did not ask');

  // A page that opted in before the script loaded gets them, and only there.
  const opted = await openVisitor(browser, gw, host.url({}), { testHooks: true });
  const got = await opted.page.evaluate(() => ({
    hooks: Object.keys(window.__chatGatewayTestHooks).sort(),
    api: Object.getOwnPropertyNames(window.ChatWidget).filter((k) => k.startsWith('_debug')),
    conn: window.__chatGatewayTestHooks.state().conn
  }));
  assert.deepEqual(got, { hooks: ['drop', 'resume', 'state'], api: [], conn: 'idle' });
});
