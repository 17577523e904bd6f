"""Region endpoints: where each region's serving app (and its audit UI) answers."""

from __future__ import annotations

from urllib.parse import urlsplit

from atlasrec.errors import InvalidInputError

MAX_ENDPOINT_CHARS = 255
"""The `regions.endpoint` column's width."""


def parse_endpoint(url: str) -> str:
    """`url` as a base URL (`http(s)://host[:port]`, no trailing slash), or a one-line error."""
    text = url.strip().rstrip("/")
    if len(text) > MAX_ENDPOINT_CHARS:
        raise InvalidInputError(f"field 'url': longer than {MAX_ENDPOINT_CHARS} characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"field 'url': {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError(f"field 'url': {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInputError(f"field 'url': {url!r} names no host")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInputError(
            f"field 'url': {url!r} must be only scheme, host and port (no path, query, "
            "fragment or credentials)"
        )
    if any(c.isspace() for c in text):
        raise InvalidInputError(f"field 'url': {url!r} contains whitespace")
    if port == 0:
        raise InvalidInputError(f"field 'url': {url!r} has port 0")
    return f"{parts.scheme}://{parts.netloc}"
