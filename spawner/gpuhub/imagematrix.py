"""``images/matrix.yaml``: load, validate against :mod:`gpuhub.cuda`, turn into the catalog.

:func:`validate_matrix` is pure (parsed YAML in, :class:`Matrix` out).  It refuses what
the frameworks never shipped - a PyTorch version with a CUDA build it never had,
TensorFlow outside its tested CUDA/cuDNN pair, a ``min_driver`` that contradicts
:func:`gpuhub.cuda.min_driver`, duplicate ids or tags - with a
:class:`~gpuhub.errors.ConfigError` naming the entry, the field and what *is* supported.
:func:`load_matrix` is the only function that reads a file.  :func:`catalog_from_matrix`
gives the gpuhub YAML ``images:`` entries, so an image's CUDA version and minimum driver
are typed once, here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import jsonschema
import yaml

from . import cuda as cu
from .errors import ConfigError

__all__ = [
    "MATRIX_SCHEMA",
    "HubImage",
    "ImageEntry",
    "Matrix",
    "catalog_from_matrix",
    "expected_tag",
    "load_matrix",
    "validate_matrix",
]

Framework = Literal["pytorch", "tensorflow", "none"]

SLUG = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
_VERSION = r"^[0-9]+(\.[0-9]+)+$"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==[0-9][A-Za-z0-9.!+-]*$")
_FRAMEWORK_PACKAGES = {"pytorch": {"torch"}, "tensorflow": {"tensorflow", "tensorflow-cpu"}}

_ver = {"type": "string", "pattern": _VERSION}
_nullable_ver = {"type": ["string", "null"], "pattern": _VERSION}
_str = {"type": "string", "minLength": 1}

MATRIX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["registry", "base", "common", "hub", "images"],
    "properties": {
        "registry": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9./:-]*[a-z0-9]$"},
        "base": {
            "type": "object",
            "additionalProperties": False,
            "required": ["image", "python"],
            "properties": {"image": _str, "python": _ver},
        },
        "common": {"type": "object", "additionalProperties": _ver},
        "hub": {
            "type": "object",
            "required": ["image", "tag"],
            "properties": {"image": {"type": "string", "pattern": SLUG}, "tag": _str},
            "additionalProperties": _ver,
        },
        "images": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "id",
                    "display_name",
                    "framework",
                    "version",
                    "cuda",
                    "python",
                    "image",
                    "tag",
                ],
                "properties": {
                    "id": {"type": "string", "pattern": SLUG},
                    "display_name": _str,
                    "framework": {"enum": ["pytorch", "tensorflow", "none"]},
                    "version": _nullable_ver,
                    "cuda": {"type": ["string", "null"], "pattern": r"^[0-9]+\.[0-9]+$"},
                    "cudnn": _nullable_ver,
                    "nccl": _nullable_ver,
                    "python": {"type": "string", "pattern": r"^3\.[0-9]+$"},
                    "min_driver": {
                        "type": ["string", "null"],
                        "pattern": r"^[0-9]+\.[0-9]+(\.[0-9]+)?$",
                    },
                    "full_features": {"type": "boolean"},
                    "image": {"type": "string", "pattern": SLUG},
                    "tag": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
                    "packages": {"type": "array", "items": _str},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class ImageEntry:
    """One validated single-user image variant."""

    id: str
    display_name: str
    framework: Framework
    version: str | None
    cuda: str | None
    cudnn: str | None
    nccl: str | None
    python: str
    min_driver: str | None
    image: str
    tag: str
    packages: tuple[str, ...] = ()
    full_features: bool = False


@dataclass(frozen=True)
class HubImage:
    """The hub image: repository, tag and its pinned versions (``jupyterhub`` ...)."""

    image: str
    tag: str
    versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Matrix:
    """The validated matrix; ``source`` is the file name used in error messages."""

    registry: str
    base_image: str
    python: str
    common: Mapping[str, str]
    hub: HubImage
    images: tuple[ImageEntry, ...]
    source: str = "images/matrix.yaml"

    def entry(self, entry_id: str) -> ImageEntry:
        """The entry with id ``entry_id`` (``KeyError`` naming the known ids otherwise)."""
        for e in self.images:
            if e.id == entry_id:
                return e
        raise KeyError(f"{entry_id!r} is not in {self.source} (ids: {self.ids()})")

    def ids(self) -> str:
        return ", ".join(e.id for e in self.images)


def expected_tag(framework: str, version: str | None, cuda: str | None, python: str) -> str | None:
    """The tag a framework image must carry (``2.11.0-cuda12.8-py3.12``); ``None`` for none."""
    if framework == "none" or version is None:
        return None
    return f"{version}-{f'cuda{cuda}' if cuda else 'cpu'}-py{python}"


def _parts(v: str) -> list[str]:
    return v.split(".")


def _agrees(given: str, table: str) -> bool:
    """Same release to the shorter precision, at least MAJOR.MINOR: ``"9.17"`` agrees with
    ``"9.17.1.4"``, ``"9.3.0"`` with ``"9.3"``; ``"9.1"`` does not agree with ``"9.17.1.4"``."""
    g, t = [int(x) for x in _parts(given)], [int(x) for x in _parts(table)]
    n = min(len(g), len(t))
    return n >= 2 and g[:n] == t[:n]


def _major_minor(v: str) -> str:
    return ".".join(_parts(v)[:2])


class _Entry:
    """Check one raw entry; every refusal names ``images[i].field (id)``."""

    def __init__(self, raw: Mapping[str, Any], index: int, source: str, base_python: str):
        self.raw = raw
        self.index = index
        self.source = source
        self.base_python = base_python
        self.id = str(raw["id"])

    def error(self, key: str, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(f"{self.source}: images[{self.index}].{key} ({self.id})", problem, fix)

    def build(self) -> ImageEntry:
        r = self.raw
        framework = cast(Framework, r["framework"])
        version, cuda, python = r["version"], r["cuda"], r["python"]
        cudnn, nccl = r.get("cudnn"), r.get("nccl")
        full = bool(r.get("full_features", False))
        if python != self.base_python:
            raise self.error(
                "python",
                f"Python {python}, but the base image provides Python {self.base_python}",
                f'set python: "{self.base_python}" (or change base.image and base.python)',
            )
        if cuda is None:
            cpu_only = (("cudnn", cudnn), ("nccl", nccl), ("min_driver", r.get("min_driver")))
            for key, value in cpu_only:
                if value is not None:
                    raise self.error(
                        key,
                        f"{key} {value} on a CPU-only image (cuda is null)",
                        f"set {key}: null, or set cuda",
                    )
        if framework == "pytorch":
            self._check_torch(version, cuda, cudnn, nccl, python)
        elif framework == "tensorflow":
            self._check_tf(version, cuda, cudnn, nccl, python)
        else:
            self._check_none(version, cuda)
        min_driver = self._check_driver(cuda, full)
        self._check_tag(framework, version, cuda, python)
        packages = tuple(r.get("packages", ()))
        self._check_packages(framework, packages)
        return ImageEntry(
            id=self.id,
            display_name=r["display_name"],
            framework=framework,
            version=version,
            cuda=cuda,
            cudnn=cudnn,
            nccl=nccl,
            python=python,
            min_driver=min_driver,
            image=r["image"],
            tag=r["tag"],
            packages=packages,
            full_features=full,
        )

    def _need_version(self, name: str, version: str | None, known: Sequence[str]) -> str:
        if version is None:
            raise self.error(
                "version",
                f"{name} image without a version",
                f"set version (known {name} releases: {', '.join(known)})",
            )
        return version

    def _check_torch(
        self,
        version: str | None,
        cuda: str | None,
        cudnn: str | None,
        nccl: str | None,
        python: str,
    ) -> None:
        known = list(cu.TORCH_RELEASES)
        v = self._need_version("PyTorch", version, known)
        rel = cu.torch_release(v)
        if rel is None:
            raise self.error(
                "version",
                f"PyTorch {v} is not in gpuhub.cuda.TORCH_RELEASES",
                f"use one of {', '.join(known)} or add the release (with its "
                "CUDA wheels from PyTorch's RELEASE.md) to gpuhub/cuda.py",
            )
        mm = _major_minor(v)
        self._check_python(f"PyTorch {mm}", python, rel.python)
        if cuda is None:
            return  # the CPU wheel (download.pytorch.org/whl/cpu) exists for every release
        tag = cu.wheel_tag(cuda)
        ships = ", ".join(rel.builds)
        if tag not in rel.builds:
            raise self.error(
                "cuda",
                f"PyTorch {mm} has no {tag} build; it ships {ships}",
                f"set cuda to one of {', '.join(b.cuda for b in rel.builds.values())}",
            )
        build = rel.builds[tag]
        for key, given, table in (("cudnn", cudnn, build.cudnn), ("nccl", nccl, build.nccl)):
            if given is not None and table is not None and not _agrees(given, table):
                problem = f"PyTorch {mm} {tag} is built with {key} {table}, not {given}"
                raise self.error(key, problem, f'set {key}: "{_major_minor(table)}"')
        if cudnn is None:
            raise self.error(
                "cudnn",
                f"PyTorch {mm} {tag} needs a cudnn value",
                f'set cudnn: "{_major_minor(build.cudnn)}"'
                if build.cudnn
                else "set cudnn to the cuDNN the wheel depends on",
            )

    def _check_tf(
        self,
        version: str | None,
        cuda: str | None,
        cudnn: str | None,
        nccl: str | None,
        python: str,
    ) -> None:
        known = list(cu.TF_RELEASES)
        v = self._need_version("TensorFlow", version, known)
        rel = cu.tf_release(v)
        if rel is None:
            raise self.error(
                "version",
                f"TensorFlow {v} is not in gpuhub.cuda.TF_RELEASES",
                f"use one of {', '.join(known)}",
            )
        mm = _major_minor(v)
        self._check_python(f"TensorFlow {mm}", python, rel.python)
        if cuda is None:
            return
        tested = f"CUDA {rel.cuda} / cuDNN {rel.cudnn}"
        if cuda != rel.cuda:
            raise self.error(
                "cuda",
                f"TensorFlow {mm} is tested with {tested}, not CUDA {cuda}",
                f'set cuda: "{rel.cuda}" and cudnn: "{rel.cudnn}"',
            )
        if cudnn is None or not _agrees(cudnn, rel.cudnn):
            raise self.error(
                "cudnn",
                f"TensorFlow {mm} is tested with {tested}, not cuDNN {cudnn}",
                f'set cudnn: "{rel.cudnn}"',
            )
        if nccl is not None:
            raise self.error(
                "nccl",
                "the TensorFlow table records no NCCL version",
                "remove nccl (the smoke test reports what the image has)",
            )

    def _check_none(self, version: str | None, cuda: str | None) -> None:
        if version is not None:
            raise self.error(
                "version",
                "framework none takes no version",
                "set version: null (pin libraries under packages)",
            )
        if cuda is not None:
            raise self.error(
                "cuda",
                "framework none images are CPU-only",
                "set cuda: null, or use framework pytorch/tensorflow",
            )

    def _check_python(self, what: str, python: str, supported: tuple[str, str]) -> None:
        lo, hi = supported
        if not cu.version_in_range(python, lo, hi):
            raise self.error(
                "python",
                f"{what} supports Python {lo}-{hi}, not {python}",
                f"use a Python between {lo} and {hi}",
            )

    def _check_driver(self, cuda: str | None, full: bool) -> str | None:
        given = self.raw.get("min_driver")
        if cuda is None:
            return None
        try:
            floor = cu.min_driver(cuda, full_features=full)
        except ValueError as e:
            raise self.error("cuda", str(e)) from e
        kind = "toolkit driver" if full else "minor-version-compatibility floor"
        if given is None:
            return str(floor)
        if cu.parse_driver(given) != floor:
            raise self.error(
                "min_driver",
                f"min_driver {given} contradicts CUDA {cuda}: gpuhub.cuda.min_driver gives "
                f"{floor} (the {kind})",
                f'set min_driver: "{floor}" (or remove it; it is derived)',
            )
        return str(floor)

    def _check_tag(
        self, framework: str, version: str | None, cuda: str | None, python: str
    ) -> None:
        tag = str(self.raw["tag"])
        want = expected_tag(framework, version, cuda, python)
        if want is not None and tag != want:
            raise self.error("tag", f"tag {tag!r} does not match the entry", f'set tag: "{want}"')
        if want is None and (not tag.endswith(f"-py{python}") or "cuda" in tag):
            raise self.error(
                "tag",
                f"tag {tag!r} must end in -py{python} and name no CUDA",
                f'e.g. tag: "2026.11-py{python}"',
            )

    def _check_packages(self, framework: str, packages: tuple[str, ...]) -> None:
        for j, pin in enumerate(packages):
            m = _PIN.match(pin)
            if not m:
                raise self.error(
                    f"packages[{j}]",
                    f"{pin!r} is not pinned as name==version",
                    'write e.g. "torchvision==0.26.0"',
                )
            if m[1].lower() in _FRAMEWORK_PACKAGES.get(framework, set()):
                raise self.error(
                    f"packages[{j}]",
                    f"{pin!r} pins the framework itself",
                    "remove it; the framework pin comes from version",
                )


def _schema_error(data: Any, source: str) -> ConfigError | None:
    validator = jsonschema.Draft202012Validator(MATRIX_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    where = f"{source}: {path.lstrip('.') or '(top level)'}"
    items = data.get("images") if isinstance(data, dict) else None
    pos = list(err.absolute_path)
    if len(pos) >= 2 and pos[0] == "images" and isinstance(items, list):
        entry = items[pos[1]]
        if isinstance(entry, dict) and "id" in entry:
            where += f" ({entry['id']})"
    return ConfigError(where, err.message, "see the field list at the top of images/matrix.yaml")


def validate_matrix(data: Any, source: str = "images/matrix.yaml") -> Matrix:
    """Validate parsed ``matrix.yaml`` content; raise :class:`ConfigError` on the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            "the matrix is empty or not a mapping",
            "start from images/matrix.yaml in the gpuhub repository",
        )
    err = _schema_error(data, source)
    if err:
        raise err
    base_python = data["base"]["python"]
    entries: list[ImageEntry] = []
    seen_ids: dict[str, int] = {}
    seen_refs: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(data["images"]):
        e = _Entry(raw, i, source, base_python)
        if e.id in seen_ids:
            raise e.error(
                "id", f"id {e.id!r} repeats images[{seen_ids[e.id]}]", "give every entry its own id"
            )
        seen_ids[e.id] = i
        ref = (str(raw["image"]), str(raw["tag"]))
        if ref in seen_refs:
            raise e.error(
                "tag",
                f"{ref[0]}:{ref[1]} repeats images[{seen_refs[ref]}]",
                "give every entry its own image:tag",
            )
        seen_refs[ref] = i
        entries.append(e.build())
    hub = data["hub"]
    return Matrix(
        registry=data["registry"],
        base_image=data["base"]["image"],
        python=base_python,
        common=dict(data["common"]),
        hub=HubImage(
            image=hub["image"],
            tag=hub["tag"],
            versions={k: v for k, v in hub.items() if k not in ("image", "tag")},
        ),
        images=tuple(entries),
        source=source,
    )


def load_matrix(path: str | Path) -> Matrix:
    """Read and validate a matrix file (the only I/O in this module)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            source,
            f"cannot read the image matrix: {e.strerror}",
            "point image_matrix at images/matrix.yaml",
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(source, f"not valid YAML: {e}") from e
    return validate_matrix(data, source)


def image_ref(matrix: Matrix, entry: ImageEntry, registry: str | None = None) -> str:
    """The full image reference ``REGISTRY/IMAGE:TAG``."""
    return f"{registry or matrix.registry}/{entry.image}:{entry.tag}"


def catalog_from_matrix(matrix: Matrix, registry: str | None = None) -> dict[str, dict[str, Any]]:
    """The gpuhub YAML ``images:`` mapping (slug -> entry) for every matrix entry.

    ``registry`` overrides ``matrix.registry`` (images pushed elsewhere with ``REGISTRY=``).
    """
    return {
        e.id: {
            "display_name": e.display_name,
            "image": image_ref(matrix, e, registry),
            "framework": e.framework,
            "framework_version": e.version,
            "cuda": e.cuda,
            "min_driver": e.min_driver,
            "python": e.python,
        }
        for e in matrix.images
    }
