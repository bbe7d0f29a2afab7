"""The API's one lock: a token, checked in constant time, by every endpoint but health.

A request is authorised when it carries the token given to ``create_app`` /
``agentmeter serve --token`` as

- ``Authorization: Bearer <token>`` (scripts, ``curl``), or
- the cookie ``agentmeter_token`` (browsers; set HttpOnly, SameSite=Strict by
  :func:`set_token_cookie`, e.g. by the dashboard's ``/?token=...`` redirect).

Without a configured token every read is open (the server binds to 127.0.0.1 by
default) and ``POST /api/v1/usage/reset`` is disabled.

Query strings are never accepted as credentials by the API, and
:class:`RedactTokenFilter` keeps ``token=...`` out of uvicorn's access log for the
one route (the dashboard's) that takes it from the URL.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPBearer

__all__ = [
    "BEARER",
    "COOKIE",
    "COOKIE_NAME",
    "RedactTokenFilter",
    "check_request",
    "redact_query",
    "require_token",
    "set_token_cookie",
]

COOKIE_NAME = "agentmeter_token"
# Documents the scheme in the OpenAPI spec; the check itself is check_request.
BEARER = HTTPBearer(
    auto_error=False,
    description="The token given to create_app(token=...) / agentmeter serve --token "
    f"(or the {COOKIE_NAME} cookie)",
)
COOKIE = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description="The token in an HttpOnly, SameSite=Strict cookie (browsers)",
)
_AUTH_FAILED = "missing or wrong token: send 'Authorization: Bearer <token>'"


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def check_request(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries ``token`` (always true when no token is configured).

    Accepts ``Authorization: Bearer <token>`` or the ``agentmeter_token`` cookie; both
    compared with :func:`hmac.compare_digest`.
    """
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and _same(credentials.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie is not None and _same(cookie, token)


def require_token(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that answers 401 unless the request carries ``token``."""

    def dependency(request: Request) -> None:
        if not check_request(request, token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                _AUTH_FAILED,
                headers={"WWW-Authenticate": "Bearer"},
            )

    return dependency


def set_token_cookie(response: Any, token: str, *, secure: bool = False) -> None:
    """Store ``token`` in the browser: HttpOnly, SameSite=Strict, whole site, session cookie.

    ``secure=True`` (behind HTTPS) also sets the ``Secure`` flag.
    """
    response.set_cookie(
        COOKIE_NAME, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


_TOKEN_IN_QUERY = re.compile(r"(?i)([?&][^=&#]*token=)[^&#\s]*")


def redact_query(text: str) -> str:
    """``text`` with the value of every ``...token=`` query parameter replaced by ``***``."""
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


class RedactTokenFilter(logging.Filter):
    """Masks ``token=`` query values in log records (uvicorn's access log puts the
    request path with its query string in ``record.args``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "token" in a for a in args):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and "token" in record.msg:
            record.msg = redact_query(record.msg)
        return True
