"""The framework helpers, each through that framework's own test client: a signed webhook is
accepted, a forged one refused, a reachability check answered, an oversized body refused."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import webhook_kits
from unimailtrack import EmailEvent, MissingDependency
from unimailtrack.webhooks import WebhookReceiver
from webhook_kits import Kit

TID = "0190a1b2c3d4e5f60718293a4b5c6d7e"
LIMIT = 32 * 1024


@dataclass
class Answer:
    status: int
    json: Callable[[], object]


Post = Callable[[str, bytes, dict[str, str]], Answer]
Get = Callable[[str], int]


@dataclass
class Harness:
    post: Post
    get: Get
    seen: list[EmailEvent]


@pytest.fixture
def kit() -> Kit:
    return webhook_kits.sendgrid()


@pytest.fixture
def receiver_and_seen(kit: Kit) -> tuple[WebhookReceiver, list[EmailEvent]]:
    seen: list[EmailEvent] = []
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, max_body_size=LIMIT, on_event=seen.append)
    return receiver, seen


# --------------------------------------------------------------------------- the frameworks


def fastapi_router(receiver: WebhookReceiver) -> Iterator[tuple[Post, Get]]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from unimailtrack.web.fastapi import router

    app = FastAPI()
    app.include_router(router(receiver), prefix="/email")
    with TestClient(app) as client:
        yield _starlette_calls(client)


def starlette_mount(receiver: WebhookReceiver) -> Iterator[tuple[Post, Get]]:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from unimailtrack.web.fastapi import mount

    app = Starlette()
    mount(app, receiver, "/email")
    with TestClient(app) as client:
        yield _starlette_calls(client)


def _starlette_calls(client: object) -> tuple[Post, Get]:
    from starlette.testclient import TestClient

    assert isinstance(client, TestClient)

    def post(path: str, body: bytes, headers: dict[str, str]) -> Answer:
        response = client.post(path, content=body, headers=headers)
        return Answer(response.status_code, response.json)

    return post, lambda path: client.get(path).status_code


def flask_blueprint(receiver: WebhookReceiver) -> Iterator[tuple[Post, Get]]:
    from flask import Flask

    from unimailtrack.web.flask import blueprint

    app = Flask("unimailtrack-test")
    app.register_blueprint(blueprint(receiver), url_prefix="/email")
    client = app.test_client()

    def post(path: str, body: bytes, headers: dict[str, str]) -> Answer:
        response = client.post(path, data=body, headers=headers)
        return Answer(response.status_code, lambda: response.get_json())

    yield post, lambda path: client.get(path).status_code


def django_urls(receiver: WebhookReceiver) -> Iterator[tuple[Post, Get]]:
    import django
    from django.conf import settings
    from django.test import Client
    from django.test.utils import override_settings
    from django.urls import include, path

    from unimailtrack.web.django import webhook_urls

    if not settings.configured:
        settings.configure(
            SECRET_KEY="unimailtrack-tests",
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            USE_TZ=True,
        )
        django.setup()
    urls = types.ModuleType("unimailtrack_test_urls")
    urls.urlpatterns = [path("email/", include(webhook_urls(receiver)))]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    client = Client(enforce_csrf_checks=True)

    def post(path: str, body: bytes, headers: dict[str, str]) -> Answer:
        kind = headers.get("Content-Type", "application/octet-stream")
        response = client.post(path, data=body, content_type=kind, headers=headers)
        return Answer(response.status_code, response.json)

    try:
        with override_settings(ROOT_URLCONF=urls.__name__):
            yield post, lambda path: client.get(path).status_code
    finally:
        del sys.modules[urls.__name__]


FRAMEWORKS = {
    "fastapi": fastapi_router,
    "starlette": starlette_mount,
    "flask": flask_blueprint,
    "django": django_urls,
}


@pytest.fixture(params=sorted(FRAMEWORKS))
def harness(
    request: pytest.FixtureRequest, receiver_and_seen: tuple[WebhookReceiver, list[EmailEvent]]
) -> Iterator[Harness]:
    receiver, seen = receiver_and_seen
    calls = FRAMEWORKS[request.param](receiver)
    post, get = next(calls)
    yield Harness(post, get, seen)
    next(calls, None)


# --------------------------------------------------------------------------- the behaviour


def test_a_signed_webhook_is_stored_through_the_framework(harness: Harness, kit: Kit) -> None:
    body, headers = kit.request(TID, "ann@example.com", "bounced")
    answer = harness.post("/email/webhooks/sendgrid", body, headers)
    assert answer.status == 200
    assert answer.json() == {"ok": True, "events": 1}
    assert [(e.tracking_id, e.type.value) for e in harness.seen] == [(TID, "bounced")]


def test_a_forged_webhook_is_refused(harness: Harness) -> None:
    body, headers = webhook_kits.sendgrid().request(TID, "ann@example.com", "delivered")
    assert harness.post("/email/webhooks/sendgrid", body, headers).status == 401
    assert harness.seen == []


def test_reachability_and_unknown_providers(harness: Harness, kit: Kit) -> None:
    assert harness.get("/email/webhooks/sendgrid") == 200
    assert harness.get("/email/webhooks/nosuch") == 404
    body, headers = kit.request(TID, "ann@example.com", "delivered")
    assert harness.post("/email/webhooks/nosuch", body, headers).status == 404


def test_an_oversized_body_is_refused_413(harness: Harness, kit: Kit) -> None:
    assert kit.batch is not None
    body, headers = kit.batch([(TID, f"g{i}@example.com", "delivered") for i in range(200)])
    assert len(body) > LIMIT
    assert harness.post("/email/webhooks/sendgrid", body, headers).status == 413
    assert harness.seen == []


# --------------------------------------------------------------------------- missing frameworks


@pytest.mark.parametrize(
    ("module", "call", "extra"),
    [
        (
            "fastapi",
            lambda r: __import__("unimailtrack.web.fastapi").web.fastapi.router(r),
            "fastapi",
        ),
        ("flask", lambda r: __import__("unimailtrack.web.flask").web.flask.blueprint(r), "flask"),
        (
            "django",
            lambda r: __import__("unimailtrack.web.django").web.django.webhook_urls(r),
            "django",
        ),
    ],
)
def test_a_missing_framework_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
    receiver_and_seen: tuple[WebhookReceiver, list[EmailEvent]],
    module: str,
    call: Callable[[WebhookReceiver], object],
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` fail
    with pytest.raises(MissingDependency, match=rf"unimailtrack\[{extra}\]"):
        call(receiver_and_seen[0])
