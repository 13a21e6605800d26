// centrifuge-js (npm `centrifuge`, unmodified) against a Squall server, one scenario per run.
//
// Environment:
//   SQUALL_WS_URL   ws://127.0.0.1:PORT/connection/websocket
//   SQUALL_TOKEN    connection JWT minted by `squall token`
//   SQUALL_TOKEN2   (refresh) the token getToken hands out
//   SQUALL_CHANNEL  channel to use
//   SCENARIO        pubsub | rpc | presence_history | bad_token | refresh
//
// Output: JSON lines, see common.mjs. Each scenario ends with {"event": "done"} and exit 0.

import { Centrifuge } from 'centrifuge';
import {
  Condition,
  SniffingWebSocket,
  describeError,
  emit,
  fail,
  jwtPayload,
  requireEnv,
  scriptDeadline,
  until,
  wire,
} from './common.mjs';

const TIMEOUT = 10000;

scriptDeadline(30000);

const url = requireEnv('SQUALL_WS_URL');
const token = requireEnv('SQUALL_TOKEN');
const scenario = requireEnv('SCENARIO');

// Every client-level event, in order, for assertions and for the transcript.
const clientEvents = [];
const changed = new Condition();
const clientErrors = [];

function newClient(options = {}) {
  const client = new Centrifuge(url, {
    token,
    websocket: SniffingWebSocket,
    timeout: TIMEOUT,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    ...options,
  });
  for (const name of ['connecting', 'connected', 'disconnected']) {
    client.on(name, (ctx) => {
      const entry = { name, at: Date.now(), code: ctx.code, reason: ctx.reason };
      if (name === 'connected') {
        entry.client = ctx.client;
        entry.transport = ctx.transport;
      }
      clientEvents.push(entry);
      emit(`client_${name}`, entry);
      changed.notify();
    });
  }
  client.on('error', (ctx) => {
    const entry = { type: ctx.type, error: describeError(ctx.error) };
    clientErrors.push(entry);
    if (clientErrors.length <= 3) emit('client_error', entry);
  });
  return client;
}

async function connect(client) {
  client.connect();
  try {
    await client.ready(TIMEOUT);
  } catch (err) {
    const lastSocketErrors = [...new Set(wire.socketErrors)].slice(-3);
    fail(
      `not connected to ${url} within ${TIMEOUT} ms (${describeError(err)}); ` +
        `${wire.opened} socket(s) opened; socket errors: ${JSON.stringify(lastSocketErrors)}; ` +
        `closes: ${JSON.stringify(wire.closes.slice(-3))}; ` +
        `client errors: ${JSON.stringify(clientErrors.slice(-3))}`,
    );
  }
  return clientEvents.findLast((e) => e.name === 'connected');
}

async function subscribe(client, channel) {
  const sub = client.newSubscription(channel);
  const publications = [];
  const got = new Condition();
  sub.on('publication', (ctx) => {
    publications.push(ctx);
    got.notify();
  });
  sub.on('error', (ctx) => emit('subscription_error', { error: describeError(ctx.error) }));
  sub.on('unsubscribed', (ctx) => emit('unsubscribed', { code: ctx.code, reason: ctx.reason }));
  sub.subscribe();
  try {
    await sub.ready(TIMEOUT);
  } catch (err) {
    fail(`not subscribed to ${channel} within ${TIMEOUT} ms: ${describeError(err)}`);
  }
  const waitPublication = (predicate, what) =>
    got.wait(() => publications.find(predicate), TIMEOUT, what);
  return { sub, waitPublication };
}

function publicationFields(pub) {
  return { data: pub.data, offset: pub.offset, info: pub.info ?? null };
}

async function call(what, promise) {
  try {
    return await promise;
  } catch (err) {
    fail(`${what} failed: ${describeError(err)}`);
  }
}

const scenarios = {
  // Subscribe; receive what pytest publishes with cent; publish and see it come back.
  async pubsub() {
    const channel = requireEnv('SQUALL_CHANNEL');
    const client = newClient();
    const connected = await connect(client);
    emit('connected', { client: connected.client, transport: connected.transport });
    const { sub, waitPublication } = await subscribe(client, channel);
    emit('subscribed', { channel });
    // Pytest publishes {"source": "cent", ...} once it reads "subscribed".
    const fromCent = await call(
      'waiting for the cent publication',
      waitPublication((p) => p.data && p.data.source === 'cent', 'the cent publication'),
    );
    emit('publication', publicationFields(fromCent));
    const publishResult = await call('sub.publish', sub.publish({ source: 'js', text: 'hi' }));
    emit('published', { result: publishResult ?? null });
    const own = await call(
      'waiting for the own publication',
      waitPublication((p) => p.data && p.data.source === 'js', 'the own publication'),
    );
    emit('own_publication', publicationFields(own));
    client.disconnect();
  },

  async rpc() {
    const client = newClient();
    await connect(client);
    const payload = { hello: 'world', n: [1, 2, 3], nested: { ok: true, none: null } };
    const echo = await call('rpc echo', client.rpc('echo', payload));
    emit('rpc_echo', { sent: payload, data: echo.data });
    const who = await call('rpc whoami', client.rpc('whoami', {}));
    emit('rpc_whoami', { data: who.data });
    try {
      await client.rpc('no.such.method', {});
      emit('rpc_unknown', { rejected: false });
    } catch (err) {
      emit('rpc_unknown', { rejected: true, code: err.code ?? null, message: err.message ?? null });
    }
    emit('state_after_rpc', { state: client.state });
    client.disconnect();
  },

  // Pytest published three messages with cent before starting this script.
  async presence_history() {
    const channel = requireEnv('SQUALL_CHANNEL');
    const client = newClient();
    const connected = await connect(client);
    const { sub } = await subscribe(client, channel);
    emit('subscribed', { channel, client: connected.client });
    const presence = await call('sub.presence', sub.presence());
    emit('presence', {
      clients: Object.entries(presence.clients).map(([key, info]) => ({
        key,
        client: info.client,
        user: info.user,
      })),
    });
    const stats = await call('sub.presenceStats', sub.presenceStats());
    emit('presence_stats', { numClients: stats.numClients, numUsers: stats.numUsers });
    const history = async (opts) => {
      const h = await call(`sub.history(${JSON.stringify(opts)})`, sub.history(opts));
      return {
        offset: h.offset,
        epoch: h.epoch,
        publications: h.publications.map(publicationFields),
      };
    };
    emit('history', {
      limit1: await history({ limit: 1 }),
      limit10: await history({ limit: 10 }),
      limit0: await history({ limit: 0 }),
    });
    client.disconnect();
  },

  // A token with a bad signature: the server disconnects with 3500 "invalid token" and the
  // client, seeing a terminal code, does not reconnect.
  async bad_token() {
    const client = newClient();
    client.connect();
    const disconnected = await call(
      'waiting for disconnected',
      changed.wait(() => clientEvents.find((e) => e.name === 'disconnected'), TIMEOUT, 'disconnected'),
    );
    emit('disconnected', {
      code: disconnected.code,
      reason: disconnected.reason,
      state: client.state,
      sockets: wire.opened,
    });
    // The absence of a reconnect can only be observed over time: a short, bounded look.
    await until(Date.now() + 500);
    emit('settled', {
      state: client.state,
      sockets: wire.opened,
      connectedEvents: clientEvents.filter((e) => e.name === 'connected').length,
    });
  },

  // A short-lived token (--ttl 3): the client must call getToken, send `refresh` with the new
  // token, and stay on the same connection past the first token's expiry.
  async refresh() {
    const token2 = requireEnv('SQUALL_TOKEN2');
    const exp = jwtPayload(token).exp;
    if (typeof exp !== 'number') fail(`SQUALL_TOKEN has no exp claim: ${JSON.stringify(jwtPayload(token))}`);
    let getTokenCalls = 0;
    const client = newClient({
      getToken: async () => {
        getTokenCalls += 1;
        emit('get_token', { calls: getTokenCalls });
        return token2;
      },
    });
    await connect(client);
    const connectReply = wire.messages('<').find((m) => m.id === 1 && m.connect);
    emit('connected', {
      expires: connectReply?.connect?.expires ?? null,
      ttl: connectReply?.connect?.ttl ?? null,
      exp,
      now: Date.now() / 1000,
    });
    // Wait (bounded) for the refresh command and its reply on the wire.
    const refreshCommand = await call(
      'waiting for the refresh command',
      wire.changed.wait(
        () => wire.messages('>').find((m) => m.refresh),
        (exp + 5) * 1000 - Date.now(),
        'a refresh command',
      ),
    );
    const refreshReply = await call(
      'waiting for the refresh reply',
      wire.changed.wait(
        () => wire.messages('<').find((m) => m.id === refreshCommand.id),
        TIMEOUT,
        'the refresh reply',
      ),
    );
    emit('refreshed', {
      sentToken: refreshCommand.refresh.token === token2,
      reply: refreshReply,
      at: Date.now() / 1000,
    });
    // Stay past the first token's expiry, then prove the same connection still works.
    await until(exp * 1000 + 1500);
    const who = await call('rpc whoami after expiry', client.rpc('whoami', {}));
    emit('after_expiry', {
      state: client.state,
      sockets: wire.opened,
      getTokenCalls,
      events: clientEvents.map((e) => e.name),
      whoami: who.data,
    });
    client.disconnect();
  },
};

const run = scenarios[scenario];
if (run === undefined) fail(`unknown SCENARIO ${scenario}`);
await run();
emit('done');
process.exit(0);
