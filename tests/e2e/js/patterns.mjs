// centrifuge-js (npm `centrifuge`, unmodified) subscribed to a channel pattern on Squall: the
// radio-station case (tests/e2e/test_patterns.py).
//
// Environment:
//   SQUALL_WS_URL   ws://127.0.0.1:PORT/connection/websocket
//   SQUALL_TOKEN    connection JWT minted by `squall token`
//   SQUALL_PATTERN  the pattern, e.g. radio:station.> (the "radio" namespace: allow_patterns)
//   SQUALL_CONTROL  a channel on which pytest says when to subscribe
//
// Flow: connect; read the pattern's stream position with history (limit 0) and print it as
// "position"; wait for {"subscribe": true} on the control channel (pytest publishes the backlog
// meanwhile); read history since that position ("history"); subscribe to the pattern `since`
// the position, which brings the backlog in the subscribe reply; print every subscribe reply as
// "subscribed" and every publication as "publication". Once a publication with
// data.last === true arrived: "summary" (everything seen, and the wire), "done", exit 0.

import { Centrifuge } from 'centrifuge';
import {
  Condition,
  SniffingWebSocket,
  describeError,
  emit,
  fail,
  requireEnv,
  scriptDeadline,
  wire,
} from './common.mjs';

const TIMEOUT = 10000;

scriptDeadline(40000);

const url = requireEnv('SQUALL_WS_URL');
const token = requireEnv('SQUALL_TOKEN');
const pattern = requireEnv('SQUALL_PATTERN');
const control = requireEnv('SQUALL_CONTROL');

async function call(what, promise) {
  try {
    return await promise;
  } catch (err) {
    fail(`${what} failed: ${describeError(err)}`);
  }
}

// What the application gets: the whole PublicationContext (its keys show what the stock client
// exposes; ctx.channel is the subscription's channel, the concrete one is in ctx.tags).
function publicationFields(ctx) {
  return {
    keys: Object.keys(ctx).sort(),
    channel: ctx.channel,
    data: ctx.data,
    offset: ctx.offset ?? null,
    tags: ctx.tags ?? null,
  };
}

const clientEvents = [];
const client = new Centrifuge(url, {
  token,
  websocket: SniffingWebSocket,
  timeout: TIMEOUT,
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
});
for (const name of ['connecting', 'connected', 'disconnected']) {
  client.on(name, (ctx) => {
    const entry = { name, code: ctx.code ?? null, reason: ctx.reason ?? null };
    clientEvents.push(entry);
    emit(`client_${name}`, entry);
  });
}
client.on('error', (ctx) =>
  emit('client_error', { type: ctx.type, error: describeError(ctx.error) }),
);
client.connect();
await call('connect', client.ready(TIMEOUT));

const go = new Condition();
let goSeen = false;
const ctl = client.newSubscription(control);
ctl.on('publication', (ctx) => {
  if (ctx.data && ctx.data.subscribe === true) {
    goSeen = true;
    go.notify();
  }
});
ctl.subscribe();
await call('subscribing to the control channel', ctl.ready(TIMEOUT));

const top = await call('history (position)', client.history(pattern, { limit: 0 }));
const position = { offset: top.offset, epoch: top.epoch };
emit('position', position);

await call('waiting for the go', go.wait(() => goSeen, TIMEOUT, 'the go on the control channel'));

const history = await call(
  'history since the position',
  client.history(pattern, { since: position, limit: 100 }),
);
emit('history', {
  offset: history.offset,
  epoch: history.epoch,
  publications: history.publications.map(publicationFields),
});

const sub = client.newSubscription(pattern, { since: position });
const publications = [];
const subscribed = [];
const changed = new Condition();
sub.on('subscribing', (ctx) => emit('subscribing', { code: ctx.code, reason: ctx.reason }));
sub.on('subscribed', (ctx) => {
  const entry = {
    channel: ctx.channel,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
    recoverable: ctx.recoverable,
    positioned: ctx.positioned,
    hasRecoveredPublications: ctx.hasRecoveredPublications,
    streamPosition: ctx.streamPosition ?? null,
  };
  subscribed.push(entry);
  emit('subscribed', entry);
});
sub.on('publication', (ctx) => {
  const entry = publicationFields(ctx);
  publications.push(entry);
  emit('publication', entry);
  changed.notify();
});
sub.on('error', (ctx) => emit('subscription_error', { error: describeError(ctx.error) }));
sub.on('unsubscribed', (ctx) => emit('unsubscribed', { code: ctx.code, reason: ctx.reason }));
sub.subscribe();
await call('subscribing to the pattern', sub.ready(TIMEOUT));
await call(
  'waiting for the last publication',
  changed.wait(() => publications.some((p) => p.data && p.data.last === true), 30000, 'last'),
);

// The wire: the pattern's subscribe commands and replies, and every publication push.
const commands = wire.messages('>').filter((m) => m.subscribe && m.subscribe.channel === pattern);
const ids = new Set(commands.map((m) => m.id));
const replies = wire.messages('<').filter((m) => ids.has(m.id));
const pushes = wire
  .messages('<')
  .filter((m) => m.push && m.push.pub)
  .map((m) => ({ channel: m.push.channel ?? null, id: m.push.id ?? null, pub: m.push.pub }));
emit('summary', {
  publications,
  subscribed,
  clientEvents,
  sockets: wire.opened,
  closes: wire.closes,
  commands,
  replies,
  pushes,
});
client.disconnect();
emit('done');
process.exit(0);
