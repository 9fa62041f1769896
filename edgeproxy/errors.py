"""The few error types, each with a status hint; mapped to responses in proxy.py."""

from __future__ import annotations

from edgeproxy.http.cache_status import ProxyError


class EdgeError(Exception):
    status_hint = 500
    proxy_error = ProxyError.PROXY_INTERNAL_ERROR


class OriginUnreachable(EdgeError):
    """Could not connect to the origin (refused, DNS, reset before a response)."""

    status_hint = 502
    proxy_error = ProxyError.CONNECTION_REFUSED

    def __init__(self, message: str, proxy_error: ProxyError = ProxyError.CONNECTION_REFUSED):
        super().__init__(message)
        self.proxy_error = proxy_error


class OriginDown(EdgeError):
    """Every server of the origin is ejected: nothing is tried (RFC 9110 15.6.4)."""

    status_hint = 503
    proxy_error = ProxyError.DESTINATION_UNAVAILABLE


class OriginTimeout(EdgeError):
    status_hint = 504
    proxy_error = ProxyError.HTTP_RESPONSE_TIMEOUT

    def __init__(self, message: str, proxy_error: ProxyError = ProxyError.HTTP_RESPONSE_TIMEOUT):
        super().__init__(message)
        self.proxy_error = proxy_error


class OriginProtocolError(EdgeError):
    status_hint = 502
    proxy_error = ProxyError.HTTP_PROTOCOL_ERROR


class BadRequest(EdgeError):
    status_hint = 400


class ConfigError(Exception):
    """One or more configuration errors, each `file:line key.path: reason`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
