from __future__ import annotations

import copy
import pickle
import threading
from dataclasses import FrozenInstanceError, dataclass

import pytest

from engine import Atomic, AtomicDict, AtomicList, ImmutableScore, Score


@dataclass
class Agg(Score):
    results: AtomicList = None
    cache: AtomicDict = None
    total: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.results = AtomicList()
        self.cache = AtomicDict()


@dataclass(frozen=True)
class Config(ImmutableScore):
    api_key: str
    timeout: int = 30


def test_immutable_score_with_field_and_replace_return_new_scores():
    config = Config(api_key="k")
    new_config = config.with_field("timeout", 60)
    assert (config.timeout, new_config.timeout, new_config.api_key) == (30, 60, "k")
    assert config.replace(api_key="z", timeout=1) == Config(api_key="z", timeout=1)
    with pytest.raises(FrozenInstanceError):
        config.timeout = 5
    with pytest.raises(TypeError):
        config.with_field("nope", 1)


def test_atomic_list_and_dict_support_the_seed_operations():
    score = Agg()
    score.results.append("r1")
    score.results.extend(["r2", "r3"])
    score.cache["key"] = "value"
    score.results[0] = "first"
    assert score.results == ["first", "r2", "r3"]
    assert (score.cache["key"], len(score.cache), "key" in score.cache) == ("value", 1, True)
    del score.cache["key"]
    assert score.cache == {}
    assert score.results.pop() == "r3"
    assert list(score.results) == ["first", "r2"]


def test_atomic_types_survive_concurrent_threads():
    results: AtomicList = AtomicList()
    counts: AtomicDict = AtomicDict()
    total = Atomic(0)

    def work(n: int) -> None:
        for i in range(500):
            results.append((n, i))
            counts.update_item("hits", lambda v: (v or 0) + 1)
            total.update(lambda v: v + 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4000
    assert counts["hits"] == 4000
    assert total.get() == 4000


def test_atomic_types_copy_and_pickle_with_fresh_locks():
    items = AtomicList([1, [2]])
    clone = copy.deepcopy(items)
    clone[1].append(3)
    assert (items.snapshot(), clone.snapshot()) == ([1, [2]], [1, [2, 3]])
    restored = pickle.loads(pickle.dumps(AtomicDict(a=1)))
    restored["b"] = 2
    assert restored.snapshot() == {"a": 1, "b": 2}
    assert pickle.loads(pickle.dumps(Atomic(5))).get() == 5


def test_score_to_dict_is_json_ready():
    score = Agg(total=3)
    score.results.append({"x": (1, 2)})
    score.cache["k"] = {1, 2}
    assert score.to_dict() == {"results": [{"x": [1, 2]}], "cache": {"k": [1, 2]}, "total": 3}
