// The stock `centrifuge` npm client (5.x) with its `sockjs` transport and sockjs-client 1.6, in
// headless Chromium (playwright-core), against `squall serve` at /connection/sockjs.
//
// The page is a document of the server's own origin (/health) into which the two bundles
// from node_modules are injected as scripts, so nothing comes from a CDN and the SockJS
// requests are same-origin. For each sockjs-client transport, in a fresh context:
// connect, subscribe, publish from the page (the own publication comes back), receive a
// publication pytest sends with cent (after "subscribed"), then reconnect after pytest
// disconnects the user with a reconnect code (after "received"), and publish again.
//
// Environment:
//   SQUALL_HTTP_URL     http://127.0.0.1:PORT
//   SQUALL_TOKENS       JSON object: transport -> connection token (one user per transport)
//   SQUALL_CHANNEL      channel prefix (one channel per transport)
//   SOCKJS_TRANSPORTS   comma-separated sockjs-client transport names
//   SQUALL_CHROMIUM     Chromium executable (default /usr/bin/chromium)
//
// Output: JSON lines (common.mjs): per transport "connected", "subscribed", "own_publication",
// "received", "reconnected", "resubscribed", "case_done"; then "done".

import { readFileSync } from 'node:fs';
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

scriptDeadline(240000);

const base = requireEnv('SQUALL_HTTP_URL');
const tokens = JSON.parse(requireEnv('SQUALL_TOKENS'));
const channelPrefix = requireEnv('SQUALL_CHANNEL');
const transports = requireEnv('SOCKJS_TRANSPORTS').split(',');
const executablePath = process.env.SQUALL_CHROMIUM || '/usr/bin/chromium';

// The bundles, injected into a page of the server's own origin (no CDN, no other server).
const BUNDLES = [
  readFileSync('node_modules/sockjs-client/dist/sockjs.min.js', 'utf8'),
  readFileSync('node_modules/centrifuge/dist/centrifuge.js', 'utf8'),
];

let browser;
try {
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: TIMEOUT });
} catch (err) {
  fail(`Chromium did not start from ${executablePath}: ${describeError(err)}`);
}
emit('browser', { version: browser.version() });

async function runCase(transport) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on('pageerror', (err) => problems.push(describeError(err)));
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(base) && !url.startsWith(base.replace('http', 'ws'))) {
      problems.push(`external request: ${url}`);
    }
  });
  // The page reports through this binding; pytest sees each report as an event.
  await page.exposeBinding('report', (_source, name, fields) => {
    emit(name, { transport, ...fields });
  });
  // Any document of the server's origin will do: /health, then the bundles as scripts.
  await page.goto(`${base}/health`);
  for (const content of BUNDLES) await page.addScriptTag({ content });
  const channel = `${channelPrefix}-${transport}`;
  await page.evaluate(
    ([endpoint, token, channel, transport, timeout]) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('case timed out')), timeout);
        const client = new Centrifuge([{ transport: 'sockjs', endpoint }], {
          sockjs: SockJS,
          sockjsOptions: { transports: [transport] },
          token,
          minReconnectDelay: 100,
          maxReconnectDelay: 500,
        });
        let connects = 0;
        let published = false;
        const received = [];
        client.on('connected', (ctx) => {
          connects += 1;
          window.report(connects === 1 ? 'connected' : 'reconnected', {
            client: ctx.client,
            subName: ctx.transport,
          });
        });
        client.on('disconnected', (ctx) => window.report('disconnected', ctx));
        const sub = client.newSubscription(channel);
        sub.on('subscribed', () => {
          if (connects === 1 && !published) {
            window.report('subscribed', { channel });
            published = true;
            sub.publish({ text: 'from page' }).catch((err) => reject(err));
          } else if (connects === 2) {
            // Resubscribed after the reconnect: a publish goes through again.
            window.report('resubscribed', { channel });
            sub.publish({ text: 'after reconnect' }).catch((err) => reject(err));
          }
        });
        sub.on('publication', (ctx) => {
          received.push(ctx.data);
          const text = ctx.data.text;
          if (text === 'from page') window.report('own_publication', { data: ctx.data });
          else if (text === 'from cent') window.report('received', { data: ctx.data });
          else if (text === 'after reconnect') {
            clearTimeout(timer);
            client.disconnect();
            resolve(received);
          }
        });
        sub.subscribe();
        client.connect();
      }),
    [`${base}/connection/sockjs`, tokens[transport], channel, transport, TIMEOUT * 3],
  );
  emit('case_done', { transport, problems });
  await context.close();
}

for (const transport of transports) {
  try {
    await runCase(transport);
  } catch (err) {
    fail(`${transport}: ${describeError(err)}`);
  }
}
await browser.close();
emit('done');
process.exit(0);
