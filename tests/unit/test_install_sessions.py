"""Install sessions through the real handlers: POST /install-sessions (token API), GET /install?session=
and the callback (browser), GET /tokens and the admin API, with the shared events/."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.lambdas import invoke, load_event
from tests.support.observer import published_events
from ucoauth.adapters.services import Services
from ucoauth.adapters.table import digest
from ucoauth.base.observability import logger

BROWSER = "OAuthBrowserFunction"
TOKENS = "TokenApiFunction"
INSTALL_URL = "https://local.execute-api.us-east-1.amazonaws.com/install"


def create(body: Any, *, raw: str | None = None, query: str = "") -> dict[str, Any]:
    event = load_event("install-sessions-create.json")
    event["body"] = raw if raw is not None else json.dumps(body)
    event["rawQueryString"] = query
    answer: dict[str, Any] = invoke(TOKENS, event)
    return answer


def new_link(account: str = "acct-42", **fields: Any) -> tuple[str, dict[str, Any]]:
    """A session for ``account``; (the link's session secret, the 201 body)."""
    answer = create({"app_account_id": account, **fields})
    assert answer["statusCode"] == 201, answer
    body = json.loads(answer["body"])
    return parse_qs(urlsplit(body["install_url"]).query)["session"][0], body


def open_link(session: str | None, *, raw_query: str | None = None) -> dict[str, Any]:
    event = load_event("install.json")
    event["rawQueryString"] = raw_query if raw_query is not None else f"session={quote(session or '')}"
    answer: dict[str, Any] = invoke(BROWSER, event)
    return answer


def install_through(session: str, fake_uc: FakeUltraCart, merchant_id: str = "DEMO1") -> dict[str, Any]:
    """Open the link, approve as ``merchant_id``, come back: the callback's response."""
    started = open_link(session)
    assert started["statusCode"] == 302, started
    state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
    nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
    code = fake_uc.new_code(merchant_id)
    event = load_event("callback-success.json", code=code, state=state, nonce=nonce)
    answer: dict[str, Any] = invoke(BROWSER, event)
    return answer


def items(aws: LocalResources, prefix: str) -> list[dict[str, Any]]:
    found = boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"]
    return [item for item in found if item["pk"]["S"].startswith(prefix)]


def token_of(merchant_id: str) -> dict[str, Any]:
    answer = invoke(TOKENS, load_event("tokens-get.json"))
    assert answer["statusCode"] == 200
    body: dict[str, Any] = json.loads(answer["body"])
    assert body["merchant_id"] == merchant_id
    return body


def admin(raw_query: str, path: str = "/admin/installations") -> tuple[int, dict[str, Any]]:
    event = load_event("admin-installations-list.json")
    event["rawQueryString"] = raw_query
    event["queryStringParameters"] = {k: v[0] for k, v in parse_qs(raw_query).items()} or None
    answer = invoke("AdminApiFunction", event)
    return answer["statusCode"], json.loads(answer["body"])


def page_text(answer: dict[str, Any]) -> str:
    assert "Location" not in answer["headers"]
    assert answer["headers"]["Content-Type"].startswith("text/html")
    return str(answer["body"])


# -- creating a session ------------------------------------------------------------------------


def test_a_session_is_created_and_stored_only_hashed(services: Services, aws: LocalResources) -> None:
    answer = create({"app_account_id": "acct-42", "metadata": {"plan": "pro"}})
    assert answer["statusCode"] == 201
    body = json.loads(answer["body"])
    assert set(body) == {"session_id", "install_url", "expires_at"}
    url = urlsplit(body["install_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == INSTALL_URL
    assert list(parse_qs(url.query)) == ["session"]
    secret = parse_qs(url.query)["session"][0]
    assert len(secret) == 43 and body["session_id"].startswith("ses_") and secret not in body["session_id"]
    expires = datetime.fromtimestamp(services.now() + 1800, tz=UTC).isoformat().replace("+00:00", "Z")
    assert body["expires_at"] == expires
    [stored] = items(aws, "SESSION#")
    assert stored["pk"]["S"] == f"SESSION#{digest(secret)}"
    assert int(stored["expires_at"]["N"]) == services.now() + 1800
    assert stored["account"]["S"] == "acct-42" and stored["session_id"]["S"] == body["session_id"]
    assert secret not in repr(stored)


ORIGINS = "https://App.Example.com,http://localhost:5173"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"app_account_id": ""},
        {"app_account_id": "a" * 129},
        {"app_account_id": "has space"},
        {"app_account_id": "slash/no"},
        {"app_account_id": 42},
        {"app_account_id": None},
        {"app_account_id": "a", "unknown": 1},
        {"app_account_id": "a", "metadata": []},
        {"app_account_id": "a", "metadata": {str(i): "v" for i in range(11)}},
        {"app_account_id": "a", "metadata": {"": "v"}},
        {"app_account_id": "a", "metadata": {"k" * 65: "v"}},
        {"app_account_id": "a", "metadata": {"k": "v" * 257}},
        {"app_account_id": "a", "metadata": {"k": 1}},
        {"app_account_id": "a", "metadata": {"k": None}},
        {"app_account_id": "a", "metadata": {"k": "line\nbreak"}},
        {"app_account_id": "a", "return_url": "https://evil.example.com/back"},
        {"app_account_id": "a", "return_url": "http://app.example.com/back"},
        {"app_account_id": "a", "return_url": "https://app.example.com:8443/back"},
        {"app_account_id": "a", "return_url": "https://app.example.com.evil.net/"},
        {"app_account_id": "a", "return_url": "https://user@app.example.com/"},
        {"app_account_id": "a", "return_url": "javascript:alert(1)"},
        {"app_account_id": "a", "return_url": "/relative"},
        {"app_account_id": "a", "return_url": 7},
        [],
        "acct",
    ],
)
def test_anything_else_is_invalid_parameter_and_stores_nothing(
    services: Services, aws: LocalResources, body: Any
) -> None:
    services.settings = services.settings.replace(install_return_origins=("https://app.example.com:443",))
    answer = create(body)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"]) == {"error": "invalid_parameter"}
    assert items(aws, "SESSION#") == []


@pytest.mark.parametrize("raw", ["", "not json", "{", '{"app_account_id": "a"', "\u00ff", " " * 70_000])
def test_a_malformed_body_is_invalid_parameter(services: Services, aws: LocalResources, raw: str) -> None:
    answer = create(None, raw=raw)
    assert answer["statusCode"] == 400 and json.loads(answer["body"]) == {"error": "invalid_parameter"}
    assert items(aws, "SESSION#") == []


def test_a_query_string_is_invalid_parameter(services: Services, aws: LocalResources) -> None:
    answer = create({"app_account_id": "a"}, query="app_account_id=b")
    assert answer["statusCode"] == 400 and items(aws, "SESSION#") == []


def test_the_limits_themselves_are_accepted(services: Services, aws: LocalResources) -> None:
    metadata = {("k" * 63 + str(i)): "v" * 256 for i in range(10)}
    _, body = new_link("aZ09._:@-" + "x" * 119, metadata=metadata)
    assert body["session_id"]


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/back?x=1",
        "https://APP.example.com:443/back",
        "https://app.example.com",
        "http://localhost:5173/done",
    ],
)
def test_a_return_url_on_an_allowed_origin_is_taken(
    services: Services, aws: LocalResources, url: str
) -> None:
    from ucoauth.base.settings import Settings

    parsed = Settings({"INSTALL_RETURN_ORIGINS": ORIGINS}).install_return_origins
    services.settings = services.settings.replace(install_return_origins=parsed)
    _, body = new_link(return_url=url)
    [stored] = items(aws, "SESSION#")
    assert stored["return_url"]["S"] == url and body["session_id"]


# -- installing through a link -------------------------------------------------------------------


def test_an_install_through_a_link_is_linked_to_the_account(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    session, body = new_link("acct-42", metadata={"plan": "pro"})
    answer = install_through(session, fake_uc)
    assert answer["statusCode"] == 303
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.app_account_id == "acct-42"
    assert installation.account_metadata == {"plan": "pro"}
    assert installation.install_session_id == body["session_id"]
    assert token_of("DEMO1")["app_account_id"] == "acct-42"
    [completed] = [e for e in published_events(aws) if e["detail-type"] == "Installation Completed"]
    assert completed["detail"]["app_account_id"] == "acct-42"
    assert completed["detail"]["metadata"] == {"plan": "pro"}
    shown = invoke("AdminApiFunction", load_event("admin-installations-show.json"))
    detail = json.loads(shown["body"])
    assert detail["app_account_id"] == "acct-42" and detail["metadata"] == {"plan": "pro"}
    assert detail["install_session_id"] == body["session_id"]
    [stored] = items(aws, "SESSION#")
    assert "used_at" in stored
    dump = repr(boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"])
    assert session not in dump and session not in json.dumps(completed)


def test_a_used_link_gets_a_page_and_no_redirect(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    session, _ = new_link()
    assert install_through(session, fake_uc)["statusCode"] == 303
    states_before = items(aws, "STATE#")
    answer = open_link(session)
    assert answer["statusCode"] == 410
    assert "already used" in page_text(answer)
    assert items(aws, "STATE#") == states_before


def test_two_installs_started_from_one_link_complete_only_once(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    session, _ = new_link()
    first = open_link(session)
    second = open_link(session)
    assert first["statusCode"] == second["statusCode"] == 302

    def back(started: dict[str, Any], merchant_id: str) -> dict[str, Any]:
        state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
        nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
        event = load_event(
            "callback-success.json", code=fake_uc.new_code(merchant_id), state=state, nonce=nonce
        )
        answer: dict[str, Any] = invoke(BROWSER, event)
        return answer

    assert back(first, "DEMO1")["statusCode"] == 303
    exchanges = fake_uc.calls.count("exchange")
    replay = back(second, "OTHER2")
    assert replay["statusCode"] == 410 and "already used" in page_text(replay)
    assert fake_uc.calls.count("exchange") == exchanges  # the code was never exchanged
    assert services.installations.get("OTHER2") is None


def test_an_expired_link_gets_a_page(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    session, _ = new_link()
    clock.sleep(1800)
    answer = open_link(session)
    assert answer["statusCode"] == 410 and "expired" in page_text(answer)
    assert items(aws, "STATE#") == []


def test_a_link_expiring_on_the_consent_page_installs_nothing(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    services.settings = services.settings.replace(state_ttl_seconds=3600)
    session, _ = new_link()
    started = open_link(session)
    clock.sleep(1800)
    state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
    nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
    event = load_event("callback-success.json", code=fake_uc.new_code("DEMO1"), state=state, nonce=nonce)
    answer = invoke(BROWSER, event)
    assert answer["statusCode"] == 410 and "expired" in page_text(answer)
    assert "exchange" not in fake_uc.calls and services.installations.get("DEMO1") is None


@pytest.mark.parametrize(
    "raw_query",
    ["session=", "session=short", "session=" + "A" * 43, "session=" + "%00" * 43, "session=a&session=b"],
)
def test_an_unknown_or_damaged_link_gets_a_page(
    services: Services, aws: LocalResources, raw_query: str
) -> None:
    answer = open_link(None, raw_query=raw_query)
    assert answer["statusCode"] == 400
    page_text(answer)
    assert items(aws, "STATE#") == []


def test_a_refused_code_leaves_the_link_usable(services: Services, fake_uc: FakeUltraCart) -> None:
    session, _ = new_link()
    started = open_link(session)
    state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
    nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
    event = load_event("callback-success.json", code="never-issued-code", state=state, nonce=nonce)
    assert invoke(BROWSER, event)["statusCode"] == 400
    assert install_through(session, fake_uc)["statusCode"] == 303
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.app_account_id == "acct-42"


def test_the_success_page_offers_the_return_url_and_a_fixed_redirect_wins(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    services.settings = services.settings.replace(install_return_origins=("https://app.example.com:443",))
    session, _ = new_link(return_url="https://app.example.com/connected?x=1&y=2")
    answer = install_through(session, fake_uc)
    receipt = next(c for c in answer["cookies"] if c.startswith("__Host-ucoauth_receipt="))
    page = invoke(BROWSER, load_event("installed.json", receipt=receipt.split(";")[0].split("=", 1)[1]))
    assert page["statusCode"] == 200
    assert 'id="continue" href="https://app.example.com/connected?x=1&amp;y=2"' in page["body"]
    # A fixed PostInstallRedirectUrl wins over the session's return_url.
    services.settings = services.settings.replace(post_install_redirect_url="https://fixed.example.com/done")
    session, _ = new_link(return_url="https://app.example.com/connected")
    answer = install_through(session, fake_uc, "OTHER2")
    assert answer["statusCode"] == 302
    assert answer["headers"]["Location"] == "https://fixed.example.com/done?merchant_id=OTHER2"


# -- RequireInstallSession -----------------------------------------------------------------------


def test_when_required_an_install_without_a_session_gets_a_page(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    services.settings = services.settings.replace(require_install_session="true")
    answer = invoke(BROWSER, load_event("install.json"))
    assert answer["statusCode"] == 403 and "from the app" in page_text(answer)
    assert items(aws, "STATE#") == []
    session, _ = new_link()
    assert install_through(session, fake_uc)["statusCode"] == 303


def test_by_default_an_install_without_a_session_is_not_linked(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    answer = invoke(BROWSER, load_event("install.json"))
    assert answer["statusCode"] == 302
    state = parse_qs(urlsplit(answer["headers"]["Location"]).query)["state"][0]
    nonce = answer["cookies"][0].split(";")[0].split("=", 1)[1]
    event = load_event("callback-success.json", code=fake_uc.new_code("DEMO1"), state=state, nonce=nonce)
    assert invoke(BROWSER, event)["statusCode"] == 303
    assert token_of("DEMO1")["app_account_id"] is None


# -- relinking --------------------------------------------------------------------------------


def plain_reinstall(fake_uc: FakeUltraCart, merchant_id: str = "DEMO1") -> None:
    answer = invoke(BROWSER, load_event("install.json"))
    state = parse_qs(urlsplit(answer["headers"]["Location"]).query)["state"][0]
    nonce = answer["cookies"][0].split(";")[0].split("=", 1)[1]
    event = load_event("callback-success.json", code=fake_uc.new_code(merchant_id), state=state, nonce=nonce)
    assert invoke(BROWSER, event)["statusCode"] == 303


def test_relinking_is_allowed_by_default_and_announced(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    first, _ = new_link("acct-A")
    assert install_through(first, fake_uc)["statusCode"] == 303
    plain_reinstall(fake_uc)  # without a session: the link stays
    assert token_of("DEMO1")["app_account_id"] == "acct-A"
    published_events(aws)
    second, _ = new_link("acct-B", metadata={"team": "2"})
    assert install_through(second, fake_uc)["statusCode"] == 303
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.app_account_id == "acct-B"
    assert installation.account_metadata == {"team": "2"}
    relinked = [e for e in published_events(aws) if e["detail-type"] == "Installation Relinked"]
    assert [e["detail"] for e in relinked] == [
        {
            "merchant_id": "DEMO1",
            "installation_id": f"DEMO1:{installation.generation}",
            "previous_app_account_id": "acct-A",
            "app_account_id": "acct-B",
        }
    ]


def test_a_relink_event_eventbridge_refuses_is_parked_and_relayed_not_lost(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    from ucoauth.adapters.events import EventPublisher
    from ucoauth.core.outbox import relay

    class RefusingRelinks(EventPublisher):
        """EventBridge refusing the relink event once (throttled), publishing the rest."""

        refused = 0

        def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
            if detail_type == "Installation Relinked" and not self.refused:
                self.refused += 1
                return False
            return super().publish(detail_type, detail)

    first, _ = new_link("acct-A")
    assert install_through(first, fake_uc)["statusCode"] == 303
    published_events(aws)
    services.events = RefusingRelinks(services.events.bus_name)
    second, _ = new_link("acct-B")
    assert install_through(second, fake_uc)["statusCode"] == 303
    assert [e["detail-type"] for e in published_events(aws)] == ["Installation Completed"]
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.pending_event is not None
    assert "Installation Relinked" in installation.pending_event
    assert relay(services, installation)
    relinked = [e["detail"] for e in published_events(aws) if e["detail-type"] == "Installation Relinked"]
    assert relinked == [
        {
            "merchant_id": "DEMO1",
            "installation_id": f"DEMO1:{installation.generation}",
            "previous_app_account_id": "acct-A",
            "app_account_id": "acct-B",
        }
    ]
    cleared = services.installations.get("DEMO1")
    assert cleared is not None and cleared.pending_event is None


def test_relinking_refused_keeps_the_account_and_gives_the_new_grant_back(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    services.settings = services.settings.replace(install_relink="refuse")
    first, _ = new_link("acct-A")
    assert install_through(first, fake_uc)["statusCode"] == 303
    before = services.installations.get("DEMO1")
    assert before is not None
    again, _ = new_link("acct-A")  # the same account may reinstall
    assert install_through(again, fake_uc)["statusCode"] == 303
    current = services.installations.get("DEMO1")
    assert current is not None
    live = fake_uc.live_grants("DEMO1")
    second, _ = new_link("acct-B")
    answer = install_through(second, fake_uc)
    assert answer["statusCode"] == 409 and "another account" in page_text(answer)
    after = services.installations.get("DEMO1")
    assert after is not None and after.app_account_id == "acct-A" and after.version == current.version
    assert fake_uc.live_grants("DEMO1") == live  # the refused install's grant was revoked
    # Not completed: the link may still be used (for another merchant, say).
    assert install_through(second, fake_uc, "OTHER2")["statusCode"] == 303


# -- the admin list filter -----------------------------------------------------------------------


def test_the_admin_lists_an_accounts_installations_page_by_page(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    for merchant in ("M1", "M2", "M3"):
        session, _ = new_link("acct-A")
        assert install_through(session, fake_uc, merchant)["statusCode"] == 303
    session, _ = new_link("acct-B")
    assert install_through(session, fake_uc, "M4")["statusCode"] == 303
    plain_reinstall(fake_uc, "M5")
    status, body = admin("app_account_id=acct-A&limit=2")
    assert status == 200 and [i["merchant_id"] for i in body["items"]] == ["M1", "M2"]
    assert all(i["app_account_id"] == "acct-A" for i in body["items"])
    status, rest = admin(f"app_account_id=acct-A&limit=2&cursor={body['next_cursor']}")
    assert status == 200 and [i["merchant_id"] for i in rest["items"]] == ["M3"]
    assert rest["next_cursor"] is None
    status, other = admin("app_account_id=acct-B")
    assert [i["merchant_id"] for i in other["items"]] == ["M4"]
    assert admin("app_account_id=nobody")[1] == {"items": [], "next_cursor": None}
    # A cursor of one account is not another's; bad values are 400s.
    assert admin(f"app_account_id=acct-B&cursor={body['next_cursor']}") == (400, {"error": "invalid_cursor"})
    assert admin("app_account_id=bad%20id") == (400, {"error": "invalid_app_account_id"})
    assert admin("app_account_id=acct-A&status=active") == (400, {"error": "invalid_filter"})


def test_the_account_filter_reads_the_index_never_a_scan(
    services: Services, fake_uc: FakeUltraCart, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _ = new_link("acct-A")
    install_through(session, fake_uc, "M1")
    reads = services.installation_reads
    called: list[str] = []
    original = reads.account_page

    def spy(*args: Any, **kwargs: Any) -> Any:
        called.append("query")
        return original(*args, **kwargs)

    monkeypatch.setattr(reads, "account_page", spy)
    assert admin("app_account_id=acct-A")[0] == 200
    assert called == ["query"]


def test_the_session_secret_never_reaches_the_logs(
    services: Services, fake_uc: FakeUltraCart, capsys: pytest.CaptureFixture[str]
) -> None:
    services.settings = services.settings.replace(install_relink="refuse")
    buffer = io.StringIO()
    level = logger.log_level
    logger.setLevel("DEBUG")
    handler = logger.registered_handler
    stream = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        session, body = new_link("acct-A", metadata={"plan": "pro"})
        install_through(session, fake_uc)
        open_link(session)  # replayed
        other, _ = new_link("acct-B")
        install_through(other, fake_uc)  # refused
    finally:
        handler.setStream(stream)  # type: ignore[attr-defined]
        logger.setLevel(level)
    logged = capsys.readouterr()
    text = buffer.getvalue() + logged.out + logged.err
    assert body["session_id"] in text  # the non-secret id is what the logs name
    for secret in (session, other, digest(session), digest(other)):
        assert secret not in text
