from __future__ import annotations

import pytest

from plugins.archive import MAX_PACKAGE_BYTES, PackageError, inspect_package
from plugins.tests import hostile
from plugins.tests.conftest import package


@pytest.mark.parametrize("name", sorted(hostile.CORPUS))
def test_every_hostile_package_is_refused_with_its_reason(name):
    build, code = hostile.CORPUS[name]
    with pytest.raises(PackageError) as caught:
        inspect_package(build(), expected_kind="tenant")
    assert caught.value.code == code, caught.value.message


def test_python_in_a_tenant_package_names_the_file():
    with pytest.raises(PackageError) as caught:
        inspect_package(hostile.python_in_tenant(), expected_kind="tenant")
    assert [(i.path, i.code) for i in caught.value.issues] == [("/evil.py", "code_not_allowed")]


def test_size_is_capped_before_parsing():
    with pytest.raises(PackageError) as caught:
        inspect_package(b"\0" * (MAX_PACKAGE_BYTES + 1))
    assert caught.value.code == "too_large"


def test_a_good_package_is_read_with_its_hash():
    raw = package()
    found = inspect_package(raw, expected_kind="tenant")
    assert found.plugin_id == "com.acme.weather" and found.version == "1.0.0"
    import hashlib

    assert found.sha256 == hashlib.sha256(raw).hexdigest()
    assert found.names == ["cadence-plugin.json"]


def test_packing_is_deterministic():
    assert package() == package()


def test_a_system_package_cannot_be_uploaded_as_tenant():
    from plugins.tests.conftest import manifest

    with pytest.raises(PackageError) as caught:
        inspect_package(package(manifest(kind="system")), expected_kind="tenant")
    assert ("/kind", "wrong_kind") in [(i.path, i.code) for i in caught.value.issues]
