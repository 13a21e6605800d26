// centrifuge-js (npm `centrifuge`, unmodified) recovering missed publications from Squall.
//
// Environment:
//   SQUALL_WS_URL   ws://127.0.0.1:PORT/connection/websocket
//   SQUALL_TOKEN    connection JWT minted by `squall token`
//   SQUALL_CHANNEL  the channel (in the "rec" namespace: history, force_recovery)
//   SQUALL_CONTROL  (since) a channel on which pytest says when to subscribe
//   SCENARIO        reconnect | since
//   HISTORY_LIMIT   (since) how many of the latest publications to read first
//
// Output: JSON lines, see common.mjs. Every publication of the subscription is printed as a
// "publication" event as it arrives, every subscribe reply as "subscribed". A scenario ends once
// a publication with data.last === true arrived: it prints "summary" (everything it saw, and
// the subscribe commands and replies on the wire), then "done", and exits 0.

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
const channel = requireEnv('SQUALL_CHANNEL');
const scenario = requireEnv('SCENARIO');

const clientEvents = [];

function newClient() {
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
  client.on('error', (ctx) => emit('client_error', { type: ctx.type, error: describeError(ctx.error) }));
  return client;
}

async function call(what, promise) {
  try {
    return await promise;
  } catch (err) {
    fail(`${what} failed: ${describeError(err)}`);
  }
}

function publicationFields(pub) {
  return { data: pub.data, offset: pub.offset ?? null };
}

// A subscription printing what it gets; resolves `last` once the publication marked last came.
function watch(sub) {
  const publications = [];
  const subscribedEvents = [];
  const changed = new Condition();
  sub.on('subscribing', (ctx) => emit('subscribing', { code: ctx.code, reason: ctx.reason }));
  sub.on('subscribed', (ctx) => {
    const entry = {
      wasRecovering: ctx.wasRecovering,
      recovered: ctx.recovered,
      recoverable: ctx.recoverable,
      positioned: ctx.positioned,
      hasRecoveredPublications: ctx.hasRecoveredPublications,
      streamPosition: ctx.streamPosition ?? null,
    };
    subscribedEvents.push(entry);
    emit('subscribed', entry);
    changed.notify();
  });
  sub.on('publication', (ctx) => {
    const entry = publicationFields(ctx);
    publications.push(entry);
    emit('publication', entry);
    changed.notify();
  });
  sub.on('error', (ctx) => emit('subscription_error', { error: describeError(ctx.error) }));
  sub.on('unsubscribed', (ctx) => emit('unsubscribed', { code: ctx.code, reason: ctx.reason }));
  const last = () =>
    call(
      'waiting for the last publication',
      changed.wait(() => publications.some((p) => p.data && p.data.last === true), 30000, 'last'),
    );
  return { publications, subscribedEvents, last };
}

// The subscribe commands the client sent for `name` and the replies it got, from the wire.
function subscribeExchange(name) {
  const commands = wire.messages('>').filter((m) => m.subscribe && m.subscribe.channel === name);
  const ids = new Set(commands.map((m) => m.id));
  const replies = wire.messages('<').filter((m) => ids.has(m.id));
  return { commands, replies };
}

async function connect(client) {
  client.connect();
  await call('connect', client.ready(TIMEOUT));
}

const scenarios = {
  // Subscribe; pytest publishes, drops the connection and publishes more before the client is
  // back; the client resubscribes with recovery on its own.
  async reconnect() {
    const client = newClient();
    await connect(client);
    const sub = client.newSubscription(channel);
    const seen = watch(sub);
    sub.subscribe();
    await seen.last();
    emit('summary', {
      publications: seen.publications,
      subscribed: seen.subscribedEvents,
      clientEvents,
      sockets: wire.opened,
      closes: wire.closes,
      ...subscribeExchange(channel),
    });
    client.disconnect();
  },

  // Initial state exactly once: read the latest publications with history, then subscribe
  // `since` the position history returned, once pytest (which publishes meanwhile) says so.
  async since() {
    const control = requireEnv('SQUALL_CONTROL');
    const limit = Number(requireEnv('HISTORY_LIMIT'));
    const client = newClient();
    await connect(client);

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

    const history = await call(
      'client.history',
      client.history(channel, { limit, reverse: true }),
    );
    // reverse: newest first; the state is the oldest first.
    const state = history.publications.map(publicationFields).reverse();
    emit('history', { offset: history.offset, epoch: history.epoch, publications: state });

    await call('waiting for the go', go.wait(() => goSeen, TIMEOUT, 'the go on the control channel'));
    const sub = client.newSubscription(channel, {
      since: { offset: history.offset, epoch: history.epoch },
    });
    const seen = watch(sub);
    sub.subscribe();
    await call('subscribing with since', sub.ready(TIMEOUT));
    await seen.last();
    emit('summary', {
      state,
      publications: seen.publications,
      subscribed: seen.subscribedEvents,
      clientEvents,
      sockets: wire.opened,
      ...subscribeExchange(channel),
    });
    client.disconnect();
  },
};

const run = scenarios[scenario];
if (run === undefined) fail(`unknown SCENARIO ${scenario}`);
await run();
emit('done');
process.exit(0);
