"""The package's own promises: only agentmeter's public modules, nothing at core import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import agentmeter_pydantic_ai

PACKAGE = Path(agentmeter_pydantic_ai.__file__).parent


def test_imports_only_public_agentmeter() -> None:
    """agentmeter and agentmeter.instrumentation, and none of their private names."""
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "agentmeter":
                    assert name in {"agentmeter", "agentmeter.instrumentation"}, (path.name, name)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentmeter"):
                assert all(not a.name.startswith("_") for a in node.names), path.name


def test_core_does_not_import_the_integration() -> None:
    code = (
        "import sys, agentmeter, agentmeter.demo, agentmeter._demo_frameworks;"
        "print('agentmeter_pydantic_ai' in sys.modules, 'pydantic_ai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_public_names() -> None:
    assert set(agentmeter_pydantic_ai.__all__) == {
        "AgentMeter",
        "MeteredModel",
        "__version__",
        "from_request_usage",
        "metered",
    }
    for name in agentmeter_pydantic_ai.__all__:
        assert getattr(agentmeter_pydantic_ai, name) is not None
        if name != "__version__":
            assert getattr(agentmeter_pydantic_ai, name).__doc__, name
