"""A run's bundle: everything the standalone verifier needs to check the run offline."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from engine.trust import log, proofs, signing
from engine.trust.models import DefinitionSnapshot, ExecutionProof
from engine.trust.verify_bundle import BUNDLE_FORMAT

MAX_CONSISTENCY_SIZES = 16


def bundle_build(*, run: Any, proof: ExecutionProof, since: Iterable[int] = ()) -> dict[str, Any]:
    """`since`: tree sizes a verifier has already seen (from a witness); the bundle carries a
    consistency proof from each to the checkpoint it proves inclusion under."""
    proof = log.proof_in_log(proof)
    payload = json.loads(proof.canonical)
    snapshot = DefinitionSnapshot.objects.get(hash=payload["snapshot"])
    run_input, run_output = proofs.run_io(run)
    tree_head = log.tree_head_covering(index=proof.log_index)
    consistency = [
        {
            "from": size,
            "proof": [h.hex() for h in log.log_consistency(size1=size, size2=tree_head.size)],
        }
        for size in sorted(set(since))[:MAX_CONSISTENCY_SIZES]
        if 0 < size < tree_head.size
    ]
    return {
        "format": BUNDLE_FORMAT,
        "organization": payload["organization"],
        "run": {
            "id": str(run.id),
            "orchestrator": run.orchestrator_slug,
            "trigger": run.trigger,
            "status": run.status,
        },
        "snapshot": {"hash": snapshot.hash, "definition": snapshot.value},
        "input": run_input,
        "output": run_output,
        "steps": proofs.run_records(run),
        "proof": {k: v for k, v in proofs.proof_output(proof).items() if k != "log_index"},
        "log": {
            "origin": log.log_origin(),
            "index": proof.log_index,
            "tree_size": tree_head.size,
            "inclusion": [
                h.hex() for h in log.log_inclusion(index=proof.log_index, size=tree_head.size)
            ],
            "checkpoint": tree_head.note,
            "consistency": consistency,
        },
        "keys": [str(k) for k in signing.keyring().verifiers],
    }
