"""Real local receivers for alert tests: an SMTP server (aiosmtpd) and an HTTP webhook endpoint."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpReceiver:
    """``with SmtpReceiver() as smtp:`` — ``smtp.port``; ``smtp.messages`` is [(from, [to], Message)]."""

    def __init__(self):
        self.messages = []
        self.port = free_port()  # aiosmtpd's start-up check cannot use port 0
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's handler name)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc):
        self._controller.stop()


class HttpReceiver:
    """``with HttpReceiver() as hooks:`` — ``hooks.port``; ``hooks.received`` is [(path, json body)]."""

    def __init__(self):
        self.received = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's handler name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                reply = b'{"errcode": 0, "code": 0}' if "slack" not in self.path else b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def texts(self) -> list[str]:
        """The message text of every WeCom-style body received."""
        return [body["text"]["content"] for _, body in self.received if "text" in body]


def chat_connection(port: int) -> str:
    """An ``AIRFLOW_CONN_*`` value: a WeCom robot webhook on the local receiver."""
    return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http",
                       "extra": {"chat": "wecom", "endpoint": "cgi-bin/webhook/send?key=test"}})
