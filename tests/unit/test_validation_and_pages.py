"""Query parsing is strict, and pages escape whatever a request sent."""

from __future__ import annotations

import pytest

from ucoauth import pages
from ucoauth.validation import BadInput, is_merchant_id, parse_query

ALLOWED = frozenset({"code", "state", "error"})


def test_known_parameters_are_parsed_and_unknown_ones_ignored() -> None:
    assert parse_query("code=abc&state=def&utm=1", allowed=ALLOWED) == {"code": "abc", "state": "def"}


@pytest.mark.parametrize(
    "raw",
    [
        "code=a&code=b",  # repeated
        "code=%00abc",  # control character
        "state=%FF%FE",  # not UTF-8
        "code=" + "a" * 5000,  # oversize
    ],
)
def test_malformed_queries_are_rejected(raw: str) -> None:
    with pytest.raises(BadInput):
        parse_query(raw, allowed=ALLOWED)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("DEMO1", True),
        ("a.b-c_d", True),
        ("", False),
        ("../x", False),
        ("a" * 65, False),
        ("<script>", False),
        ("DEMO 1", False),
        # A trailing newline passes a `$`-anchored pattern; a merchant id must match in full.
        ("DEMO1\n", False),
        ("DEMO1\r\n", False),
    ],
)
def test_merchant_ids(value: str, ok: bool) -> None:
    assert is_merchant_id(value) is ok


def test_pages_escape_everything_they_are_given() -> None:
    page = pages.bad_request("<script>alert(1)</script>", '/install?x="><img src=x>')
    assert "<script>alert" not in page.html
    assert "&lt;script&gt;" in page.html
    assert '"><img' not in page.html
    assert page.status == 400


def test_the_csp_allows_exactly_the_page_style() -> None:
    assert "default-src 'none'" in pages.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in pages.CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in pages.CONTENT_SECURITY_POLICY
