"""The scripted model drives Claude Code: ``{{cwd}}`` from the request, scripts by marker.

Uses the requests the real CLI sent (``fixtures/claude_code/worker_requests.json``, trimmed), so
a change in where Claude Code states its working directory or puts the prompt shows up here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.agents import ScriptedModelServer, load_scripts
from core.agents.runtime import parse_verdict
from core.agents.scripted import request_cwd
from core.agents.scripts import Script

FIXTURES = Path(__file__).parent / "fixtures" / "claude_code"
CWD = "/tmp/mosaic-wt"  # where the recording ran


def recorded() -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = json.loads((FIXTURES / "worker_requests.json").read_text())
    return requests


def test_the_recorded_requests_state_their_cwd_in_a_system_message() -> None:
    requests = recorded()
    assert len(requests) == 3
    for request in requests:
        body = request["body"]
        assert [m["role"] for m in body["messages"][:2]] == ["user", "system"]
        assert request_cwd(body) == CWD
    first = requests[0]
    assert first["headers"]["x-api-key"] == "mosaic-gw-token"  # ANTHROPIC_API_KEY, as x-api-key
    assert first["body"]["stream"] is True
    tools = {t["name"]: t for t in first["body"]["tools"]}
    assert {"Bash", "Edit", "Read", "Write"} <= set(tools)
    assert tools["Write"]["input_schema"]["required"] == ["file_path", "content"]
    assert tools["Edit"]["input_schema"]["required"] == ["file_path", "old_string", "new_string"]
    # The prompt is its own text block of the first user message, after a system reminder.
    texts = [b["text"] for b in first["body"]["messages"][0]["content"]]
    assert texts[-1] == "Task t-1: add a greeting. [script:claude-worker-hello]"
    assert first["body"]["system"][-1]["text"].endswith(
        "You are a worker agent of the Mosaic orchestrator."
    )


@pytest.mark.parametrize(
    ("body", "cwd"),
    [
        ({"messages": []}, None),
        ({}, None),
        ({"system": " - Primary working directory: /a/b c \n", "messages": []}, "/a/b c"),
        ({"system": [{"type": "text", "text": "Primary working directory: /s"}]}, "/s"),
        ({"system": "Primary working directory: relative/path"}, None),
        (
            {
                "messages": [
                    {"role": "system", "content": " - Primary working directory: /old"},
                    {"role": "assistant", "content": "Primary working directory: /not-me"},
                    {"role": "system", "content": [{"type": "text", "text": "x"}, 5]},
                    {"role": "user", "content": [{"type": "text", "text": "x"}]},
                    {
                        "role": "system",
                        "content": " - Primary working directory: /resumed (was /old)\n - x",
                    },
                ]
            },
            "/resumed",  # the last block wins: a resumed session states its new cwd
        ),
        ({"messages": "junk", "system": 3}, None),
    ],
)
def test_request_cwd(body: dict[str, Any], cwd: str | None) -> None:
    assert request_cwd(body) == cwd


def test_cwd_fills_tool_inputs_and_the_final_text_and_stays_without_one() -> None:
    script = Script.from_dict(
        {
            "name": "s",
            "turns": [[{"type": "tool_use", "name": "Read", "input": {"file_path": "{{cwd}}/a"}}]],
            "final": "done in {{cwd}} with {{unknown}}",
        }
    )
    assert script.turn(0, cwd="/w")[0]["input"] == {"file_path": "/w/a"}
    assert script.turn(1, cwd="/w")[0]["text"] == "done in /w with {{unknown}}"
    assert script.turn(0)[0]["input"] == {"file_path": "{{cwd}}/a"}
    assert script.turns[0][0]["input"] == {"file_path": "{{cwd}}/a"}  # the script is unchanged


async def _answer(server: ScriptedModelServer, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/v1/messages", json={**body, "stream": False}) as response,
    ):
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_the_server_answers_claude_codes_requests_with_absolute_paths() -> None:
    first, second, third = (r["body"] for r in recorded())
    async with ScriptedModelServer(load_scripts()) as server:
        answer = await _answer(server, first)
        assert answer["stop_reason"] == "tool_use"
        write = answer["content"][1]
        assert write["name"] == "Write"
        assert write["input"] == {"file_path": f"{CWD}/hello.txt", "content": "Hello from Mosaic\n"}
        assert (await _answer(server, second))["content"][0]["name"] == "Bash"
        final = await _answer(server, third)
        assert final["stop_reason"] == "end_turn"
        assert final["content"][0]["text"] == "Added hello.txt with a greeting and checked it."
        moved = copy.deepcopy(first)
        moved["messages"][1]["content"][0]["text"] = moved["messages"][1]["content"][0][
            "text"
        ].replace(CWD, "/elsewhere/wt")
        answer = await _answer(server, moved)
        assert answer["content"][1]["input"]["file_path"] == "/elsewhere/wt/hello.txt"


@pytest.mark.parametrize(
    ("name", "decision", "comments"),
    [
        ("claude-reviewer-approve", "approve", ["Clear naming", "Nothing to fix"]),
        (
            "claude-reviewer-request-changes",
            "request_changes",
            ["Add tests for the new function", "Remove the TODO left in the code"],
        ),
    ],
)
def test_claude_reviewer_scripts_end_in_a_builtin_verdict(
    name: str, decision: str, comments: list[str]
) -> None:
    script = load_scripts()[name]
    final = script.turn(len(script.turns), cwd="/w")
    assert parse_verdict(final[0]["text"]) == {"decision": decision, "comments": comments}
    for turn in script.turns:  # Claude Code's tools only, absolute paths only
        for block in turn:
            if block["type"] == "tool_use":
                assert block["name"] in {"Bash", "Read"}
                path = block["input"].get("file_path")
                assert path is None or path.startswith("{{cwd}}/")
