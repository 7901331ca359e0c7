"""Answers in the API's wire shape: the JSON of a ``core.models`` wire model (SPEC §3)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def answer(model: BaseModel, *, status: int = 200) -> web.Response:
    """``model`` as the JSON body (its camelCase aliases; optional fields left out when unset)."""
    return web.json_response(model.model_dump(mode="json"), status=status)
