// The demo chat page (GET / of a development-mode server) in headless Chromium via
// playwright-core. Two browser contexts, alice and bob: alice sends a message, bob sees it.
//
// Environment:
//   SQUALL_HTTP_URL    http://127.0.0.1:PORT
//   SQUALL_ARTIFACTS   directory for screenshots
//   SQUALL_CHROMIUM    Chromium executable (default /usr/bin/chromium)
//
// Output: JSON lines, see common.mjs. Every wait is a Playwright wait for a DOM condition,
// bounded by a timeout.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { describeError, emit, fail, requireEnv, scriptDeadline } from './common.mjs';

const TIMEOUT = 15000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

scriptDeadline(60000);

const base = requireEnv('SQUALL_HTTP_URL');
const artifacts = requireEnv('SQUALL_ARTIFACTS');
const executablePath = process.env.SQUALL_CHROMIUM || '/usr/bin/chromium';
mkdirSync(artifacts, { recursive: true });

let browser;
try {
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: TIMEOUT });
} catch (err) {
  fail(`Chromium did not start from ${executablePath}: ${describeError(err)}`);
}
emit('browser', { version: browser.version() });

// Everything a page does that a test should know about.
const problems = [];

async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (err) => problems.push({ page: name, kind: 'pageerror', text: describeError(err) }));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push({ page: name, kind: 'console', text: msg.text() });
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) {
      problems.push({ page: name, kind: 'http', text: `${resp.status()} ${resp.url()}` });
    }
  });
  // The page must be self-contained: nothing but the server itself.
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(base) && !url.startsWith(base.replace('http', 'ws')) && !url.startsWith('data:')) {
      problems.push({ page: name, kind: 'external-request', text: url });
    }
  });
  const response = await page.goto(`${base}/?name=${encodeURIComponent(name)}`);
  emit('loaded', {
    page: name,
    status: response?.status() ?? null,
    contentType: response?.headers()['content-type'] ?? null,
    title: await page.title(),
  });
  return page;
}

async function waitSubscribed(page, name) {
  try {
    await page.waitForSelector('#status[data-state="subscribed"]', { timeout: TIMEOUT });
  } catch (err) {
    const status = await page.locator('#status').textContent().catch(() => null);
    await page.screenshot({ path: join(artifacts, `demo-${name}-not-subscribed.png`) }).catch(() => {});
    fail(`${name}: not subscribed within ${TIMEOUT} ms (status: ${JSON.stringify(status)}); ` +
      `problems: ${JSON.stringify(problems)}`);
  }
  emit('subscribed', { page: name, status: await page.locator('#status').textContent() });
}

// Bob opens the page once alice is subscribed, so that alice sees bob join.
const alice = await openPage('alice');
await waitSubscribed(alice, 'alice');
const bob = await openPage('bob');
await waitSubscribed(bob, 'bob');

// Bob's join reaches alice (join_leave is on for the channel).
try {
  await alice.locator('#messages li[data-kind="join"]', { hasText: 'bob' }).first().waitFor();
  emit('join_seen', { page: 'alice' });
} catch (err) {
  emit('join_missing', { page: 'alice', error: describeError(err) });
}

const text = 'hello from A';
await alice.fill('#message', text);
await alice.click('#send');

const bobMessage = bob.locator('#messages li[data-kind="publication"]', { hasText: text });
try {
  await bobMessage.first().waitFor();
} catch (err) {
  await bob.screenshot({ path: join(artifacts, 'demo-bob-no-message.png') }).catch(() => {});
  fail(`bob did not show ${JSON.stringify(text)}: ${describeError(err)}; problems: ${JSON.stringify(problems)}`);
}
const aliceMessage = alice.locator('#messages li[data-kind="publication"]', { hasText: text });
await aliceMessage.first().waitFor();
// The input is cleared once the server accepted the publish.
await alice.waitForFunction(() => document.querySelector('#message').value === '');

const shots = {
  alice: join(artifacts, 'demo-alice.png'),
  bob: join(artifacts, 'demo-bob.png'),
};
await alice.screenshot({ path: shots.alice, fullPage: true });
await bob.screenshot({ path: shots.bob, fullPage: true });

emit('message_seen', {
  bob: {
    count: await bobMessage.count(),
    user: await bobMessage.first().locator('.user').textContent(),
    text: await bobMessage.first().locator('.text').textContent(),
  },
  alice: {
    count: await aliceMessage.count(),
    own: await aliceMessage.first().evaluate((el) => el.classList.contains('own')),
  },
  messagesChildren: await bob.locator('#messages > *').count(),
  screenshots: shots,
});
emit('problems', { problems });

await browser.close();
emit('done');
process.exit(0);
