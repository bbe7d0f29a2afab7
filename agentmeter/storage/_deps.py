"""SQLAlchemy, imported with the exact install line when it is missing."""

from __future__ import annotations

try:
    import sqlalchemy as sqlalchemy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "agentmeter's SQL storage needs SQLAlchemy 2: pip install 'agentmeter-core[sql]'"
    ) from exc

__all__ = ["sqlalchemy"]
