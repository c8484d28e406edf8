from __future__ import annotations

from orchestrators.models import OrchestratorInstance

_REACT = """flowchart TD
    start([message]) --> model[call model]
    model -->|tool calls| tools[run tools]
    tools --> model
    model -->|answer| done([final])"""


def instance_mermaid(instance: OrchestratorInstance) -> str:
    """The engine's diagram of the flow; frameworks without a flow get their agent loop."""
    if instance.framework != OrchestratorInstance.Framework.CADENCE:
        return _REACT
    from engine.flow import flow_to_mermaid
    from orchestrators.adapters.cadence import DEFAULT_FLOW

    return flow_to_mermaid(instance.flow or DEFAULT_FLOW)
