"""What the agent runtime reports: its last stdout line, parsed on the orchestrator side.

Output convention of ``runtime.py`` (the contract with the spawner):

* Progress lines may be printed on stdout while the session runs (one line per tool call).
* The **last stdout line** is one JSON object::

      {"status": "completed" | "failed",
       "summary": "<the model's last text>",
       "verdict": {"decision": "approve" | "request_changes", "comments": ["..."]} | null,
       "usage": {"input_tokens": int, "output_tokens": int, "turns": int},
       "error": "<why it failed>" | null,
       "budget": "turns" | "tokens" | "wall_time" | null}

* Exit codes: 0 the session completed; 1 the session failed (model or runtime error);
  2 the configuration or command line is invalid; 3 a budget was exceeded (``budget`` names it).
  A runtime killed by a signal prints nothing reliable: judge it by its exit code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.agents.errors import AgentRuntimeError
from core.models import Usage

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3


class Verdict(BaseModel):
    """A reviewer's decision; comments are the ``- `` lines of its final answer."""

    decision: Literal["approve", "request_changes"]
    comments: list[str] = Field(default_factory=list)


class RuntimeResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["completed", "failed"] = "completed"
    summary: str = ""
    verdict: Verdict | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    budget: Literal["turns", "tokens", "wall_time"] | None = None


def parse_runtime_result(last_line: str) -> RuntimeResult:
    """Parse the runtime's last stdout line; raise ``AgentRuntimeError`` on anything else."""
    line = last_line.strip()
    if not line:
        raise AgentRuntimeError("the agent runtime printed no result line")
    try:
        return RuntimeResult.model_validate_json(line)
    except ValidationError as exc:
        shown = line if len(line) <= 200 else line[:200] + "..."
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "line"
        raise AgentRuntimeError(
            f"the agent runtime's last line is not a result ({where}: {first['msg']}): {shown!r}"
        ) from None


def parse_runtime_output(stdout: str) -> RuntimeResult:
    """Parse a runtime's whole stdout: the result is its last non-empty line."""
    for line in reversed(stdout.splitlines()):
        if line.strip():
            return parse_runtime_result(line)
    raise AgentRuntimeError("the agent runtime printed nothing on stdout")
