"""Query parsing is strict, and pages escape whatever a request sent."""

from __future__ import annotations

import re

import pytest

from ucoauth.base.validation import BadInput, is_merchant_id, parse_query
from ucoauth.edges import pages

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
    page = pages.render(
        pages.Branding("<b>App</b>"),
        400,
        "err",
        "<script>alert(1)</script>",
        "<script>alert(1)</script>",
        retry_href='/install?x="><img src=x>',
    )
    assert "<script>alert" not in page.html
    assert "&lt;script&gt;" in page.html and "<b>App" not in page.html
    assert '"><img' not in page.html
    assert page.status == 400


def test_the_csp_allows_exactly_the_page_style() -> None:
    assert "default-src 'none'" in pages.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in pages.CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in pages.CONTENT_SECURITY_POLICY


# -- the stylesheet: contrast in both colour schemes, layout rules --------------------------------

_VARIABLES = re.compile(r"--([a-z-]+):(#[0-9a-fA-F]{3,6})")


def _scheme(css: str) -> str:
    """The ``:root{...}`` block of one scheme (light: the first one; dark: inside the media query)."""
    match = re.search(r":root\{([^}]*)\}", css)
    assert match is not None, "the light scheme's :root block is missing"
    return match.group(1)


def _colours(block: str) -> dict[str, str]:
    return dict(_VARIABLES.findall(block))


def _luminance(colour: str) -> float:
    hex_digits = colour.lstrip("#")
    if len(hex_digits) == 3:
        hex_digits = "".join(c * 2 for c in hex_digits)
    channels = [int(hex_digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """WCAG 2.x contrast ratio of two sRGB colours."""
    high, low = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def schemes() -> dict[str, dict[str, str]]:
    css = pages.STYLE
    dark = css.split("@media (prefers-color-scheme:dark)", 1)
    assert len(dark) == 2, "no dark colour scheme in the stylesheet"
    return {"light": _colours(_scheme(dark[0])), "dark": _colours(_scheme(dark[1]))}


def test_contrast_helper_matches_known_values() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#767676", "#fff") == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_colour_on_the_card_meets_wcag_aa(scheme: str) -> None:
    colours = schemes()[scheme]
    pairs = [(name, "card") for name in ("text", "muted", "ok", "warn", "err", "info", "link")]
    pairs += [("button-text", "button"), ("text", "page")]
    for foreground, background in pairs:
        ratio = contrast(colours[foreground], colours[background])
        assert ratio >= 4.5, f"{scheme}: {foreground} on {background} is {ratio:.2f}:1"
    # The focus ring and the card's edge must be visible against what surrounds them (3:1, non-text).
    assert contrast(colours["focus"], colours["card"]) >= 3.0


def test_both_schemes_define_the_same_colours() -> None:
    found = schemes()
    assert set(found["light"]) == set(found["dark"]) and found["light"] != found["dark"]


def test_the_layout_survives_long_ids_phones_and_forced_colours() -> None:
    css = pages.STYLE
    assert "overflow-wrap:anywhere" in css
    assert "@media (forced-colors:active)" in css
    forced = css.split("@media (forced-colors:active)", 1)[1]
    assert "a.button" in forced and "border" in forced
    assert "box-sizing:border-box" in css and "padding:1rem" in css
    page = pages.installed(
        pages.Branding("X"), "M" * 64, reinstall=False, ultracart_href="https://u.example/"
    )
    assert '<meta name="color-scheme" content="light dark">' in page.html


def test_every_page_carries_the_app_name_in_title_and_heading() -> None:
    brand = pages.Branding("Acme Sync", support_url="https://acme.example/help")
    rendered = [
        pages.installed(brand, "DEMO1", reinstall=False, ultracart_href="https://u.example/"),
        pages.receipt_expired(brand, "/install"),
        pages.declined(brand, "/install"),
        pages.link_expired(brand, "/install"),
        pages.session_timed_out(brand, "/install", minutes=10),
        pages.started_in_another_tab(brand, "/install"),
        pages.already_used(brand, "/install"),
        pages.damaged_link(brand, "/install"),
        pages.misconfigured(brand),
        pages.app_unavailable(brand, "/install"),
        pages.upstream_failed(brand, 502, "/install"),
        pages.not_found(brand, "/install"),
    ]
    for page in rendered:
        title = re.search(r"<title>(.*?)</title>", page.html)
        heading = re.search(r"<h1>(.*?)</h1>", page.html)
        assert title and heading
        assert "Acme Sync" in title.group(1) and "Acme Sync" in page.html.split("</h1>", 1)[1]
        assert page.html.count("<h1>") == 1
    for page in rendered[2:]:
        assert 'href="https://acme.example/help"' in page.html
