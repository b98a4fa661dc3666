// Drives Hearth's admin console in headless Chromium against a running,
// seeded server (started by the Rust test, which passes what it needs in
// the environment):
//   CONSOLE_URL      e.g. http://127.0.0.1:PORT/_hearth/console/
//   ADMIN_USER / ADMIN_PASSWORD   a server admin ("root")
//   USER_USER / USER_PASSWORD     a plain user ("alice")
//   SCREENSHOTS      optional: a directory for one PNG per view
//   CHROMIUM         optional: the browser (default /usr/bin/chromium)
// Prints one line per passed check; on the first failure prints what
// failed with the page's URL and text, saves failure.png, exits 1.

import path from 'node:path';
import {
  collectPageErrors, env, escapeRe, exact, fail, launchChromium, makeUntil, runScript, screenshotsDir,
} from './common.mjs';

const TIMEOUT = 15_000;
const EXPECTED_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
  + "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
const NAV = ['Overview', 'Users', 'Registration tokens', 'Reports', 'Rooms', 'Jobs'];

const CONSOLE_URL = env('CONSOLE_URL');
const ADMIN_USER = env('ADMIN_USER');
const ADMIN_PASSWORD = env('ADMIN_PASSWORD');
const USER_USER = env('USER_USER');
const USER_PASSWORD = env('USER_PASSWORD');
const SHOTS = screenshotsDir();

// The one browser error the run expects: the plain user's admin check
// (403) in the sign-in step, logged by Chromium as a failed resource.
const localpart = USER_USER.replace(/^@/, '').split(':')[0];
const EXPECTED_403_URL = new RegExp(`/_synapse/admin/v1/users/(%40|@)${escapeRe(localpart)}(%3A|:)[^/?#]+/admin$`, 'i');
const problems = [];
let expected403 = 0;

let browser;
let page;
let step = 'setup';

const until = makeUntil(TIMEOUT);

async function visible(locator, what, timeout = TIMEOUT) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    fail(`${what} is not visible`);
  }
}

async function textIs(locator, expected, what, timeout = TIMEOUT) {
  await until(`${what} to read ${JSON.stringify(String(expected))}`, async () => {
    const count = await locator.count();
    if (count !== 1) return `${count} matching elements`;
    const text = (await locator.textContent()).trim();
    return (expected instanceof RegExp ? expected.test(text) : text === String(expected)) || text;
  }, timeout);
}

async function countIs(locator, n, what, timeout = TIMEOUT) {
  await until(`${what} to number ${n}`, async () => {
    const count = await locator.count();
    return count === n || `${count}`;
  }, timeout);
}

async function shot(name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function check(name, body) {
  step = name;
  await body();
  if (problems.length) fail(`browser errors: ${problems.join(' | ')}`);
  console.log(`ok - ${name}`);
}

/// Accepts the next dialog; resolves to its message (never rejects).
function acceptDialog() {
  return new Promise((resolve) => {
    page.once('dialog', (dialog) => {
      const message = dialog.message();
      dialog.accept().catch(() => {}).finally(() => resolve(message));
    });
  });
}

async function dialogSaid(dialog, needle) {
  let timer;
  const message = await Promise.race([
    dialog,
    new Promise((resolve) => { timer = setTimeout(() => resolve(null), TIMEOUT); }),
  ]);
  clearTimeout(timer);
  if (message === null) fail('no confirmation dialog was shown');
  if (!message.includes(needle)) fail(`the confirmation does not name ${needle}: ${JSON.stringify(message)}`);
}

const view = (title) => page.locator('#view h2', { hasText: exact(title) });

async function go(label) {
  await page.locator('#nav a', { hasText: exact(label) }).click();
  await visible(view(label), `the ${label} view's heading`);
}

async function signIn(user, password) {
  const form = page.locator('#login-form');
  await visible(form, 'the sign-in form');
  await form.locator('[name=username]').fill(user);
  await form.locator('[name=password]').fill(password);
  await form.locator('button[type=submit]').click();
}

const tile = (label) => page.locator('.tile')
  .filter({ has: page.locator('.tile-label', { hasText: exact(label) }) })
  .locator('.tile-value');

function rowWith(list, cell, text) {
  return page.locator(`${list} tbody tr`).filter({ has: page.locator(cell, { hasText: text }) });
}

async function main() {
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // CSP violations are also logged by Chromium; this names them plainly.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  collectPageErrors(page, problems);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const where = msg.location().url || '';
    if (expected403 === 0
      && text.includes('the server responded with a status of 403')
      && EXPECTED_403_URL.test(where)) {
      expected403 += 1;
      return;
    }
    problems.push(`console error: ${text}${where ? ` (${where})` : ''}`);
  });

  await check('the console page is served with its CSP and X-Frame-Options', async () => {
    const response = await page.goto(CONSOLE_URL, { waitUntil: 'load' });
    if (!response) fail('no response for the console page');
    if (response.status() !== 200) fail(`the console page answered ${response.status()}`);
    const headers = response.headers();
    const csp = headers['content-security-policy'];
    if (!csp) fail('no Content-Security-Policy header');
    const directives = new Set(csp.split(';').map((d) => d.trim().replace(/\s+/g, ' ')).filter(Boolean));
    const missing = EXPECTED_CSP.split(';').map((d) => d.trim()).filter((d) => !directives.has(d));
    if (missing.length) fail(`the CSP ${JSON.stringify(csp)} lacks ${missing.join(', ')}`);
    if ((headers['x-frame-options'] || '').toUpperCase() !== 'DENY') {
      fail(`X-Frame-Options is ${JSON.stringify(headers['x-frame-options'])}, not DENY`);
    }
    // The script ran (it shows the form) and the stylesheet applied.
    await visible(page.locator('#login-form'), 'the sign-in form');
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    if (background !== 'rgb(246, 247, 249)') fail(`console.css is not applied (body background ${background})`);
  });

  await check('a plain user is refused: "This account is not a server admin."', async () => {
    await signIn(USER_USER, USER_PASSWORD);
    await visible(page.getByText('This account is not a server admin.', { exact: true }), 'the not-an-admin message');
    if (await page.locator('#nav').isVisible()) fail('the navigation is visible for a plain user');
    await visible(page.locator('#login-form'), 'the sign-in form after refusal');
    const stored = await page.evaluate(() => sessionStorage.length);
    if (stored !== 0) fail(`the session storage still holds ${stored} item(s) after the refusal`);
  });

  await check('the admin signs in; Overview shows Users 3 and Open reports 2', async () => {
    await signIn(ADMIN_USER, ADMIN_PASSWORD);
    await visible(page.locator('#nav'), 'the navigation');
    const labels = (await page.locator('#nav a').allTextContents()).map((t) => t.trim());
    if (JSON.stringify(labels) !== JSON.stringify(NAV)) fail(`the navigation reads ${JSON.stringify(labels)}`);
    await visible(view('Overview'), "the Overview view's heading");
    if (!/^#\/overview$/.test(new URL(page.url()).hash)) fail(`the default route is ${new URL(page.url()).hash}`);
    await textIs(tile('Users'), '3', 'the Users tile');
    await textIs(tile('Open reports'), '2', 'the Open reports tile');
    for (const label of ['Rooms', 'Events/s', 'Database', 'Media']) {
      await visible(tile(label), `the ${label} tile`);
    }
    await textIs(tile('Database'), /^\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)$/, 'the Database tile');
    const token = await page.evaluate(() => Object.keys(sessionStorage).length);
    if (token === 0) fail('the session is not kept in sessionStorage');
    await shot('overview.png');
  });

  await check('Users: lists alice and bob, creates carol, deactivates her', async () => {
    await go('Users');
    await visible(rowWith('#users-list', 'td.col-user', /^@alice:/), "alice's row");
    await visible(rowWith('#users-list', 'td.col-user', /^@bob:/), "bob's row");
    const form = page.locator('#create-user-form');
    await form.locator('[name=localpart]').fill('carol');
    await form.locator('[name=password]').fill('carol-pass-1');
    await form.locator('[name=displayname]').fill('Carol');
    await form.locator('button[type=submit]').click();
    const carol = rowWith('#users-list', 'td.col-user', /^@carol:/);
    await visible(carol, "carol's row");
    await textIs(page.locator('#notice-text'), /^Created @carol:/, 'the notice');
    await textIs(carol.locator('td.col-deactivated'), 'no', "carol's deactivated cell before");
    const dialog = acceptDialog();
    await carol.getByRole('button', { name: /Deactivate/ }).click();
    await dialogSaid(dialog, '@carol:');
    await textIs(carol.locator('td.col-deactivated'), 'yes', "carol's deactivated cell");
    await countIs(carol.getByRole('button', { name: /Deactivate/ }), 0, "carol's Deactivate buttons");
    await shot('users.png');
  });

  await check('Registration tokens: shows welcome, creates and revokes spring; revokes the Back room invite code', async () => {
    await go('Registration tokens');
    await visible(page.locator('#view h3', { hasText: exact('Room invite codes') }), 'the room invite codes heading');
    const welcome = rowWith('#tokens-list', 'td.col-token', exact('welcome'));
    await visible(welcome, "welcome's row");
    await textIs(welcome.locator('td').nth(1), '5', "welcome's uses allowed");
    const form = page.locator('#create-token-form');
    await form.locator('[name=token]').fill('spring');
    await form.locator('[name=uses_allowed]').fill('2');
    await form.locator('button[type=submit]').click();
    const spring = rowWith('#tokens-list', 'td.col-token', exact('spring'));
    await visible(spring, "spring's row");
    await textIs(spring.locator('td').nth(1), '2', "spring's uses allowed");
    const dialog = acceptDialog();
    await spring.getByRole('button', { name: /Revoke/ }).click();
    await dialogSaid(dialog, 'spring');
    await countIs(spring, 0, "spring's rows");
    await visible(welcome, "welcome's row after the revocation");

    // alice's invite code for Back room (max_uses 3), seeded by the Rust test.
    const codes = page.locator('#invite-codes-list tbody tr');
    await countIs(codes, 1, 'the listed invite codes');
    await textIs(codes.locator('td.col-status'), 'valid', "the invite code's status");
    await textIs(codes.locator('td.col-uses'), '0 / 3', "the invite code's uses");
    await textIs(codes.locator('td.col-created-by'), /^@alice:/, "the invite code's maker");
    const inviteCode = (await codes.locator('td.col-code').textContent()).trim();
    if (!inviteCode) fail('the invite code cell is empty');
    const backRoom = rowWith('#invite-codes-list', 'td.col-code', exact(inviteCode));
    const codeDialog = acceptDialog();
    await backRoom.getByRole('button', { name: /Revoke/ }).click();
    await dialogSaid(codeDialog, inviteCode);
    await textIs(page.locator('#notice-text'), `Revoked invite code ${inviteCode}`, 'the notice');
    await textIs(backRoom.locator('td.col-status'), 'revoked', "the invite code's status after the revocation");
    await countIs(backRoom.getByRole('button', { name: /Revoke/ }), 0, "the invite code's Revoke buttons");
    await countIs(codes, 1, 'the listed invite codes after the revocation');
    await shot('tokens.png');
  });

  await check('Reports: redacts the spam in context, ignores the other', async () => {
    await go('Reports');
    const rows = page.locator('#reports-list tbody tr');
    await countIs(rows, 2, 'the listed reports');
    const spam = rowWith('#reports-list', 'td.col-reason', exact('spam'));
    await spam.getByRole('button', { name: /^View/ }).click();
    const detail = page.locator('#report-detail');
    await textIs(detail.locator('.reported .body'), 'buy cheap pills', 'the reported message in context');
    await visible(detail.locator('.timeline li:not(.reported)', { hasText: 'second offence' }), 'the following message in context');
    const labels = (await detail.locator('.report-actions button').allTextContents()).map((t) => t.trim());
    if (JSON.stringify(labels) !== JSON.stringify(['Redact', 'Kick', 'Ban', 'Ignore report'])) fail(`the actions read ${JSON.stringify(labels)}`);
    await shot('report-context.png');
    await detail.getByRole('button', { name: 'Redact', exact: true }).click();
    await textIs(page.locator('#notice-text'), /^Report \d+: redacted$/, 'the notice');
    await countIs(rows, 1, 'the listed reports after the redaction');
    const rude = rowWith('#reports-list', 'td.col-reason', exact('rude'));
    await visible(rude, 'the remaining "rude" report');
    await rude.getByRole('button', { name: /^View/ }).click();
    await textIs(detail.locator('.reported .body'), 'second offence', 'the second reported message in context');
    await detail.getByRole('button', { name: 'Ignore report', exact: true }).click();
    await textIs(page.locator('#notice-text'), /^Report \d+: dismissed$/, 'the notice');
    await visible(page.getByText('No open reports.', { exact: true }), '"No open reports."');
    await countIs(rows, 0, 'the listed reports at the end');
    await shot('reports.png');
  });

  await check('Rooms: Town square in detail, shut down to complete', async () => {
    await go('Rooms');
    const link = page.locator('#rooms-list a', { hasText: exact('Town square') });
    await visible(link, 'the Town square row');
    await link.click();
    await visible(view('Town square'), "the room's heading");
    const hash = new URL(page.url()).hash;
    if (!hash.startsWith('#/rooms/') || !decodeURIComponent(hash.slice(8)).startsWith('!')) fail(`the room's route is ${hash}`);
    const members = page.locator('#room-members li');
    await visible(members.filter({ hasText: /^@alice:/ }), 'alice among the members');
    await visible(members.filter({ hasText: /^@bob:/ }), 'bob among the members');
    await visible(page.locator('#room-state td', { hasText: exact('m.room.create') }), 'm.room.create in the state');
    await page.getByRole('button', { name: 'Shut down', exact: true }).click();
    const form = page.locator('#shutdown-form');
    await visible(form, 'the shutdown form');
    await form.locator('[name=message]').fill('This room was closed');
    await form.locator('[name=purge]').setChecked(false);
    await form.locator('[name=block]').setChecked(true);
    const dialog = acceptDialog();
    await form.getByRole('button', { name: 'Shut down room', exact: true }).click();
    await dialogSaid(dialog, 'Town square');
    await textIs(page.locator('.delete-status'), 'complete', 'the shutdown status', 60_000);
    await shot('rooms.png');
  });

  await check('Jobs: the room shutdown job is complete', async () => {
    await go('Jobs');
    const job = page.locator('#jobs-list tbody tr')
      .filter({ has: page.locator('td.col-action', { hasText: exact('shutdown_and_purge_room') }) });
    await visible(job, 'the shutdown_and_purge_room job');
    await textIs(job.first().locator('td.col-status'), 'complete', "the job's status");
    await countIs(job.first().locator('progress'), 1, "the job's progress bars");
    await shot('jobs.png');
  });

  await check('logging out returns to the sign-in form', async () => {
    await page.getByRole('button', { name: 'Log out', exact: true }).click();
    await visible(page.locator('#login-form'), 'the sign-in form');
    if (await page.locator('#nav').isVisible()) fail('the navigation is still visible');
    const stored = await page.evaluate(() => sessionStorage.length);
    if (stored !== 0) fail(`the session storage still holds ${stored} item(s)`);
  });

  step = 'no browser errors';
  if (problems.length) fail(problems.join(' | '));
  console.log(`ok - no console errors, page errors or CSP violations (${expected403} expected 403 log(s) filtered)`);
}

await runScript(main, {
  state: () => ({ step, page, browser }),
  shots: SHOTS,
  afterReport(err) {
    if (problems.length && !String(err.message).includes(problems[0])) {
      console.error(`browser errors: ${problems.join(' | ')}`);
    }
  },
});
