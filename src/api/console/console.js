// Hearth's admin console: a small single-page app over the admin API
// (Synapse's `/_synapse/admin/*` and Hearth's `/_hearth/admin/*`).
// Served under a strict CSP: no inline code or styles, and server data
// only ever reaches the page as text (createElement / textContent).

const TOKEN_KEY = 'hearth.console.token';
const USER_KEY = 'hearth.console.user';
const PAGE = 50;

let token = sessionStorage.getItem(TOKEN_KEY);
let me = sessionStorage.getItem(USER_KEY);
// Bumped on every navigation and log-out: work of an older generation
// drops its result.
let generation = 0;
const timers = new Set();

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// ---- DOM

/// An element: `class`, `data` (dataset), `on…` (listeners), other
/// attributes (`true` for a bare one); children are nodes or text.
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'data') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const button = (label, cls, onclick, aria) => h('button', { type: 'button', class: cls, onclick, 'aria-label': aria }, label);
const td = (value, cls) => h('td', { class: cls }, value == null || value === '' ? '—' : value);
const code = (text) => h('code', {}, text);
const yesNo = (b, bad) => h('span', { class: `badge ${b ? (bad ? 'bad' : 'yes') : 'no'}` }, b ? 'yes' : 'no');
const empty = (text) => h('p', { class: 'empty' }, text);

function table(headers, rows, label) {
  return h('div', { class: 'table-wrap' },
    h('table', { 'aria-label': label },
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
}

function field(label, input, hint) {
  const check = input.type === 'checkbox';
  return h('label', { class: check ? 'check' : null }, check ? [input, ' ', label] : [label, input],
    hint && h('small', { class: 'hint' }, hint));
}

const input = (name, attrs) => h('input', { name, autocomplete: 'off', ...attrs });

/// A form of `fields` whose submit runs `work` (errors shown, button
/// disabled meanwhile).
function form(id, fields, submitLabel, work, cls) {
  const submit = h('button', { type: 'submit', class: cls }, submitLabel);
  const el = h('form', { id, class: 'grid-form' }, fields, h('div', { class: 'actions' }, submit));
  el.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(submit, () => work(el));
  });
  return el;
}

function dl(pairs) {
  return h('dl', { class: 'facts' },
    pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v == null || v === '' ? '—' : v)]));
}

function searchForm(id, label, placeholder, onSearch) {
  const box = h('input', { type: 'search', name: 'q', 'aria-label': label, placeholder });
  const el = h('form', { id, class: 'toolbar', role: 'search' }, box, h('button', { type: 'submit', class: 'secondary' }, 'Search'));
  el.addEventListener('submit', (e) => { e.preventDefault(); onSearch(box.value.trim()); });
  return el;
}

// ---- Formatting

const fmtNumber = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '—');
const fmtRate = (n) => (typeof n === 'number' ? n.toFixed(n < 10 ? 2 : 1) : '—');
const pad = (n) => String(n).padStart(2, '0');

function fmtBytes(n) {
  if (typeof n !== 'number') return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtTime(ms, seconds) {
  if (typeof ms !== 'number' || !ms) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`
    + (seconds ? `:${pad(d.getSeconds())}` : '');
}

function fmtDuration(ms) {
  if (typeof ms !== 'number') return '—';
  let s = Math.floor(ms / 1000);
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60]]) {
    if (s >= size) { parts.push(`${Math.floor(s / size)} ${unit}`); s %= size; }
  }
  if (parts.length < 2) parts.push(`${s} s`);
  return parts.slice(0, 2).join(' ');
}

const serverName = () => (me || '').slice((me || '').indexOf(':') + 1);

// ---- API

class ApiError extends Error {
  constructor(status, errcode, error) {
    super(`${errcode}: ${error}`);
    Object.assign(this, { status, errcode, error });
  }
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'M_CONNECTION', 'The server could not be reached.');
  }
  let data = {};
  try { data = JSON.parse(await res.text() || '{}') || {}; } catch { /* not JSON */ }
  if (res.ok) return data;
  const err = new ApiError(res.status, data.errcode || `HTTP ${res.status}`, data.error || res.statusText || 'Request failed');
  if (res.status === 401 && token) {
    err.handled = true;
    clearSession();
    showLogin('Your session has ended. Please sign in again.');
  }
  throw err;
}

// ---- Banners

function showError(err) {
  if (err && err.handled) return;
  $('error-text').textContent = err instanceof ApiError ? err.message : String((err && err.message) || err);
  $('error').hidden = false;
}

function showNotice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

// ---- Generations, timers, errors

const live = (gen) => gen === generation && !!token;

function later(fn, ms, gen) {
  const id = setTimeout(() => { timers.delete(id); if (live(gen)) fn(); }, ms);
  timers.add(id);
}

function stopWork() {
  generation += 1;
  timers.forEach(clearTimeout);
  timers.clear();
}

/// `fn` with its errors shown while its view is current.
const guard = (gen, fn) => async (...args) => {
  try { await fn(...args); } catch (err) { if (live(gen)) showError(err); }
};

/// Runs `fn` now and every `ms` after each run while its view is current.
function every(gen, ms, fn) {
  const run = guard(gen, fn);
  const loop = async () => { await run(); if (live(gen)) later(loop, ms, gen); };
  loop();
}

/// Runs `work` with `el` disabled; shows its error.
async function busy(el, work) {
  if (el) el.disabled = true;
  try { await work(); } catch (err) { showError(err); } finally { if (el) el.disabled = false; }
}

// ---- Session

function clearSession() {
  token = null;
  me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
}

function showLogin(message) {
  stopWork();
  for (const id of ['nav', 'logout', 'view']) $(id).hidden = true;
  $('whoami').textContent = '';
  $('view').replaceChildren();
  $('login').hidden = false;
  $('login-message').textContent = message || '';
  $('login-message').hidden = !message;
  document.title = 'Sign in · Hearth console';
  $('login-username').focus();
}

async function logOut(message) {
  const old = token;
  clearSession();
  showLogin(message);
  if (old) {
    await fetch('/_matrix/client/v3/logout', {
      method: 'POST', headers: { Authorization: `Bearer ${old}`, 'Content-Type': 'application/json' }, body: '{}',
    }).catch(() => {});
  }
}

async function onLogin(event) {
  event.preventDefault();
  const el = event.currentTarget;
  const username = el.elements.username.value.trim();
  const password = el.elements.password.value;
  $('error').hidden = true;
  $('notice').hidden = true;
  $('login-message').hidden = true;
  clearSession();
  await busy($('login-submit'), async () => {
    const reply = await api('POST', '/_matrix/client/v3/login', {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: username },
      password,
      initial_device_display_name: 'Hearth console',
    });
    token = reply.access_token;
    me = reply.user_id;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, me);
    let admin = false;
    try {
      admin = (await api('GET', `/_synapse/admin/v1/users/${enc(me)}/admin`)).admin === true;
    } catch (err) {
      if (err.status !== 403) throw err;
    }
    el.reset();
    if (!admin) {
      await logOut('This account is not a server admin.');
      return;
    }
    if (!/^#\/./.test(location.hash)) history.replaceState(null, '', '#/overview');
    route();
  });
}

// ---- Routing

const VIEWS = {
  overview: ['Overview', overviewView],
  users: ['Users', usersView],
  tokens: ['Registration tokens', tokensView],
  reports: ['Reports', reportsView],
  rooms: ['Rooms', roomsView],
  jobs: ['Jobs', jobsView],
};

function route() {
  stopWork();
  $('error').hidden = true;
  $('notice').hidden = true;
  if (!token) {
    showLogin();
    return;
  }
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  if (!VIEWS[name || 'overview']) {
    history.replaceState(null, '', '#/overview');
    route();
    return;
  }
  const [title, view] = VIEWS[name || 'overview'];
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('whoami').textContent = me;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === (name || 'overview')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const root = $('view');
  root.replaceChildren();
  root.hidden = false;
  document.title = `${title} · Hearth console`;
  if (name === 'rooms' && rest.join('/')) {
    let roomId = rest.join('/');
    try { roomId = decodeURIComponent(roomId); } catch { /* as written */ }
    roomView(root, generation, roomId);
  } else {
    view(root, generation);
  }
}

// ---- Paging

const newPaging = () => ({ from: 0, stack: [] });

/// Offset paging with a stack of earlier offsets (`next` from the server).
function pager(state, next, total, shown, reload) {
  const range = shown ? `${state.from + 1}–${state.from + shown}` : '0';
  return h('div', { class: 'pager' },
    h('button', {
      type: 'button', class: 'secondary', disabled: !state.stack.length,
      onclick: () => { state.from = state.stack.pop() || 0; reload(); },
    }, 'Previous'),
    h('button', {
      type: 'button', class: 'secondary', disabled: next == null,
      onclick: () => { state.stack.push(state.from); state.from = Number(next); reload(); },
    }, 'Next'),
    h('span', { class: 'muted' }, typeof total === 'number' ? `${range} of ${fmtNumber(total)}` : ''));
}

// ---- Overview

const tile = (stat, label, value) => h('div', { class: 'tile', data: { stat } },
  h('span', { class: 'tile-label' }, label), h('span', { class: 'tile-value' }, value));

function overviewView(root, gen) {
  const body = h('div', { class: 'overview' }, empty('Loading…'));
  root.append(h('h2', {}, 'Overview'), body);
  every(gen, 5000, async () => {
    const o = await api('GET', '/_hearth/admin/v1/overview');
    if (live(gen)) body.replaceChildren(...renderOverview(o));
  });
}

function renderOverview(o) {
  const { users = {}, rooms = {}, events = {}, storage = {}, reports = {}, federation = {}, jobs = [] } = o;
  const destinations = federation.destinations || [];
  let fed;
  if (federation.enabled === false) fed = empty('Federation is disabled.');
  else if (!destinations.length) fed = empty('No federation destinations yet.');
  else {
    fed = table(['Destination', 'Health', 'Queued', 'Last success', 'Failing since', 'Next retry'],
      destinations.map((d) => h('tr', { data: { destination: d.destination } },
        td(code(d.destination)),
        td(h('span', { class: d.healthy ? 'badge yes' : 'badge bad' }, d.healthy ? 'healthy' : 'failing')),
        td(fmtNumber(d.queued), 'num'),
        td(fmtTime(d.last_success_ts)),
        td(fmtTime(d.failing_since_ts)),
        td(fmtTime(d.retry_at_ts)))), 'Federation destinations');
  }
  return [
    h('p', { class: 'muted server-line' },
      h('strong', {}, o.server_name || serverName()), ` · ${o.server_version || 'Hearth'} · up ${fmtDuration(o.uptime_ms)}`),
    h('div', { class: 'tiles' },
      tile('users', 'Users', fmtNumber(users.local)),
      tile('admins', 'Admins', fmtNumber(users.admins)),
      tile('deactivated', 'Deactivated', fmtNumber(users.deactivated)),
      tile('rooms', 'Rooms', fmtNumber(rooms.total)),
      tile('events', 'Events', fmtNumber(events.total)),
      tile('events-per-second', 'Events/s', fmtRate(events.per_second)),
      tile('open-reports', 'Open reports', fmtNumber(reports.open)),
      tile('database', 'Database', fmtBytes(storage.database_bytes)),
      tile('media', 'Media', fmtBytes(storage.media_bytes))),
    h('h3', {}, 'Federation'), fed,
    h('h3', {}, 'Recent jobs'), jobs.length ? jobTable(jobs) : empty('No recent jobs.'),
  ];
}

// ---- Users

function usersView(root, gen) {
  const paging = newPaging();
  let search = '';
  const list = h('div', { id: 'users-list' }, empty('Loading…'));

  const load = guard(gen, async () => {
    const q = new URLSearchParams({ from: paging.from, limit: PAGE, guests: false, deactivated: true });
    if (search) q.set('name', search);
    const r = await api('GET', `/_synapse/admin/v2/users?${q}`);
    if (!live(gen)) return;
    const users = r.users || [];
    const rows = users.map((u) => h('tr', { data: { userId: u.name }, class: u.deactivated ? 'inactive' : null },
      td(code(u.name), 'col-user'),
      td(u.displayname, 'col-displayname'),
      td(yesNo(u.admin), 'col-admin'),
      td(yesNo(u.deactivated, true), 'col-deactivated'),
      td(fmtTime(u.creation_ts), 'col-created'),
      td(u.deactivated || u.name === me ? null
        : button('Deactivate', 'danger small', (e) => deactivate(u.name, e.currentTarget), `Deactivate ${u.name}`), 'col-actions')));
    list.replaceChildren(
      users.length ? table(['User ID', 'Display name', 'Admin', 'Deactivated', 'Created', 'Actions'], rows, 'Users')
        : empty(search ? 'No users match.' : 'No users.'),
      pager(paging, r.next_token, r.total, users.length, load));
  });

  async function deactivate(userId, el) {
    if (!window.confirm(`Deactivate ${userId}? They are logged out and leave every room. This cannot be undone here.`)) return;
    await busy(el, async () => {
      await api('POST', `/_synapse/admin/v1/deactivate/${enc(userId)}`, { erase: false });
      if (!live(gen)) return;
      showNotice(`Deactivated ${userId}`);
      await load();
    });
  }

  const create = form('create-user-form', [
    field('Username', input('localpart', { required: true, autocapitalize: 'none', spellcheck: 'false' }), `Local part of @name:${serverName()}`),
    field('Password', input('password', { type: 'password', required: true, autocomplete: 'new-password' })),
    field('Display name', input('displayname'), 'Optional'),
    field('Server admin', input('admin', { type: 'checkbox' })),
  ], 'Create user', async (el) => {
    const f = el.elements;
    const raw = f.localpart.value.trim();
    const userId = raw.startsWith('@') ? raw : `@${raw.toLowerCase()}:${serverName()}`;
    const local = userId.slice(1).split(':')[0];
    // A PUT changes an account that exists: make sure this one is new.
    await api('GET', `/_synapse/admin/v1/username_available?username=${enc(local)}`);
    const body = { password: f.password.value, admin: f.admin.checked };
    if (f.displayname.value.trim()) body.displayname = f.displayname.value.trim();
    await api('PUT', `/_synapse/admin/v2/users/${enc(userId)}`, body);
    if (!live(gen)) return;
    el.reset();
    showNotice(`Created ${userId}`);
    await load();
  });

  root.append(h('h2', {}, 'Users'),
    searchForm('user-search-form', 'Search users', 'Name or display name', (term) => {
      search = term;
      Object.assign(paging, newPaging());
      load();
    }),
    list,
    h('section', { class: 'panel', 'aria-labelledby': 'create-user-title' },
      h('h3', { id: 'create-user-title' }, 'Create user'), create));
  load();
}

// ---- Registration tokens

function tokensView(root, gen) {
  const list = h('div', { id: 'tokens-list' }, empty('Loading…'));

  const load = guard(gen, async () => {
    const r = await api('GET', '/_synapse/admin/v1/registration_tokens');
    if (!live(gen)) return;
    const tokens = r.registration_tokens || [];
    const now = Date.now();
    list.replaceChildren(tokens.length
      ? table(['Token', 'Uses allowed', 'Pending', 'Completed', 'Expiry', 'Actions'], tokens.map((t) => h('tr', { data: { token: t.token } },
        td(code(t.token), 'col-token'),
        td(t.uses_allowed == null ? 'unlimited' : fmtNumber(t.uses_allowed), 'num'),
        td(fmtNumber(t.pending), 'num'),
        td(fmtNumber(t.completed), 'num'),
        td(t.expiry_time == null ? 'never' : `${fmtTime(t.expiry_time)}${t.expiry_time < now ? ' (expired)' : ''}`),
        td(button('Revoke', 'danger small', (e) => revoke(t.token, e.currentTarget), `Revoke ${t.token}`), 'col-actions'))),
      'Registration tokens')
      : empty('No registration tokens.'));
  });

  async function revoke(t, el) {
    if (!window.confirm(`Revoke registration token ${t}? It can no longer be used to register.`)) return;
    await busy(el, async () => {
      await api('DELETE', `/_synapse/admin/v1/registration_tokens/${enc(t)}`);
      if (!live(gen)) return;
      showNotice(`Revoked token ${t}`);
      await load();
    });
  }

  const create = form('create-token-form', [
    field('Token', input('token', { pattern: '[A-Za-z0-9._~\\-]{1,64}', spellcheck: 'false' }), 'Optional: random when empty. Letters, digits, . _ ~ -'),
    field('Uses allowed', input('uses_allowed', { type: 'number', min: 0, step: 1 }), 'Optional: unlimited when empty'),
    field('Expires', input('expiry', { type: 'datetime-local' }), 'Optional: never when empty'),
  ], 'Create token', async (el) => {
    const f = el.elements;
    const body = {};
    if (f.token.value.trim()) body.token = f.token.value.trim();
    if (f.uses_allowed.value !== '') body.uses_allowed = Number.parseInt(f.uses_allowed.value, 10);
    if (f.expiry.value) {
      // A datetime-local value is in the browser's time zone.
      body.expiry_time = new Date(f.expiry.value).getTime();
      if (Number.isNaN(body.expiry_time)) throw new Error('The expiry is not a valid date.');
    }
    const made = await api('POST', '/_synapse/admin/v1/registration_tokens/new', body);
    if (!live(gen)) return;
    el.reset();
    showNotice(`Created token ${made.token}`);
    await load();
  });

  root.append(h('h2', {}, 'Registration tokens'),
    list,
    h('section', { class: 'panel', 'aria-labelledby': 'create-token-title' },
      h('h3', { id: 'create-token-title' }, 'Create token'), create),
    inviteCodes(gen));
  load();
}

/// Why a room invite code can or cannot be used (as the server decides).
function codeStatus(c, now) {
  if (c.revoked) return 'revoked';
  if (c.expires_ts != null && c.expires_ts <= now) return 'expired';
  if (c.max_uses != null && c.uses >= c.max_uses) return 'used up';
  return 'valid';
}

/// Every room's invite codes (Hearth's admin API), each revocable.
function inviteCodes(gen) {
  const list = h('div', { id: 'invite-codes-list' }, empty('Loading…'));

  const load = guard(gen, async () => {
    const r = await api('GET', '/_hearth/admin/v1/invite_codes');
    if (!live(gen)) return;
    const codes = r.invite_codes || [];
    const now = Date.now();
    list.replaceChildren(codes.length
      ? table(['Code', 'Room', 'Created by', 'Uses', 'Expires', 'Status', 'Actions'], codes.map((c) => {
        const status = codeStatus(c, now);
        return h('tr', { data: { code: c.code, status }, class: status === 'valid' ? null : 'inactive' },
          td(code(c.code), 'col-code'),
          td(c.room_id && h('a', { href: `#/rooms/${enc(c.room_id)}` }, code(c.room_id)), 'col-room'),
          td(c.created_by, 'col-created-by'),
          td(`${fmtNumber(c.uses)} / ${c.max_uses == null ? '∞' : fmtNumber(c.max_uses)}`, 'num col-uses'),
          td(c.expires_ts == null ? 'never' : fmtTime(c.expires_ts), 'col-expires'),
          td(h('span', { class: `status status-${status.replace(' ', '-')}` }, status), 'col-status'),
          td(status === 'valid'
            ? button('Revoke', 'danger small', (e) => revoke(c, e.currentTarget), `Revoke invite code ${c.code}`)
            : null, 'col-actions'));
      }), 'Room invite codes')
      : empty('No room invite codes.'));
  });

  async function revoke(c, el) {
    if (!window.confirm(`Revoke invite code ${c.code} of ${c.room_id}? It can no longer be used to join the room.`)) return;
    await busy(el, async () => {
      await api('DELETE', `/_hearth/admin/v1/invite_codes/${enc(c.code)}`);
      if (!live(gen)) return;
      showNotice(`Revoked invite code ${c.code}`);
      await load();
    });
  }

  load();
  return h('section', { class: 'invite-codes', 'aria-labelledby': 'invite-codes-title' },
    h('h3', { id: 'invite-codes-title' }, 'Room invite codes'),
    h('p', { class: 'muted' }, 'Room admins make invite codes for their invite-only rooms (Hearth client API); every room\'s are listed here, newest first.'),
    list);
}

// ---- Reports

const ACTIONS = [
  ['Redact', 'redact', 'redacted', 'danger'],
  ['Kick', 'kick', 'kicked', 'danger'],
  ['Ban', 'ban', 'banned', 'danger'],
  ['Ignore report', 'dismiss', 'dismissed', 'secondary'],
];

function eventText(ev) {
  const content = ev.content || {};
  if (typeof content.body === 'string') return content.body;
  if (ev.type === 'm.room.member') return `${ev.state_key} ${content.membership || 'changed membership'}`;
  return ev.type === 'm.room.message' && !Object.keys(content).length ? '(redacted)' : `(${ev.type})`;
}

function reportsView(root, gen) {
  const paging = newPaging();
  const list = h('div', { id: 'reports-list' }, empty('Loading…'));
  const detail = h('section', { id: 'report-detail', class: 'panel', 'aria-live': 'polite', hidden: true });
  let selected = null;

  const load = guard(gen, async () => {
    const r = await api('GET', `/_synapse/admin/v1/event_reports?${new URLSearchParams({ from: paging.from, limit: PAGE, dir: 'b' })}`);
    if (!live(gen)) return;
    const reports = r.event_reports || [];
    if (!reports.length && paging.stack.length) {
      paging.from = paging.stack.pop();
      await load();
      return;
    }
    const rows = reports.map((rep) => h('tr', { data: { reportId: rep.id }, class: rep.id === selected ? 'selected' : null },
      td(fmtTime(rep.received_ts)),
      td(rep.user_id),
      td(rep.name ? h('span', { title: rep.room_id }, rep.name) : rep.room_id),
      td(rep.sender),
      td(rep.reason, 'col-reason'),
      td(rep.score == null ? null : String(rep.score), 'num'),
      td(button('View', 'secondary small', () => open(rep), `View report ${rep.id}`), 'col-actions')));
    list.replaceChildren(...(reports.length
      ? [table(['Received', 'Reporter', 'Room', 'Sender', 'Reason', 'Score', ''], rows, 'Open reports'),
        pager(paging, r.next_token, r.total, reports.length, load)]
      : [empty('No open reports.')]));
  });

  async function act(report, action, past, buttons) {
    buttons.forEach((b) => { b.disabled = true; });
    await busy(null, async () => {
      await api('POST', `/_hearth/admin/v1/event_reports/${enc(report.id)}/action`, { action });
      if (!live(gen)) return;
      showNotice(`Report ${report.id}: ${past}`);
      selected = null;
      detail.hidden = true;
      detail.replaceChildren();
      await load();
    });
    buttons.forEach((b) => { b.disabled = false; });
  }

  async function open(report) {
    selected = report.id;
    for (const row of list.querySelectorAll('tr[data-report-id]')) {
      row.classList.toggle('selected', row.dataset.reportId === String(report.id));
    }
    const timeline = h('div', { class: 'context' }, empty('Loading the conversation…'));
    const buttons = ACTIONS.map(([label, action, past, cls]) => h('button', {
      type: 'button', class: cls, data: { action }, onclick: () => act(report, action, past, buttons),
    }, label));
    const heading = h('h3', { tabindex: -1 }, `Report ${report.id}`);
    detail.replaceChildren(heading,
      dl([
        ['Received', fmtTime(report.received_ts, true)],
        ['Reporter', report.user_id],
        ['Room', report.name ? `${report.name} (${report.room_id})` : report.room_id],
        ['Sender', report.sender],
        ['Reason', report.reason],
        ['Score', report.score],
      ]),
      h('h4', {}, 'In context'), timeline,
      h('div', { class: 'actions report-actions', role: 'group', 'aria-label': 'Actions' }, buttons),
      h('p', { class: 'muted hint' }, `Kick and Ban act on the sender${report.sender ? `, ${report.sender},` : ''} in this room; Redact removes the message; Ignore report closes the report.`));
    detail.hidden = false;
    heading.focus();
    if (!report.room_id || !report.event_id) {
      timeline.replaceChildren(empty('This report has no event to show.'));
      return;
    }
    let events;
    try {
      const c = await api('GET', `/_synapse/admin/v1/rooms/${enc(report.room_id)}/context/${enc(report.event_id)}?limit=5`);
      // events_before is newest first, as in the client API's /context.
      events = [...(c.events_before || []).slice().reverse(), c.event, ...(c.events_after || [])].filter(Boolean);
    } catch (err) {
      events = err;
    }
    if (!live(gen) || selected !== report.id) return;
    timeline.replaceChildren(events instanceof Error
      ? empty(`Could not load the conversation (${events.message}).`)
      : h('ol', { class: 'timeline' }, events.map((ev) => {
        const reported = ev.event_id === report.event_id;
        return h('li', { class: reported ? 'event reported' : 'event', data: { eventId: ev.event_id } },
          h('span', { class: 'time' }, fmtTime(ev.origin_server_ts, true)),
          h('span', { class: 'sender' }, ev.sender),
          h('span', { class: 'body' }, eventText(ev)),
          reported && h('span', { class: 'badge bad' }, 'reported'));
      })));
  }

  root.append(h('h2', {}, 'Reports'), list, detail);
  load();
}

// ---- Rooms

function roomsView(root, gen) {
  const paging = newPaging();
  let search = '';
  const list = h('div', { id: 'rooms-list' }, empty('Loading…'));

  const load = guard(gen, async () => {
    const q = new URLSearchParams({ from: paging.from, limit: PAGE, order_by: 'joined_members', dir: 'b' });
    if (search) q.set('search_term', search);
    const r = await api('GET', `/_synapse/admin/v1/rooms?${q}`);
    if (!live(gen)) return;
    const rooms = r.rooms || [];
    const rows = rooms.map((room) => h('tr', { data: { roomId: room.room_id } },
      td(h('a', { href: `#/rooms/${enc(room.room_id)}` }, room.name || room.canonical_alias || '(unnamed)'), 'col-name'),
      td(code(room.room_id)),
      td(fmtNumber(room.joined_members), 'num'),
      td(fmtNumber(room.joined_local_members), 'num'),
      td(room.creator),
      td(yesNo(room.public)),
      td(room.encryption || 'none')));
    list.replaceChildren(rooms.length
      ? table(['Name', 'Room ID', 'Joined members', 'Local members', 'Creator', 'Public', 'Encryption'], rows, 'Rooms')
      : empty(search ? 'No rooms match.' : 'No rooms.'),
    pager(paging, r.next_batch, r.total_rooms, rooms.length, load));
  });

  root.append(h('h2', {}, 'Rooms'),
    searchForm('room-search-form', 'Search rooms', 'Name, alias or room ID', (term) => {
      search = term;
      Object.assign(paging, newPaging());
      load();
    }),
    list);
  load();
}

function roomView(root, gen, roomId) {
  const path = `/_synapse/admin/v1/rooms/${enc(roomId)}`;
  const title = h('h2', {}, roomId);
  const info = h('div', { id: 'room-info' }, empty('Loading…'));
  const members = h('section', { id: 'room-members', 'aria-labelledby': 'room-members-title' });
  const state = h('section', { id: 'room-state', 'aria-labelledby': 'room-state-title' });
  const progress = h('div', { id: 'shutdown-progress', 'aria-live': 'polite' });
  let roomName = roomId;

  const load = guard(gen, async () => {
    const [d, m, st] = await Promise.all([api('GET', path), api('GET', `${path}/members`), api('GET', `${path}/state`)]);
    if (!live(gen)) return;
    roomName = d.name || roomId;
    title.textContent = roomName;
    document.title = `${roomName} · Hearth console`;
    info.replaceChildren(dl([
      ['Room ID', code(d.room_id || roomId)],
      ['Alias', d.canonical_alias],
      ['Topic', d.topic],
      ['Creator', d.creator],
      ['Version', d.version],
      ['Joined members', fmtNumber(d.joined_members)],
      ['Local members', fmtNumber(d.joined_local_members)],
      ['Public', yesNo(d.public)],
      ['Encryption', d.encryption || 'none'],
      ['Join rule', d.join_rules],
      ['History visibility', d.history_visibility],
      ['Federatable', yesNo(d.federatable)],
      ['Blocked', yesNo(d.blocked, true)],
      ['Replaced by', d.replacement_room],
    ]));
    const users = m.members || [];
    members.replaceChildren(h('h3', { id: 'room-members-title' }, `Members (${fmtNumber(users.length)})`),
      users.length ? h('ul', { class: 'members' }, users.map((u) => h('li', {}, code(u)))) : empty('No joined members.'));
    const key = (ev) => `${ev.type}\u0000${ev.state_key || ''}`;
    const events = (st.state || []).slice().sort((a, b) => key(a).localeCompare(key(b)));
    state.replaceChildren(h('h3', { id: 'room-state-title' }, 'State'),
      table(['Type', 'State key', 'Sender', 'Content'], events.map((ev) => {
        const json = JSON.stringify(ev.content || {});
        const long = json.length > 120;
        return h('tr', { data: { type: ev.type } },
          td(code(ev.type)),
          td(ev.state_key === '' ? h('span', { class: 'muted' }, '(empty)') : ev.state_key),
          td(ev.sender),
          td(h('code', { class: 'content', title: long ? json : null }, long ? `${json.slice(0, 117)}…` : json)));
      }), 'Room state'));
  });

  // Shutting down: the form, then the job's status polled every second.
  const open = button('Shut down', 'danger', () => {
    shutdown.hidden = false;
    open.hidden = true;
    open.setAttribute('aria-expanded', 'true');
    shutdown.elements.room_name.focus();
  });
  open.setAttribute('aria-expanded', 'false');
  open.setAttribute('aria-controls', 'shutdown-form');
  const shutdown = form('shutdown-form', [
    h('p', { class: 'muted wide' }, 'Every local member is removed. With a message, they are moved to a new room, made by you, where it is posted.'),
    field('New room name', input('room_name'), 'Optional'),
    field('Message', input('message'), 'Optional'),
    field('Block the room (nobody can join it again)', input('block', { type: 'checkbox' })),
    field('Purge the room from the database', input('purge', { type: 'checkbox', checked: true })),
  ], 'Shut down room', async (el) => {
    const f = el.elements;
    const body = { block: f.block.checked, purge: f.purge.checked };
    const [name, message] = [f.room_name.value.trim(), f.message.value.trim()];
    if (name || message) body.new_room_user_id = me;
    if (name) body.room_name = name;
    if (message) body.message = message;
    const purged = body.purge ? ' and its history is purged from the database' : '';
    if (!window.confirm(`Shut down ${roomName}? Every local member is removed${purged}.`)) return;
    const r = await api('DELETE', `/_synapse/admin/v2/rooms/${enc(roomId)}`, body);
    if (!live(gen)) return;
    el.hidden = true;
    watch(r.delete_id, body.purge);
  }, 'danger');
  shutdown.hidden = true;
  shutdown.querySelector('.actions').append(button('Cancel', 'secondary', () => {
    shutdown.hidden = true;
    open.hidden = false;
    open.setAttribute('aria-expanded', 'false');
  }));

  function watch(deleteId, purged) {
    const status = h('span', { class: 'delete-status status', data: { status: 'scheduled' } }, 'scheduled');
    const outcome = h('div', { class: 'outcome' });
    progress.replaceChildren(h('p', {}, 'Shutdown ', code(deleteId), ': ', status), outcome);
    const poll = async () => {
      let s;
      try {
        const r = await api('GET', `/_synapse/admin/v2/rooms/delete_status/${enc(deleteId)}`);
        // By delete ID: the status itself; by room: `results`.
        s = Array.isArray(r.results) ? r.results[0] || {} : r;
      } catch (err) {
        if (live(gen)) { showError(err); later(poll, 1000, gen); }
        return;
      }
      if (!live(gen)) return;
      const value = s.status || 'unknown';
      status.textContent = value;
      status.dataset.status = value;
      status.className = `delete-status status status-${value}`;
      if (value === 'complete') {
        const result = s.shutdown_room || {};
        const kicked = (result.kicked_users || []).length;
        outcome.replaceChildren(h('p', {}, `Removed ${kicked} member${kicked === 1 ? '' : 's'}.`,
          result.new_room_id && [' Moved them to ', code(result.new_room_id), '.'],
          purged && ' The room was purged.'));
        if (!purged) load();
      } else if (value === 'failed' || value === 'cancelled') {
        outcome.replaceChildren(h('p', { class: 'error-text' }, s.error || `The shutdown ${value}.`));
        open.hidden = false;
      } else {
        later(poll, 1000, gen);
      }
    };
    poll();
  }

  root.append(h('p', { class: 'back' }, h('a', { href: '#/rooms' }, '← All rooms')), title, info,
    h('section', { class: 'panel danger-zone', 'aria-labelledby': 'shutdown-title' },
      h('h3', { id: 'shutdown-title' }, 'Shut down this room'), open, shutdown, progress),
    members, state);
  load();
}

// ---- Jobs

function jobTable(jobs) {
  const sorted = jobs.slice().sort((a, b) => (b.timestamp_ms || 0) - (a.timestamp_ms || 0));
  return table(['ID', 'Action', 'Resource', 'Status', 'Progress', 'Started', 'Error'], sorted.map((job) => {
    const p = job.progress || {};
    const done = typeof p.done === 'number' ? p.done : 0;
    const total = typeof p.total === 'number' ? p.total : null;
    const bar = h('progress', { 'aria-label': `Progress of ${job.id}` });
    if (total || job.status === 'complete') {
      bar.max = total || 1;
      bar.value = total ? Math.min(done, total) : 1;
    }
    return h('tr', { data: { jobId: job.id, status: job.status } },
      td(code(job.id)),
      td(job.action, 'col-action'),
      td(job.resource_id && code(job.resource_id)),
      td(h('span', { class: `status status-${job.status}` }, job.status), 'col-status'),
      td(h('span', { class: 'progress' }, `${fmtNumber(done)} / ${total == null ? '?' : fmtNumber(total)}`, bar)),
      td(fmtTime(job.timestamp_ms, true)),
      td(job.error, 'col-error'));
  }), 'Jobs');
}

function jobsView(root, gen) {
  const list = h('div', { id: 'jobs-list' }, empty('Loading…'));
  root.append(h('h2', {}, 'Jobs'),
    h('p', { class: 'muted' }, 'Background work: room shutdowns, history purges, retention passes. Ended jobs are kept for a day.'),
    list);
  every(gen, 2000, async () => {
    const r = await api('GET', '/_synapse/admin/v1/scheduled_tasks');
    const jobs = r.scheduled_tasks || [];
    if (live(gen)) list.replaceChildren(jobs.length ? jobTable(jobs) : empty('No jobs.'));
  });
}

// ---- Start

$('login-form').addEventListener('submit', onLogin);
$('logout').addEventListener('click', () => logOut());
$('error-close').addEventListener('click', () => { $('error').hidden = true; });
$('notice-close').addEventListener('click', () => { $('notice').hidden = true; });
window.addEventListener('hashchange', route);
route();
