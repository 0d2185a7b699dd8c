"""One JSON error shape for every failure: {"error": code, "detail": reason}."""

from __future__ import annotations

from aiohttp import web


class ApiError(Exception):
    """Raised by handlers; the error middleware turns it into a JSON response."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.detail, headers=self.headers)


def json_error(status: int, code: str, detail: str, *, headers: dict | None = None) -> ApiError:
    return ApiError(status, code, detail, headers=headers)


def error_response(status: int, code: str, detail: str, *, headers=None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)
