"""The response headers SockJS asks for: CORS with credentials, never-cache for session traffic, a year of caching
for static answers, and the JSESSIONID cookie that load balancers use for sticky sessions."""

from __future__ import annotations

import time
from email.utils import formatdate

from starlette.datastructures import Headers

ONE_YEAR_S = 31_536_000
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0"}


def cacheable() -> dict[str, str]:
    expires = formatdate(time.time() + ONE_YEAR_S, usegmt=True)
    return {"Cache-Control": f"public, max-age={ONE_YEAR_S}", "Expires": expires}


def cors(request: Headers) -> dict[str, str]:
    """The request's own Origin echoed (the caller checked it is allowed), with credentials, so cookies ride along;
    "*" for requests with no origin or the "null" origin of file:// pages."""
    origin = request.get("origin")
    headers = {
        "Access-Control-Allow-Origin": origin if origin and origin != "null" else "*",
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
    if wanted := request.get("access-control-request-headers"):
        headers["Access-Control-Allow-Headers"] = wanted
    return headers


def preflight(request: Headers, methods: str) -> dict[str, str]:
    """The answer to an OPTIONS request: cacheable for a year, like the preflight result itself."""
    return {
        **cacheable(),
        **cors(request),
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Max-Age": str(ONE_YEAR_S),
    }


def jsessionid(cookie: str | None) -> dict[str, str]:
    """The JSESSIONID cookie, echoed when the request has one (a value a load balancer gave it), else "dummy"."""
    return {"Set-Cookie": f"JSESSIONID={cookie or 'dummy'}; Path=/"}
