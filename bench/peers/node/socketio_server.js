// Node socket.io broadcast peer (WebSocket transport): every "msg" event a client emits is
// emitted to every connected client with io.emit; POST /api/publish emits its JSON body.
// Run: node socketio_server.js --port 8008
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      io.emit('msg', JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      res.end('{}');
    });
  } else if (!req.url.startsWith('/socket.io/')) {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
const io = new Server(server, {
  transports: ['websocket'], perMessageDeflate: false, serveClient: false,
});
io.on('connection', (socket) => {
  socket.on('msg', (data) => io.emit('msg', data));
});
server.listen(Number(opt('--port', '8008')), opt('--host', '127.0.0.1'), 4096);
