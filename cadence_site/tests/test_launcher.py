"""What `make run` adds for local development, and what it reports at start."""

from __future__ import annotations

import logging

import pytest

from cadence_site import launcher


def test_make_run_allows_loopback_model_servers_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="cadence.launcher"):
        added = launcher.local_development_defaults({})

    assert added == {"CADENCE_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"}
    assert "model servers on this machine" in caplog.text
    assert "set CADENCE_EGRESS_ALLOWED_NETWORKS= to refuse them" in caplog.text


def test_an_operator_setting_wins_even_when_empty(caplog):
    with caplog.at_level(logging.INFO, logger="cadence.launcher"):
        assert launcher.local_development_defaults({"CADENCE_EGRESS_ALLOWED_NETWORKS": ""}) == {}
        assert (
            launcher.local_development_defaults({"CADENCE_EGRESS_ALLOWED_NETWORKS": "10.0.0.0/8"})
            == {}
        )

    assert "(none: public addresses only)" in caplog.text
    assert "CADENCE_EGRESS_ALLOWED_NETWORKS=10.0.0.0/8 (from the environment)" in caplog.text


def test_the_start_reports_missing_frameworks_and_how_to_add_them(caplog, monkeypatch):
    import orchestrators.adapters as adapters

    with caplog.at_level(logging.INFO, logger="cadence.launcher"):
        launcher.report_frameworks()
        monkeypatch.setattr(adapters, "framework_available", lambda name: name == "cadence")
        launcher.report_frameworks()

    assert "frameworks installed: cadence, langgraph, openai_agents" in caplog.text
    assert "frameworks not installed: langgraph, openai_agents" in caplog.text
    assert "requirements-extras.txt" in caplog.text


def test_web_concurrency_sets_the_server_processes_and_refuses_nonsense():
    from cadence_site.launcher import web_concurrency

    assert web_concurrency({}) == 1
    assert web_concurrency({"WEB_CONCURRENCY": " 2 "}) == 2
    for bad in ("two", "0", "65", "1.5"):
        with pytest.raises(SystemExit, match="WEB_CONCURRENCY"):
            web_concurrency({"WEB_CONCURRENCY": bad})
