"""Every Python package folder of the components is in the distribution (wheels need the explicit list)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folder_of = config["package-dir"]
    expected = set()
    for package, folder in folder_of.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            expected.add(".".join([package, *relative.parts]))
    assert expected <= listed, f"add to [tool.setuptools] packages: {sorted(expected - listed)}"
    assert listed <= expected, f"listed but missing: {sorted(listed - expected)}"
