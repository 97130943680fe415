"""Hatchling build hook: compiles the optional C extension ``krocket.broker.fastpath._cserve``.

The extension is optional, the way aiohttp, yarl and multidict ship theirs: it is built when a C compiler is
there and skipped otherwise (a warning, then a pure-Python install: ``pip install`` never fails for lack of a
compiler). ``KROCKET_NO_EXTENSIONS=1`` at build time skips it (an editable install then also removes a module an
earlier editable build left in the source tree, so the run-time import finds none).

- wheel: the module is compiled into a temporary folder and force-included at
  ``krocket/broker/fastpath/_cserve<EXT_SUFFIX>``; the wheel is then platform-tagged.
- editable (``pip install -e .``): the six source roots are on ``sys.path`` as plain paths, so the module is
  compiled next to its ``.c`` in the source tree (gitignored).

The compiler and flags come from ``sysconfig`` (the ones CPython was built with; ``CC`` in the environment
overrides the compiler). The extension links nothing but libc.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported as a plain module (scripts/asan.sh, the tests): only the compile helpers are used
    BuildHookInterface = object  # type: ignore[assignment,misc]

SOURCE = Path("broker", "krocket", "broker", "fastpath", "_cserve.c")
MODULE_DIR_IN_WHEEL = "krocket/broker/fastpath"
MODULE_NAME = "_cserve"
COMPILE_TIMEOUT_S = 300


def no_extensions() -> bool:
    """``KROCKET_NO_EXTENSIONS`` set (read as krocket.broker.fastpath.load_serve reads it at run time)."""
    return os.environ.get("KROCKET_NO_EXTENSIONS", "") not in ("", "0", "false", "no")


def extension_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def compile_command(source: Path, target: Path, extra_flags: list[str] | None = None) -> list[str]:
    """The command line that compiles and links ``source`` into the extension module ``target``."""
    cc = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    if sys.platform == "darwin":
        link = ["-bundle", "-undefined", "dynamic_lookup"]
    else:
        link = ["-shared"]
    include = sysconfig.get_paths()["include"]
    return [
        *shlex.split(cc),
        *shlex.split(str(sysconfig.get_config_var("CCSHARED") or "-fPIC")),
        *link,
        "-O2",
        "-std=c99",
        "-Wall",
        "-Wno-unused-function",
        "-fno-strict-aliasing",
        f"-I{include}",
        *(extra_flags or []),
        str(source),
        "-o",
        str(target),
    ]


def build_extension(source: Path, target: Path, extra_flags: list[str] | None = None) -> str | None:
    """Compile ``source`` into ``target``; None on success, else why it failed (one line).

    The module is linked under a temporary name and renamed over ``target``: a running process that has the
    old one mapped keeps its copy (overwriting a mapped shared object in place would crash it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    cmd = compile_command(source, partial, extra_flags)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0 or not partial.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return f"{shlex.join(cmd)} exited with {done.returncode}: " + " | ".join(tail)
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{shlex.join(cmd)}: {e}"
    finally:
        partial.unlink(missing_ok=True)
    return None


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root) / SOURCE
        name = MODULE_NAME + extension_suffix()
        in_tree = source.parent / name
        if no_extensions():
            self.app.display_info("krocket: KROCKET_NO_EXTENSIONS=1, the C fast path is not built (pure Python)")
            if version == "editable":
                in_tree.unlink(missing_ok=True)  # an earlier editable build's module would still be imported
            return
        if version == "editable":
            target = in_tree
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="krocket-ext-")
            target = Path(self._tmp.name) / name
        failure = build_extension(source, target)
        if failure is not None:
            message = f"krocket: the optional C fast path was not built, installing pure Python: {failure}"
            self.app.display_warning(message)
            warnings.warn(message, stacklevel=1)
            if version == "editable":
                in_tree.unlink(missing_ok=True)  # never leave a module built from older source behind
            return
        self.app.display_info(f"krocket: built the C fast path {target}")
        if version != "editable":
            build_data["force_include"][str(target)] = f"{MODULE_DIR_IN_WHEEL}/{name}"
        build_data["pure_python"] = False  # a platform wheel, only when the extension was built
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
            self._tmp = None
