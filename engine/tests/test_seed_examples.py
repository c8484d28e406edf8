"""The seed README's (001) examples up to the framework integrations, run as written
(``cadence`` → ``engine``) with the services they call replaced by small fakes. The rest of the
README and the design document (003) are in ``test_seed_examples_operations.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from engine import (
    Cadence,
    CadenceError,
    CircuitOpenError,
    MergeConflict,
    NoteError,
    Score,
    circuit_breaker,
    fallback,
    note,
    retry,
    timeout,
)

# -- fakes for the services the examples call ---------------------------------------------


class FakeDb:
    async def get_items(self, order_id: str) -> list:
        return [SimpleNamespace(price=2.5), SimpleNamespace(price=7.5)]


class FakePayments:
    def __init__(self) -> None:
        self.charged: list = []

    async def charge(self, order_id: str, total: float) -> None:
        self.charged.append((order_id, total))


db = FakeDb()
payment_service = FakePayments()


# -- README: quick start ------------------------------------------------------------------


@dataclass
class OrderScore(Score):
    order_id: str
    items: list = None
    total: float = 0.0
    status: str = "pending"


@note
async def fetch_items(score: OrderScore):
    # Fetch order items from database
    score.items = await db.get_items(score.order_id)


@note
async def calculate_total(score: OrderScore):
    score.total = sum(item.price for item in score.items)


@note
async def process_payment(score: OrderScore):
    await payment_service.charge(score.order_id, score.total)
    score.status = "paid"


def test_readme_quick_start_checkout():
    cadence = (
        Cadence("checkout", OrderScore(order_id="ORD-123"))
        .then("fetch_items", fetch_items)
        .then("calculate_total", calculate_total)
        .then("process_payment", process_payment)
    )
    result = asyncio.run(cadence.run())
    assert f"Order {result.order_id}: {result.status}" == "Order ORD-123: paid"
    assert (result.total, payment_service.charged[-1]) == (10.0, ("ORD-123", 10.0))


# -- README: the RAG pipeline -----------------------------------------------------------


@dataclass
class RAGScore(Score):
    query: str
    context: list = field(default_factory=list)
    answer: str = ""


def rag_pipeline(search_fails: bool, merge_strategy: str = "fail_on_conflict"):
    calls = {"llm": 0}

    class VectorDb:
        async def search(self, query: str) -> list:
            return ["doc-1", "doc-2"]

    class SearchApi:
        async def query(self, query: str) -> list:
            if search_fails:
                raise ConnectionError("search down")
            return ["web-1"]

    class Llm:
        async def generate(self, query: str, context: list) -> str:
            calls["llm"] += 1
            if calls["llm"] == 1:
                raise ConnectionError("overloaded")  # the first call fails, the retry succeeds
            return f"answer from {len(context)} sources"

    vector_db, search_api, llm = VectorDb(), SearchApi(), Llm()

    @note(timeout=5.0)
    async def retrieve(score: RAGScore):
        score.context = await vector_db.search(score.query)

    @note(fallback={"default": [], "field": "context"}, timeout=10.0)
    async def web_search(score: RAGScore):
        score.context += await search_api.query(score.query)

    @note(retry={"max_attempts": 3, "backoff": "exponential"}, timeout=30.0)
    async def generate(score: RAGScore):
        score.answer = await llm.generate(score.query, context=score.context)

    rag = (
        Cadence("rag", RAGScore(query="What is Cadence?"))
        .sync(
            "retrieve", [retrieve, web_search], merge_strategy=merge_strategy
        )  # parallel retrieval
        .then("generate", generate)  # LLM call with retry + timeout
    )
    return rag, calls


def test_readme_rag_pipeline_as_written_when_web_search_falls_back(clock):
    # web_search fails, its fallback leaves `context` as it was: only retrieve changed it
    rag, calls = rag_pipeline(search_fails=True)
    result = asyncio.run(rag.run())
    assert (result.context, result.answer, calls["llm"], clock.sleeps) == (
        ["doc-1", "doc-2"],
        "answer from 2 sources",
        2,
        [1.0],
    )


def test_readme_rag_pipeline_both_sources_need_smart_merge(clock):
    # As written, both notes change `context`: the default strategy refuses to guess...
    rag, _ = rag_pipeline(search_fails=False)
    with pytest.raises(NoteError) as info:
        asyncio.run(rag.run())
    conflict = info.value.original_error
    assert isinstance(conflict, MergeConflict)
    assert (conflict.field, sorted(conflict.note_names)) == (
        "context",
        ["retrieve", "web_search"],
    )
    # ...and smart_merge extends the list with both notes' additions.
    rag, _ = rag_pipeline(search_fails=False, merge_strategy="smart_merge")
    result = asyncio.run(rag.run())
    assert sorted(result.context) == ["doc-1", "doc-2", "web-1"]
    assert result.answer == "answer from 3 sources"


# -- README: core concepts ----------------------------------------------------------------


@dataclass
class MyScore(Score):
    value: int = 0
    trail: list = field(default_factory=list)
    errors: list = field(default_factory=list)


async def do_first(score: MyScore):
    score.trail.append(1)


def do_second(score: MyScore):
    score.trail.append(2)


async def do_third(score: MyScore):
    score.trail.append(3)


def test_readme_sequential_execution():
    cadence = (
        Cadence("process", MyScore())
        .then("note1", do_first)
        .then("note2", do_second)
        .then("note3", do_third)
    )
    assert asyncio.run(cadence.run()).trail == [1, 2, 3]


@dataclass
class UserScore(Score):
    user_id: str
    profile: dict = None
    preferences: dict = None
    history: list = None
    summary: str = ""


async def fetch_profile(score: UserScore):
    score.profile = {"name": "Ada"}


def fetch_preferences(score: UserScore):
    score.preferences = {"theme": "dark"}


async def fetch_history(score: UserScore):
    score.history = ["login"]


def combine_data(score: UserScore):
    score.summary = f"{score.profile['name']}/{score.preferences['theme']}/{len(score.history)}"


def test_readme_parallel_execution():
    cadence = (
        Cadence("enrich", UserScore(user_id="123"))
        .sync("fetch_data", [fetch_profile, fetch_preferences, fetch_history])
        .then("merge_results", combine_data)
    )
    assert asyncio.run(cadence.run()).summary == "Ada/dark/1"


@dataclass
class RoutedOrder(Score):
    premium: bool = False
    steps: list = field(default_factory=list)


def validate_order(score):
    score.steps.append("validate")


def is_premium_customer(score):
    return score.premium


def priority_processing(score):
    score.steps.append("priority")


async def express_shipping(score):
    score.steps.append("express")


def standard_processing(score):
    score.steps.append("standard")


async def regular_shipping(score):
    score.steps.append("regular")


async def send_confirmation(score):
    score.steps.append("confirm")


@pytest.mark.parametrize(
    ("premium", "expected"),
    [
        (True, ["validate", "priority", "express", "confirm"]),
        (False, ["validate", "standard", "regular", "confirm"]),
    ],
)
def test_readme_conditional_branching(premium, expected):
    cadence = (
        Cadence("order", RoutedOrder(premium=premium))
        .then("validate", validate_order)
        .split(
            "route",
            condition=is_premium_customer,
            if_true=[priority_processing, express_shipping],
            if_false=[standard_processing, regular_shipping],
        )
        .then("confirm", send_confirmation)
    )
    assert asyncio.run(cadence.run()).steps == expected


@dataclass
class PaymentScore(Score):
    order_id: str = ""
    paid: bool = False


@dataclass
class ShippingScore(Score):
    tracking: str = ""


@dataclass
class CheckoutScore(Score):
    prepared: bool = False
    paid: bool = False
    tracking: str = ""
    done: bool = False


def test_readme_child_cadences():
    async def charge(score: PaymentScore):
        score.paid = True

    def ship(score: ShippingScore):
        score.tracking = "TRK-1"

    def prepare_order(score: CheckoutScore):
        score.prepared = True

    def merge_payment(parent: CheckoutScore, child: PaymentScore):
        parent.paid = child.paid

    async def merge_shipping(parent: CheckoutScore, child: ShippingScore):
        parent.tracking = child.tracking

    def finalize_order(score: CheckoutScore):
        score.done = score.paid and bool(score.tracking)

    payment_cadence = Cadence("payment", PaymentScore()).then("charge", charge)
    shipping_cadence = Cadence("shipping", ShippingScore()).then("ship", ship)
    checkout_cadence = (
        Cadence("checkout", CheckoutScore())
        .then("prepare", prepare_order)
        .child("process_payment", payment_cadence, merge_payment)
        .child("arrange_shipping", shipping_cadence, merge_shipping)
        .then("complete", finalize_order)
    )
    result = asyncio.run(checkout_cadence.run())
    assert (result.prepared, result.paid, result.tracking, result.done) == (
        True,
        True,
        "TRK-1",
        True,
    )


# -- README: resilience -----------------------------------------------------------------


@dataclass
class ApiScore(Score):
    api_url: str = "http://api"
    data: object = None
    result: object = None
    status: str = ""
    id: int = 1


def test_readme_retry(clock):
    responses = iter([ConnectionError("1"), ConnectionError("2"), {"ok": True}])

    class HttpClient:
        async def get(self, url):
            item = next(responses)
            if isinstance(item, Exception):
                raise item
            return SimpleNamespace(json=lambda: item)

    http_client = HttpClient()

    @note(retry={"max_attempts": 3, "delay": 1.0, "backoff": "exponential"})
    async def call_external_api(score):
        response = await http_client.get(score.api_url)
        score.data = response.json()

    score = ApiScore()
    asyncio.run(call_external_api(score))
    assert (score.data, clock.sleeps) == ({"ok": True}, [1.0, 2.0])
    assert retry is not None  # `from cadence import retry` works too


def test_readme_timeout(clock):
    async def long_running_task():
        await clock.sleep(10)
        return "late"

    @note(timeout=5.0)
    async def slow_operation(score):
        score.result = await long_running_task()

    with pytest.raises(CadenceError) as info:
        asyncio.run(slow_operation(ApiScore()))
    assert (info.value.code, info.value.seconds) == ("TIMEOUT", 5.0)
    assert timeout is not None


def test_readme_fallback():
    class StatusService:
        async def get(self, id):
            raise ConnectionError("down")

    status_service = StatusService()

    @note(fallback={"default": "unknown", "field": "status"})
    async def get_status(score):
        score.status = await status_service.get(score.id)

    score = ApiScore()
    asyncio.run(get_status(score))
    assert score.status == "unknown"
    assert fallback is not None


def test_readme_circuit_breaker(clock):
    class FragileService:
        async def fetch(self):
            raise ConnectionError("fragile")

    fragile_service = FragileService()

    @circuit_breaker(failure_threshold=5, recovery_timeout=30.0)
    @note
    async def call_fragile_service(score):
        score.data = await fragile_service.fetch()

    for _ in range(5):
        with pytest.raises(ConnectionError):
            asyncio.run(call_fragile_service(ApiScore()))
    with pytest.raises(CircuitOpenError):
        asyncio.run(call_fragile_service(ApiScore()))
    assert call_fragile_service.circuit.state == "open"


def test_readme_combined_resilience_shorthand_and_dicts(clock):
    outcomes = iter([ConnectionError("x"), "ok"])

    class ExternalApi:
        async def call(self):
            item = next(outcomes)
            if isinstance(item, Exception):
                raise item
            return item

    external_api = ExternalApi()

    # Shorthand — covers the common case
    @note(retry=3, timeout=15.0)
    async def call_service(score):
        score.result = await external_api.call()

    score = ApiScore()
    asyncio.run(call_service(score))
    assert score.result == "ok"

    class DownApi:
        async def call(self):
            raise ConnectionError("down")

    external_api = DownApi()

    # Full control via dicts
    @note(
        retry={"max_attempts": 3, "backoff": "exponential", "delay": 0.5},
        timeout=30.0,
        fallback={"default": None, "field": "result"},
    )
    async def call_service(score):  # noqa: F811 - the seed redefines it on purpose
        score.result = await external_api.call()

    score = ApiScore(result="stale")
    asyncio.run(call_service(score))
    assert score.result is None


# -- README: framework integrations ------------------------------------------------------

checkout_cadence = Cadence("checkout", OrderScore(order_id="")).then(
    "process_payment", process_payment
)


def test_readme_fastapi():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from engine.integrations.fastapi import CadenceRouter

    app = FastAPI()
    router = CadenceRouter()

    @router.cadence("/orders/{order_id}", checkout_cadence)
    async def create_order(order_id: str):
        return OrderScore(order_id=order_id)

    app.include_router(router)
    response = TestClient(app).post("/orders/ORD-9")
    assert response.json() == {"order_id": "ORD-9", "items": None, "total": 0.0, "status": "paid"}


def test_readme_flask():
    from flask import Flask

    from engine.integrations.flask import CadenceBlueprint

    app = Flask(__name__)
    bp = CadenceBlueprint("orders", __name__)

    @bp.cadence_route("/orders/<order_id>", checkout_cadence)
    def create_order(order_id):
        return OrderScore(order_id=order_id)

    app.register_blueprint(bp)
    assert app.test_client().post("/orders/ORD-8").get_json()["status"] == "paid"
