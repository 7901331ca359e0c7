"""The OpenAPI document served at ``/openapi.json``: exactly what the server does (SPEC §18).

Every schema is generated from the wire models of ``core.models`` (the request body from
``SpawnRequest``, with its patterns and limits; the answers from ``AgentView`` and the others),
so the document, the server and the attach-mode client share one definition. Each operation
lists every status it can answer, with its body and headers:

- 400 where input is validated (the spawn body, ``?status=``, ``Last-Event-ID``);
- 401 (with ``WWW-Authenticate``) on every route but ``/health``, only when an API key is set;
  ``security`` follows the same setting;
- 403 on every route (``Host`` / ``Origin`` guard, ``core/api/guard.py``);
- 404 for an agent id that is unknown or not an agent id at all, and for a spawn naming a local
  path that is not a git repository;
- 405 with ``Allow`` (the path exists, the method does not);
- 409, 413, 415 (every POST: a body that is not JSON), 503 (not ready, Valkey unreachable,
  too many event streams).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from core.api.sse import EVENT_ID
from core.git.diff import DIFF_MAX_BYTES
from core.models import (
    AGENT_ID_PATTERN,
    AgentList,
    AgentStatus,
    AgentView,
    ErrorBody,
    Event,
    EventType,
    Health,
    KillAllResult,
    QueueState,
    QueueStats,
    Readiness,
    SpawnRequest,
    SpawnResponse,
)

REF = "#/components/schemas/{model}"
EVENT_ID_OR_NOTHING = {"anyOf": [{"maxLength": 0}, {"pattern": EVENT_ID.pattern}]}
"""``Last-Event-ID``: an event stream entry id (``1712345678901-0``), or nothing."""

_RESPONSES: list[type[BaseModel]] = [
    Event,
    SpawnResponse,
    AgentView,
    AgentList,
    KillAllResult,
    QueueStats,
    QueueState,
    Health,
    Readiness,
    ErrorBody,
]


def _schemas(skills: list[str] | None, runtimes: list[str] | None) -> dict[str, Any]:
    _, top = models_json_schema(
        [(SpawnRequest, "validation"), *((model, "serialization") for model in _RESPONSES)],
        by_alias=True,
        ref_template=REF,
    )
    defs = dict(top["$defs"])
    if skills is not None:  # the skills MOSAIC_SKILLS_DIR holds: any other name is a 400
        prop = defs["SpawnContext"]["properties"]["skills"]
        if skills:
            prop["items"] = {**prop.get("items", {}), "enum": sorted(skills)}
        else:
            prop["maxItems"] = 0
    if runtimes is not None:  # the runtimes that can run here; another one is 503 (or 400)
        for option in defs["SpawnRequest"]["properties"]["runtime"]["anyOf"]:
            if "enum" in option:
                option["enum"] = [r for r in option["enum"] if r in runtimes]
    return defs


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(model)}},
    }
    if headers:
        response["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


def _error(description: str, **headers: str) -> dict[str, Any]:
    return _json(ErrorBody, description, **headers)


FORBIDDEN = _error("the Host or Origin header names no origin this server serves")
NOT_ALLOWED = _error(
    "the path exists, not with this method", Allow="the methods the path has, comma-separated"
)
UNAUTHORIZED = _error(
    "missing or wrong bearer token", **{"WWW-Authenticate": "the scheme to use: Bearer"}
)
UNSUPPORTED = _error("a body whose Content-Type is not application/json")
VALKEY_DOWN = _error("Valkey is not reachable (code store_unavailable; retry after Retry-After)")


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    auth: bool,
    open_route: bool = False,
    post: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    common: dict[str, Any] = {"403": FORBIDDEN, "405": NOT_ALLOWED}
    if auth and not open_route:
        common["401"] = UNAUTHORIZED
    if post:
        common["415"] = UNSUPPORTED
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        **extra,
        "responses": dict(sorted({**common, **responses}.items())),
    }
    if open_route:
        operation["security"] = []
    return operation


AGENT_ID = {
    "name": "agentId",
    "in": "path",
    "required": True,
    "description": "an agent id (a lowercase UUID); any other value is 404, as an unknown agent",
    "schema": {"type": "string", "pattern": AGENT_ID_PATTERN},
}


def openapi_document(
    *,
    auth: bool,
    max_body_bytes: int = 1_048_576,
    skills: list[str] | None = None,
    runtimes: list[str] | None = None,
) -> dict[str, Any]:
    """The document; ``auth``: whether ``ORCHESTRATOR_API_KEY`` guards the routes (401);
    ``skills``: the skill names a spawn may use, ``runtimes`` the runtimes that can run (None:
    not known here)."""
    agent_not_found = _error("no agent has this id")
    spawn_links = {
        name: {"operationId": operation, "parameters": {"agentId": "$response.body#/agentId"}}
        for name, operation in (("AgentStatus", "agentStatus"), ("KillAgent", "killAgent"))
    }
    paths: dict[str, Any] = {
        "/health": {
            "get": _operation(
                "health",
                "The process serves (no auth, ever)",
                {"200": _json(Health, "serving")},
                auth=auth,
                open_route=True,
            )
        },
        "/health/ready": {
            "get": _operation(
                "ready",
                "Valkey, the queue worker, the sandbox backend and the model are usable",
                {
                    "200": _json(Readiness, "ready"),
                    "503": _json(Readiness, "not ready: the failing checks say why"),
                },
                auth=auth,
            )
        },
        "/agents/spawn": {
            "post": _operation(
                "spawn",
                "Validate, record and enqueue an agent's task (idempotent per taskId)",
                {
                    "202": {
                        **_json(SpawnResponse, "accepted; existing: the task's live agent"),
                        "links": spawn_links,
                    },
                    "400": _error("the body is not JSON or does not match SpawnRequest"),
                    "404": _error("the repository is a local path that is not a git repository"),
                    "409": _error("the task has a live agent spawned with another request"),
                    "413": _error(f"the body is larger than {max_body_bytes} bytes"),
                    "503": _error("not ready: Valkey, the queue, the sandbox or the model"),
                },
                auth=auth,
                post=True,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref(SpawnRequest)}},
                },
            )
        },
        "/agents": {
            "get": _operation(
                "listAgents",
                "Every agent's status, optionally only those in one status",
                {
                    "200": _json(AgentList, "the agents"),
                    "400": _error("status is not one status, given once"),
                    "503": VALKEY_DOWN,
                },
                auth=auth,
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "only agents in this status (at most once; not empty)",
                        "schema": {"type": "string", "enum": [s.value for s in AgentStatus]},
                    }
                ],
            )
        },
        "/agents/{agentId}/status": {
            "get": _operation(
                "agentStatus",
                "One agent's status",
                {
                    "200": _json(AgentView, "the agent"),
                    "404": agent_not_found,
                    "503": VALKEY_DOWN,
                },
                auth=auth,
                parameters=[AGENT_ID],
            )
        },
        "/agents/{agentId}/diff": {
            "get": _operation(
                "agentDiff",
                "The agent's change as a unified diff, secrets masked: a live agent's worktree "
                "against its base, a finished one's pushed or kept commit",
                {
                    "200": {
                        "description": "the diff (empty: a live agent changed nothing yet); a "
                        f"diff larger than {DIFF_MAX_BYTES} bytes is cut and ends with a note",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("no agent has this id, or it has no change to show"),
                    "503": VALKEY_DOWN,
                },
                auth=auth,
                parameters=[AGENT_ID],
            )
        },
        "/agents/{agentId}/kill": {
            "post": _operation(
                "killAgent",
                "Kill one agent and clean up; an agent already ended is answered as it is",
                {
                    "200": _json(AgentView, "the agent, killed (or as it ended)"),
                    "404": agent_not_found,
                    "409": _error("the agent changed state meanwhile"),
                    "503": VALKEY_DOWN,
                },
                auth=auth,
                post=True,
                parameters=[AGENT_ID],
            )
        },
        "/agents/kill-all": {
            "post": _operation(
                "killAll",
                "Kill every live agent, on every instance",
                {"200": _json(KillAllResult, "done"), "503": VALKEY_DOWN},
                auth=auth,
                post=True,
            )
        },
        "/agents/events": {"get": _events(auth)},
        "/queue/stats": {
            "get": _operation(
                "queueStats",
                "Queue depth by state, paused flag, workers and concurrency",
                {"200": _json(QueueStats, "the queue"), "503": VALKEY_DOWN},
                auth=auth,
            )
        },
        "/queue/pause": {
            "post": _operation(
                "pauseQueue",
                "Stop starting queued tasks (running agents go on)",
                {"200": _json(QueueState, "paused"), "503": VALKEY_DOWN},
                auth=auth,
                post=True,
            )
        },
        "/queue/resume": {
            "post": _operation(
                "resumeQueue",
                "Start queued tasks again",
                {"200": _json(QueueState, "resumed"), "503": VALKEY_DOWN},
                auth=auth,
                post=True,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                auth=auth,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mosaic Orchestrator",
            "version": "0.1.0",
            "description": "Supervisor for sandboxed coding agents (REST and Server-Sent Events).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(skills, runtimes),
        },
        "security": [{"bearer": []}] if auth else [],
        "paths": paths,
    }


SSE_EVENT = {
    "description": "one event (OpenAPI 3.1: the schema of a text/event-stream is an event's)",
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"},
        "event": {"type": "string", "enum": [t.value for t in EventType]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _ref(Event),
        },
    },
    "required": ["id", "event", "data"],
}


def _events(auth: bool) -> dict[str, Any]:
    def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string", **schema},
        }

    return _operation(
        "events",
        "Lifecycle and task events as Server-Sent Events, replayed after Last-Event-ID",
        {
            "200": {
                "description": "the event stream; comment lines are keep-alives",
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            },
            "400": _error(
                "Last-Event-ID or lastEventId is not an event id, or a parameter is repeated"
            ),
            "503": _error(
                "too many event streams are open (SSE_MAX_SUBSCRIBERS), or Valkey is not "
                "reachable (store_unavailable); retry later",
                **{"Retry-After": "seconds to wait"},
            ),
        },
        auth=auth,
        parameters=[
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "resume after this event",
                "schema": {"type": "string", **EVENT_ID_OR_NOTHING},
            },
            query(
                "lastEventId",
                "resume after this event (when the header is absent)",
                **EVENT_ID_OR_NOTHING,
            ),
            query(
                "types",
                "only these event types, comma-separated: " + ", ".join(t.value for t in EventType),
            ),
            query("agentId", "only this agent's events"),
            # each query parameter at most once (else 400)
        ],
    )
