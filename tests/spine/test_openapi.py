"""``/openapi.json`` and the wire models: one definition for server, document and clients."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
from hypothesis import strategies as st

from core.api.openapi import openapi_document
from core.gates.profiles import default_config
from core.git.errors import InvalidBranch, InvalidRepository
from core.git.validation import validate_branch, validate_repository
from core.models import (
    AGENT_ID_PATTERN,
    BRANCH_PATTERN,
    GATE_NAMES,
    REPOSITORY_PATTERN,
    TASK_ID_PATTERN,
    AgentResult,
    AgentState,
    AgentStatus,
    AgentType,
    AgentView,
    GateProfile,
    SpawnRequest,
    Usage,
    new_agent_id,
)
from tests.spine.conftest import Orchestrator

PATTERNS = [TASK_ID_PATTERN, AGENT_ID_PATTERN, BRANCH_PATTERN, REPOSITORY_PATTERN]
TRICKY = [
    "",
    "a",
    "a\n",
    "main\n",
    "/srv/repo\n",
    "/srv/repo\u00a0",
    "/srv/repo\u2028",
    "/srv/re po",
    "a\u2028..b",
    "HEAD",
    "x.lock",
    "feature/x",
    "https://git.example.com/org/repo.git",
    "https://user:tok@git.example.com:8443/r",
    "http://h:65536/r",
    "git@github.com:org/repo.git",
    "h::x",
    "file:///srv/repo",
    "ext::sh -c x",
    "-rf",
    "T-1",
    " T-1",
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "0F8FAD5B-D9CB-469F-A165-70867728950E",
]
SETTINGS = hypothesis.settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_python_and_json_schema_read_each_pattern_alike(pattern: str) -> None:
    """The server checks with ``re.fullmatch``; the document's readers with ECMA-262."""
    ecma = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    for value in TRICKY:
        assert ecma.is_valid(value) == (re.fullmatch(pattern, value) is not None), value


@SETTINGS
@hypothesis.given(st.from_regex(re.compile(REPOSITORY_PATTERN), fullmatch=True))
def test_every_documented_repository_passes_the_git_validation(repository: str) -> None:
    try:
        validate_repository(repository)
    except InvalidRepository as exc:  # only a local path may fail: it is not a repository
        assert repository.startswith("/") and (
            "no such directory" in exc.message or "not a git repository" in exc.message
        ), exc.message


@SETTINGS
@hypothesis.given(
    st.one_of(
        st.from_regex(re.compile(BRANCH_PATTERN), fullmatch=True),
        st.from_regex(r"[a-z./@{}~ -]{1,12}", fullmatch=True),
        st.text(max_size=12),
    )
)
def test_the_branch_pattern_is_git_check_ref_format(branch: str) -> None:
    try:
        validate_branch(branch)
        valid = True
    except InvalidBranch:
        valid = False
    assert (re.fullmatch(BRANCH_PATTERN, branch) is not None) == valid


def test_the_gate_names_are_the_configured_ones() -> None:
    assert list(GATE_NAMES) == default_config().gate_names


def test_the_wire_is_strict_and_camel_case() -> None:
    body: dict[str, Any] = {
        "taskId": "T-1",
        "agentType": "worker",
        "priority": 3.0,  # a JSON Schema integer
        "context": {"repository": "git@git.example.com:org/r.git", "gates": ["ai-review"]},
    }
    assert SpawnRequest.from_wire(json.dumps(body)).priority == 3
    for change in (
        {"priority": "3"},
        {"priority": True},
        {"taskId": " T-1"},
        {"agentType": "Worker"},
        {"context": {"repository": "/srv/repo ", "branch": "main"}},
        {"context": {"repository": "/srv/repo", "gates": ["LINT"]}},
    ):
        with pytest.raises(ValueError):
            SpawnRequest.from_wire(json.dumps({**body, **change}))
    snake = {"task_id": "T-1", "agent_type": "worker", "context": body["context"]}
    with pytest.raises(ValueError):
        SpawnRequest.from_wire(json.dumps(snake))
    # Python callers (the dashboard's form) may leave whitespace around; it is stripped
    form = SpawnRequest.model_validate({**body, "taskId": " T-1 ", "priority": "3"})
    assert (form.task_id, form.priority) == ("T-1", 3)


def test_one_agent_model_on_the_wire_both_ways() -> None:
    agent = AgentState(
        agent_id=new_agent_id(),
        task_id="T-1",
        agent_type=AgentType.WORKER,
        gate_profile=GateProfile.STANDARD,
        status=AgentStatus.COMPLETED,
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        summary="done",
        usage=Usage(input_tokens=3, turns=1),
        result=AgentResult(commit="abc", exit_code=0, extra_field=1),  # type: ignore[call-arg]
        attempts=1,
        pid=123,
        version=7,
    )
    wire = AgentView.of(agent).model_dump(mode="json")
    assert wire["agentId"] == agent.agent_id and wire["startedAt"] == "2026-01-02T03:04:05Z"
    assert "completedAt" not in wire and "error" not in wire  # unknown: left out, not null
    assert wire["result"]["commit"] == "abc" and wire["result"]["extra_field"] == 1
    back = AgentView.model_validate(json.loads(json.dumps(wire))).state()
    assert back.model_dump(exclude={"pid", "sandbox", "version"}) == agent.model_dump(
        exclude={"pid", "sandbox", "version"}
    )
    schema = openapi_document(auth=False)
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/AgentView", "components": schema["components"]}
    )
    assert validator.is_valid(wire)


@pytest.mark.parametrize("auth", [False, True])
def test_the_document_lists_every_answer_as_configured(auth: bool) -> None:
    doc = openapi_document(auth=auth, max_body_bytes=4096)
    assert doc["security"] == ([{"bearer": []}] if auth else [])
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"403", "405"} <= set(responses), (path, method)
            assert responses["405"]["headers"]["Allow"]["required"] is True
            assert ("401" in responses) == (auth and path != "/health"), (path, method)
            if auth and path != "/health":
                assert "WWW-Authenticate" in responses["401"]["headers"]
            assert ("415" in responses) == (method == "post"), (path, method)
    assert doc["paths"]["/health"]["get"]["security"] == []
    spawn = doc["paths"]["/agents/spawn"]["post"]
    assert set(spawn["responses"]) >= {"202", "400", "404", "409", "413", "415", "503"}
    assert "4096 bytes" in spawn["responses"]["413"]["description"]
    schemas = doc["components"]["schemas"]
    context = schemas["SpawnContext"]["properties"]
    assert context["repository"]["pattern"] == REPOSITORY_PATTERN
    assert context["branch"]["pattern"] == BRANCH_PATTERN
    assert schemas["SpawnRequest"]["properties"]["taskId"]["pattern"] == TASK_ID_PATTERN
    assert schemas["SpawnRequest"]["additionalProperties"] is False
    status = doc["paths"]["/agents"]["get"]["parameters"][0]["schema"]
    assert status["enum"] == [s.value for s in AgentStatus]
    agent_id = doc["paths"]["/agents/{agentId}/status"]["get"]["parameters"][0]["schema"]
    assert agent_id["pattern"] == AGENT_ID_PATTERN


async def test_the_server_enforces_what_the_document_says(
    orch: Orchestrator, tmp_path: Path
) -> None:
    for query in ("?status=", "?status=running&status=failed", "?status=Running"):
        status, body = await orch.get("/agents" + query)
        assert status == 400 and "status must be one of" in body["error"]["message"], query
    status, body = await orch.get("/agents?status=running")
    assert status == 200 and body == {"agents": [], "total": 0}
    for agent_id in ("nope", new_agent_id().upper(), new_agent_id()):
        status, body = await orch.get(f"/agents/{agent_id}/status")
        assert status == 404 and body["error"]["code"] == "not_found", agent_id
    request = {"taskId": "T-9", "agentType": "worker", "context": {"repository": str(tmp_path)}}
    status, body = await orch.post("/agents/spawn", request)
    assert status == 404 and body["error"]["code"] == "repository_not_found", body
    async with orch.http.put(orch.url + "/agents/kill-all") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
    status, doc = await orch.get("/openapi.json")
    # as configured: the runtimes that can run here, and no skill (no MOSAIC_SKILLS_DIR)
    expected = openapi_document(auth=False, skills=[], runtimes=["command"])
    assert status == 200 and doc == json.loads(json.dumps(expected))
    spawn = doc["components"]["schemas"]["SpawnRequest"]["properties"]["runtime"]["anyOf"][0]
    assert spawn["enum"] == ["command"]
