/* global document, window, URL, URLSearchParams, fetch, WebSocket */
// The desktop page: noVNC's RFB client, scaled to the window, without any clipboard UI. The
// proxy's RFB filter removes clipboard traffic whatever this page does; this page only avoids
// offering what would not work.
import RFB from './novnc/core/rfb.js';

// Close codes the proxy sends (kept in step with src/server.ts).
const CLOSE_SESSION_ENDED = 1000;
const CLOSE_POLICY = 1008;
const CLOSE_IDLE = 4001;

const MAX_ATTEMPTS = 8;
const MAX_DELAY_MS = 30_000;

const screen = document.getElementById('screen');
const overlay = document.getElementById('overlay');
const message = document.getElementById('message');
const reconnectButton = document.getElementById('reconnect');

// Credentials arrive in the page URL; keep them in memory only and drop them from the address
// bar so they do not end up in history, bookmarks or a Referer.
const credentials = new URLSearchParams();
{
  const params = new URLSearchParams(window.location.search);
  for (const name of ['ticket', 'token']) {
    const value = params.get(name);
    if (value) credentials.set(name, value);
  }
  if ([...credentials.keys()].length > 0) {
    window.history.replaceState(null, '', window.location.pathname);
  }
}

function withCredentials(path, protocol) {
  const url = new URL(path, window.location.href);
  if (protocol) url.protocol = protocol;
  url.search = credentials.toString();
  return url;
}

let attempt = 0;
let retryTimer = null;
let rfb = null;

function show(text, { state, canRetry = false }) {
  message.textContent = text;
  overlay.hidden = text === '';
  reconnectButton.hidden = !canRetry;
  document.body.dataset.state = state;
}

function scheduleRetry(reason) {
  attempt += 1;
  if (attempt > MAX_ATTEMPTS) {
    show(`Could not reach the desktop (${reason}).`, { state: 'failed', canRetry: true });
    return;
  }
  const delay = Math.min(MAX_DELAY_MS, 1000 * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
  show(`Connection lost (${reason}). Reconnecting in ${Math.round(delay / 1000)} s…`, {
    state: 'reconnecting',
    canRetry: true,
  });
  retryTimer = window.setTimeout(connect, delay);
}

// A browser cannot see why a WebSocket handshake failed, so ask the proxy first.
async function preflight() {
  let response;
  try {
    response = await fetch(withCredentials('auth-check'), { cache: 'no-store' });
  } catch {
    return { ok: false, retry: true, reason: 'proxy unreachable' };
  }
  if (response.ok) return { ok: true };
  let reason = `HTTP ${response.status}`;
  try {
    reason = (await response.json()).reason ?? reason;
  } catch {
    // The status alone is explanation enough.
  }
  if (response.status === 401 || response.status === 403) {
    return { ok: false, retry: false, refused: true, reason };
  }
  return { ok: false, retry: true, reason };
}

function onClosed(closeEvent, wasConnected) {
  rfb = null;
  const code = closeEvent?.code;
  if (code === CLOSE_SESSION_ENDED && wasConnected) {
    show('The desktop session has ended.', { state: 'ended', canRetry: true });
  } else if (code === CLOSE_IDLE) {
    show('Disconnected after a period of inactivity.', { state: 'ended', canRetry: true });
  } else if (code === CLOSE_POLICY) {
    show(`The connection was closed by the desktop firewall (${closeEvent.reason}).`, {
      state: 'ended',
      canRetry: true,
    });
  } else {
    // A dropped network, a restarting proxy or a desktop not up yet: worth another try.
    scheduleRetry(closeEvent?.reason || 'network');
  }
}

async function connect() {
  window.clearTimeout(retryTimer);
  show('Connecting…', { state: 'connecting' });
  const check = await preflight();
  if (!check.ok) {
    if (check.refused) {
      show(`Access to this desktop was refused (${check.reason}).`, { state: 'refused' });
    } else {
      scheduleRetry(check.reason);
    }
    return;
  }
  const socket = new WebSocket(
    withCredentials('websockify', window.location.protocol === 'https:' ? 'wss:' : 'ws:'),
    ['binary'],
  );
  let closeEvent = null;
  let connected = false;
  socket.addEventListener('close', (event) => {
    closeEvent = event;
  });
  rfb = new RFB(screen, socket, { shared: true });
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    connected = true;
    attempt = 0;
    show('', { state: 'connected' });
    rfb.focus();
  });
  rfb.addEventListener('credentialsrequired', () => {
    rfb.disconnect();
    show('This desktop asks for a password, which this page does not support.', {
      state: 'refused',
    });
  });
  rfb.addEventListener('securityfailure', (event) => {
    show(`The desktop refused the connection (${event.detail.reason || 'security failure'}).`, {
      state: 'refused',
    });
  });
  rfb.addEventListener('disconnect', () => {
    if (document.body.dataset.state === 'refused') return;
    onClosed(closeEvent, connected);
  });
}

reconnectButton.addEventListener('click', () => {
  attempt = 0;
  if (rfb) rfb.disconnect();
  connect();
});

connect();
