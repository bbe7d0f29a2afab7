"""The web dashboard of ``agentmeter serve``: where the money and the tool time went.

Pages (all ``GET``, server-rendered HTML):

- ``/`` overview: totals, cost and tokens per hour or day stacked by model,
  customer or agent, the top customers, agents, models and tools;
- ``/sessions`` and ``/customers``: searchable tables (``?q=`` filters ids);
  ``/session?id=...`` and ``/customer?id=...``: one of them, with its calls over
  time, per-tool stats (calls, ok / failed, p50 / p95, tokens and cost inside each
  tool), its breakdowns and its budget;
- ``/tools``: per-tool stats across sessions, failures first;
- ``/budgets``: every budget with used / reserved / remaining, period and alerts
  (a live tracker; a database does not hold budgets).

Every page takes the time range as query parameters: ``range=24h|7d|30d|90d|all``
or ``since`` / ``until`` (ISO 8601, UTC), and ``bucket=auto|hour|day``.

Why server-rendered SVG and no charting library
------------------------------------------------
The charts are stacked bars over time and horizontal share bars: a few hundred
``<rect>`` elements that Python writes directly into the page, with the browser's
native ``<title>`` tooltips. That costs about 150 lines here and brings:

- nothing to vendor, pin, licence-audit or update, no CDN, no build step, and
  nothing to download: the wheel ships one CSS and one 15-line script (which only
  submits the range form when a choice changes; every page works without it);
- pages that are complete when they arrive: the numbers in the HTML are the
  numbers on screen, so tests (and ``curl``) check exactly what a user sees, and
  a headless browser needs no time for scripts to draw;
- the same data path as the REST API: every figure comes from the readers'
  public API (:class:`agentmeter.storage.UsageStore`'s rollups, or a live
  :class:`~agentmeter.Tracker`), formatted by the notebooks' rules.

A JavaScript charting library would add zooming and animated hovers; for a
dashboard that answers "which customer, which tool, how much" it is weight that
would have to be kept up to date for little use.

Security: when the server has a token, every page needs it (the ``Authorization:
Bearer`` header or the ``agentmeter_token`` cookie, checked by
:func:`agentmeter.server.auth.check_request` like the API). Opening
``/?token=...`` once (or posting the form of the refusal page to ``/login``) sets
the cookie (HttpOnly, SameSite=Strict) and answers 303 to the same URL without the
token. Every id is HTML-escaped where shown and URL-encoded where linked. The
stylesheet and the script (``/dashboard-static/...``) are package files, served
without the token: they hold no data.
"""

from __future__ import annotations

import hmac
import string
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..._display import DASH
from ..auth import COOKIE_NAME, check_request, set_token_cookie
from . import _pages
from ._source import source_of

__all__ = ["COOKIE", "STATIC_PREFIX", "mount_dashboard"]

COOKIE = COOKIE_NAME
STATIC_PREFIX = "/dashboard-static"
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_NAV = (
    ("/", "overview", "Overview"),
    ("/sessions", "sessions", "Sessions"),
    ("/customers", "customers", "Customers"),
    ("/tools", "tools", "Tools"),
    ("/budgets", "budgets", "Budgets"),
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _read(folder: str, name: str) -> str:
    return resources.files(__name__).joinpath(folder, name).read_text(encoding="utf-8")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentmeter-core")
    except Exception:  # pragma: no cover - not installed as a distribution
        return ""


def _safe_next(target: str) -> str:
    """A same-site path to go back to (never another host: no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _without_token(request: Request) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    return request.url.path + ("?" + urlencode(kept) if kept else "")


def _api_link(view: _pages.View) -> str:
    """The REST API's overview for the same range (it takes explicit times only)."""
    params = {k: v.isoformat() for k, v in view.r.kw().items()}
    return "/api/v1/usage" + ("?" + urlencode(params) if params else "")


class _Dashboard:
    def __init__(self, backend: Any, token: str | None) -> None:
        self.backend = backend
        self.token = token
        self.base = string.Template(_read("templates", "base.html"))
        self.refused = string.Template(_read("templates", "refused.html"))
        self.static = {name: _read("static", name) for name in ("dashboard.css", "dashboard.js")}
        self.version = _version()
        url = getattr(getattr(backend, "store", None), "url", None)
        if url is not None:
            from ...storage.engine import redact

            self.source_label = f"database {redact(str(url))}"
        else:
            self.source_label = "live tracker"

    # ------------------------------------------------------------ auth
    def authorized(self, request: Request) -> bool:
        return check_request(request, self.token)

    def refuse(self, request: Request, message: str, status: int = 401) -> Response:
        page = self.refused.substitute(
            static=STATIC_PREFIX,
            message=_pages.esc(message),
            next=_pages.esc(_safe_next(_without_token(request))),
        )
        return HTMLResponse(page, status_code=status, headers=_HEADERS)

    def _enter(self, request: Request, given: str, target: str) -> Response:
        """Check a token given once; on success set the cookie and go to ``target``."""
        if self.token is None:
            return RedirectResponse(target, status_code=303, headers=_HEADERS)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self.refuse(request, "That token is not the one this server was started with.")
        response = RedirectResponse(target, status_code=303, headers=_HEADERS)
        set_token_cookie(response, self.token, secure=request.url.scheme == "https")
        return response

    async def login(self, request: Request) -> Response:
        body = (await request.body())[:10_000].decode("utf-8", "replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        return self._enter(request, form.get("token", ""), _safe_next(form.get("next", "/")))

    def logout(self, request: Request) -> Response:
        response = RedirectResponse("/", status_code=303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------ pages
    def static_file(self, name: str) -> Response:
        text = self.static.get(name)
        if text is None:
            return Response("not found", status_code=404, media_type="text/plain")
        kind = _STATIC_TYPES[name[name.rfind(".") :]]
        return Response(
            text,
            media_type=kind,
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    def page(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            return self._enter(request, given, _without_token(request))
        if not self.authorized(request):
            return self.refuse(request, "This dashboard needs the server's token.")
        path = request.url.path
        here, render = _pages.PAGES[path]
        src = source_of(self.backend)
        status = 200
        try:
            view = _pages.parse_view(path, dict(request.query_params))
        except _pages.BadRequest as exc:
            view = _pages.View(path=path)
            heading, body, status = "Bad request", f'<p class="error">{_pages.esc(exc)}</p>', 400
        else:
            try:
                heading, body = render(src, view)
            except _pages.BadRequest as exc:
                heading, body, status = (
                    "Bad request",
                    f'<p class="error">{_pages.esc(exc)}</p>',
                    400,
                )
            except LookupError as exc:  # NotFoundError (and the KeyError of older readers)
                message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
                heading, body, status = (
                    "Not found",
                    f'<p class="error">{_pages.esc(message)}</p>',
                    404,
                )
        return HTMLResponse(
            self.render(view, here, heading, body), status_code=status, headers=_HEADERS
        )

    def render(self, view: _pages.View, here: str, heading: str, body: str) -> str:
        keep = view.keep()
        nav = "".join(
            f'<a href="{_pages.esc(view.href(path))}"'
            f"{' class=' + chr(34) + 'here' + chr(34) if name == here else ''}>{label}</a>"
            for path, name, label in _NAV
        )
        return self.base.substitute(
            title=_pages.esc(heading),
            heading=_pages.esc(heading),
            static=STATIC_PREFIX,
            keep=_pages.esc("?" + urlencode(keep)) if keep else "",
            api=_pages.esc(_api_link(view)),
            nav=nav,
            source=_pages.esc(self.source_label),
            body=body,
            version=_pages.esc(self.version or DASH),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )


def mount_dashboard(app: FastAPI, backend: Any, token: str | None) -> None:
    """Add the dashboard's pages to ``app`` (``create_app`` calls this).

    Args:
        app: The REST API's FastAPI application.
        backend: Its backend: a database (``backend.store``, a ``UsageStore``) or a live
            tracker (``backend.tracker``).
        token: The server's token; ``None`` leaves the pages open (like the API).
    """
    dash = _Dashboard(backend, token)
    for path in _pages.PAGES:
        app.add_api_route(
            path, dash.page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
        )
    app.add_api_route("/login", dash.login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", dash.logout, methods=["GET", "POST"], include_in_schema=False)
    app.add_api_route(
        STATIC_PREFIX + "/{name}", dash.static_file, methods=["GET"], include_in_schema=False
    )
    app.state.dashboard = dash
