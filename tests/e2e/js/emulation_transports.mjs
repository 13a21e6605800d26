// The stock `centrifuge` npm client's transports (websocket, http_stream, sse) in headless
// Chromium (playwright-core): connect, subscribe, publish through /emulation, receive a
// server API publication, and reconnect after a server-side disconnect.
//
// The page is the server's own origin (GET /health) with the client bundle from node_modules
// injected by Playwright (no CDN, no test route on the server). One client per transport, each
// as its own user so the API's disconnect reaches only it.
//
// Environment:
//   SQUALL_HTTP_URL   http://127.0.0.1:PORT
//   SQUALL_TOKENS     JSON {"http_stream": token, "sse": token}
//   SQUALL_CHANNEL    channel name
//   SQUALL_CHROMIUM   Chromium executable (default /usr/bin/chromium)
//
// Output (JSON lines, see common.mjs), per transport T:
//   connected {transport, name, n}   subscribed {transport, n}   publication {transport, data}
//   problems {problems}  done
// pytest publishes with the server API after the first "subscribed" of T and disconnects T's
// user (a reconnect code) after the API publication arrived; the client then connects again.

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { describeError, emit, fail, requireEnv, scriptDeadline } from './common.mjs';

const TIMEOUT = 15000;
scriptDeadline(90000);

const base = requireEnv('SQUALL_HTTP_URL');
const tokens = JSON.parse(requireEnv('SQUALL_TOKENS'));
const channel = requireEnv('SQUALL_CHANNEL');
const executablePath = process.env.SQUALL_CHROMIUM || '/usr/bin/chromium';
const here = dirname(fileURLToPath(import.meta.url));
const bundle = join(here, 'node_modules', 'centrifuge', 'dist', 'centrifuge.js');

let browser;
try {
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    timeout: TIMEOUT,
  });
} catch (err) {
  fail(`Chromium did not start from ${executablePath}: ${describeError(err)}`);
}

const problems = [];
const context = await browser.newContext();
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
page.on('pageerror', (err) => problems.push({ kind: 'pageerror', text: describeError(err) }));
page.on('request', (req) => {
  if (!req.url().startsWith(base)) problems.push({ kind: 'offsite', text: req.url() });
});
page.on('response', (resp) => {
  if (resp.status() >= 400) problems.push({ kind: 'http', text: `${resp.status()} ${resp.url()}` });
});
await page.exposeFunction('squallEmit', (event, fields) => emit(event, fields));
await page.goto(`${base}/health`);
await page.addScriptTag({ path: bundle });

for (const transport of ['websocket', 'http_stream', 'sse']) {
  // Resolves after the client connected twice and subscribed twice (after the reconnect).
  await page.evaluate(
    ({ base, transport, token, channel, timeout }) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${transport}: timed out`)), timeout);
        const client = new globalThis.Centrifuge(
          [
            {
              transport,
              endpoint:
                transport === 'websocket'
                  ? `${base.replace(/^http/, 'ws')}/connection/websocket`
                  : `${base}/connection/${transport}`,
            },
          ],
          { token, emulationEndpoint: `${base}/emulation`, minReconnectDelay: 50 },
        );
        let connects = 0;
        let subscribes = 0;
        client.on('connected', (ctx) => {
          connects += 1;
          globalThis.squallEmit('connected', { transport, name: ctx.transport, n: connects });
        });
        client.on('error', (ctx) => globalThis.squallEmit('client_error', { transport, error: ctx.error }));
        const sub = client.newSubscription(channel);
        sub.on('subscribed', () => {
          subscribes += 1;
          globalThis.squallEmit('subscribed', { transport, n: subscribes });
          if (subscribes === 1) {
            sub.publish({ from: 'client', transport }).catch((err) => reject(new Error(JSON.stringify(err))));
          } else {
            clearTimeout(timer);
            client.disconnect();
            resolve();
          }
        });
        sub.on('publication', (ctx) => globalThis.squallEmit('publication', { transport, data: ctx.data }));
        sub.subscribe();
        client.connect();
      }),
    { base, transport, token: tokens[transport], channel: `${channel}-${transport}`, timeout: 40000 },
  ).catch((err) => fail(describeError(err)));
}

emit('problems', { problems });
await browser.close();
emit('done');
process.exit(0);
