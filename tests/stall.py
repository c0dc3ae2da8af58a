"""A Prefect server that stalls: an HTTP proxy in front of the session's server which forwards every request, and for
the requests a rule picks, lets the server do the work but answers the client 503 (an overloaded server whose answer
was lost after it committed). What a client then sees is what an overloaded server does to it."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class StallingProxy:
    """Forwards to `target` (`http://127.0.0.1:PORT`); the first `times` requests whose method and path match
    `rule` (e.g. `POST .*/create_flow_run$`) reach the server and are answered 503. `stalled` lists them."""

    def __init__(self, target: str, rule: str, times: int):
        self.target = target.rstrip("/")
        self.rule = re.compile(rule)
        self.left = times
        self.stalled: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                answer = httpx.request(self.command, proxy.target + self.path, headers=headers, content=body,
                                       timeout=60)  # fmt: skip
                with proxy.lock:
                    stall = proxy.left > 0 and proxy.rule.fullmatch(f"{self.command} {self.path.split('?')[0]}")
                    if stall:
                        proxy.left -= 1
                        proxy.stalled.append(f"{self.command} {self.path}")
                if stall:
                    self._send(503, b'{"detail": "stalled by the test"}', {"Content-Type": "application/json"})
                    return
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
                self._send(answer.status_code, answer.content, kept)

            def _send(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
