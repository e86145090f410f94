"""Whether a job's Python environment has the job's framework (one machine).

A local job runs with its image's ``local_env`` (else the service's own Python); a PyTorch
job in an environment without torch would be accepted and then die in ``torchrun``.  So
the service asks the interpreter itself — ``importlib.util.find_spec``, no import, a few
milliseconds — as an async subprocess in isolated mode (``-I``: no ``PYTHONPATH`` and no
user site, as jobs run), and caches the answer until the interpreter or a directory on
its ``sys.path`` changes: installing the framework there changes its ``site-packages``,
so the fix the refusal suggests is seen at the next request.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError
from ..model import ImageSpec

MODULES: dict[str, str] = {"pytorch": "torch", "tensorflow": "tensorflow"}
"""The module (and pip package) each framework needs."""
NAMES: dict[str, str] = {"pytorch": "PyTorch", "tensorflow": "TensorFlow"}
PROBE_TIMEOUT = 60.0

# run as ``python -I -c _PROBE torch tensorflow``: the mtimes of sys.path first, then
# which modules exist (so a later install always changes a recorded mtime)
_PROBE = """\
import importlib.util, json, os, sys
stamp = []
for p in sys.path:
    try:
        stamp.append([p, os.stat(p).st_mtime_ns])
    except OSError:
        pass
found = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
print(json.dumps({"stamp": stamp, "found": found}))
"""

Stamp = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EnvFacts:
    """What one interpreter offers: the framework modules it finds, the stamp the answer
    is valid for, or ``error`` when it could not be asked."""

    modules: frozenset[str]
    stamp: Stamp
    error: str | None = None

    def frameworks(self) -> tuple[str, ...]:
        """The frameworks jobs can use with this interpreter."""
        return tuple(f for f, m in MODULES.items() if m in self.modules)


# --- pure -----------------------------------------------------------------------------------


def env_python(image: ImageSpec, default: str) -> str:
    """The interpreter of ``image``'s jobs: its ``local_env``'s, else ``default``."""
    return str(Path(image.local_env) / "bin" / "python") if image.local_env else default


def missing_framework(image: ImageSpec, python: str, framework: str) -> str:
    """The refusal of a job whose environment lacks its framework, with the fix."""
    module = MODULES[framework]
    return (
        f"image {image.slug!r} ({image.local_env or python}) has no {module}: install it "
        f"there (`{python} -m pip install {module}`) or choose an image with {NAMES[framework]}"
    )


def unusable_env(image: ImageSpec, python: str, error: str) -> str:
    """The refusal of a job whose interpreter cannot be run at all."""
    return (
        f"image {image.slug!r} ({image.local_env or python}) cannot run jobs: {error}; "
        "choose another image, or ask an admin to fix the image's local_env"
    )


def stamp(paths: Iterable[str]) -> Stamp:
    """``(path, mtime in ns)`` of each path (``-1`` where it is missing).  Blocking."""
    out = []
    for p in paths:
        try:
            out.append((p, os.stat(p).st_mtime_ns))
        except OSError:
            out.append((p, -1))
    return tuple(out)


# --- the check ------------------------------------------------------------------------------


async def probe(python: str) -> EnvFacts:
    """Ask ``python`` which framework modules it finds (never blocks the event loop)."""
    before = await asyncio.to_thread(stamp, [python])
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-I",
            "-c",
            _PROBE,
            *MODULES.values(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
        )
    except OSError as e:
        return EnvFacts(frozenset(), before, f"{python} cannot be started ({e.strerror})")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return EnvFacts(frozenset(), before, f"{python} did not answer in {PROBE_TIMEOUT:g} s")
    try:
        data = json.loads(out)
        dirs = tuple((str(p), int(m)) for p, m in data["stamp"])
        found = frozenset(str(m) for m in data["found"])
    except (ValueError, KeyError, TypeError):
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:]
        why = last[0] if last else f"exit code {proc.returncode}"
        return EnvFacts(frozenset(), before, f"{python} is not a working Python ({why})")
    return EnvFacts(found, before + dirs)


class FrameworkCheck:
    """:func:`probe` answers, one per interpreter, kept while their stamp holds."""

    def __init__(self) -> None:
        self._facts: dict[str, EnvFacts] = {}

    async def facts(self, python: str, fresh: bool = False) -> EnvFacts:
        """What ``python`` offers now: cached unless ``fresh`` (a failed probe is not
        cached)."""
        known = None if fresh else self._facts.get(python)
        paths = [p for p, _ in known.stamp] if known else []
        if known and await asyncio.to_thread(stamp, paths) == known.stamp:
            return known
        facts = await probe(python)
        if facts.error is None:
            self._facts[python] = facts
        else:
            self._facts.pop(python, None)
        return facts

    async def require(self, image: ImageSpec, python: str, framework: str) -> None:
        """Raise :class:`OptionError` (field ``image``) unless ``python`` has
        ``framework``'s module.  A refusal is never from the cache: the interpreter is
        asked again first (an install may be newer than the mtimes can tell)."""
        module = MODULES[framework]
        facts = await self.facts(python)
        if module not in facts.modules:
            facts = await self.facts(python, fresh=True)
        if facts.error is not None:
            raise OptionError("image", unusable_env(image, python, facts.error))
        if module not in facts.modules:
            raise OptionError("image", missing_framework(image, python, framework))
