// The top bar's settings: what operators set for themselves, and the alerts those settings
// drive: the status switch (active, away, inactive), the sound of new conversations and
// messages, and the browser's desktop notifications; and the site's settings, from `welcome`
// and from the `settings` frames a supervisor's change sends (routing, operators' names shown
// to visitors, canned responses), applied at once.

import { $, st, SOUND_KEY, toast, errText, isStaff } from './core.js';
import { select } from './conversation.js';
import { refreshPicker } from './composer.js';
import { renderAll } from './connection.js';

// ------------------------------------------------------------------ the site's settings

const ROUTING = { manual: 'Manual routing', offer: 'Offer routing', auto: 'Auto routing' };

/** The site's settings as the top bar shows them. */
export function renderSite() {
  const s = st.settings || {};
  const parts = [];
  if (typeof s.routing === 'string') parts.push(ROUTING[s.routing] || 'Routing: ' + s.routing);
  if (typeof s.show_operator_name === 'boolean') {
    parts.push(s.show_operator_name ? 'visitors see operator names' : 'operator names hidden from visitors');
  }
  $('site-settings').textContent = parts.join(' · ');
  $('site-settings').dataset.routing = typeof s.routing === 'string' ? s.routing : '';
}

/** A supervisor changed the site's settings: they apply now, without a reload. */
export function onSiteSettings(f) {
  const s = f && f.settings;
  if (!s || typeof s !== 'object' || Array.isArray(s)) return;
  st.settings = s;
  // The protocol client reads its ping interval from the settings it got in welcome.
  if (st.client && typeof s.ping_interval_ms === 'number') st.client.settings = s;
  renderSite();
  renderAll();
  refreshPicker();
}

// ------------------------------------------------------------------ status

/** `st.status` is what the switch shows; `data-server` what the gateway last confirmed. */
export function renderStatus() {
  const s = st.status || 'inactive';
  $('status-select').value = s;
  $('status-select').dataset.server = st.serverStatus || '';
  $('status-select').disabled = !(st.client && st.client.ready && isStaff());
  $('status-dot').className = 'dot ' + s;
}

$('status-select').addEventListener('change', (e) => {
  const want = e.target.value;
  const before = st.status;
  st.status = want;
  renderStatus();
  st.client.setStatus(want).then(
    (ok) => {
      st.status = st.serverStatus = ok.status || want;
      renderStatus();
    },
    (err) => {
      st.status = before;
      renderStatus();
      toast('Could not change status: ' + errText(err));
    }
  );
});

// ------------------------------------------------------------------ sound

let audio = null;
let soundOn = localStorage.getItem(SOUND_KEY) !== 'off';
$('sound-toggle').checked = soundOn;
$('sound-toggle').addEventListener('change', (e) => {
  soundOn = e.target.checked;
  localStorage.setItem(SOUND_KEY, soundOn ? 'on' : 'off');
  unlockAudio();
});

function unlockAudio() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === 'suspended') audio.resume();
  } catch {
    audio = null;
  }
}
// Browsers allow audio only after a user gesture: unlock on the first one.
document.addEventListener('pointerdown', unlockAudio, { once: true });
document.addEventListener('keydown', unlockAudio, { once: true });

export function beep(freq) {
  if (!soundOn) return;
  try {
    unlockAudio();
    if (!audio) return;
    const o = audio.createOscillator();
    const g = audio.createGain();
    const t0 = audio.currentTime;
    o.type = 'sine';
    o.frequency.value = freq || 880;
    g.gain.setValueAtTime(0.0001, t0);
    g.gain.exponentialRampToValueAtTime(0.25, t0 + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.35);
    o.connect(g).connect(audio.destination);
    o.start(t0);
    o.stop(t0 + 0.4);
  } catch {
    // No audio device.
  }
}

// ------------------------------------------------------------------ desktop notifications

/** A desktop notification, only while the console is not in front; a click opens the chat. */
export function notify(title, body, convId) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  try {
    const n = new Notification(title, { body, tag: convId });
    n.onclick = () => {
      window.focus();
      if (st.mine.has(convId)) select(convId);
      n.close();
    };
  } catch {
    // Not allowed in this context.
  }
}

function renderNotifyButton() {
  $('notify-btn').hidden = !('Notification' in window) || Notification.permission !== 'default';
}
$('notify-btn').addEventListener('click', () => Notification.requestPermission().then(renderNotifyButton));
renderNotifyButton();
