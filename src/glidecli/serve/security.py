"""What keeps a local server safe from the web pages its user visits, as an ASGI middleware
in front of every route:

- the Host header must name this server (a loopback name, or the --host it binds), so a
  page on another name that re-resolves to 127.0.0.1 (DNS rebinding) is refused;
- with --token, every route but the page's own static files needs `Authorization: Bearer
  TOKEN` (or HTTP Basic with the token as password, as A1111's `--api-auth` clients send);
- without a valid token, a request from another origin (its Origin header, or the
  browser's Sec-Fetch-Site) is refused on every API route: a page elsewhere can neither
  start jobs nor read pictures. The server sends no CORS headers.
"""

from __future__ import annotations

import base64
import hmac
import json
import socket
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
PUBLIC_PATHS = ("/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


def allowed_host_names(bind_host: str) -> set[str] | None:
    """The names a request's Host header may hold; None (any) when binding every address,
    where --token guards every route instead."""
    if bind_host in WILDCARD_HOSTS:
        return None
    names = {*LOOPBACK_NAMES, bind_host.strip("[]").lower()}
    if bind_host not in LOOPBACK_NAMES:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def host_name(host_header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1', '[::1]:7860' -> '::1'."""
    parsed = urlsplit(f"//{host_header}")
    return (parsed.hostname or "").lower()


class Guard:
    """The ASGI middleware: `app` behind the checks above."""

    def __init__(self, app: ASGIApp, bind_host: str, token: str | None) -> None:
        self.app = app
        self.hosts = allowed_host_names(bind_host)
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        refusal = self.refusal(scope.get("path", "/"), headers, scope.get("scheme", "http"))
        if refusal is not None:
            status, message, extra = refusal
            body = json.dumps({"detail": message}).encode()
            response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *[(k.encode(), v.encode()) for k, v in extra.items()]]
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def refusal(self, path: str, headers: dict[str, str], scheme: str) -> tuple[int, str, dict[str, str]] | None:
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return 400, f"host {host!r} is not this server's name (DNS rebinding protection); use {sorted(self.hosts)[0]}", {}
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if public:
            return None
        authorized = False
        if self.token is not None:
            authorized = self._token_given(headers.get("authorization", ""), self.token)
            if not authorized:
                return 401, "this server needs 'Authorization: Bearer TOKEN' (the --token it was started with)", {"WWW-Authenticate": "Bearer"}
        if not authorized and self._cross_origin(headers, scheme, host):
            return 403, "cross-origin requests need the server's token (start it with --token)", {}
        return None

    @staticmethod
    def _token_given(header: str, token: str) -> bool:
        scheme_word, _, value = header.partition(" ")
        value = value.strip()
        if scheme_word.lower() == "basic":  # user:TOKEN, any user
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme_word.lower() != "bearer":
            return False
        return hmac.compare_digest(value.encode(), token.encode())

    @staticmethod
    def _cross_origin(headers: dict[str, str], scheme: str, host: str) -> bool:
        origin = headers.get("origin")  # "null" from a sandboxed frame or a file:// page
        if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
            return True
        return headers.get("sec-fetch-site") in ("cross-site", "same-site")  # same-site: another port of this host
