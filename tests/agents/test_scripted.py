"""The scripted model, driven by the real anthropic SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import anthropic
import pytest

from core.agents import Script, ScriptedModelServer, ScriptError, load_scripts
from core.agents.scripts import load_script
from tests.agents.conftest import module_command


def user(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


async def test_script_is_chosen_by_marker_and_turn_by_assistant_count(
    scripted: ScriptedModelServer,
) -> None:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=scripted.url, max_retries=0)
    first = await client.messages.create(model="m", max_tokens=50, messages=user("go"))  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]  # worker-hello, the default
    history = [
        {"role": "user", "content": [{"type": "text", "text": "please [script:slow]"}]},
        {"role": "assistant", "content": "working"},
        {"role": "user", "content": "more"},
    ]
    done = await client.messages.create(model="m", max_tokens=50, messages=history)  # type: ignore[arg-type]
    assert done.stop_reason == "end_turn"
    assert done.content[0].text == "Waited."  # type: ignore[union-attr]
    await client.close()
    assert scripted.requests[0].body["messages"][0]["content"] == "go"


async def test_streaming_tool_input_is_reassembled_by_the_sdk(
    scripted: ScriptedModelServer,
) -> None:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=scripted.url, max_retries=0)
    async with client.messages.stream(
        model="m",
        max_tokens=50,
        messages=user("[script:leaky-worker]"),  # type: ignore[arg-type]
    ) as stream:
        raw_types = [event.type async for event in stream]
        message = await stream.get_final_message()
    await client.close()
    block = message.content[0]
    assert block.type == "tool_use"
    content = block.input["content"]  # type: ignore[index]
    assert re.search(r"\bAKIA[A-Z0-9]{16}\b", content)
    assert re.search(r"aws_secret_access_key = \"[A-Za-z0-9/+]{40}\"", content)
    assert "{{" not in content
    assert raw_types.count("input_json") > 1  # the JSON really came in pieces
    assert message.usage.output_tokens > 1


async def test_repeating_script_never_ends(scripted: ScriptedModelServer) -> None:
    script = scripted.scripts["runaway"]
    assert [b["type"] for b in script.turn(0)] == [b["type"] for b in script.turn(57)]
    assert Script(name="x", turns=[]).turn(0) == [{"type": "text", "text": "Done."}]


async def test_bad_requests_get_anthropic_style_errors(scripted: ScriptedModelServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{scripted.url}/v1/messages") as r:
            assert r.status == 405
        async with session.post(f"{scripted.url}/v1/other", json={}) as r:
            assert r.status == 404
        async with session.post(f"{scripted.url}/v1/messages", data=b"{nope") as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        async with session.post(
            f"{scripted.url}/v1/messages", json={"messages": user("[script:ghost]")}
        ) as r:
            assert r.status == 400
            assert "unknown script 'ghost'" in (await r.json())["error"]["message"]
        async with session.post(
            f"{scripted.url}/v1/messages/count_tokens", json={"messages": user("hello")}
        ) as r:
            assert (await r.json())["input_tokens"] > 0
    assert len(scripted.requests) == 5


async def test_server_url_and_default_checks() -> None:
    with pytest.raises(ScriptError, match="default script"):
        ScriptedModelServer({}, default="missing")
    idle = ScriptedModelServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = idle.url
    await idle.close()


def test_shipped_scripts_load() -> None:
    scripts = load_scripts()
    for name in ("worker-hello", "reviewer-approve", "leaky-worker", "slow", "runaway"):
        assert name in scripts
    assert scripts["runaway"].repeat


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"name": "bad name!"}', "'name'"),
        ('{"name": "x", "turns": [{}]}', "list of lists"),
        ('{"name": "x", "turns": [[{"type": "image"}]]}', "unknown content block type"),
        ('{"name": "x", "turns": [[{"type": "text"}]]}', "string 'text'"),
        ('{"name": "x", "turns": [[{"type": "tool_use", "name": "t"}]]}', "object 'input'"),
        ('{"name": "x", "turns": [["text"]]}', "must be an object"),
        ('{"name": "x", "final": 3}', "'final'"),
    ],
)
def test_malformed_scripts_are_refused_clearly(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ScriptError, match=re.escape(message)):
        load_script(path)


def test_missing_script_files(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="cannot read script"):
        load_script(tmp_path / "nope.json")
    with pytest.raises(ScriptError, match="does not exist"):
        load_scripts(tmp_path / "nope")


async def test_command_line_serves_until_terminated(tmp_path: Path) -> None:
    (tmp_path / "only.json").write_text(json.dumps({"name": "only", "turns": [], "final": "Hi."}))
    proc = await asyncio.create_subprocess_exec(
        *module_command(
            "core.agents.scripted", "--port", "0", "--scripts", str(tmp_path), "--default", "only"
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        client = anthropic.AsyncAnthropic(api_key="k", base_url=url.group(0), max_retries=0)
        message = await client.messages.create(model="m", max_tokens=5, messages=user("x"))  # type: ignore[arg-type]
        await client.close()
        assert message.content[0].text == "Hi."  # type: ignore[union-attr]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_command_line_reports_bad_scripts_dir(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *module_command("core.agents.scripted", "--scripts", str(tmp_path / "none")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "does not exist" in err.decode()
    assert "Traceback" not in err.decode()
