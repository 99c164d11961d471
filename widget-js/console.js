/*! chat-gateway operator console (served at /console.js as an ES module, after /protocol.js).
 *
 * One page an operator keeps open all day: sign-in with e-mail and password (or by token),
 * status switch, the queue, offers, my conversations, the conversation view (history, typing
 * with the visitor's sneak peek, read receipts, canned responses, drafts, transfer notes),
 * transfer, close, tags, the visitor's details, and for supervisors every operator, the active
 * conversations with their timings, take over, assign and watch, and the site's directory. All
 * wire work goes through the shared ChatGatewayProtocol.Client; the console only keeps view
 * state and renders it.
 *
 * This file starts it; the screens are modules under /console/, served as they are (no build
 * step):
 *   core.js          the state every screen shares, element and formatting helpers, messages,
 *                    calls of the HTTP API
 *   connection.js    sign-in and sign-out, the protocol client and its events, welcome, renderAll
 *   settings.js      my status, sound, desktop notifications; the site's settings, also pushed
 *   queue.js         offers and the waiting list (last messages, offline badges), accept, decline
 *   conversation.js  my chats and the open conversation: notes, messages, history, typing, receipts
 *   composer.js      the reply box: sending, drafts, my typing, canned responses
 *   actions.js       tags, transfer, close, ban
 *   visitor.js       the visitor panel
 *   supervisor.js    the operators list, active conversations, take over, assign, watch, unban;
 *                    the pages: History and Итоги
 *   admin.js         the Admin page (supervisors): the site's directory, over the HTTP API
 * The screens import each other's functions (the queue opens a conversation, the conversation
 * redraws the lists). ES modules allow such cycles; no module calls another while loading, only
 * from events, which begin once this file has run.
 */
import { TOKEN_KEY } from './console/core.js';
import { start, showSignin, tokenFromFragment } from './console/connection.js';
import './console/settings.js';
import './console/queue.js';
import './console/conversation.js';
import './console/composer.js';
import './console/actions.js';
import './console/supervisor.js';
import './console/admin.js';

// A sign-in link opened in a tab that already shows the console changes only the fragment:
// start over with the new token (stored by tokenFromFragment) and none of the old state.
window.addEventListener('hashchange', () => {
  if (tokenFromFragment()) location.reload();
});

const token = tokenFromFragment() || localStorage.getItem(TOKEN_KEY);
if (token) start(token);
else showSignin('');
