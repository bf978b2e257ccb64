"""`fl-audit serve`: the HTML report as a read-only web page, recomputed on every request.

Built on the standard library's `http.server` (a threading server): the page is one document
with no script, form or asset, so a framework would add code and dependencies to audit and
nothing an auditor needs. Only GET of `/` is served; every other method is answered 405 with
`Allow: GET`, other paths 404. Each request opens its own read-only snapshot of the registry and
verifies it anew, so the page shows the ledger as it is now, never a cached verdict. The default
address is 127.0.0.1: exposing it further (`--host 0.0.0.0`, as a compose service does) is a
choice, and the page holds nothing secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedseal.registry.errors import RegistryUnavailable

from .render import render_html
from .report_data import build_report
from .snapshot import load_snapshot, open_readonly
from .verify import verify

__all__ = ["make_page", "make_server"]

log = logging.getLogger(__name__)

_SECURITY_HEADERS = {
    # the page needs nothing but its inline style and its data: image
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def make_page(url: str, pinned_key: bytes | None = None) -> Callable[[], str]:
    """A function that snapshots the registry at `url`, verifies it and renders the page.

    Checks once, now, that the database can be read (`RegistryUnavailable` otherwise).
    """
    engine = open_readonly(url)

    def page() -> str:
        snapshot = load_snapshot(engine, url)
        return render_html(build_report(snapshot, verify(snapshot, pinned_key)))

    return page


class _Handler(BaseHTTPRequestHandler):
    page: Callable[[], str]
    server_version = "fl-audit"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/index.html"):
            self._send(HTTPStatus.NOT_FOUND, "not found: the report is at /\n", "text/plain")
            return
        try:
            body = type(self).page()
        except RegistryUnavailable as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n", "text/plain")
            return
        self._send(HTTPStatus.OK, body, "text/html")

    def _refuse(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "this page is read-only: GET only\n",
            "text/plain",
            {"Allow": "GET"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _send(
        self,
        status: HTTPStatus,
        body: str,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Unknown methods (the server's own 501) are 405s too: the page is GET-only."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            self._refuse()
            return
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(host: str, port: int, page: Callable[[], str]) -> ThreadingHTTPServer:
    """A server answering GET / with `page()`; port 0 picks a free one (see `server_address`)."""
    handler = type("AuditPageHandler", (_Handler,), {"page": staticmethod(page)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
