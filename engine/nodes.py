"""The measure classes under the library's names (``cadence.nodes``).

The engine's measures execute on a score passed in (``await measure.execute(score)``), not on a
score captured at construction, so one cadence can run many scores at once; they are built by
``Cadence.then/sequence/sync/split/child`` rather than by hand.
"""

from __future__ import annotations

from .measures import (
    ChildMeasure,
    Measure,
    SequenceMeasure,
    SplitMeasure,
    SyncMeasure,
    ThenMeasure,
)

SingleMeasure = ThenMeasure
ParallelMeasure = SyncMeasure
BranchMeasure = SplitMeasure
ChildCadenceMeasure = ChildMeasure

__all__ = [
    "BranchMeasure",
    "ChildCadenceMeasure",
    "ChildMeasure",
    "Measure",
    "ParallelMeasure",
    "SequenceMeasure",
    "SingleMeasure",
    "SplitMeasure",
    "SyncMeasure",
    "ThenMeasure",
]
