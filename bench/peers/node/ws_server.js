// Node `ws` broadcast peer: every text message a client sends goes to every connected client
// with ws's public API (client.send, as applications write it); POST /api/publish broadcasts
// its body the same way.
//
// For the other benchmark scenarios:
// - rooms (many channels): a client that connects to /?room=K is in room K only; its messages
//   go to the clients of room K. Without `room` it is in the one broadcast room.
// - token auth (connection storm): a client that connects to /?auth=1 must send
//   {"token": "<JWT>"} first; the HS256 JWT is verified with jsonwebtoken against --secret
//   (signature and exp), the peer answers {"connected":{"user":<sub>}}, or closes with 3500
//   when the token is refused.
// - SSE (fan-out): GET /sse is a Server-Sent Events stream; POST /api/publish also writes its
//   body to every SSE client as one `data:` event (res.write per client).
// Run: node ws_server.js --port 8002 [--secret KEY]
'use strict';
const http = require('http');
const jwt = require('jsonwebtoken');
const { WebSocketServer, WebSocket } = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '8002'));
const host = opt('--host', '127.0.0.1');
const secret = opt('--secret', '');

const sseClients = new Set();

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      broadcast(body);
      if (sseClients.size) sseBroadcast(body);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      res.end('{}');
    });
  } else if (req.method === 'GET' && req.url === '/sse') {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.flushHeaders();
    sseClients.add(res);
    res.on('close', () => sseClients.delete(res));
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: true });

function broadcast(data) {
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
  }
}

function roomBroadcast(members, data) {
  for (const client of members) {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
  }
}

function sseBroadcast(body) {
  const event = 'data: ' + body.toString().replace(/\n/g, '\ndata: ') + '\n\n';
  for (const res of sseClients) res.write(event);
}

const rooms = new Map();

function join(ws, room) {
  if (room === null) {
    ws.on('message', (data, isBinary) => {
      if (!isBinary) broadcast(data);
    });
    return;
  }
  let members = rooms.get(room);
  if (members === undefined) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.on('close', () => members.delete(ws));
  ws.on('message', (data, isBinary) => {
    if (!isBinary) roomBroadcast(members, data);
  });
}

wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  if (req.url.length <= 1) {
    join(ws, null); // the broadcast room, as before rooms existed
    return;
  }
  const query = new URL(req.url, 'http://peer').searchParams;
  const room = query.get('room');
  if (!query.has('auth')) {
    join(ws, room);
    return;
  }
  ws.once('message', (data) => {
    let claims;
    try {
      claims = jwt.verify(JSON.parse(data.toString()).token, secret, { algorithms: ['HS256'] });
    } catch {
      ws.close(3500, 'invalid token');
      return;
    }
    ws.send(JSON.stringify({ connected: { user: claims.sub } }));
    join(ws, room);
  });
});
server.listen(port, host, 4096);
