// The peer of `nudge-bench sockets`: a plain Node `ws` server doing the gateway's job in
// its simplest form, measured in the same run. Shoppers connect to /?shopper=ID and get a
// ready frame; a driver connected to /driver sends "ID|frame" and the server writes the
// frame to that shopper's socket, or "*|frame" and it writes the frame to every socket it
// holds (from one buffer, as ws's own broadcast example does). No compression, 4 KiB frame limit, like the gateway.
// Acknowledgements, when the clients send them, are parsed and dropped.
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 4096 });
const shoppers = new Map();

wss.on("connection", (socket, req) => {
  const url = new URL(req.url, "http://peer");
  if (url.pathname === "/driver") {
    socket.on("message", (data) => {
      const text = data.toString();
      const bar = text.indexOf("|");
      if (bar === 1 && text[0] === "*") {
        const frame = Buffer.from(text.slice(2));
        for (const target of shoppers.values()) target.send(frame, { binary: false });
        return;
      }
      const target = shoppers.get(text.slice(0, bar));
      if (target) target.send(text.slice(bar + 1));
    });
    return;
  }
  const shopper = url.searchParams.get("shopper");
  shoppers.set(shopper, socket);
  socket.on("close", () => { if (shoppers.get(shopper) === socket) shoppers.delete(shopper); });
  socket.on("error", () => {});
  // With `--peer-acks` the clients acknowledge each delivery, as they do to the gateway:
  // each is read and parsed, and nothing is kept.
  socket.on("message", (data) => {
    try { JSON.parse(data.toString()); } catch (e) { socket.close(1008); }
  });
  socket.send(JSON.stringify({ type: "ready", shopper_id: shopper }));
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write("listening 127.0.0.1:" + server.address().port + "\n");
});
