// What the headless-Chromium tests (console.mjs, synapse_admin.mjs) share:
// the environment, failing a check, polling, launching the browser,
// collecting page errors and reporting the first failure.
// Holds no state of its own: each script keeps its browser, page, step and
// screenshots directory and passes them in (runScript reads them through a
// getter, so it sees their values at the time of the failure).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

/// A required environment variable; exits 1 with a setup failure if unset.
export function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`FAIL - setup: the environment variable ${name} is not set`);
    process.exit(1);
  }
  return value;
}

/// SCREENSHOTS (created if set), or '' for none.
export function screenshotsDir() {
  const shots = process.env.SCREENSHOTS || '';
  if (shots) fs.mkdirSync(shots, { recursive: true });
  return shots;
}

export const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
export const exact = (s) => new RegExp(`^\\s*${escapeRe(s)}\\s*$`);

/// A failed check: reported by its message alone (other errors with their stack).
export class CheckFailed extends Error {}

export function fail(message) {
  throw new CheckFailed(message);
}

/// Makes `until(what, probe, timeout = defaultTimeout)`, which polls `probe`
/// until it returns true (anything else is what was seen last, reported on
/// timeout).
export function makeUntil(defaultTimeout) {
  return async function until(what, probe, timeout = defaultTimeout) {
    const deadline = Date.now() + timeout;
    let seen;
    for (;;) {
      try {
        seen = await probe();
        if (seen === true) return;
      } catch (err) {
        seen = err.message.split('\n')[0];
      }
      if (Date.now() > deadline) {
        fail(`timed out after ${timeout} ms waiting for ${what}${seen !== undefined && seen !== false ? ` (last seen: ${JSON.stringify(seen)})` : ''}`);
      }
      await new Promise((resolve) => { setTimeout(resolve, 100); });
    }
  };
}

/// Headless Chromium: CHROMIUM, or /usr/bin/chromium.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new'],
  });
}

/// Adds each of the page's uncaught errors to `problems` ("page error: …"),
/// except those whose message includes `harmless` (if given).
export function collectPageErrors(page, problems, harmless) {
  page.on('pageerror', (err) => {
    if (!harmless || !err.message.includes(harmless)) problems.push(`page error: ${err.message}`);
  });
}

/// Prints the failure of `step` (a CheckFailed by its message, anything else
/// with its stack) and, if there is a page, its URL and text, and saves
/// failure.png (in `shots`, or the temporary directory).
export async function reportFailure(err, step, page, shots) {
  console.error(`FAIL - ${step}: ${err instanceof CheckFailed ? err.message : err.stack || err}`);
  if (!page) return;
  try {
    console.error(`page URL: ${page.url()}`);
    const text = (await page.evaluate(() => document.body.innerText)).replace(/\n{2,}/g, '\n').trim();
    console.error(`page text:\n${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}`);
    const file = path.join(shots || os.tmpdir(), 'failure.png');
    await page.screenshot({ path: file, fullPage: true });
    console.error(`screenshot: ${file}`);
  } catch (inner) {
    console.error(`(could not capture the page: ${inner.message})`);
  }
}

/// Runs `main` and exits: 0 if it succeeded; 1 if it threw, after reporting
/// the failure (reportFailure, then `afterReport(err)`). In any case closes
/// the browser, then calls `cleanup()`. `state()` gives the script's current
/// `{ step, page, browser }`; `shots` is its screenshots directory.
export async function runScript(main, { state, shots, afterReport = () => {}, cleanup = () => {} }) {
  let failed = false;
  try {
    await main();
  } catch (err) {
    failed = true;
    const { step, page } = state();
    await reportFailure(err, step, page, shots);
    afterReport(err);
  } finally {
    const { browser } = state();
    if (browser) await browser.close().catch(() => {});
    cleanup();
  }
  process.exit(failed ? 1 : 0);
}
