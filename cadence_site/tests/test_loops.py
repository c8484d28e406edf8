"""LoopLocal: one object per running loop, a new one for a new loop, gone with its loop."""

from __future__ import annotations

import asyncio
import gc

import pytest

from cadence_site.loops import LoopLocal


def test_one_object_per_loop_and_none_left_when_the_loop_is_gone():
    made: list[object] = []

    def factory() -> object:
        made.append(object())
        return made[-1]

    local = LoopLocal(factory)

    async def twice() -> tuple[object, object]:
        return local.get(), local.get()

    first_a, first_b = asyncio.run(twice())
    second_a, _ = asyncio.run(twice())
    gc.collect()

    assert first_a is first_b  # the same loop: the same object
    assert second_a is not first_a  # a new loop never gets an old loop's object
    assert len(made) == 2
    assert len(local) == 0  # both loops are closed and gone: nothing is kept for them


def test_outside_a_running_loop_it_refuses():
    with pytest.raises(RuntimeError):
        LoopLocal(object).get()
