#!/usr/bin/env python3
"""A small HTTP/1.1 server with faults on demand, for CurlTransport's tests.

Routes (any method; a request body is always read, so keep-alive holds):
  /echo             JSON: method, path, body_length, content_type, user_agent,
                    auth_scheme ("Basic", "Bearer" or ""), auth_ok (whether
                    the credentials equal --user/--password or --token). The
                    credentials themselves are never sent back.
  /status/<code>    that status; ?retry_after=<value> adds a Retry-After header.
  /slow/<ms>        200 after sleeping <ms>.
  /drop             closes the connection without a response.
  /connections      JSON: connections accepted so far.
  /sink             JSON: bytes and sha256 of the body, read in chunks.

The port is chosen by the system and written to --port-file once listening.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, the body waits
    # for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.route()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [part for part in url.path.split("/") if part]
        head = parts[0] if parts else ""
        if head == "sink":
            self.sink()
            return
        body = self.read_body()
        if head == "drop":
            self.close_connection = True
            return
        if head == "echo":
            scheme, ok = self.check_auth()
            self.reply(200, {
                "method": self.command,
                "path": url.path,
                "body_length": len(body),
                "content_type": self.headers.get("Content-Type", ""),
                "user_agent": self.headers.get("User-Agent", ""),
                "expect": self.headers.get("Expect", ""),
                "auth_scheme": scheme,
                "auth_ok": ok,
            })
        elif head == "status" and len(parts) == 2:
            extra = {}
            if "retry_after" in query:
                extra["Retry-After"] = query["retry_after"][0]
            self.reply(int(parts[1]), {"status": int(parts[1])}, extra)
        elif head == "slow" and len(parts) == 2:
            time.sleep(int(parts[1]) / 1000)
            self.reply(200, {"slept_ms": int(parts[1])})
        elif head == "connections":
            with self.server.lock:
                count = self.server.connections
            self.reply(200, {"connections": count})
        else:
            self.reply(404, {"error": "no route " + url.path})

    def read_body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length) if length > 0 else b""

    def sink(self):
        remaining = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        total = 0
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
            remaining -= len(chunk)
        self.reply(200, {"method": self.command, "bytes": total, "sha256": digest.hexdigest()})

    def check_auth(self):
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        args = self.server.args
        if scheme == "Basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except ValueError:
                return scheme, False
            expected = "%s:%s" % (args.user, args.password)
            return scheme, args.user is not None and hmac.compare_digest(decoded, expected)
        if scheme == "Bearer":
            return scheme, args.token is not None and hmac.compare_digest(value, args.token)
        return scheme, False

    def reply(self, status, payload, extra_headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that time out or hang up are part of the tests.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--token")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    server = Server(("127.0.0.1", 0), Handler)
    server.args = args
    server.lock = threading.Lock()
    server.connections = 0
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)

    # Written whole then renamed, so a reader never sees half a number.
    temp = args.port_file + ".tmp"
    with open(temp, "w") as out:
        out.write(str(server.server_address[1]))
    os.rename(temp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
