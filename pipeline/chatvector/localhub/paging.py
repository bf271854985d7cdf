"""Pages of a listing, with the Hub's `Link: <...>; rel="next"` header (the client follows it verbatim)."""

from __future__ import annotations

from urllib.parse import urlencode

from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import Request, Response


def paginate(hub: Hub, req: Request, items: list) -> Response:
    """The page of ITEMS the request's `cursor` (an offset) and `limit` (capped by the page size) select and,
    when more remain, an absolute link to the next page. Repeated query keys (`filter=a&filter=b`,
    `expand=x&expand=y`) are kept in the link, every value."""
    start = req.int_param("cursor", 0)
    size = min(req.int_param("limit", hub.config.page_size, minimum=1), hub.config.page_size)
    headers = {}
    if start + size < len(items):
        query = [(k, v) for k, values in req.query.items() if k != "cursor" for v in values]
        query.append(("cursor", str(start + size)))
        headers["Link"] = f'<{req.base_url}/{"/".join(req.segments)}?{urlencode(query)}>; rel="next"'
    return Response(json=items[start:start + size], headers=headers)
