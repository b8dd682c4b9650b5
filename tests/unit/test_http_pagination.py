"""The REST source's pagers, without a server: what each style asks for next."""

from __future__ import annotations

import httpx
import pytest

from syncworker.connectors.http.pagination import Pager, PagerSettings, RepeatedCursor, dig


def answer(
    headers: dict[str, str] | None = None, url: str = "https://api.test/items"
) -> httpx.Response:
    return httpx.Response(200, headers=headers or {}, request=httpx.Request("GET", url))


def test_page_numbers_until_a_short_page() -> None:
    pager = Pager(PagerSettings(kind="page", page_size=2, size_param="per_page"))
    assert pager.first().params == {"per_page": "2", "page": "1"}
    assert pager.next(answer(), {}, 2).params == {"per_page": "2", "page": "2"}  # type: ignore[union-attr]
    assert pager.next(answer(), {}, 1) is None


def test_offsets_advance_by_what_was_read() -> None:
    pager = Pager(PagerSettings(kind="offset", page_size=3, size_param="limit"))
    assert pager.first().params == {"limit": "3", "offset": "0"}
    assert pager.next(answer(), {}, 3).params["offset"] == "3"  # type: ignore[union-attr]
    assert pager.next(answer(), {}, 3).params["offset"] == "6"  # type: ignore[union-attr]
    assert pager.next(answer(), {}, 0) is None


def test_body_cursor_and_its_end() -> None:
    pager = Pager(PagerSettings(kind="body_cursor", cursor_path="meta.next", cursor_param="after"))
    pager.first()
    assert pager.next(answer(), {"meta": {"next": "c1"}}, 10).params == {"after": "c1"}  # type: ignore[union-attr]
    assert pager.next(answer(), {"meta": {"next": None}}, 10) is None
    assert pager.page == 2


def test_a_repeating_body_cursor_is_an_error_not_a_loop() -> None:
    pager = Pager(PagerSettings(kind="body_cursor"))
    pager.first()
    pager.next(answer(), {"next_cursor": "same"}, 5)
    pager.next(answer(), {"next_cursor": "other"}, 5)
    with pytest.raises(RepeatedCursor, match="already followed"):
        pager.next(answer(), {"next_cursor": "same"}, 5)


def test_header_cursor_goes_back_as_a_header_like_zoho() -> None:
    pager = Pager(PagerSettings(kind="header_cursor", page_size=1000, size_param="max_records"))
    assert pager.first().params == {"max_records": "1000"}
    following = pager.next(answer({"record_cursor": "abc"}), {}, 1000)
    assert following is not None
    assert following.headers == {"record_cursor": "abc"}
    assert following.params == {"max_records": "1000"}
    assert pager.next(answer(), {}, 400) is None
    with pytest.raises(RepeatedCursor):
        pager.next(answer({"record_cursor": "abc"}), {}, 1000)


def test_header_cursor_as_a_query_parameter() -> None:
    settings = PagerSettings(
        kind="header_cursor", cursor_header="X-Next", cursor_request_header=None
    )
    pager = Pager(settings)
    pager.first()
    following = pager.next(answer({"X-Next": "n2"}), {}, 5)
    assert following is not None and following.params == {"cursor": "n2"}


def test_link_rel_next_is_followed_and_resolved() -> None:
    pager = Pager(PagerSettings(kind="link"))
    pager.first()
    link = (
        '<https://api.test/items?page=2>; rel="next", <https://api.test/items?page=9>; rel="last"'
    )
    following = pager.next(answer({"Link": link}), {}, 10)
    assert following is not None and following.url == "https://api.test/items?page=2"
    relative = pager.next(answer({"Link": '</items?page=3>; rel="next"'}), {}, 10)
    assert relative is not None and relative.url == "https://api.test/items?page=3"
    assert (
        pager.next(answer({"Link": '<https://api.test/items?page=9>; rel="last"'}), {}, 10) is None
    )
    with pytest.raises(RepeatedCursor):
        pager.next(answer({"Link": link}), {}, 10)


def test_one_page_only() -> None:
    pager = Pager(PagerSettings(kind="none"))
    pager.first()
    assert pager.next(answer({"record_cursor": "x"}), {"next_cursor": "y"}, 100) is None


def test_dig_follows_dotted_paths() -> None:
    assert dig({"a": {"b": [1]}}, "a.b") == [1]
    assert dig({"a": 1}, "a.b") is None
    assert dig([1], "") == [1]
