"""The iframe page of the iframe-based transports: it loads sockjs-client from the server's own origin and relays
to the page by postMessage. Strongly cached: a year, with an ETag the same for every request."""

from __future__ import annotations

import hashlib
import html

from starlette.datastructures import Headers
from starlette.responses import Response

from nbrelay.push.transports.sockjs.headers import cacheable

_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script>
    document.domain = document.domain;
    _sockjs_onload = function(){{SockJS.bootstrap_iframe();}};
  </script>
  <script src="{client_url}"></script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


class IframePage:
    def __init__(self, client_url: str):
        self.body = _PAGE.format(client_url=html.escape(client_url, quote=True)).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def response(self, request: Headers) -> Response:
        headers = {"ETag": self.etag, **cacheable()}
        if request.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, headers=headers, media_type="text/html; charset=UTF-8")
