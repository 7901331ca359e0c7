"""The OpenAPI document served at ``/openapi.json``, built from the pydantic models."""

from __future__ import annotations

from typing import Any

from core.engine_api import KillAllResult, QueueStats
from core.models import SpawnRequest


def _error() -> dict[str, Any]:
    return {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(*, auth: bool = True) -> dict[str, Any]:
    """The document; ``auth``: whether ``ORCHESTRATOR_API_KEY`` guards the routes (401)."""
    spawn = SpawnRequest.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    defs = spawn.pop("$defs", {})
    agent_id = [{"name": "agentId", "in": "path", "required": True, "schema": {"type": "string"}}]
    # 403: a foreign Host or Origin (every route); 415: a body that is not JSON (every POST)
    guarded = {"403": _error(), **({"401": _error()} if auth else {})}
    errors = {**guarded, **{str(code): _error() for code in (400, 404, 409, 413, 503)}}
    posted = {"415": _error()}
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mosaic Orchestrator", "version": "0.1.0"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **defs,
                "SpawnRequest": spawn,
                "QueueStats": QueueStats.model_json_schema(),
                "KillAllResult": KillAllResult.model_json_schema(),
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {},
                            },
                            "required": ["code", "message"],
                        }
                    },
                },
            },
        },
        "security": [{"bearer": []}] if auth else [],
        "paths": {
            "/health": {"get": {"security": [], "responses": {"200": _ok(obj), "403": _error()}}},
            "/health/ready": {
                "get": {"responses": {"200": _ok(obj), "503": _ok(obj, "not ready"), **guarded}}
            },
            "/agents/spawn": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SpawnRequest"}
                            }
                        },
                    },
                    "responses": {"202": _ok(obj, "accepted"), **errors, **posted},
                }
            },
            "/agents": {
                "get": {
                    "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _ok(obj), **errors},
                }
            },
            "/agents/{agentId}/status": {
                "get": {"parameters": agent_id, "responses": {"200": _ok(obj), **errors}}
            },
            "/agents/{agentId}/kill": {
                "post": {
                    "parameters": agent_id,
                    "responses": {"200": _ok(obj), **errors, **posted},
                }
            },
            "/agents/kill-all": {
                "post": {
                    "responses": {
                        "200": _ok({"$ref": "#/components/schemas/KillAllResult"}),
                        **errors,
                        **posted,
                    }
                }
            },
            "/agents/events": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **guarded,
                    }
                }
            },
            "/queue/stats": {
                "get": {
                    "responses": {
                        "200": _ok({"$ref": "#/components/schemas/QueueStats"}),
                        **guarded,
                    }
                }
            },
            "/queue/pause": {"post": {"responses": {"200": _ok(obj), **guarded, **posted}}},
            "/queue/resume": {"post": {"responses": {"200": _ok(obj), **guarded, **posted}}},
        },
    }
