"""The source layout: each component folder is a source root holding its part of the PEP 420 ``krocket``
namespace, nothing at the repository root is an importable package, and the editable install is plain paths."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import krocket.broker
import krocket.cli

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("common", "namesrv", "broker", "client", "operator", "cli")


def _plain_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONSAFEPATH or PYTHONPATH to hide a shadowing folder."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}


def test_every_component_folder_is_a_source_root_of_the_krocket_namespace():
    for name in COMPONENTS:
        folder = ROOT / name
        entries = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
        assert entries == {"krocket"}, f"{name}/ holds only krocket/{name}/, found {sorted(entries)}"
        assert not (folder / "krocket" / "__init__.py").exists(), "krocket is a namespace package (PEP 420)"
        children = {p.name for p in (folder / "krocket").iterdir() if p.name != "__pycache__"}
        assert children == {name}, f"{name}/krocket/ holds only {name}/, found {sorted(children)}"
        package = folder / "krocket" / name
        assert (package / "__init__.py").is_file()
        assert (package / "py.typed").is_file(), f"{name} ships py.typed (PEP 561)"


def test_no_folder_at_the_root_is_a_package_named_like_a_standard_library_module():
    for entry in ROOT.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            assert entry.name not in sys.stdlib_module_names, f"{entry.name}/ shadows the standard library"
            assert entry.name not in COMPONENTS, f"{entry.name}/ is a source root, not a package"


def test_the_standard_library_is_not_shadowed_from_the_repository_root():
    out = subprocess.run(
        [sys.executable, "-c", "import collections, operator; print(operator.__file__)"],
        cwd=ROOT, env=_plain_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent == Path(os.__file__).parent, out.stdout
    pytest_version = subprocess.run(
        [sys.executable, "-m", "pytest", "--version"], cwd=ROOT, env=_plain_env(), capture_output=True, timeout=60
    )
    assert pytest_version.returncode == 0, pytest_version.stderr


def test_pyproject_builds_the_six_source_roots():
    hatch = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert hatch["wheel"]["packages"] == [f"{name}/krocket" for name in COMPONENTS]
    assert hatch["wheel"]["dev-mode-dirs"] == list(COMPONENTS)


def test_imports_resolve_to_the_source_folders_with_no_import_hook():
    assert Path(krocket.broker.__file__).resolve() == ROOT / "broker" / "krocket" / "broker" / "__init__.py"
    assert Path(krocket.cli.__file__).resolve() == ROOT / "cli" / "krocket" / "cli" / "__init__.py"
    hooks = [type(finder).__module__ for finder in sys.meta_path if "editable" in type(finder).__module__]
    assert not hooks, f"an import hook serves krocket: {hooks}"


def test_version_comes_from_the_distribution_metadata():
    assert (
        importlib.metadata.version("krocket")
        == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )


def test_code_outside_the_repository_type_checks_against_the_real_sources(tmp_path):
    user = tmp_path / "user_code.py"
    user.write_text(
        "from krocket.broker.store import MessageStore\nfrom krocket.client import Producer\n"
        "reveal_type(MessageStore)\nreveal_type(Producer.send)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "-v", "--cache-dir", str(tmp_path / "cache"), str(user)],
        cwd=tmp_path, env=_plain_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "-> krocket.broker.store.message_store.MessageStore" in out.stdout
    assert "krocket.client.types.SendResult" in out.stdout
    parsed = ROOT / "broker" / "krocket" / "broker" / "store" / "message_store.py"
    assert f"Parsing {parsed} (krocket.broker.store.message_store)" in out.stderr
