"""What keeps `granary api` safe from what it is sent and from the pages it serves, in one place:

- every request body is bounded (`GRANARY_API_MAX_BODY_MIB`, 413 past it) and read only after who asks is known;
- JSON is parsed strictly: nesting, lone surrogates, `NaN`/`Infinity`/numbers out of range are a 400, not a 500;
- every answer says `nosniff` and sends no referrer to other origins (`same-origin`: with `no-referrer`, a browser's
  forms would send `Origin: null`); HTML pages may run only this API's own scripts and cannot be framed;
- a browser's cookie stands for its token only for requests made by this API's own pages: a state-changing request
  from another origin (another port of the same host included) is refused, and so is one a plain HTML form could send;
- a container's output is served so that a browser cannot run it on this origin (`served_file_headers`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers, MutableHeaders

from granary_flows.api.context import ApiError
from granary_flows.api.sessions import SESSION_COOKIE
from granary_flows.loading import refuse_repeated_keys

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SIGN_IN_PATHS = ("/login", "/logout")  # this API's own forms, posted as forms
MAX_DEPTH = 64  # nesting of a JSON body; a task's arguments need a handful
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# What a plain HTML form (or a `no-cors` fetch) can send without a preflight: never trusted with a cookie.
SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: http: https:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# A served output file: no script, no plugin, no request of its own, no frame; at most its own inline styles.
FILE_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
# Output types a browser shows without running anything; everything else is downloaded.
INERT_TYPES = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", "text/plain", "text/csv",
    "application/json", "application/geo+json",
}  # fmt: skip
# Types a browser would run if it rendered them: never sent as themselves.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/javascript")


def max_body_bytes() -> int:
    """The largest request body accepted (`GRANARY_API_MAX_BODY_MIB`, 4 MiB)."""
    return int(float(os.environ.get("GRANARY_API_MAX_BODY_MIB", "4")) * 2**20)


class BodyLimit:
    """Refuses a request whose body is larger than `max_body_bytes()` with 413, before it is read whole: by its
    `Content-Length`, or as soon as the bytes received pass the limit."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = max_body_bytes()
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send, 413, "the request body is too large", f"at most {limit} bytes are accepted")
            return
        received = 0
        answered = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge as err:
            if not answered:
                await _refuse(scope, send, 413, "the request body is too large", f"at most {err.limit} bytes")


class _TooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(limit)


async def _refuse(scope: Scope, send: Send, status: int, title: str, detail: str) -> None:
    from granary_flows.api.context import EXCEPTIONS

    kind = {413: "payload-too-large", 403: "forbidden"}.get(status, "invalid-parameter")
    body = json.dumps({"type": f"{EXCEPTIONS}/{kind}", "title": title, "status": status, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + _common_headers()})
    await send({"type": "http.response.body", "body": body})


def parse_json(body: bytes) -> Any:
    """A request body read as strict JSON.

    Example:
        >>> parse_json(b'{"inputs": {"name": "Ada"}}')
        {'inputs': {'name': 'Ada'}}

    Raises:
        ApiError: 400 for what is not JSON, nests deeper than MAX_DEPTH, holds a lone surrogate, `NaN`, `Infinity`,
            a number too large for a float, or a key twice in one object (naming it).
    """

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        text = body.decode("utf-8")
        document = json.loads(text, parse_constant=refuse_constant, object_pairs_hook=refuse_repeated_keys)
    except RecursionError as err:
        raise ApiError(400, "invalid-parameter", "the body is not acceptable JSON", "it nests too deeply") from err
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, "invalid-parameter", "the body is not JSON", str(err)) from err
    problem = _json_problem(document, 0)
    if problem:
        raise ApiError(400, "invalid-parameter", "the body is not acceptable JSON", problem)
    return document


def _json_problem(value: Any, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"it nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number is too large"
    if isinstance(value, str):
        return None if _encodable(value) else "a string holds a lone surrogate (not UTF-8)"
    items: list[Any] = []
    if isinstance(value, dict):
        if not all(_encodable(key) for key in value):
            return "a key holds a lone surrogate (not UTF-8)"
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    for item in items:
        problem = _json_problem(item, depth + 1)
        if problem:
            return problem
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _common_headers() -> list[tuple[bytes, bytes]]:
    return [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]


class SecurityHeaders:
    """`nosniff` and no referrer on every answer; on every HTML page, a policy that runs only this API's own scripts
    and forbids framing (`X-Frame-Options` for browsers that predate `frame-ancestors`)."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _common_headers():
                    headers.setdefault(name.decode(), value.decode())
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", PAGE_POLICY)
                    headers.setdefault("x-frame-options", "DENY")
            await send(message)

        await self.app(scope, receive, with_headers)


class CookieSession:
    """A browser's pages cannot send a bearer token: `/login` answers with an HTTP-only, same-site session cookie
    (`sessions`), which `Context.identify` reads. SameSite does not separate the ports of one host, so a
    state-changing request that rides the cookie must also come from this API's own pages: its `Origin` (or, without
    one, `Sec-Fetch-Site`) says the same origin, and it is not something a plain HTML form could send. Anything else
    is refused (403), and so is a login from another origin."""

    def __init__(self, app: App, public_url: Callable[[], str | None]):
        self.app = app
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method = scope["method"]
        session = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        if scope["path"] in SIGN_IN_PATHS and method == "POST" and not self._same_origin(scope, headers):
            await _refuse(scope, send, 403, "cross-site sign-in refused", "sign in from this API's own /login page")
            return
        own_form = scope["path"] in SIGN_IN_PATHS and self._same_origin(scope, headers)
        riding_cookie = session and "authorization" not in headers and method in UNSAFE_METHODS and not own_form
        if riding_cookie and not self._from_own_page(scope, headers):
            detail = "a request from another site (or a plain form) cannot act with the sign-in cookie"
            await _refuse(scope, send, 403, "cross-site request refused", detail)
            return
        await self.app(scope, receive, send)

    def _from_own_page(self, scope: Scope, headers: Headers) -> bool:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = scope["method"] != "DELETE"
        form_like = has_body and (not content_type or content_type in SIMPLE_TYPES)
        return self._same_origin(scope, headers) and not form_like

    def _same_origin(self, scope: Scope, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site") == "same-origin"
        return origin.rstrip("/") in self._own_origins(scope, headers)

    def _own_origins(self, scope: Scope, headers: Headers) -> set[str]:
        scheme = scope.get("scheme", "http")
        own = {f"{scheme}://{headers.get('host', '')}"}
        public = self.public_url()
        if public:
            parts = urlsplit(public)
            own.add(f"{parts.scheme}://{parts.netloc}")
        return own


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def served_file_headers(name: str, media_type: str) -> tuple[str, dict[str, str]]:
    """How one output file is served: its media type and headers. Inert types (pictures, plain text, JSON) are shown;
    anything else is downloaded, and a type a browser would run (HTML, SVG, XML) is not even named as itself. Either
    way the file runs in a sandbox with no script and no request of its own.

    Example:
        >>> served_file_headers("report.html", "text/html")[0]
        'application/octet-stream'
    """
    base = media_type.split(";")[0].strip().lower()
    headers = {"Content-Security-Policy": FILE_POLICY, "Cross-Origin-Opener-Policy": "same-origin"}
    if base in INERT_TYPES:
        if base.startswith("text/"):
            media_type = f"{base}; charset=utf-8"
        return media_type, headers
    if base.startswith(ACTIVE_TYPES) or base.endswith("+xml"):
        media_type = "application/octet-stream"
    filename = name.rsplit("/", 1)[-1]
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers["Content-Disposition"] = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return media_type, headers
