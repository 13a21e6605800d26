// sockjs-node broadcast peer at prefix /echo: every message a client sends is written to
// every open connection; POST /api/publish writes its body the same way.
// Run: node sockjs_server.js --port 8009
'use strict';
const http = require('http');
const sockjs = require('sockjs');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};

const clients = new Set();
function broadcast(message) {
  for (const conn of clients) conn.write(message);
}

const echo = sockjs.createServer({ log: () => {}, disconnect_delay: 5000 });
echo.on('connection', (conn) => {
  clients.add(conn);
  conn.on('data', broadcast);
  conn.on('close', () => clients.delete(conn));
});

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      broadcast(Buffer.concat(chunks).toString());
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      res.end('{}');
    });
  } else if (!req.url.startsWith('/echo')) {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
echo.installHandlers(server, { prefix: '/echo' });
server.listen(Number(opt('--port', '8009')), opt('--host', '127.0.0.1'), 4096);
