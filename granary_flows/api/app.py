"""`granary api`: OGC API - Processes and Granary's REST API, served by FastAPI over the registry and Prefect.

Example:
    >>> app = create_app()  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=5050)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prefect.client.orchestration import get_client

from granary_flows.api.context import ApiError, ApiSettings, Context, answer, wants_html
from granary_flows.api.identity import Authenticator, Forbidden, record
from granary_flows.api.protection import BodyLimit, CookieSession, SecurityHeaders
from granary_flows.auth import AuthSettings, current_auth
from granary_flows.errors import GranaryError


def create_app(settings: ApiSettings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """The API, for the Prefect server of this process's settings (`PREFECT_API_URL`).

    Raises:
        GranaryError: when authentication is not configured (see `api.identity`).
    """
    settings = settings or ApiSettings()
    authenticator = Authenticator(auth or current_auth())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        from granary_flows.api.callbacks import Callbacks
        from granary_flows.keys import current_keys

        with get_client(sync_client=True) as client:
            app.state.context = Context(client, settings, authenticator)
            await run_in_threadpool(current_keys, True)  # Prefect's blocks load synchronously off the event loop
            app.state.callbacks = Callbacks(app.state.context)
            app.state.callbacks.start()
            try:
                yield
            finally:
                app.state.callbacks.stop()

    app = FastAPI(
        title="granary-flows",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    from granary_flows.api import granary_api, ogc

    app.state.authenticator = authenticator
    app.include_router(ogc.router)
    app.include_router(granary_api.router)
    _documentation(app)
    _errors(app)
    _login(app)
    _refuse_nul(app)
    _static(app)
    # Outermost last: every answer gets the security headers; bodies are bounded before anything reads them.
    app.add_middleware(CookieSession, public_url=lambda: settings.public_url)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders)
    return app


def _static(app: FastAPI) -> None:
    """The pages' own scripts and styles, from the package (pages may run no other script)."""
    from pathlib import Path

    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")


def _documentation(app: FastAPI) -> None:
    from granary_flows.api.html import api_page
    from granary_flows.api.openapi import openapi30

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document() -> JSONResponse:
        return JSONResponse(openapi30(app.openapi()), media_type="application/vnd.oai.openapi+json;version=3.0")

    @app.get("/api.html", include_in_schema=False)
    def documentation(request: Request) -> HTMLResponse:
        return HTMLResponse(api_page(openapi30(app.openapi()), app.state.context.base_url(request)))


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Any:
        if err.status in (401, 403):
            identity = getattr(request.state, "identity", None)
            record(identity, request.method, request.url.path, "refused", status=err.status, client=_client(request))
        if err.status == 401 and request.method == "GET" and wants_html(request):
            return sign_in_first(request)
        return answer(request, err.document(), "error", status=err.status, headers=err.headers)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, err: Forbidden) -> Any:
        refused = ApiError(403, "forbidden", "forbidden", str(err))
        identity = getattr(request.state, "identity", None)
        record(
            identity, request.method, request.url.path, "refused", status=403, reason=str(err), client=_client(request)
        )
        return answer(request, refused.document(), "error", status=403)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Any:
        said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        refused = ApiError(400, "invalid-parameter", "invalid request", said)
        return answer(request, refused.document(), "error", status=400)

    @app.exception_handler(GranaryError)
    async def granary_error(request: Request, err: GranaryError) -> Any:
        failed = ApiError(500, "server-error", "the request failed", str(err))
        return answer(request, failed.document(), "error", status=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Any:
        logging.getLogger("granary.api").exception("%s %s failed", request.method, request.url.path)
        failed = ApiError(500, "server-error", "the request failed", type(err).__name__)
        return answer(request, failed.document(), "error", status=500)


def _refuse_nul(app: FastAPI) -> None:
    """A NUL character in a path or query is refused here: Prefect's server on PostgreSQL answers 503 to a filter
    holding one, and its client retries that for a minute before the request fails. (Arguments are checked with the
    rest of their validation.)"""

    @app.middleware("http")
    async def nul_free(request: Request, call_next: Any) -> Any:
        if "\x00" in request.scope["path"] or "\x00" in unquote_plus(request.url.query):
            refused = ApiError(400, "invalid-parameter", "invalid request", "the path or query holds a NUL character")
            return answer(request, refused.document(), "error", status=400)
        return await call_next(request)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _login(app: FastAPI) -> None:
    """A browser's pages cannot send a bearer token: /login takes one once and answers with a session cookie
    (`sessions`), which `protection.CookieSession` lets act only for this API's own pages; /logout's form ends it (a
    form, so that no other site can sign anybody out). A sign-in leads back to where the person was going (`next`, a
    path of this API only)."""

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "") -> HTMLResponse:
        from granary_flows.api.html import render_page

        return HTMLResponse(render_page("login", request, next=_own_path(next)))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Any:
        from urllib.parse import parse_qs

        from starlette.concurrency import run_in_threadpool

        from granary_flows.api.html import render_page
        from granary_flows.api.sessions import set_session_cookie, token_digest, unverified_expiry

        form = parse_qs((await request.body()).decode(errors="replace"))
        token, going = form.get("token", [""])[0], _own_path(form.get("next", [""])[0])
        context = request.app.state.context
        identity = context.identify_token(token)
        cookie = await run_in_threadpool(
            context.sessions.issue,
            identity.subject,
            identity.roles,
            identity.via,
            token_digest(token) if identity.via == "token" else None,
            unverified_expiry(token) if identity.via == "oidc" else None,
        )
        # A page that goes on to `next` by itself, rather than a redirect: the pages' form-action policy would stop a
        # form's redirect that ends on another origin (a presigned S3 link).
        response = HTMLResponse(render_page("signed-in", request, who=identity, subject=identity.subject, next=going))
        set_session_cookie(response, cookie, secure=request.url.scheme == "https")
        record(identity, "sign-in", "/login", "signed in", client=_client(request))
        return response

    @app.get("/logout", include_in_schema=False)
    def logout_page(request: Request) -> HTMLResponse:
        from granary_flows.api.html import render_page

        return HTMLResponse(render_page("logout", request))

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        from granary_flows.api.html import render_page
        from granary_flows.api.sessions import SESSION_COOKIE, end_session_cookie

        cookie = request.cookies.get(SESSION_COOKIE)
        ended = await run_in_threadpool(request.app.state.context.sessions.end, cookie) if cookie else None
        response = HTMLResponse(render_page("signed-out", request))
        end_session_cookie(response)
        if ended is not None:
            record(None, "sign-out", "/logout", "signed out", subject=ended.subject, client=_client(request))
        return response


def _own_path(going: str) -> str:
    """`going` when it is a path of this API (`/jobs/...`), else nothing: a sign-in never leads elsewhere.

    Example:
        >>> [_own_path(p) for p in ("/jobs/1?f=html", "//evil.example/", "https://evil.example/", "/\\evil")]
        ['/jobs/1?f=html', '', '', '']
    """
    if not going.startswith("/") or going.startswith("//") or "\\" in going or any(c < " " for c in going):
        return ""
    return going


def sign_in_first(request: Request) -> RedirectResponse:
    """A browser that asked for a page it must sign in for goes to /login, and back afterwards."""
    from urllib.parse import urlencode

    going = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    base = request.app.state.context.base_url(request)
    return RedirectResponse(f"{base}/login?{urlencode({'next': going})}", status_code=303)
