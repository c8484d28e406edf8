from __future__ import annotations

import pytest
import rfc8785
from django.db import IntegrityError, transaction
from django_tenants.utils import schema_context

from engine.trust.models import DefinitionSnapshot
from engine.trust.snapshots import (
    orchestrator_definition,
    snapshot_for_orchestrator,
    snapshot_store,
)

pytestmark = pytest.mark.django_db


def test_the_same_definition_in_any_key_order_is_one_snapshot(world):
    with schema_context("org_alpha"):
        first = snapshot_store(definition={"b": [1, 2.0], "a": {"z": "é", "y": None}})
        second = snapshot_store(definition={"a": {"y": None, "z": "é"}, "b": [1.0, 2]})
        assert first.hash == second.hash
        assert DefinitionSnapshot.objects.filter(hash=first.hash).count() == 1
        assert first.canonical == '{"a":{"y":null,"z":"é"},"b":[1,2]}'
        assert first.canonical.encode() == rfc8785.dumps({"a": {"y": None, "z": "é"}, "b": [1, 2]})


def test_snapshots_have_no_update_or_delete_path(world):
    with schema_context("org_alpha"):
        snap = snapshot_store(definition={"flow": "x"})
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            DefinitionSnapshot.objects.filter(pk=snap.pk).update(canonical="{}")
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            DefinitionSnapshot.objects.filter(pk=snap.pk).delete()
        assert DefinitionSnapshot.objects.get(pk=snap.pk).canonical == '{"flow":"x"}'


def test_an_orchestrator_definition_covers_its_behaviour_and_never_its_key(world, settings):
    from orchestrators.services import llm_config_create, orchestrator_create

    settings.CADENCE_EGRESS_ALLOW_PRIVATE = True
    with schema_context("org_alpha"):
        llm = llm_config_create(
            name="snap-llm",
            provider="openai_compatible",
            base_url="http://127.0.0.1:9/v1",
            model="gpt-x",
            api_key="sk-canary-SNAPSHOT-7731",
            temperature=0.2,
        )
        instance = orchestrator_create(
            slug="snapbot", name="Snapbot", llm_config=llm, tools=["calculator"]
        )
        snap = snapshot_for_orchestrator(instance=instance)
        definition = snap.value
        assert "sk-canary-SNAPSHOT-7731" not in snap.canonical
        assert definition["llm"] == {
            "config_id": str(llm.id),
            "provider": "openai_compatible",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "gpt-x",
            "temperature": 0.2,
            "max_tokens": None,
            "timeout_seconds": 60,
            "max_retries": 2,
        }
        assert [t["name"] for t in definition["tools"]] == ["calculator"]
        assert definition["system_prompt"] == instance.system_prompt
        assert definition["framework"] == "cadence"
        assert definition["plugins"] == {"lock": {}, "settings": []}
        # an edit that changes behaviour is a new snapshot; the old one stays
        instance.system_prompt = "Answer in French."
        changed = snapshot_for_orchestrator(instance=instance)
        assert changed.hash != snap.hash
        assert DefinitionSnapshot.objects.filter(hash__in=[snap.hash, changed.hash]).count() == 2
        assert orchestrator_definition(instance)["system_prompt"] == "Answer in French."
