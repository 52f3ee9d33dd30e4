"""``tilex view``'s web server: one output, read-only, on the loopback interface.

Routes (GET and HEAD only; anything else is 405, an unknown path 404):

``/``, ``/static/NAME``
    The viewer page and its scripts and styles, from this package (nothing
    is fetched from the network; the page's Content-Security-Policy allows
    requests to this server only).
``/api/info``
    The output described for the page (:func:`tilex.viewer.tiles.describe`).
``/api/tile/LEVEL/TY/TX?fields=grey,evidence,winner``
    One tile's fields, packed (:func:`tilex.viewer.tiles.pack`): one chunk
    read per field, never a whole level.
``/api/pixel?x=X&y=Y``
    Level-0 values under the cursor.
``/files/PATH``
    The output folder's files as they are (with byte ranges), for other
    OME-Zarr viewers. A path that leads outside the folder (``..``, an
    absolute path, a symlink out) is 404, like a missing one.

Requests whose ``Host`` is not this server's loopback address are refused
(403), so a web page cannot reach the server through a DNS name of its own.
The server never writes: it opens the output through
:class:`tilex.viewer.store.ContainedStore`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from tilex.errors import UsageError
from tilex.render import Pictures
from tilex.viewer.store import OutsideError, inside, open_inside
from tilex.viewer.tiles import LevelGrid, describe, pack, pixel, read_field

__all__ = ["ViewServer"]

log = logging.getLogger("tilex.view")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
}
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
_TILE = re.compile(r"/api/tile/(\d{1,3})/(\d{1,7})/(\d{1,7})")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class ViewServer(ThreadingHTTPServer):
    """Serve one output folder to a browser on ``host:port`` (port 0: a free one).

    Examples
    --------
    >>> ViewServer("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: no tilex.json ...
    """

    daemon_threads = True

    def __init__(self, out: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.output = open_inside(out)
        self.root: Path = self.output.path
        self.pictures = Pictures(self.output)
        self.grid = LevelGrid.of(self.pictures)
        self.info = json.dumps(describe(self.pictures, self.grid)).encode()
        try:
            super().__init__((host, port), _Handler)
        except OSError as err:
            raise UsageError(
                f"cannot listen on {host}:{port}: {err.strerror or err}"
                " (choose another --port, or leave it out for a free one)"
            ) from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}/"

    def hosts(self) -> set[str]:
        """The ``Host`` header values this server answers."""
        return {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]")}


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"
    server_version = "tilex-view"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain", allow="GET, HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    # ------------------------------------------------------------------ routing

    def _answer(self, *, head: bool) -> None:
        self._head = head
        if self.headers.get("Host", "") not in self.server.hosts():
            self._send(HTTPStatus.FORBIDDEN, b"unknown host\n", "text/plain")
            return
        # not urlsplit: a path starting with "//" would be taken for a host name
        path, _, query = self.path.partition("?")
        path = path.partition("#")[0]
        try:
            if path in ("/", "/index.html"):
                self._static("index.html")
            elif path.startswith("/static/"):
                self._static(path.removeprefix("/static/"))
            elif path == "/api/info":
                self._send(HTTPStatus.OK, self.server.info, "application/json")
            elif match := _TILE.fullmatch(path):
                self._tile(*map(int, match.groups()), parse_qs(query))
            elif path == "/api/pixel":
                self._pixel(parse_qs(query))
            elif path.startswith("/files/"):
                self._file(unquote(path.removeprefix("/files/")))
            else:
                self._not_found()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a tile no longer in view)
        except Exception:  # a bug or an unreadable chunk: say so, keep serving the rest
            log.exception("tilex view: %s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain")

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", _CSP)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-").title(), value)
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    # ------------------------------------------------------------------ routes

    def _static(self, name: str) -> None:
        if not _STATIC_NAME.fullmatch(name) or ".." in name.split("/"):
            self._not_found()
            return
        entry = resources.files("tilex.viewer").joinpath("static", *name.split("/"))
        if not entry.is_file():
            self._not_found()
            return
        kind = _TYPES.get(Path(name).suffix, "application/octet-stream")
        self._send(HTTPStatus.OK, entry.read_bytes(), kind)

    def _tile(self, level: int, ty: int, tx: int, query: dict[str, list[str]]) -> None:
        region = self.server.grid.region(level, ty, tx)
        names = [n for part in query.get("fields", []) for n in part.split(",") if n]
        if region is None or not names:
            self._not_found()
            return
        try:
            arrays = {n: read_field(self.server.pictures, n, level, region) for n in names}
        except KeyError:
            self._not_found()
            return
        except OSError as err:  # a chunk that leads outside OUT, or unreadable
            log.warning("tile %d/%d/%d: %s", level, ty, tx, err)
            self._not_found()
            return
        y0, y1, x0, x1 = region
        body = pack(arrays, level=level, y0=y0, x0=x0, h=y1 - y0, w=x1 - x0)
        self._send(HTTPStatus.OK, body, "application/octet-stream")

    def _pixel(self, query: dict[str, list[str]]) -> None:
        try:
            x, y = int(query["x"][0]), int(query["y"][0])
        except (KeyError, ValueError):
            self._not_found()
            return
        found = pixel(self.server.pictures, x, y)
        if found is None:
            self._not_found()
            return
        self._send(HTTPStatus.OK, json.dumps(found).encode(), "application/json")

    def _file(self, relative: str) -> None:
        try:
            if "\0" in relative or not relative:
                raise OutsideError(relative)
            real = inside(self.server.root, relative)
        except (OutsideError, OSError, ValueError):
            self._not_found()
            return
        if not real.is_file():
            self._not_found()
            return
        size = real.stat().st_size
        start, end = 0, size
        status = HTTPStatus.OK
        extra: dict[str, str] = {"accept_ranges": "bytes"}
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match and any(match.groups()):
            first, last = match.groups()
            if first:
                start, end = int(first), min(size, int(last) + 1 if last else size)
            else:
                start, end = max(0, size - int(last)), size
            if start >= end:
                self._send(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain",
                    content_range=f"bytes */{size}",
                )  # fmt: skip
                return
            status = HTTPStatus.PARTIAL_CONTENT
            extra["content_range"] = f"bytes {start}-{end - 1}/{size}"
        with open(real, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start)
        kind = _TYPES.get(real.suffix, "application/octet-stream")
        self._send(status, body, kind, **extra)
