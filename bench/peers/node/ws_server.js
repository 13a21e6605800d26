// Node `ws` broadcast peer: every text message a client sends goes to every connected client
// with ws's public API (client.send, as applications write it); POST /api/publish broadcasts
// its body the same way.
// Run: node ws_server.js --port 8002
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '8002'));
const host = opt('--host', '127.0.0.1');

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      broadcast(Buffer.concat(chunks));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      res.end('{}');
    });
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

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary) broadcast(data);
  });
  ws.on('error', () => {});
});
server.listen(port, host, 4096);
