// Drives synapse-admin (the Synapse admin web UI, Awesome-Technologies
// synapse-admin 0.11.4, a built copy) in headless Chromium against a running,
// seeded Hearth. The UI is served by this script from its own origin, so
// every admin API call is a cross-origin request: Hearth's CORS answers are
// exercised for real (no request interception anywhere).
//
// Environment (set by the Rust test that starts and seeds Hearth):
//   HS_URL              Hearth's base URL, e.g. http://127.0.0.1:PORT
//   SYNAPSE_ADMIN_DIST  the built synapse-admin (index.html, assets/, …)
//   ADMIN_USER / ADMIN_PASSWORD   a server admin
//   SERVER_NAME         Hearth's server name (the part after ':' in user IDs)
//   SCREENSHOTS         optional: a directory for one PNG per step
//   CHROMIUM            optional: the browser (default /usr/bin/chromium)
// Expects the seed: users alice and bob; a room "Doomed room" with both in
// it; an event report by alice of bob's message "buy cheap pills" with the
// reason "spam".
// Steps: sign in; the users list shows alice and bob; create dave (the UI
// goes to his page); erase bob (shown deactivated and erased); the rooms
// list shows "Doomed room"; the reports list shows alice's report, whose
// page shows the reason and the reported event; delete "Doomed room" and
// see it gone after reloading; log out.
// Prints one line per passed step; on the first failure prints the step,
// the page's URL and text, saves failure.png, exits 1. Any page error fails
// the run except the upstream bug `__SYNAPSE_ADMIN_VERSION__ is not defined`.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  collectPageErrors, env, escapeRe, exact, fail, launchChromium, makeUntil, runScript, screenshotsDir,
} from './common.mjs';

const TIMEOUT = 20_000;
const DELETE_TIMEOUT = 60_000;
const HARMLESS_PAGE_ERROR = '__SYNAPSE_ADMIN_VERSION__ is not defined';

const HS_URL = env('HS_URL').replace(/\/+$/, '');
const DIST = path.resolve(env('SYNAPSE_ADMIN_DIST'));
const ADMIN_USER = env('ADMIN_USER');
const ADMIN_PASSWORD = env('ADMIN_PASSWORD');
const SERVER_NAME = env('SERVER_NAME');
const SHOTS = screenshotsDir();

const mxid = (localpart) => `@${localpart}:${SERVER_NAME}`;
// How a user ID may appear in the hash route: raw or percent-encoded.
const userRoute = (localpart) => new RegExp(`#/users/(@|%40)${escapeRe(localpart)}(:|%3A)${escapeRe(encodeURIComponent(SERVER_NAME)).replace(/%3A/gi, '(:|%3A)')}$`, 'i');

const problems = [];
const apiErrors = [];
let watchingApi = true;
let browser;
let server;
let page;
let step = 'setup';
let shotNumber = 0;

const until = makeUntil(TIMEOUT);

async function visible(locator, what, timeout = TIMEOUT) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    fail(`${what} is not visible within ${timeout} ms`);
  }
}

async function urlMatches(re, what, timeout = TIMEOUT) {
  await until(`the URL to show ${what} (${re})`, async () => re.test(page.url()) || page.url(), timeout);
}

async function shot(name) {
  shotNumber += 1;
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`), fullPage: true });
}

async function check(name, body) {
  step = name;
  await body();
  if (problems.length) fail(`browser errors: ${problems.join(' | ')}`);
  if (apiErrors.length) fail(`Hearth answered with errors: ${apiErrors.join(' | ')}`);
  console.log(`ok - ${name}`);
}

/// A labelled field of a react-admin show/edit page (its wrapper has the
/// class `ra-field-<source>`).
const field = (source) => page.locator(`[class~="ra-field-${source}"]`);

async function fieldReads(source, expected, what) {
  await until(`${what} to read ${JSON.stringify(String(expected))}`, async () => {
    // (Some sources have two fields, e.g. `sender` as a link and as text.)
    const texts = (await field(source).allInnerTexts()).map((t) => t.trim());
    if (!texts.length) return 'no such field';
    const lines = texts.flatMap((t) => t.split('\n').map((line) => line.trim()));
    return lines.some((line) => (expected instanceof RegExp ? expected.test(line) : line === expected)) || texts.join(' | ');
  });
}

const menu = (label) => page.getByRole('menuitem', { name: label, exact: true });
const cell = (text) => page.getByRole('cell', { name: text });
const heading = (text) => page.locator('.RaTitle-root, h1, h2, h6').filter({ hasText: exact(text) });

/// Serves the built UI on 127.0.0.1 (another port: another origin than
/// Hearth), with a config.json that pins it to Hearth.
function serveDist() {
  const types = {
    '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
    '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.png': 'image/png', '.csv': 'text/csv', '.txt': 'text/plain',
    '.woff2': 'font/woff2', '.woff': 'font/woff', '.map': 'application/json',
  };
  const config = JSON.stringify({ restrictBaseUrl: HS_URL });
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      let pathname;
      try {
        pathname = decodeURIComponent(new URL(req.url, 'http://ui').pathname);
      } catch {
        res.writeHead(400).end();
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405).end();
        return;
      }
      if (pathname === '/config.json') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(config);
        return;
      }
      const file = path.join(DIST, pathname.endsWith('/') ? `${pathname}index.html` : pathname);
      if (!file.startsWith(DIST + path.sep)) {
        res.writeHead(403).end();
        return;
      }
      fs.readFile(file, (err, data) => {
        if (err) {
          res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
          return;
        }
        res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' }).end(data);
      });
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

/// Reloads the rooms list; whether `name` is listed, decided once the list
/// has rendered Hearth's answer (rows with the "1-n of n" pagination, or
/// the empty-list page).
async function roomListed(name) {
  await page.reload();
  await visible(heading('Rooms'), 'the Rooms heading');
  const empty = page.getByText('No Rooms yet.', { exact: true });
  const rows = page.locator('tbody tr');
  const pagination = page.getByText(/^\d+-\d+ of \d+$/);
  await until('the rooms list to render', async () => {
    if (await empty.isVisible()) return true;
    return ((await rows.count()) > 0 && (await pagination.count()) > 0) || 'still loading';
  });
  return (await cell(name).count()) > 0;
}

async function main() {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) fail(`${DIST} holds no index.html`);
  server = await serveDist();
  const uiUrl = `http://127.0.0.1:${server.address().port}/`;

  browser = await launchChromium();
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  collectPageErrors(page, problems, HARMLESS_PAGE_ERROR);
  page.on('console', (msg) => {
    const text = msg.text();
    // A refused cross-origin request is only reported here.
    if (msg.type() === 'error' && /CORS|Access-Control/i.test(text)) problems.push(`console error: ${text}`);
  });
  // Any error status from Hearth's API: either a deviation, or something
  // the UI must not meet (a 401/403 logs it out).
  page.on('response', (r) => {
    if (watchingApi && r.url().startsWith(`${HS_URL}/`) && r.status() >= 400) {
      apiErrors.push(`${r.request().method()} ${r.url().slice(HS_URL.length)} → ${r.status()}`);
    }
  });
  page.on('requestfailed', (r) => {
    const reason = r.failure()?.errorText || '';
    // (Requests cut short by a navigation or reload are aborted, not failed.)
    if (r.url().startsWith(`${HS_URL}/`) && !reason.includes('ERR_ABORTED')) {
      problems.push(`request failed: ${r.method()} ${r.url()} (${reason})`);
    }
  });

  await check('sign in as the admin (cross-origin, pinned to Hearth by config.json)', async () => {
    await page.goto(uiUrl);
    const signIn = page.getByRole('button', { name: 'Sign in', exact: true });
    await visible(signIn, 'the Sign in button');
    // The unauthenticated probes: server_version and versions.
    await visible(page.getByText(/Synapse version \S+/), 'the server version under the URL field');
    await visible(page.getByText(/supports Matrix specs/), 'the supported spec versions');
    const baseUrl = await page.getByLabel('Homeserver URL').inputValue();
    if (baseUrl !== HS_URL) fail(`the Homeserver URL field holds ${JSON.stringify(baseUrl)}`);
    await page.getByLabel('Username').fill(ADMIN_USER);
    await page.locator('input[name="password"]').fill(ADMIN_PASSWORD);
    await until('Sign in to be enabled', async () => (await signIn.isEnabled()) || 'disabled');
    await shot('login');
    await signIn.click();
    await urlMatches(/#\/users/, 'the users list');
    await visible(heading('Users'), 'the Users heading');
    const stored = await page.evaluate(() => ({ home: localStorage.getItem('home_server'), user: localStorage.getItem('user_id') }));
    if (stored.home !== SERVER_NAME) fail(`the login answer's home_server is ${JSON.stringify(stored.home)}, not ${SERVER_NAME}`);
    if (!stored.user || !stored.user.startsWith('@')) fail(`the stored user_id is ${JSON.stringify(stored.user)}`);
  });

  await check('the users list shows alice and bob', async () => {
    await visible(cell(mxid('alice')), "alice's row");
    await visible(cell(mxid('bob')), "bob's row");
    await shot('users');
  });

  await check('create dave ("Dave", with a password); the UI goes to his page', async () => {
    await page.getByRole('link', { name: 'Create', exact: true }).click();
    await urlMatches(/#\/users\/create$/, 'the create form');
    await visible(page.getByLabel('User-ID'), 'the User-ID field');
    await page.getByLabel('User-ID').fill('dave');
    await page.getByLabel('Displayname').fill('Dave');
    await page.locator('input[name="password"]').fill('dave-pass-1');
    await shot('create-dave');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await urlMatches(userRoute('dave'), "dave's page");
    await visible(page.getByText('Element created'), 'the "Element created" notification');
    await visible(page.getByText('User "Dave"', { exact: true }), 'the heading User "Dave"');
    await until("dave's page to load his record", async () => {
      const id = await page.locator('input[name="id"]').inputValue();
      const name = await page.locator('input[name="displayname"]').inputValue();
      return (id === mxid('dave') && name === 'Dave') || `User-ID ${JSON.stringify(id)}, Displayname ${JSON.stringify(name)}`;
    });
    if (await page.locator('input[name="deactivated"]').isChecked()) fail('dave is shown deactivated');
    await shot('dave');
  });

  await check('erase bob ("Erase user data", "Confirm"): shown deactivated and erased', async () => {
    await page.goto(`${uiUrl}#/users/${encodeURIComponent(mxid('bob'))}`);
    await urlMatches(userRoute('bob'), "bob's page");
    await until("bob's page to load his record", async () => (await page.locator('input[name="id"]').inputValue()) === mxid('bob'));
    const erase = page.getByRole('button', { name: 'Erase user data', exact: true });
    await visible(erase, 'the "Erase user data" button');
    await erase.click();
    const dialog = page.getByRole('dialog');
    await visible(dialog.getByText('Mark the user as GDPR-erased'), 'the erase dialog');
    await shot('erase-bob-dialog');
    await dialog.getByRole('button', { name: 'Confirm', exact: true }).click();
    await urlMatches(/#\/users(\?.*)?$/, 'the users list');
    await visible(page.getByText('Element deleted'), 'the "Element deleted" notification');
    await until("bob to leave the list of active users", async () => (await cell(mxid('bob')).count()) === 0 || 'still listed');
    // With deactivated users shown, bob is back, marked so.
    await page.getByLabel('Show deactivated users').check();
    const row = page.locator('tbody tr').filter({ has: cell(mxid('bob')) });
    await visible(row, "bob's row among deactivated users");
    // The Deactivated and Erased columns (react-admin BooleanField icons).
    const headers = (await page.locator('thead th').allInnerTexts()).map((t) => t.trim());
    for (const column of ['Deactivated', 'Erased']) {
      const index = headers.indexOf(column);
      if (index < 0) fail(`no ${column} column in ${JSON.stringify(headers)}`);
      await until(`bob's ${column} cell to be true`, async () => {
        const icon = row.locator('td').nth(index).locator('[data-testid]');
        return (await icon.count()) === 1 && (await icon.getAttribute('data-testid')) === 'true' ? true : await row.locator('td').nth(index).innerHTML();
      });
    }
    await shot('bob-erased-in-list');
    await page.goto(`${uiUrl}#/users/${encodeURIComponent(mxid('bob'))}`);
    await until("bob's page to load his record", async () => (await page.locator('input[name="id"]').inputValue()) === mxid('bob'));
    await until("bob's Deactivated and Erased switches to be on", async () => {
      const deactivated = await page.locator('input[name="deactivated"]').isChecked();
      const erased = await page.locator('input[name="erased"]').isChecked();
      return (deactivated && erased) || `deactivated ${deactivated}, erased ${erased}`;
    });
    await shot('bob-erased');
  });

  await check('the rooms list shows "Doomed room"', async () => {
    await menu('Rooms').click();
    await urlMatches(/#\/rooms/, 'the rooms list');
    await visible(heading('Rooms'), 'the Rooms heading');
    await visible(cell('Doomed room'), 'the "Doomed room" row');
    await shot('rooms');
  });

  await check('the reports list shows alice\'s report; its page shows "spam" and bob\'s message', async () => {
    await menu('Reported events').click();
    await urlMatches(/#\/reports/, 'the reports list');
    await visible(heading('Reported events'), 'the Reported events heading');
    const row = page.locator('tbody tr').filter({ has: cell(mxid('alice')) }).filter({ has: cell('Doomed room') });
    await visible(row, "the row of alice's report about Doomed room");
    await shot('reports');
    await row.first().click();
    await urlMatches(/#\/reports\/[^/]+\/show$/, 'the report page');
    await fieldReads('reason', 'spam', 'the reason');
    await fieldReads('user_id', mxid('alice'), 'the announcer');
    await fieldReads('name', 'Doomed room', 'the room name');
    await shot('report');
    await page.getByRole('tab', { name: 'Details' }).click();
    await urlMatches(/#\/reports\/[^/]+\/show\/detail$/, 'the report details tab');
    await fieldReads('event_json.content.body', 'buy cheap pills', 'the reported message');
    await fieldReads('event_json.type', 'm.room.message', 'the event type');
    await fieldReads('event_json.content.msgtype', 'm.text', 'the content type');
    await fieldReads('sender', mxid('bob'), 'the sender (raw user ID)');
    await fieldReads('event_id', /^\$/, 'the event ID');
    await shot('report-details');
  });

  await check('delete "Doomed room" ("Delete", "Confirm"); gone from the list after a reload', async () => {
    await menu('Rooms').click();
    await urlMatches(/#\/rooms/, 'the rooms list');
    await visible(cell('Doomed room'), 'the "Doomed room" row');
    await cell('Doomed room').first().click();
    await urlMatches(/#\/rooms\/[^/]+\/show/, 'the room page');
    await visible(page.getByText('Doomed room').first(), 'the room name on its page');
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    const dialog = page.getByRole('dialog');
    await visible(dialog.getByText('Delete room', { exact: true }), 'the delete dialog');
    await shot('delete-room-dialog');
    await dialog.getByRole('button', { name: 'Confirm', exact: true }).click();
    await urlMatches(/#\/rooms(\?.*)?$/, 'the rooms list');
    await visible(page.getByText('Element deleted'), 'the "Element deleted" notification');
    // Hearth deletes asynchronously (delete API v2): reload until it is gone.
    const deadline = Date.now() + DELETE_TIMEOUT;
    while (await roomListed('Doomed room')) {
      if (Date.now() > deadline) fail(`"Doomed room" is still listed ${DELETE_TIMEOUT} ms after the deletion`);
    }
    await shot('rooms-after-delete');
  });

  await check('log out', async () => {
    // Once signed out, the UI's last refetches go without a token: their 401s are expected.
    watchingApi = false;
    await page.getByRole('button', { name: 'Profile' }).click();
    await page.getByRole('menuitem', { name: 'Logout' }).click();
    await visible(page.getByRole('button', { name: 'Sign in', exact: true }), 'the Sign in button');
    const token = await page.evaluate(() => localStorage.getItem('access_token'));
    if (token) fail('the access token is still stored');
  });
}

await runScript(main, {
  state: () => ({ step, page, browser }),
  shots: SHOTS,
  afterReport() {
    if (problems.length) console.error(`browser errors: ${problems.join(' | ')}`);
    if (apiErrors.length) console.error(`Hearth's error answers: ${apiErrors.join(' | ')}`);
  },
  cleanup() {
    if (server) server.close();
  },
});
