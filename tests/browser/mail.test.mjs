// E-mail from the widget and the console, against the real gateway and a real SMTP server
// (tests/support/smtp_sink.py, aiosmtpd from the venv the test script makes): the site lets
// visitors have their transcript e-mailed; when the operator closes the chat, the widget's
// end of conversation offers it, prefilled with the address the visitor gave; sent, it says
// so, and the SMTP server receives the transcript, in the visitor's language (not the site's),
// with the conversation's words.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn } from 'node:child_process';
import {
  REPO, skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued, waitUntil, screenshot
} from './harness.mjs';

const PYTHON = process.env.SMTP_SINK_PYTHON || path.join(REPO, 'target', 'venv', 'bin', 'python');

/** A free port of 127.0.0.1. */
const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** Starts the SMTP sink; resolves with its port and a reader of what it received. */
async function smtpSink(t) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-browser-smtp-'));
  const proc = spawn(PYTHON, [path.join(REPO, 'tests', 'support', 'smtp_sink.py'), String(port), dir], {
    stdio: 'ignore'
  });
  t.after(() => {
    proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitUntil(
    () =>
      new Promise((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => (c.end(), resolve(true)));
        c.on('error', () => resolve(false));
      }),
    { message: 'the SMTP sink listening' }
  );
  const received = () =>
    fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
  return { port, received };
}

test('mail: the visitor has the transcript e-mailed from the end of the chat', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const smtp = await smtpSink(t);
  const { gw, browser } = await setup(t, {
    env: { GATEWAY_SMTP_URL: `smtp://127.0.0.1:${smtp.port}?tls=none`, GATEWAY_MAIL_FROM: 'Chat <chat@example.com>' }
  });
  const sup = await gw.token({ role: 'supervisor', sub: 'boss', name: 'Sofia' });
  const res = await fetch(`${gw.url}/v1/sites/demo`, {
    method: 'PATCH',
    headers: { Authorization: 'Bearer ' + sup, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      settings: { visitor_transcripts: true, transcript_reply_to: 'help@example.com', language: 'ru' }
    })
  });
  assert.equal(res.status, 200, await res.text());

  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Jana', email: 'jana@example.org' }));
  await visitorWrites(v, 'Dobrý den, kde je moje objednávka?');
  const conv = await acceptFirstQueued(op);
  await op.page.getByTestId('composer').fill('Už je na cestě.');
  await op.page.getByTestId('composer').press('Enter');
  await v.page.getByTestId('cw-msg').filter({ hasText: 'Už je na cestě.' }).waitFor();

  // Closed by the operator: the widget's end of the conversation offers the e-mail.
  await op.page.getByTestId('close-button').click();
  await op.page.getByTestId('close-outcome').selectOption('solved');
  await op.page.getByTestId('close-confirm').click();
  const form = v.page.getByTestId('cw-mail-transcript');
  await form.waitFor();
  assert.equal(await form.locator('input[name=email]').inputValue(), 'jana@example.org');
  await form.locator('button').click();
  await v.page.getByTestId('cw-mailed').filter({ hasText: 'jana@example.org' }).waitFor();
  await screenshot(v.page, 'widget-mail-transcript');

  const mails = await waitUntil(() => {
    const got = smtp.received().filter((m) => m.rcpt_tos.includes('jana@example.org'));
    return got.length ? got : null;
  }, { message: 'the transcript e-mail', timeout: 30000 });
  assert.equal(mails.length, 1);
  const m = mails[0];
  // The site speaks Russian; the visitor's widget English: their copy is in English.
  assert.match(m.subject, /^Your chat with /, 'in the visitor\'s language');
  assert.equal(m.reply_to, 'help@example.com');
  assert.ok(m.text.includes('Dobrý den, kde je moje objednávka?'), m.text);
  assert.ok(m.text.includes('Už je na cestě.'), m.text);
  assert.ok(conv);
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('mail: the operator closes and has the transcript e-mailed to the visitor', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const smtp = await smtpSink(t);
  const { gw, browser } = await setup(t, {
    env: { GATEWAY_SMTP_URL: `smtp://127.0.0.1:${smtp.port}?tls=none`, GATEWAY_MAIL_FROM: 'Chat <chat@example.com>' }
  });
  const sup = await gw.token({ role: 'supervisor', sub: 'boss', name: 'Sofia' });
  const res = await fetch(`${gw.url}/v1/sites/demo`, {
    method: 'PATCH',
    headers: { Authorization: 'Bearer ' + sup, 'Content-Type': 'application/json' },
    body: JSON.stringify({ settings: { visitor_transcripts: true } })
  });
  assert.equal(res.status, 200, await res.text());
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Petr', email: 'petr@example.org' }));
  await visitorWrites(v, 'Please send me what we said');
  await acceptFirstQueued(op);

  await op.page.getByTestId('close-button').click();
  await op.page.getByTestId('close-outcome').selectOption('solved');
  const to = op.page.getByTestId('close-mail-to');
  assert.equal(await to.inputValue(), 'petr@example.org', 'the address the visitor gave');
  await op.page.getByTestId('close-mail').check();
  await op.page.getByTestId('close-confirm').click();
  await op.page.getByTestId('toast').filter({ hasText: 'will be e-mailed to petr@example.org' }).waitFor();
  const mails = await waitUntil(() => {
    const got = smtp.received().filter((m) => m.rcpt_tos.includes('petr@example.org'));
    return got.length ? got : null;
  }, { message: 'the transcript e-mail', timeout: 30000 });
  assert.equal(mails.length, 1);
  assert.ok(mails[0].text.includes('Please send me what we said'), mails[0].text);
  assert.deepEqual([...op.errors, ...v.errors], []);
});
