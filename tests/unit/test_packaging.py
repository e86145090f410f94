"""What ``pip install gpuhub[jobs,kube]`` (the hub image) installs covers what the jobs
service imports: every gpuhub module it reaches imports, and every third-party top-level
import of ``gpuhub.jobs`` (including imports inside functions) is declared in
pyproject.toml's base dependencies or its ``jobs``/``kube`` extras."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "spawner" / "gpuhub"


def module_file(name: str) -> Path | None:
    """The source of gpuhub module ``name`` (``gpuhub.a.b``), if it is one."""
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE / rel / "__init__.py", PACKAGE / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names}
            elif node.module:
                out.add(node.module)
    return out


def service_modules() -> tuple[set[str], set[str]]:
    """(gpuhub modules reached from gpuhub.jobs, third-party top-level names that the
    modules of gpuhub.jobs itself import)."""
    todo = [
        "gpuhub." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for p in (PACKAGE / "jobs").rglob("*.py")
    ]
    seen: set[str] = set()
    third: set[str] = set()
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for imported in imports_of(path, name):
            top = imported.split(".")[0]
            if top == "gpuhub":
                todo.append(imported)
            elif (
                top not in sys.stdlib_module_names
                and top != "__future__"
                and name.startswith("gpuhub.jobs")
            ):
                third.add(top)
    return seen, third


def declared() -> set[str]:
    """Normalised distribution names of the base dependencies and the jobs/kube extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"]]
    for extra in ("jobs", "kube"):
        reqs += project["optional-dependencies"][extra]
    return {normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in reqs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_service_import_is_declared():
    modules, third = service_modules()
    assert "gpuhub.jobs.policy" in modules and "gpuhub.jobs.backends.kubeflow" in modules
    assert {"IPython", "nbconvert", "nbformat"} <= third  # imported inside functions
    for name in sorted(modules):
        importlib.import_module(name)
    dists = importlib.metadata.packages_distributions()
    wanted = declared()
    missing = {
        top: dists.get(top)
        for top in third
        if not any(normalise(d) in wanted for d in dists.get(top, []))
    }
    assert not missing, f"imported by the jobs service but not declared: {missing}"


def test_hub_image_installs_the_service_extras():
    dockerfile = (ROOT / "images" / "hub" / "Dockerfile").read_text()
    assert re.search(r'"/src/gpuhub\[(kube,jobs|jobs,kube)\]"', dockerfile)
    assert "pip check" in dockerfile


def test_hub_image_has_what_z2jh_config_imports():
    """z2jh's own jupyterhub_config.py (the chart's hub ConfigMap) configures tornado's curl
    client, which imports pycurl at hub start: the hub image must install it."""
    z2jh = ROOT.parent / "shared" / "data" / "z2jh-4.4.0-chart" / "jupyterhub" / "files" / "hub"
    assert (
        "tornado.curl_httpclient.CurlAsyncHTTPClient" in (z2jh / "jupyterhub_config.py").read_text()
    )
    dockerfile = (ROOT / "images" / "hub" / "Dockerfile").read_text()
    assert re.search(r'"pycurl==[0-9.]+"', dockerfile)
