// What the visitor sees on each message and on a phone: the time of each message (local, with the
// full date in its title), links made clickable safely (http, https and mailto only; markup and
// javascript: stay text), the operator's initials beside their messages and in the header, and
// on a phone whose page is wider than its screen, the launcher and the open panel on the screen.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued, operatorSends,
  widgetMessages, waitUntil, screenshot
} from './harness.mjs';

/** Every link in the widget's messages, as attributes and text. */
const widgetLinks = (page) =>
  page.evaluate(() =>
    Array.from(document.querySelector('chat-gateway-widget').shadowRoot.querySelectorAll('[data-testid=cw-msg] a')).map(
      (a) => ({
        role: a.closest('li').dataset.role,
        attrs: a.getAttributeNames().sort(),
        href: a.getAttribute('href'),
        rel: a.rel,
        target: a.target,
        text: a.textContent
      })
    )
  );

test('widget: message times, safe links, the operator\'s initials', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga Petrova' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  const startedAt = Date.now();
  await visitorWrites(v, 'My cart: https://shop.example/cart?id=7. Also javascript:alert(1)');
  await acceptFirstQueued(op);
  const hostile =
    'See https://example.com/docs?a=1&b=2. Mail mailto:help@example.com, ' +
    'not javascript:alert(1), JAVASCRIPT:alert(2), data:text/html,<b>x</b> or <a href="javascript:alert(3)">me</a>. ' +
    '<img src=x onerror="window.__pwned=1"> https://example.com/q"onmouseover="window.__pwned=2" ' +
    "https://example.com/it's (https://example.com/paren) https:// and https://exa mple.com";
  await operatorSends(op, hostile);
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'See https://example.com' }).waitFor();

  // Links: only http(s) and mailto, as written, with safe attributes; the rest is the text as sent.
  const links = await widgetLinks(v.page);
  const safe = { attrs: ['href', 'rel', 'target'], rel: 'noopener noreferrer nofollow', target: '_blank' };
  assert.deepEqual(links, [
    { role: 'visitor', ...safe, href: 'https://shop.example/cart?id=7', text: 'https://shop.example/cart?id=7' },
    { role: 'operator', ...safe, href: 'https://example.com/docs?a=1&b=2', text: 'https://example.com/docs?a=1&b=2' },
    { role: 'operator', ...safe, href: 'mailto:help@example.com', text: 'mailto:help@example.com' },
    { role: 'operator', ...safe, href: 'https://example.com/q', text: 'https://example.com/q' },
    { role: 'operator', ...safe, href: 'https://example.com/it', text: 'https://example.com/it' },
    { role: 'operator', ...safe, href: 'https://example.com/paren', text: 'https://example.com/paren' },
    { role: 'operator', ...safe, href: 'https://exa/', text: 'https://exa' }
  ]);
  const texts = (await widgetMessages(v.page)).filter((m) => m.role !== 'system').map((m) => m.text);
  assert.deepEqual(texts, ['My cart: https://shop.example/cart?id=7. Also javascript:alert(1)', hostile]);
  const made = await v.page.evaluate(() => {
    const root = document.querySelector('chat-gateway-widget').shadowRoot;
    return { img: root.querySelectorAll('img, b, [onmouseover], [onerror]').length, pwned: window.__pwned };
  });
  assert.deepEqual(made, { img: 0, pwned: undefined }, 'no markup came from a message');

  // Times: HH:MM in the reader's local time, the full date in the title, on every bubble.
  const times = await v.page.evaluate(() =>
    Array.from(document.querySelector('chat-gateway-widget').shadowRoot.querySelectorAll('[data-testid=cw-msg]'))
      .filter((li) => li.dataset.role !== 'system')
      .map((li) => {
        const el = li.querySelector('time');
        const d = new Date(el.getAttribute('datetime'));
        const local = d.toLocaleTimeString('en', { hourCycle: 'h23', hour: '2-digit', minute: '2-digit' });
        return { at: d.getTime(), text: el.textContent, local, title: el.title, year: String(d.getFullYear()) };
      })
  );
  assert.equal(times.length, 2);
  for (const x of times) {
    assert.ok(x.at >= startedAt - 60000 && x.at <= Date.now() + 60000, `a time of this test: ${x.at}`);
    assert.match(x.text, /^\d\d:\d\d$/);
    assert.equal(x.text, x.local, 'local time');
    assert.ok(x.title.includes(x.year) && x.title.includes(x.text), `the full date in the title: ${x.title}`);
  }

  // The operator's initials beside their message and in the header, with the name.
  const reply = v.page.locator('[data-testid=cw-msg][data-role=operator]');
  assert.equal(await reply.locator('.av').innerText(), 'OP');
  const head = v.page.getByTestId('cw-operator');
  assert.equal(await head.locator('.av').innerText(), 'OP');
  assert.match(await head.innerText(), /Olga Petrova/);
  await screenshot(v.page, 'widget-links-times');
  assert.deepEqual([...v.errors, ...op.errors], []);
});

test('widget on a phone: the launcher on the screen, the open panel fits it', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const context = await browser.newContext({
    viewport: { width: 360, height: 640 },
    isMobile: true,
    hasTouch: true,
    reducedMotion: 'reduce'
  });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(gw.url + '/');
  await page.getByTestId('cw-launcher').waitFor();

  // Where each part is, against what the phone shows (its visual viewport).
  const geometry = () =>
    page.evaluate(() => {
      const root = document.querySelector('chat-gateway-widget').shadowRoot;
      const box = (id) => {
        const el = root.querySelector(`[data-testid=${id}]`);
        const r = el.getBoundingClientRect();
        return { x: r.x, y: r.y, right: r.right, bottom: r.bottom, shown: r.width > 0 && r.height > 0 };
      };
      const v = window.visualViewport;
      const send = root.querySelector('[data-testid=cw-send]').getBoundingClientRect();
      const onTop = root.elementFromPoint(send.x + send.width / 2, send.y + send.height / 2);
      return {
        screen: { x: v.offsetLeft, y: v.offsetTop, right: v.offsetLeft + v.width, bottom: v.offsetTop + v.height },
        layoutWidth: window.innerWidth,
        launcher: box('cw-launcher'),
        panel: box('cw-panel'),
        sendOnTop: onTop && onTop.closest('[data-testid=cw-send]') !== null
      };
    });
  const inside = (b, s) =>
    b.x >= s.x - 0.5 && b.y >= s.y - 0.5 && b.right <= s.right + 0.5 && b.bottom <= s.bottom + 0.5;

  const g = await geometry();
  // The demo page is wider than the phone: what makes a fixed-position widget fall off the screen.
  assert.ok(g.layoutWidth > g.screen.right - g.screen.x, `the page is wider than the screen: ${JSON.stringify(g)}`);
  assert.ok(g.launcher.shown && inside(g.launcher, g.screen), `launcher on the screen: ${JSON.stringify(g)}`);

  await page.getByTestId('cw-launcher').tap();
  await page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  const o = await geometry();
  assert.ok(o.panel.shown && inside(o.panel, o.screen), `the open panel fits the screen: ${JSON.stringify(o)}`);
  assert.equal(o.panel.right - o.panel.x, o.screen.right - o.screen.x, 'the panel takes the screen\'s width');
  assert.equal(o.launcher.shown, false, 'the launcher does not cover the panel');
  assert.ok(o.sendOnTop, 'nothing covers the send button');
  await visitorWrites({ page }, 'Hello from a phone');
  await screenshot(page, 'widget-phone-open');

  // Closed again, and the page zoomed in (as a pinch does): the launcher follows the screen.
  await page.getByTestId('cw-close').tap();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Emulation.setPageScaleFactor', { pageScaleFactor: 2 });
  await waitUntil(
    async () => {
      const c = await geometry();
      return c.screen.right - c.screen.x < 200 && c.launcher.shown && inside(c.launcher, c.screen);
    },
    { message: 'the launcher on the zoomed-in screen' }
  );
  await page.getByTestId('cw-launcher').tap();
  await page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  const z = await geometry();
  assert.ok(inside(z.panel, z.screen), `the panel on the zoomed-in screen: ${JSON.stringify(z)}`);
  assert.deepEqual(errors, []);
});
