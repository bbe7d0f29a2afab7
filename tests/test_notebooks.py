"""Execute every notebook in ``notebooks/`` top to bottom in a fresh kernel, offline.

The kernel is this interpreter (``sys.executable``): the test writes a kernelspec
for it into a temporary folder and gives nbclient a kernel manager that looks
only there, so a ``python3`` kernelspec elsewhere on the machine (user or system
Jupyter folders, another virtualenv) can never be picked up instead. Nothing
needs ``ipykernel install``: ``ipykernel`` importable here is enough.

A notebook lists the integration packages it needs in its metadata
(``metadata.agentmeter.requires``); it is skipped, saying which one is missing,
only when one of those is not importable. Any error in any cell fails the test.

One executed notebook is rendered to a standalone HTML page (its tables and
PNG plots) and checked; when headless Chromium is installed it is also
screenshotted, and the screenshot must show content (``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell: generous for a busy 2-core CI machine
KERNEL_NAME = "agentmeter-test-python"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_executed: dict[str, Any] = {}


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec folder whose only kernel runs ``sys.executable -m ipykernel_launcher``."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "agentmeter tests",
                "language": "python",
            }
        )
    )
    return root


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # The notebooks choose their matplotlib backend (inline); a test-wide Agg would
    # leave their plots out of the outputs.
    env.pop("MPLBACKEND", None)
    env["AGENTMETER_STRICT"] = "1"  # an internal error fails the notebook
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # no debugger warning at kernel start
    return env


def execute(path: Path, kernel_dir: Path, workdir: Path) -> tuple[Any, float]:
    """Run a notebook in a fresh kernel (cwd = ``workdir``); returns it with its outputs."""
    nb = nbformat.read(path, as_version=4)
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        record_timing=True,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute(env=_kernel_env())
    return nb, time.perf_counter() - start


def _missing(nb: Any) -> list[str]:
    requires = nb.metadata.get("agentmeter", {}).get("requires", [])
    return [m for m in requires if importlib.util.find_spec(m) is None]


def test_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {
        "01_quickstart.ipynb",
        "02_langchain.ipynb",
        "03_llamaindex.ipynb",
        "04_budgets_and_billing.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path: Path) -> None:
    """Valid nbformat, a python3 kernelspec, no outputs: diffs stay readable."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: committed with outputs"
            assert cell.execution_count is None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_dir: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    missing = _missing(nb)
    if missing:
        hint = nb.metadata.get("agentmeter", {}).get("install", "")
        pytest.skip(f"{path.name} needs {', '.join(missing)} (not importable). {hint}".strip())
    executed, seconds = execute(path, kernel_dir, tmp_path)
    _executed[path.name] = executed
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "a cell did not run"
    print(f"{path.name}: {seconds:.1f} s")


# ------------------------------------------------------------------ rendering
def _markdown(src: str) -> str:
    """Just enough markdown for a readable page: headings, code spans, paragraphs."""
    out = []
    for block in re.split(r"\n\s*\n", src.strip()):
        text = html.escape(block)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
        m = re.match(r"(#{1,4}) (.*)", text)
        if m:
            level = len(m.group(1))
            out.append(f"<h{level}>{m.group(2)}</h{level}>")
        else:
            out.append(f"<p>{text}</p>")
    return "\n".join(out)


def render_html(nb: Any, title: str) -> str:
    """A standalone page of an executed notebook: markdown, code, and its rich outputs."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:16px}"
        "pre{background:#f6f6f6;padding:6px;font-size:12px;overflow:hidden}"
        "table{font-size:12px}img{max-width:100%}</style></head><body>",
    ]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(_markdown(cell.source))
            continue
        if cell.cell_type != "code":
            continue
        parts.append(f"<pre>{html.escape(cell.source)}</pre>")
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if out.output_type == "stream":
                parts.append(f"<pre>{html.escape(out.text)}</pre>")
            elif "image/png" in data:
                png = data["image/png"]
                png = png if isinstance(png, str) else base64.b64encode(png).decode()
                parts.append(f"<img src='data:image/png;base64,{png.strip()}'>")
            elif "text/html" in data:
                parts.append(f"<div class='output'>{data['text/html']}</div>")
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(data['text/plain'])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _outputs(nb: Any, mime: str) -> list[str]:
    return [
        o["data"][mime]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if mime in o.get("data", {})
    ]


@pytest.fixture
def quickstart(kernel_dir: Path, tmp_path: Path) -> Any:
    name = "01_quickstart.ipynb"
    if name not in _executed:
        _executed[name], _ = execute(ROOT / "notebooks" / name, kernel_dir, tmp_path)
    return _executed[name]


def test_quickstart_renders_tables_and_plots(quickstart: Any, tmp_path: Path) -> None:
    """The quickstart's outputs hold agentmeter's HTML tables and PNG plots, all valid."""
    import html5lib

    tables = _outputs(quickstart, "text/html")
    pngs = _outputs(quickstart, "image/png")
    ours = [t for t in tables if 'class="agentmeter"' in t]
    # scope, snapshot and two sessions render through _repr_html_; DataFrames are pandas'
    assert len(ours) >= 3, "agentmeter objects did not render as HTML"
    assert len(tables) - len(ours) >= 3, "DataFrames did not render"
    assert len(pngs) >= 5, "plots missing from the outputs"
    parser = html5lib.HTMLParser(strict=True)
    for fragment in ours:
        parser.parseFragment(fragment)
    snapshot = next(t for t in ours if "agentmeter snapshot" in t)
    for text in ("web_search", "calculator", "lookup_docs", "unpriced", "s1", "s4", "~"):
        assert text in snapshot
    page = tmp_path / "01_quickstart.html"
    page.write_text(render_html(quickstart, "01_quickstart"))
    assert page.stat().st_size > 50_000


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 1600) -> None:
    """Headless Chromium screenshot of a local page (no network, throwaway profile)."""
    browser = _browser()
    assert browser is not None
    profile = png.parent / "chromium-profile"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        page.as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def test_quickstart_screenshot(quickstart: Any, tmp_path: Path) -> None:
    """The rendered quickstart, screenshotted in headless Chromium, shows tables and plots."""
    if _browser() is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    import matplotlib.image

    page = tmp_path / "01_quickstart.html"
    page.write_text(render_html(quickstart, "01_quickstart"))
    png = tmp_path / "01_quickstart.png"
    screenshot(page, png, height=10_000)  # the whole page: tables first, plots below
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] >= 10_000 and pixels.shape[1] >= 1200
    ink = (pixels[..., :3].mean(axis=2) < 0.9).mean()
    # Text, tables and the coloured plots cover a few % of the page; a blank or
    # broken page (white, or one error line) covers almost nothing.
    assert ink > 0.02, f"the screenshot is nearly empty ({ink:.1%} ink); see {png}"
    colored = (pixels[..., :3].max(axis=2) - pixels[..., :3].min(axis=2) > 0.25).mean()
    assert colored > 0.005, "no coloured plot visible in the screenshot"


def test_readme_plot_is_committed() -> None:
    import matplotlib.image

    png = ROOT / "notebooks" / "tool_cost.png"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[1] >= 600
    readme = (ROOT / "notebooks" / "README.md").read_text()
    assert "tool_cost.png" in readme
