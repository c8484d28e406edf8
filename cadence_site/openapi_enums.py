"""Choice sets that share a name in several models, named once for the schema (ENUM_NAME_OVERRIDES)."""

from __future__ import annotations

from chat.models import Message
from engine.models import Run, RunLog
from orchestrators.models import OrchestratorInstance
from tenants.models import Organization
from tenants.teams.models import ShareLevel, TeamRole

FRAMEWORK = OrchestratorInstance.Framework.choices
ORCHESTRATOR_STATUS = OrchestratorInstance.Status.choices
ORGANIZATION_STATUS = Organization.Status.choices
MESSAGE_STATUS = Message.Status.choices
RUN_STATUS = Run.Status.choices
RUN_TRIGGER = Run.Trigger.choices
TEAM_ROLE = TeamRole.choices
RUN_LOG_LEVEL = RunLog.Level.choices
SHARE_LEVEL = ShareLevel.choices
