from __future__ import annotations

import pytest

from plugins.manifest import (
    capabilities,
    capability_diff,
    manifest_issues,
    parse_range,
    parse_version,
)
from plugins.tests.conftest import manifest


def codes(data, files=None) -> list[tuple[str, str]]:
    return [(i.path, i.code) for i in manifest_issues(data, files)]


def test_the_base_manifest_is_valid():
    assert manifest_issues(manifest()) == []


def test_unknown_fields_are_refused_at_every_level():
    data = manifest(extra=1)
    data["provides"]["tools"][0]["retries"] = 3
    data["capabilities"]["root"] = True
    found = codes(data)
    assert ("", "schema_additionalProperties") in found
    assert ("/capabilities", "schema_additionalProperties") in found
    assert ("/provides/tools/0", "schema_additionalProperties") in found


@pytest.mark.parametrize(
    "field,value",
    [
        ("id", "weather"),
        ("id", "Com.Acme.Weather"),
        ("id", "com..acme"),
        ("name", ""),
        ("version", "1.0"),
        ("version", "v1.0.0"),
        ("version", "1.0.0-beta"),
        ("version", "01.0.0"),
        ("version", "1.0.0+build.5"),
        ("kind", "root"),
        ("schema_version", 2),
        ("description", "x" * 2001),
        ("dependencies", {"com.acme.base": 5}),
        ("settings", {"type": "array"}),
    ],
)
def test_each_bad_field_is_reported_at_its_path(field, value):
    found = codes(manifest(**{field: value}))
    assert found and all(path.startswith(f"/{field}") for path, _ in found), found


@pytest.mark.parametrize("field", ["id", "name", "version", "kind", "schema_version"])
def test_each_required_field_is_required(field):
    assert codes(manifest(**{field: None})) == [("", "schema_required")]


def test_every_error_is_listed_at_once():
    found = codes(manifest(id="x", version="garbage", kind="root"))
    assert [path for path, _ in found] == ["/id", "/kind", "/version"]


def test_semantic_checks_name_the_place():
    data = manifest(capabilities={"egress": ["other.test"]})
    data["provides"]["tools"][0]["url"] = "https://api.weather.test/{nope}"
    data["dependencies"] = {"com.acme.weather": "*", "com.acme.base": ">=1,<<2"}
    found = codes(data)
    assert ("/provides/tools/0/url", "egress_not_declared") in found
    assert ("/provides/tools/0/url", "unknown_placeholder") in found
    assert ("/provides/tools/0/headers/Authorization", "secret_not_declared") in found
    assert ("/dependencies/com.acme.weather", "self_dependency") in found
    assert ("/dependencies/com.acme.base", "bad_range") in found


def test_a_tenant_plugin_cannot_declare_python_tools():
    data = manifest()
    data["provides"]["tools"].append(
        {"name": "run", "type": "python", "description": "x", "entrypoint": "tools:run"}
    )
    assert ("/provides/tools/1/type", "python_not_allowed") in codes(data)


def test_code_sources_must_exist_in_the_package():
    data = manifest()
    data["provides"]["tools"].append(
        {"name": "calc", "type": "code", "description": "x", "source": "code/calc.py"}
    )
    assert ("/provides/tools/1/source", "missing_file") in codes(data, {"cadence-plugin.json"})
    assert codes(data, {"cadence-plugin.json", "code/calc.py"}) == []


def test_flows_are_checked_against_the_engine_schema():
    data = manifest()
    data["provides"]["flows"] = [{"name": "main", "flow": {"name": "m", "steps": [{"bogus": 1}]}}]
    assert codes(data) == [("/provides/flows/0/flow/steps/0", "unknown_step")]
    data["provides"]["flows"][0]["flow"]["steps"] = [{"then": "agent"}]
    assert codes(data) == []


def test_versions_order_as_semver_and_ranges_are_pep440():
    assert (
        parse_version("1.0.0-alpha.1") < parse_version("1.0.0-beta.1") < parse_version("1.0.0-rc.1")
    )
    assert parse_version("1.0.0-rc.1") < parse_version("1.0.0") < parse_version("1.10.0")
    assert parse_version("2.0.0") in parse_range(">=1.2,<3")
    for garbage in ("1", "1.2.3.4", "latest", "", "1.0.0-dev.1"):
        with pytest.raises(ValueError):
            parse_version(garbage)
    with pytest.raises(ValueError):
        parse_range("^1.2")


def test_capability_diff_reports_widening():
    old = capabilities(manifest())
    new = capabilities(
        manifest(capabilities={"egress": ["api.weather.test", "evil.test"], "secrets": []})
    )
    diff = capability_diff(old, new)
    assert diff == {
        "added": {"egress": ["evil.test"]},
        "removed": {"secrets": ["api_key"]},
        "widened": True,
    }
    assert capability_diff(new, new)["widened"] is False
