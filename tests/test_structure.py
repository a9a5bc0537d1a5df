"""The shape of the code: installed under one name, no import cycles, small modules, imports without side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"clipdex": "clipdex", "retrieval": "clipdex.retrieval", "indexer": "clipdex.indexer", "cli": "clipdex.cli",
            "sample_data": "clipdex.sample_data"}
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every clipdex module `path` imports, at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(node) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for node in ast.walk(n)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n in known}


@pytest.mark.slow
def test_the_installed_distribution_adds_only_the_clipdex_name(tmp_path: Path) -> None:
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / done.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"clipdex", "clipdex-0.1.0.dist-info"}, top
    for needed in ("clipdex/retrieval/storage/store.py", "clipdex/cli/static/index.html", "clipdex/sample_data/captions.csv",
                   "clipdex/retrieval/models/openclip/model_configs/clipdex-tiny.json", "clipdex/retrieval/describe/vocabulary.txt", "clipdex/sample_data/clipdex-small.safetensors"):
        assert needed in names
    entry = zipfile.ZipFile(wheel).read("clipdex-0.1.0.dist-info/entry_points.txt").decode()
    assert "clipdex = clipdex.cli.app:entry" in entry


def test_no_import_cycles_and_no_oversized_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodule is not a cycle
                continue
            assert state.get(nxt) != 1, "import cycle: " + " → ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    long = {name: n for name, path in modules.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


@pytest.mark.slow
def test_importing_every_module_changes_nothing_global() -> None:
    """Pillow's limits and openers, the warnings filters, the environment and logging stay as they were."""
    script = f"""
import importlib, logging, os, sys, warnings
import PIL.Image, torch, open_clip, faiss, sqlalchemy, fastapi, typer, numpy
before = (dict(os.environ), list(warnings.filters), PIL.Image.MAX_IMAGE_PIXELS, sorted(PIL.Image.OPEN),
          list(logging.getLogger().handlers), torch.get_num_threads())
for name in {sorted(n for n in _modules() if not n.endswith('__main__'))!r}:
    importlib.import_module(name)
after = (dict(os.environ), list(warnings.filters), PIL.Image.MAX_IMAGE_PIXELS, sorted(PIL.Image.OPEN),
         list(logging.getLogger().handlers), torch.get_num_threads())
for label, a, b in zip(("environ", "warnings", "MAX_IMAGE_PIXELS", "openers", "logging", "threads"), before, after):
    assert a == b, label
print("unchanged")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "unchanged" in done.stdout, done.stderr[-3000:]
