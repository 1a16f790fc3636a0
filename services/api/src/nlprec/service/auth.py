"""Bearer-token checks for write and read endpoints (constant-time comparison)."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nlprec.service.config import ServiceConfig
from nlprec.service.problems import ProblemError

# auto_error=False: a missing header is our 401 problem, not FastAPI's plain 403.
bearer_scheme = HTTPBearer(auto_error=False, description="Bearer token from the service config")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _matches(presented: str, expected: str | None) -> bool:
    # compare_digest takes time independent of where the strings first differ.
    return expected is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _presented_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ProblemError(
            401, "unauthorized", "this endpoint needs 'Authorization: Bearer <token>'", _CHALLENGE
        )
    return credentials.credentials


def check_write(config: ServiceConfig, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Writes need `token`; with none configured (or read_only) they are refused outright."""
    if config.read_only:
        raise ProblemError(403, "read-only", "this service runs read_only: writes are disabled")
    if config.token is None:
        raise ProblemError(
            403, "writes-disabled", "no write token is configured (set token / NLPREC_SERVE_TOKEN)"
        )
    if not _matches(_presented_token(credentials), config.token):
        raise ProblemError(
            401, "unauthorized", "the bearer token is not valid for writes", _CHALLENGE
        )


def check_read(config: ServiceConfig, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Reads are open unless `read_token` is set; then either token is accepted."""
    if config.read_token is not None:
        _check_either_token(config, credentials)


def _check_either_token(
    config: ServiceConfig, credentials: HTTPAuthorizationCredentials | None
) -> None:
    presented = _presented_token(credentials)
    if not (_matches(presented, config.read_token) or _matches(presented, config.token)):
        raise ProblemError(401, "unauthorized", "the bearer token is not valid", _CHALLENGE)


async def require_write(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> None:
    check_write(request.app.state.config, credentials)


async def require_read(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> None:
    check_read(request.app.state.config, credentials)


def check_any(config: ServiceConfig, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Operations pages (/ready): open when no token is configured, else either token."""
    if config.read_token is not None or config.token is not None:
        _check_either_token(config, credentials)


async def require_any_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> None:
    check_any(request.app.state.config, credentials)
