"""A smart-HTTP git origin on loopback that requires basic auth (``git http-backend`` as CGI).

:func:`serve_origin` starts a threaded ``http.server`` on ``127.0.0.1`` whose every request must
carry ``Authorization: Basic`` with the expected user and token; anything else is answered
``401`` with ``WWW-Authenticate: Basic``, as a real forge does. Authorised requests are handed to
``git http-backend`` (``GIT_PROJECT_ROOT``, ``GIT_HTTP_EXPORT_ALL``, ``REMOTE_USER``), so clone,
fetch and push (``http.receivepack`` is enabled in the bare repository) speak the real protocol.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.git.conftest import sh


@dataclass
class HttpOrigin:
    """A served bare repository: ``url`` carries ``user:token``, ``bare_url`` carries nothing."""

    bare: Path
    port: int
    user: str
    token: str
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    """``(method, path, status)`` of every request answered, in order."""
    authorizations: list[str] = field(default_factory=list)
    """Every ``Authorization`` header received (what reached the server, for the tests)."""

    @property
    def bare_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.bare.name}"

    def url_with(self, user: str, token: str) -> str:
        return f"http://{user}:{token}@127.0.0.1:{self.port}/{self.bare.name}"

    @property
    def url(self) -> str:
        return self.url_with(self.user, self.token)

    def branches(self) -> list[str]:
        out = sh("--git-dir", str(self.bare), "for-each-ref", "--format=%(refname:short)")
        return out.split()

    def show(self, spec: str) -> str:
        return sh("--git-dir", str(self.bare), "show", spec)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(origin: HttpOrigin) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{origin.user}:{origin.token}".encode()).decode()
    root = str(origin.bare.parent)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the tests read ``origin.requests``

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            origin.requests.append((self.command, self.path, status))

        def _serve(self) -> None:
            body = _read_body(self)
            auth = self.headers.get("Authorization")
            if auth is not None:
                origin.authorizations.append(auth)
            if auth != expected:
                challenge = [("WWW-Authenticate", 'Basic realm="origin"')]
                self._answer(401, challenge, b"authentication required\n")
                return
            url = urlsplit(self.path)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": origin.user,
                "REMOTE_ADDR": self.client_address[0],
                "REQUEST_METHOD": self.command,
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
            }
            if encoding := self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = encoding
            if protocol := self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = protocol
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
            head, _, payload = done.stdout.partition(separator)
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self._answer(status, headers, payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextlib.contextmanager
def serve_origin(bare: Path, *, user: str, token: str) -> Iterator[HttpOrigin]:
    """Serve the bare repository ``bare`` over smart HTTP with basic auth, for the block."""
    sh("--git-dir", str(bare), "config", "http.receivepack", "true")
    origin = HttpOrigin(bare, 0, user, token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(origin))
    server.daemon_threads = True
    origin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="http-origin", daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
