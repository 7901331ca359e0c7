"""Who this orchestrator instance is, and the host resources that are its own.

Several instances may share one host (and one Valkey). Each has a name (``INSTANCE_NAME``, or
``<hostname>:<hash of the state dir>``) recorded on the agents it runs, and a *slug* derived from
that name which is a safe path component: ``i-<readable part>-<hash>``, where the readable part is
the name lowercased with every run of other characters than ``[a-z0-9]`` replaced by ``-`` (at most
40 characters) and the hash is the first 10 hex digits of the name's SHA-256, so names that read
alike never share a slug. An instance's sandboxes live in its *scope*
``<SANDBOX_CGROUP_PARENT>/<slug>``: its agents' cgroups are ``<scope>/<agent_id>``, its containers
carry the scope as a label, and start-up reconciliation only ever looks inside it.
"""

from __future__ import annotations

import hashlib
import re
import socket

from core.settings import Settings


def instance_name(settings: Settings) -> str:
    if settings.instance_name:
        return settings.instance_name
    digest = hashlib.sha1(str(settings.mosaic_state_dir.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{digest}"


def instance_slug(name: str) -> str:
    """``name`` as one path component of ``[a-z0-9-]``, unique per name (see the module doc)."""
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"i-{readable}-{digest}" if readable else f"i-{digest}"


def sandbox_scope(settings: Settings, name: str) -> str:
    """The cgroup parent (and container scope label) of the instance called ``name``."""
    return f"{settings.sandbox_cgroup_parent.rstrip('/')}/{instance_slug(name)}"
