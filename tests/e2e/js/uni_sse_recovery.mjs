// A plain browser EventSource on /connection/uni_sse (no client library) in headless Chromium
// (playwright-core). Every message event is reported with its lastEventId; when the server ends
// the stream, the browser reconnects by itself and sends Last-Event-ID, which Squall turns into
// recovery of the connection's server-side channels (docs/channels.md).
//
// Environment:
//   SQUALL_HTTP_URL   http://127.0.0.1:PORT
//   SQUALL_TOKEN      connection JWT whose `channels` claim names the channels
//   SQUALL_CHROMIUM   Chromium executable (default /usr/bin/chromium)
//
// Output (JSON lines, see common.mjs): open {n}  message {data, lastEventId}  ... problems  done
// When a publication with data {"stop": true} arrives, the page closes the EventSource and
// the script exits.

import { chromium } from 'playwright-core';
import { describeError, emit, fail, requireEnv, scriptDeadline } from './common.mjs';

const TIMEOUT = 15000;
scriptDeadline(90000);

const base = requireEnv('SQUALL_HTTP_URL');
const token = requireEnv('SQUALL_TOKEN');
const executablePath = process.env.SQUALL_CHROMIUM || '/usr/bin/chromium';

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
const page = await (await browser.newContext()).newPage();
page.setDefaultTimeout(TIMEOUT);
page.on('pageerror', (err) => problems.push({ kind: 'pageerror', text: describeError(err) }));
page.on('response', (resp) => {
  if (resp.status() >= 400) problems.push({ kind: 'http', text: `${resp.status()} ${resp.url()}` });
});
await page.exposeFunction('squallEmit', (event, fields) => emit(event, fields));
await page.goto(`${base}/health`);

await page.evaluate(
  ({ base, token, timeout }) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out')), timeout);
      const query = encodeURIComponent(JSON.stringify({ token }));
      const es = new EventSource(`${base}/connection/uni_sse?cf_connect=${query}`);
      let opens = 0;
      es.onopen = () => {
        opens += 1;
        globalThis.squallEmit('open', { n: opens });
      };
      es.onmessage = (e) => {
        const data = JSON.parse(e.data);
        globalThis.squallEmit('message', { data, lastEventId: e.lastEventId });
        if (data.pub && data.pub.data && data.pub.data.stop) {
          clearTimeout(timer);
          es.close();
          resolve();
        }
      };
    }),
  { base, token, timeout: 60000 },
).catch((err) => fail(describeError(err)));

emit('problems', { problems });
await browser.close();
emit('done');
process.exit(0);
