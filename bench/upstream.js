// The benchmark's upstream: a stand-in editor that costs as little as possible, so that the
// proxies in front of it are what the benchmark measures. Node's raw `net` module (no HTTP
// parser, no dependencies): every request head is answered with a fixed response, pipelining
// and `Connection: close` included; `GET /ws` with an Upgrade becomes a WebSocket that echoes
// every message back (text or binary, any size), answers pings and closes when asked.
//
//   node bench/upstream.js PORT
//
// Paths: `/1mib` answers 1 MiB; `/ws` upgrades; anything else answers "Hello, World!". The
// path may carry a prefix (`/u/<id>/1mib` when a proxy does not strip it): only its end counts.
"use strict";

const net = require("net");
const crypto = require("crypto");

const port = Number(process.argv[2] || 0);
const SMALL_BODY = Buffer.from("Hello, World!");
const MIB = 1024 * 1024;

function response(body, close) {
  return Buffer.concat([
    Buffer.from(
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: " + body.length +
      (close ? "\r\nconnection: close" : "") + "\r\n\r\n"),
    body,
  ]);
}
const SMALL = response(SMALL_BODY, false);
const SMALL_CLOSE = response(SMALL_BODY, true);
const BIG = response(Buffer.alloc(MIB, 120), false);
const BIG_CLOSE = response(Buffer.alloc(MIB, 120), true);
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function header(head, name) {
  const match = head.match(new RegExp("\r\n" + name + ":[ \t]*([^\r\n]*)", "i"));
  return match ? match[1].trim() : null;
}

function frame(opcode, payload) {
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x80 | opcode, n]);
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode; head[1] = 126; head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

function websocket(socket, pending) {
  let buf = pending;
  const parts = [];  // fragments of a message in progress
  let opcodeOfMessage = 0;
  function onData(data) {
    buf = buf.length ? Buffer.concat([buf, data]) : data;
    const out = [];
    for (;;) {
      if (buf.length < 2) break;
      const fin = buf[0] & 0x80, opcode = buf[0] & 0x0f, masked = buf[1] & 0x80;
      let len = buf[1] & 0x7f, offset = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); offset = 4; }
      else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); offset = 10; }
      const maskOffset = offset;
      if (masked) offset += 4;
      if (buf.length < offset + len) break;
      const payload = Buffer.from(buf.subarray(offset, offset + len));
      if (masked) {
        for (let i = 0; i < len; i++) payload[i] ^= buf[maskOffset + (i & 3)];
      }
      buf = buf.subarray(offset + len);
      if (opcode === 0x8) { out.push(frame(0x8, payload.subarray(0, 2))); socket.end(Buffer.concat(out)); return; }
      if (opcode === 0x9) { out.push(frame(0xA, payload)); continue; }
      if (opcode === 0xA) continue;
      if (opcode !== 0) opcodeOfMessage = opcode;
      parts.push(payload);
      if (fin) {
        out.push(frame(opcodeOfMessage, parts.length === 1 ? parts[0] : Buffer.concat(parts)));
        parts.length = 0;
      }
    }
    if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
  }
  socket.on("data", onData);
  if (buf.length) { const first = buf; buf = Buffer.alloc(0); onData(first); }
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  let buf = "";
  function onData(data) {
    buf += data.toString("latin1");
    for (;;) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.slice(0, end);
      buf = buf.slice(end + 4);
      const path = head.slice(head.indexOf(" ") + 1, head.indexOf(" ", head.indexOf(" ") + 1));
      const close = /\r\nconnection:[ \t]*close/i.test(head);
      if (path.endsWith("/ws") && header(head, "upgrade")) {
        const key = header(head, "sec-websocket-key") || "";
        const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
        socket.removeListener("data", onData);
        socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n" +
                     "connection: Upgrade\r\nsec-websocket-accept: " + accept + "\r\n\r\n");
        websocket(socket, Buffer.from(buf, "latin1"));
        return;
      }
      const big = path.endsWith("/1mib");
      if (close) { socket.end(big ? BIG_CLOSE : SMALL_CLOSE); return; }
      socket.write(big ? BIG : SMALL);
    }
  }
  socket.on("data", onData);
  socket.on("error", () => {});
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(String(server.address().port) + "\n");
});
