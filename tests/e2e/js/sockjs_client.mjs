// sockjs-client 1.6 in headless Chromium (playwright-core) against `squall sockjs-test-server`.
// For each page origin (the server's own, and a different one) and each transport, a fresh
// page runs window.runCase (sockjs_pages/echo.html): echo of unicode, of "</script>" and of a
// 64 KiB message, then a server close with 3001 "bye".
//
// Environment:
//   SOCKJS_SERVER      http://127.0.0.1:PORT (the SockJS services)
//   SOCKJS_PAGE_HOSTS  comma-separated page origins to test, e.g. http://127.0.0.1:P,http://localhost:P
//   SOCKJS_TRANSPORTS  comma-separated sockjs-client transport names
//   SQUALL_CHROMIUM    Chromium executable (default /usr/bin/chromium)
//
// Output: JSON lines (common.mjs): one "case" event per origin x transport, then "done".

import { chromium } from 'playwright-core';
import { describeError, emit, fail, requireEnv, scriptDeadline } from './common.mjs';

const TIMEOUT = 30000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

scriptDeadline(300000);

const server = requireEnv('SOCKJS_SERVER');
const pageHosts = requireEnv('SOCKJS_PAGE_HOSTS').split(',');
const transports = requireEnv('SOCKJS_TRANSPORTS').split(',');
const executablePath = process.env.SQUALL_CHROMIUM || '/usr/bin/chromium';

let browser;
try {
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: TIMEOUT });
} catch (err) {
  fail(`Chromium did not start from ${executablePath}: ${describeError(err)}`);
}
emit('browser', { version: browser.version() });

for (const host of pageHosts) {
  for (const transport of transports) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const problems = [];
    page.on('pageerror', (err) => problems.push(describeError(err)));
    let result;
    try {
      await page.goto(`${host}/static/echo.html`);
      result = await page.evaluate(
        ([url, name]) => window.runCase(url, name),
        [`${server}/echo`, transport],
      );
    } catch (err) {
      result = { error: describeError(err) };
    }
    emit('case', { host, transport, result, problems });
    await context.close();
  }
}
await browser.close();
emit('done');
process.exit(0);
