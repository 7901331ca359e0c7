"""JSON views of engine objects, in the API's camelCase shape (SPEC §3)."""

from __future__ import annotations

from typing import Any

from core.models import AgentState


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def agent_view(agent: AgentState) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agentId": agent.agent_id,
        "taskId": agent.task_id,
        "status": agent.status.value,
        "spawnedAt": iso(agent.spawned_at),
        "agentType": agent.agent_type.value,
        "gateProfile": agent.gate_profile.value,
        "attempts": agent.attempts,
    }
    for key, value in (
        ("startedAt", iso(agent.started_at)),
        ("completedAt", iso(agent.completed_at)),
        ("error", agent.error),
        ("summary", agent.summary),
        ("branch", agent.branch),
        ("worktree", agent.worktree),
        ("instance", agent.instance),
        ("lastOutput", agent.last_output),
        ("resources", agent.resources),
    ):
        if value is not None:
            body[key] = value
    body["usage"] = agent.usage.model_dump()
    if agent.result is not None:
        body["result"] = agent.result.model_dump(mode="json")
    return body
