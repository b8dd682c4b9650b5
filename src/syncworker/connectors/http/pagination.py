"""How the next page of a REST listing is asked for, one class per style.

A ``Pager`` turns the answer to one page into the request for the next (query parameters and
headers), or says the listing is done. Every style refuses a cursor it has already followed:
a server that hands back the same cursor would otherwise be read for ever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from syncworker.errors import ConnectorError

PaginationKind = Literal["none", "page", "offset", "body_cursor", "header_cursor", "link"]


class RepeatedCursor(ConnectorError):
    """The server handed back a cursor (or next link) already followed: the listing would
    never end. Raised instead of reading the same pages again."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What to add to the listing's request for one page."""

    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    url: str | None = None  # a full next link (rel=next) replaces the request's URL


@dataclass(slots=True)
class PagerSettings:
    """The knobs of every style (only those of the chosen ``kind`` are read)."""

    kind: PaginationKind = "none"
    page_size: int = 100
    size_param: str | None = None
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    cursor_path: str = "next_cursor"
    cursor_param: str = "cursor"
    cursor_header: str = "record_cursor"
    cursor_request_header: str | None = "record_cursor"
    """header_cursor: the request header that carries the cursor back (Zoho: the same name);
    ``None`` sends it as the query parameter ``cursor_param``."""


def dig(data: Any, path: str) -> Any:
    """``data`` followed along the dotted ``path`` ("" is ``data``); ``None`` when absent."""
    if not path:
        return data
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


class Pager:
    """One listing's position. ``first()`` is the first page's request; ``next(response,
    body, items)`` the following one, or ``None`` at the end. Raises ``RepeatedCursor``."""

    def __init__(self, settings: PagerSettings) -> None:
        self.s = settings
        self.page = 0
        self._seen: set[str] = set()
        self._offset = 0

    def _size(self) -> dict[str, str]:
        return {self.s.size_param: str(self.s.page_size)} if self.s.size_param else {}

    def first(self) -> PageRequest:
        self.page = 1
        if self.s.kind == "page":
            return PageRequest({**self._size(), self.s.page_param: str(self.s.first_page)})
        if self.s.kind == "offset":
            return PageRequest({**self._size(), self.s.offset_param: "0"})
        return PageRequest(self._size())

    def next(self, response: httpx.Response | None, body: Any, items: int) -> PageRequest | None:
        """The request of the page after the one just read (``items`` records in it)."""
        kind = self.s.kind
        if kind == "none":
            return None
        if kind in ("page", "offset"):
            if items < self.s.page_size or items == 0:
                return None
            self.page += 1
            if kind == "page":
                number = self.s.first_page + self.page - 1
                return PageRequest({**self._size(), self.s.page_param: str(number)})
            self._offset += items
            return PageRequest({**self._size(), self.s.offset_param: str(self._offset)})
        cursor = self._cursor(response, body)
        if not cursor:
            return None
        self._remember(cursor)
        self.page += 1
        if kind == "link":
            return PageRequest(url=cursor)
        if kind == "header_cursor" and self.s.cursor_request_header:
            return PageRequest(self._size(), {self.s.cursor_request_header: cursor})
        return PageRequest({**self._size(), self.s.cursor_param: cursor})

    def _cursor(self, response: httpx.Response | None, body: Any) -> str | None:
        kind = self.s.kind
        if kind == "body_cursor":
            value = dig(body, self.s.cursor_path)
            return None if value in (None, "", False) else str(value)
        if response is None:
            return None
        if kind == "header_cursor":
            return response.headers.get(self.s.cursor_header) or None
        link = response.links.get("next")
        if not link or not link.get("url"):
            return None
        return str(response.url.join(link["url"]))

    def _remember(self, cursor: str) -> None:
        if cursor in self._seen:
            # The value itself may be a signed token: it is not quoted.
            raise RepeatedCursor(
                f"pagination ({self.s.kind}): page {self.page} handed back a cursor already "
                "followed; the listing would never end"
            )
        self._seen.add(cursor)
