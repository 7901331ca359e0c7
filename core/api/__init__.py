"""The REST/SSE API over the engine."""

from core.api.app import create_app, serve

__all__ = ["create_app", "serve"]
