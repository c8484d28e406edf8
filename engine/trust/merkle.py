"""An append-only Merkle tree (RFC 9162 hashing) over a store of complete subtrees.

Every complete subtree's hash is kept once, as node (level, index): leaves are level 0, node
(l, i) covers leaves [i * 2**l, (i + 1) * 2**l). An append writes the new leaf and the nodes it
completes (two per leaf on average) and keeps the tree's right edge (its compact range) so that
appending reads nothing. Any root, inclusion proof or consistency proof is made of O(log n)
stored nodes: the proof functions first list the nodes they need, fetch them in one call, then
combine them, so a database-backed store answers a proof in one query at any tree size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from engine.trust.verify_bundle import leaf_hash, node_hash

EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

NodeKey = tuple[int, int]  # (level, index)
Fetch = Callable[[Sequence[NodeKey]], dict[NodeKey, bytes]]


def _split(n: int) -> int:
    """The largest power of two below n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _complete(start: int, end: int) -> NodeKey | None:
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return (level, start >> level)
    return None


def _range_nodes(start: int, end: int, out: list[NodeKey]) -> None:
    key = _complete(start, end)
    if key is not None:
        out.append(key)
        return
    k = _split(end - start)
    _range_nodes(start, start + k, out)
    _range_nodes(start + k, end, out)


def _range_hash(start: int, end: int, nodes: dict[NodeKey, bytes]) -> bytes:
    key = _complete(start, end)
    if key is not None:
        return nodes[key]
    k = _split(end - start)
    return node_hash(_range_hash(start, start + k, nodes), _range_hash(start + k, end, nodes))


def _inclusion_ranges(index: int, start: int, end: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]  # RFC order: the leaf's sibling first


def _consistency_ranges(m: int, start: int, end: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    flag = True
    while True:
        n = end - start
        if m == n:
            if not flag:
                ranges.append((start, end))
            break
        k = _split(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            flag = False
    return ranges[::-1]


def _hashes(ranges: Iterable[tuple[int, int]], fetch: Fetch) -> list[bytes]:
    ranges = list(ranges)
    wanted: list[NodeKey] = []
    for start, end in ranges:
        _range_nodes(start, end, wanted)
    nodes = fetch(sorted(set(wanted)))
    return [_range_hash(start, end, nodes) for start, end in ranges]


def root(size: int, fetch: Fetch) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    return _hashes([(0, size)], fetch)[0]


def inclusion_proof(index: int, size: int, fetch: Fetch) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    return _hashes(_inclusion_ranges(index, 0, size), fetch)


def consistency_proof(size1: int, size2: int, fetch: Fetch) -> list[bytes]:
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    return _hashes(_consistency_ranges(size1, 0, size2), fetch)


@dataclass
class Frontier:
    """The tree's right edge: the roots of its complete subtrees, largest first, and its size."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the nodes it completes as (level, index, hash)."""
        index, level, current = self.size, 0, leaf
        created = [(0, index, leaf)]
        while index & 1:
            current = node_hash(self.hashes.pop(), current)
            index >>= 1
            level += 1
            created.append((level, index, current))
        self.hashes.append(current)
        self.size += 1
        return created

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = node_hash(left, result)
        return result

    def to_json(self) -> list[str]:
        return [h.hex() for h in self.hashes]

    @classmethod
    def from_json(cls, size: int, hashes: Sequence[str]) -> Frontier:
        frontier = cls(size, [bytes.fromhex(h) for h in hashes])
        if len(frontier.hashes) != size.bit_count():
            raise ValueError("the stored right edge does not fit the tree size")
        return frontier


class MemoryTree:
    """The same tree in a dict (tests, benchmarks, and checking a store against a recomputation)."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.frontier = Frontier()

    def append_data(self, data: bytes) -> int:
        return self.append(leaf_hash(data))

    def append(self, leaf: bytes) -> int:
        index = self.frontier.size
        for level, i, value in self.frontier.append(leaf):
            self.nodes[(level, i)] = value
        return index

    def fetch(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        return {key: self.nodes[key] for key in keys}

    @property
    def size(self) -> int:
        return self.frontier.size

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self.fetch)

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.fetch)

    def consistency(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self.size if size2 is None else size2, self.fetch)
