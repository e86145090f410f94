"""CUDA facts as pure data: driver floors, PyTorch wheel builds, TensorFlow tested builds.

Used by :mod:`gpuhub.imagematrix` (to refuse image variants the frameworks never shipped)
and by the spawners (to send a CUDA image only to nodes whose driver can run it).  No I/O.

The public API is small:

* :func:`parse_driver` / :class:`DriverVersion` - ``"580.65.06"`` as a comparable value;
* :func:`min_driver` - the oldest Linux driver a CUDA ``X.Y`` build runs on;
* :func:`driver_supports` - ``driver >= min_driver(cuda)``;
* :func:`nvidia_require_cuda` - the ``NVIDIA_REQUIRE_CUDA`` value matching :func:`min_driver`;
* :func:`node_driver_affinity` - Kubernetes ``nodeSelectorTerms`` for that floor;
* :func:`torch_release` / :func:`tf_release` - what each framework release ships.

Sources (see ``shared/reference/cuda-images.md``): NVIDIA's CUDA toolkit release notes and
minor-version-compatibility guide, PyTorch's RELEASE.md "Release Compatibility Matrix",
https://www.tensorflow.org/install/source#gpu.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GFD_DRIVER_LABELS",
    "MINOR_COMPAT_FLOOR",
    "TF_RELEASES",
    "TOOLKIT_DRIVER",
    "TORCH_RELEASES",
    "DriverVersion",
    "TfRelease",
    "TorchBuild",
    "TorchRelease",
    "driver_supports",
    "min_driver",
    "node_driver_affinity",
    "nvidia_require_cuda",
    "parse_cuda",
    "parse_driver",
    "tf_release",
    "torch_release",
    "version_in_range",
    "wheel_tag",
]

_DRIVER_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_CUDA_RE = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class DriverVersion:
    """An NVIDIA Linux driver version; compares numerically, prints as NVIDIA writes it."""

    major: int
    minor: int
    revision: int = 0
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor:02d}.{self.revision:02d}"


def parse_driver(text: str) -> DriverVersion:
    """Parse ``"580.65.06"`` or ``"570.26"`` (raise :class:`ValueError` otherwise)."""
    m = _DRIVER_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an NVIDIA driver version: {text!r} (expected e.g. 580.65.06)")
    return DriverVersion(int(m[1]), int(m[2]), int(m[3] or 0), text.strip())


def parse_cuda(text: str) -> tuple[int, int]:
    """Parse a CUDA toolkit version ``"12.8"`` into ``(12, 8)``."""
    m = _CUDA_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a CUDA version: {text!r} (expected MAJOR.MINOR, e.g. 12.8)")
    return int(m[1]), int(m[2])


def wheel_tag(cuda: str) -> str:
    """PyTorch's wheel-variant name for a CUDA version: ``"12.8"`` -> ``"cu128"``."""
    major, minor = parse_cuda(cuda)
    return f"cu{major}{minor}"


# --- drivers ---------------------------------------------------------------------------

#: Minor-version compatibility: a binary built with any CUDA ``major.x`` runs on a driver at
#: least this new ("limited feature set": no PTX JIT from a newer toolkit).
MINOR_COMPAT_FLOOR: Mapping[int, str] = {
    13: "580.65.06",
    12: "525.60.13",
    11: "450.80.02",
}

#: Per toolkit release, the driver it ships with (full features, PTX JIT).  GA release
#: unless noted; 13.2/13.3 only their updates are in the reference (conservative).
TOOLKIT_DRIVER: Mapping[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
    "13.2": "595.71.05",  # 13.2 Update 2
    "13.3": "610.43.02",  # 13.3 Update 1
}


def min_driver(cuda: str, *, full_features: bool = False) -> DriverVersion:
    """The oldest Linux driver that runs a CUDA ``cuda`` build.

    By default the minor-version-compatibility floor of the CUDA major (what PyTorch and
    TensorFlow wheels need to run); ``full_features=True`` gives the toolkit's own driver
    (needed for PTX JIT of kernels newer than the GPU's SASS, e.g. ``+PTX`` on new GPUs).
    """
    major, _ = parse_cuda(cuda)
    if full_features:
        if cuda not in TOOLKIT_DRIVER:
            raise ValueError(f"CUDA {cuda} is not in the driver table (known: {_known_cuda()})")
        return parse_driver(TOOLKIT_DRIVER[cuda])
    if major not in MINOR_COMPAT_FLOOR:
        known = ", ".join(f"{m}.x" for m in sorted(MINOR_COMPAT_FLOOR))
        raise ValueError(f"CUDA {cuda}: no driver floor known for CUDA {major}.x ({known})")
    return parse_driver(MINOR_COMPAT_FLOOR[major])


def driver_supports(driver: str, cuda: str, *, full_features: bool = False) -> bool:
    """True when the node driver ``driver`` (e.g. ``"575.57.08"``) runs a ``cuda`` build."""
    return parse_driver(driver) >= min_driver(cuda, full_features=full_features)


def nvidia_require_cuda(cuda: str, *, full_features: bool = False) -> str:
    """The ``NVIDIA_REQUIRE_CUDA`` value that agrees with :func:`min_driver`.

    nvidia-container-cli compares it with the highest CUDA the driver supports.  Under
    minor-version compatibility that is ``cuda>=MAJOR.0`` (the driver floor of the major);
    with ``full_features`` it is the toolkit version itself.
    """
    major, minor = parse_cuda(cuda)
    return f"cuda>={major}.{minor if full_features else 0}"


def _known_cuda() -> str:
    return ", ".join(TOOLKIT_DRIVER)


#: GPU Feature Discovery driver labels: the current family first, then the deprecated one
#: (still emitted; read both so nodes with an older GFD also match).
GFD_DRIVER_LABELS: tuple[tuple[str, str, str], ...] = (
    (
        "nvidia.com/cuda.driver-version.major",
        "nvidia.com/cuda.driver-version.minor",
        "nvidia.com/cuda.driver-version.revision",
    ),
    ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev"),
)


def _gt(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "operator": "Gt", "values": [str(value)]}


def _lt(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "operator": "Lt", "values": [str(value)]}


def _eq(key: str, value: int) -> list[dict[str, Any]]:
    """Numeric equality as ``Gt v-1`` and ``Lt v+1`` (immune to zero-padded labels)."""
    return [_gt(key, value - 1), _lt(key, value + 1)]


def node_driver_affinity(cuda: str, *, full_features: bool = False) -> list[dict[str, Any]]:
    """Kubernetes ``nodeSelectorTerms`` admitting nodes whose driver is ``>= min_driver(cuda)``.

    Terms are OR-ed; each is ``{"matchExpressions": [...]}`` (AND-ed).  ``Gt``/``Lt`` compare
    label values as integers.  For a floor ``M.m.r`` the driver is new enough when

    1. ``major > M``, or
    2. ``major == M`` and ``minor > m``, or
    3. ``major == M`` and ``minor == m`` and ``revision >= r``.

    Equality is written ``Gt v-1`` + ``Lt v+1`` so zero-padded label values (``"06"``) match.
    Trailing zero parts collapse: ``580.0.0`` needs only ``major > 579``; ``570.26`` needs
    terms 1 and ``major == 570, minor > 25``.  For 13.x (floor 580.65.06) this gives three
    terms: ``major Gt 580``; ``major == 580, minor Gt 65``; ``major == 580, minor == 65,
    revision Gt 5``.  The whole set is emitted once for the current GFD labels
    (``nvidia.com/cuda.driver-version.*``) and once for the deprecated ones
    (``nvidia.com/cuda.driver.*``), so a node carrying either family matches.

    Use the list as ``requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms``.
    Because terms are OR-ed, any other required expression (e.g. ``nvidia.com/gpu.product``)
    must be appended to *every* term.  Nodes without GFD labels never match.
    """
    floor = min_driver(cuda, full_features=full_features)
    terms: list[dict[str, Any]] = []
    for major_key, minor_key, rev_key in GFD_DRIVER_LABELS:
        if floor.minor == 0 and floor.revision == 0:
            terms.append({"matchExpressions": [_gt(major_key, floor.major - 1)]})
            continue
        terms.append({"matchExpressions": [_gt(major_key, floor.major)]})
        same_major = _eq(major_key, floor.major)
        if floor.revision == 0:
            terms.append({"matchExpressions": [*same_major, _gt(minor_key, floor.minor - 1)]})
            continue
        terms.append({"matchExpressions": [*same_major, _gt(minor_key, floor.minor)]})
        terms.append(
            {
                "matchExpressions": [
                    *same_major,
                    *_eq(minor_key, floor.minor),
                    _gt(rev_key, floor.revision - 1),
                ]
            }
        )
    return terms


# --- frameworks ------------------------------------------------------------------------


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def version_in_range(version: str, lowest: str, highest: str) -> bool:
    """``lowest <= version <= highest`` comparing dotted integers (``"3.12"``)."""
    return _version_key(lowest) <= _version_key(version) <= _version_key(highest)


@dataclass(frozen=True)
class TorchBuild:
    """One CUDA wheel variant of a PyTorch release; cuDNN/NCCL ``None`` where unrecorded."""

    cuda: str
    cudnn: str | None = None
    nccl: str | None = None


@dataclass(frozen=True)
class TorchRelease:
    """A PyTorch minor release: Python range and its CUDA wheel variants (``cu128`` ...)."""

    python: tuple[str, str]
    builds: Mapping[str, TorchBuild]


def _tb(cuda: str, cudnn: str | None = None, nccl: str | None = None) -> tuple[str, TorchBuild]:
    return wheel_tag(cuda), TorchBuild(cuda, cudnn, nccl)


#: PyTorch minor -> Linux CUDA wheels (RELEASE.md "Release Compatibility Matrix"; cuDNN and
#: NCCL from its 2.9+ rows, 2.11 confirmed by two copies).
TORCH_RELEASES: Mapping[str, TorchRelease] = {
    "2.3": TorchRelease(("3.8", "3.11"), dict([_tb("11.8", "8.7.0.84"), _tb("12.1", "8.9.2.26")])),
    "2.4": TorchRelease(
        ("3.8", "3.12"),
        dict([_tb("11.8", "9.1.0.70"), _tb("12.1", "9.1.0.70"), _tb("12.4", "9.1.0.70")]),
    ),
    "2.5": TorchRelease(
        ("3.9", "3.12"),
        dict([_tb("11.8", "9.1.0.70"), _tb("12.1", "9.1.0.70"), _tb("12.4", "9.1.0.70")]),
    ),
    "2.6": TorchRelease(
        ("3.9", "3.13"), dict([_tb("11.8"), _tb("12.4", "9.1.0.70"), _tb("12.6", "9.5.1.17")])
    ),
    "2.7": TorchRelease(
        ("3.9", "3.13"),
        dict([_tb("11.8", "9.1.0.70"), _tb("12.6", "9.5.1.17"), _tb("12.8", "9.7.1.26")]),
    ),
    "2.8": TorchRelease(
        ("3.9", "3.13"),
        dict([_tb("12.6", "9.10.2.21"), _tb("12.8", "9.10.2.21"), _tb("12.9", "9.10.2.21")]),
    ),
    "2.9": TorchRelease(
        ("3.10", "3.14"),
        dict([_tb("12.6", "9.10.2.21"), _tb("12.8", "9.10.2.21"), _tb("13.0", "9.13.0.50")]),
    ),
    "2.10": TorchRelease(
        ("3.10", "3.14"),
        dict(
            [
                _tb("12.6", "9.10.2.21", "2.27.5"),
                _tb("12.8", "9.10.2.21", "2.27.5"),
                _tb("13.0", "9.15.1.9", "2.28.9"),
            ]
        ),
    ),
    "2.11": TorchRelease(
        ("3.10", "3.14"),
        dict(
            [
                _tb("12.6", "9.10.2.21", "2.28.9"),
                _tb("12.8", "9.17.1.4", "2.28.9"),
                # RELEASE.md says 9.17.1.4; the cu130 wheel (PyPI's torch 2.11.0) requires
                # nvidia-cudnn-cu13==9.19.0.56 and loads 9.19.0 (images/build.py, 2026-12-01).
                _tb("13.0", "9.19.0.56", "2.28.9"),
            ]
        ),
    ),
    "2.12": TorchRelease(
        ("3.10", "3.14"),
        dict(
            [
                _tb("12.6", "9.10.2.21", "2.29.3"),
                _tb("13.0", "9.20.0.48", "2.29.7"),
                _tb("13.2", "9.20.0.48", "2.29.7"),
            ]
        ),
    ),
    "2.13": TorchRelease(
        ("3.10", "3.15"),
        dict(
            [
                _tb("12.6", "9.10.2.21", "2.29.3"),
                _tb("13.0", "9.20.0.48", "2.29.7"),
                _tb("13.2", "9.20.0.48", "2.29.7"),
            ]
        ),
    ),
}


@dataclass(frozen=True)
class TfRelease:
    """A TensorFlow minor release's tested GPU build (tensorflow.org/install/source#gpu)."""

    cuda: str
    cudnn: str
    python: tuple[str, str]


TF_RELEASES: Mapping[str, TfRelease] = {
    "2.14": TfRelease("11.8", "8.7", ("3.9", "3.11")),
    "2.15": TfRelease("12.2", "8.9", ("3.9", "3.11")),
    "2.16": TfRelease("12.3", "8.9", ("3.9", "3.12")),
    "2.17": TfRelease("12.3", "8.9", ("3.9", "3.12")),
    "2.18": TfRelease("12.5", "9.3", ("3.9", "3.12")),
    "2.19": TfRelease("12.5", "9.3", ("3.9", "3.12")),
    "2.20": TfRelease("12.5", "9.3", ("3.9", "3.13")),
    "2.21": TfRelease("12.5", "9.3", ("3.10", "3.13")),
}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def torch_release(version: str) -> TorchRelease | None:
    """The table row for a PyTorch version (``"2.11.0"`` or ``"2.11"``), or ``None``."""
    return TORCH_RELEASES.get(_minor(version))


def tf_release(version: str) -> TfRelease | None:
    """The tested-build row for a TensorFlow version (``"2.21.0"``), or ``None``."""
    return TF_RELEASES.get(_minor(version))
