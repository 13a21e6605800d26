// Shared helpers for the Node scripts pytest drives (tests/e2e/conftest.py: NodeScript).
//
// Protocol with pytest: every stdout line is one JSON object with an "event" key. A fatal
// problem is reported as {"event": "error", "message": ...} followed by exit code 1. Pytest
// waits for named events; nothing here sleeps to synchronise: every wait is for a condition,
// bounded by a deadline.

import WebSocket from 'ws';

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

export function fail(message) {
  emit('error', { message: String(message) });
  process.exit(1);
}

export function requireEnv(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    fail(`environment variable ${name} is required`);
  }
  return value;
}

export function describeError(err) {
  if (err === undefined || err === null) return String(err);
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  if (typeof err === 'object') {
    try {
      return JSON.stringify(err);
    } catch {
      return String(err);
    }
  }
  return String(err);
}

// The whole script fails if it is not done by then, whatever it is waiting for.
export function scriptDeadline(ms) {
  setTimeout(() => fail(`script deadline of ${ms} ms exceeded`), ms);
  process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${describeError(err)}`));
  process.on('uncaughtException', (err) => fail(`uncaught exception: ${describeError(err)}`));
}

// Resolves once predicate() is truthy, checked after each notify(); rejects at the deadline.
export class Condition {
  constructor() {
    this._waiters = new Set();
  }

  notify() {
    for (const waiter of [...this._waiters]) waiter();
  }

  wait(predicate, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let value;
        try {
          value = predicate();
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (value) {
          cleanup();
          resolve(value);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this._waiters.delete(check);
      };
      this._waiters.add(check);
      check();
    });
  }
}

// Resolves at wall-clock time `atMs` (Date.now() scale). Used only where the condition *is*
// the passage of time (a token's expiry), never to wait for the server.
export function until(atMs) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, atMs - Date.now())));
}

// A `ws` WebSocket that records every frame both ways, so a test can check what went on the
// wire (e.g. that a refresh command was sent and answered), and counts sockets opened.
export const wire = {
  opened: 0,
  socketErrors: [], // what `ws` reported (e.g. "connect ECONNREFUSED 127.0.0.1:1")
  closes: [], // {code, reason} of each socket's close
  frames: [], // {dir: '>' | '<', data: string}
  changed: new Condition(),
  // Every JSON message in the recorded frames of one direction (frames hold "\n"-separated JSON).
  messages(dir) {
    const out = [];
    for (const frame of this.frames) {
      if (frame.dir !== dir) continue;
      for (const line of frame.data.split('\n')) {
        if (line.trim() === '') continue;
        try {
          out.push(JSON.parse(line));
        } catch {
          out.push({ unparsable: line });
        }
      }
    }
    return out;
  },
};

export class SniffingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    wire.opened += 1;
    this.addEventListener('message', (event) => {
      wire.frames.push({ dir: '<', data: String(event.data) });
      wire.changed.notify();
    });
    this.addEventListener('error', (event) => {
      wire.socketErrors.push(describeError(event.error ?? event.message));
    });
    this.addEventListener('close', (event) => {
      wire.closes.push({ code: event.code, reason: String(event.reason) });
      wire.changed.notify();
    });
  }

  send(data, ...rest) {
    wire.frames.push({ dir: '>', data: String(data) });
    wire.changed.notify();
    return super.send(data, ...rest);
  }
}

export function jwtPayload(token) {
  const part = token.split('.')[1];
  if (part === undefined) throw new Error(`not a JWT: ${token}`);
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}
