"""RFC 9162 / RFC 6962 hashing and proofs against the published test vectors of the Certificate
Transparency reference implementation (its eight-leaf corpus), then exhaustively on small trees."""

from __future__ import annotations

import hashlib
import random

import pytest

from engine.trust import verify_bundle as v
from engine.trust.merkle import EMPTY_ROOT, Frontier, MemoryTree

LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path) from the CT reference tests (0-based indices).
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    built = MemoryTree()
    for data in LEAVES:
        built.append_data(data)
    return built


def test_empty_tree_root_is_the_hash_of_nothing():
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert Frontier().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_published_vectors(tree, size):
    assert tree.root(size).hex() == ROOTS[size - 1]


def test_the_right_edge_gives_the_same_root_as_the_stored_nodes():
    partial = MemoryTree()
    for size, data in enumerate(LEAVES, start=1):
        partial.append_data(data)
        assert partial.frontier.root().hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(tree, index, size, path):
    proof = tree.inclusion(index, size)
    assert [p.hex() for p in proof] == path
    v.verify_inclusion(
        index, size, v.leaf_hash(LEAVES[index]), proof, bytes.fromhex(ROOTS[size - 1])
    )


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(tree, size1, size2, path):
    proof = tree.consistency(size1, size2)
    assert [p.hex() for p in proof] == path
    v.verify_consistency(
        size1, size2, proof, bytes.fromhex(ROOTS[size1 - 1]), bytes.fromhex(ROOTS[size2 - 1])
    )


def test_every_proof_of_small_trees_verifies_and_any_change_fails():
    rng = random.Random(7)
    full = MemoryTree()
    leaves = [rng.randbytes(8) for _ in range(40)]
    for data in leaves:
        full.append_data(data)
    for size in range(1, 41):
        root = full.root(size)
        for index in range(size):
            proof = full.inclusion(index, size)
            v.verify_inclusion(index, size, v.leaf_hash(leaves[index]), proof, root)
            with pytest.raises(v.VerifyError):
                v.verify_inclusion(index, size, v.leaf_hash(b"other"), proof, root)
            if proof:
                bent = [*proof[:-1], hashlib.sha256(proof[-1]).digest()]
                with pytest.raises(v.VerifyError):
                    v.verify_inclusion(index, size, v.leaf_hash(leaves[index]), bent, root)
                with pytest.raises(v.VerifyError):
                    v.verify_inclusion(index, size, v.leaf_hash(leaves[index]), proof[:-1], root)
        for size1 in range(0, size + 1):
            proof = full.consistency(size1, size)
            v.verify_consistency(size1, size, proof, full.root(size1), root)
            if 0 < size1 < size:
                with pytest.raises(v.VerifyError):
                    v.verify_consistency(size1, size, proof, hashlib.sha256(b"x").digest(), root)
                with pytest.raises(v.VerifyError):
                    v.verify_consistency(
                        size1,
                        size,
                        proof,
                        full.root(size1),
                        full.root(size - 1) if size1 < size - 1 else hashlib.sha256(b"y").digest(),
                    )


def test_a_rewritten_log_is_not_consistent_with_its_past():
    honest, rewritten = MemoryTree(), MemoryTree()
    for i in range(10):
        honest.append_data(bytes([i]))
        rewritten.append_data(bytes([i]) if i != 3 else b"forged")
    old_root = honest.root(6)
    with pytest.raises(v.VerifyError, match="older root"):
        v.verify_consistency(6, 10, rewritten.consistency(6, 10), old_root, rewritten.root())


def test_a_proof_outside_the_tree_is_refused(tree):
    with pytest.raises(ValueError):
        tree.inclusion(8, 8)
    with pytest.raises(ValueError):
        tree.consistency(5, 3)
    with pytest.raises(v.VerifyError):
        v.verify_inclusion(9, 8, v.leaf_hash(b""), [], tree.root())
