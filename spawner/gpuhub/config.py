"""The declarative gpuhub YAML: schema, validation with key-path errors, and the pure
mapping from the validated dict to :class:`~gpuhub.model.GpuhubConfig`.

Only :func:`load_config` touches the file system; everything else is a pure function of
the parsed YAML, testable with plain dicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError
from .jobs.settings import JOBS_SCHEMA, job_limits_from
from .model import (
    ALL_GROUPS,
    AuthConfig,
    DeclaredDevice,
    GpuChoice,
    GpuhubConfig,
    GpuType,
    GroupQuota,
    ImageSpec,
    JobLimits,
    LocalConfig,
    Profile,
    QuotaConfig,
)
from .monitor.settings import (
    IDLE_CULLING_SCHEMA,
    MONITOR_SCHEMA,
    check_idle_culling,
    idle_culling_from,
    monitor_from,
)

CONFIG_ENV = "GPUHUB_CONFIG"

SLUG = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?([KMGT]i?)?$"
_DRIVER = r"^[0-9]+(\.[0-9]+){1,2}$"
_CUDA = r"^[0-9]+\.[0-9]+$"
_IMAGE_REF = r"^[a-z0-9][A-Za-z0-9._/:@-]*$"
_NODE_LABEL = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"

_str = {"type": "string", "minLength": 1}
_slug = {"type": "string", "pattern": SLUG}
_name = {"type": "string", "pattern": NAME}
_quantity = {"type": "string", "pattern": QUANTITY}

IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["display_name", "image"],
    "properties": {
        "display_name": _str,
        "image": {"type": "string", "pattern": _IMAGE_REF},
        "framework": {"enum": ["pytorch", "tensorflow", "none"]},
        "framework_version": {"type": ["string", "null"]},
        "cuda": {"type": ["string", "null"], "pattern": _CUDA},
        "min_driver": {"type": ["string", "null"], "pattern": _DRIVER},
        "python": {"type": ["string", "null"]},
        "local_env": {"type": ["string", "null"], "minLength": 1},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["profiles"],
    "properties": {
        "gpu_types": {
            "type": "object",
            "propertyNames": {"pattern": SLUG},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["display_name", "node_label"],
                "properties": {
                    "display_name": _str,
                    "node_label": {"type": "string", "pattern": _NODE_LABEL},
                    "local_models": {"type": "array", "items": _str},
                    "memory_gib": {"type": "integer", "minimum": 1},
                },
            },
        },
        "image_matrix": _str,
        "images": {
            "type": "object",
            "propertyNames": {"pattern": SLUG},
            "additionalProperties": IMAGE_SCHEMA,
        },
        "profiles": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["slug", "display_name", "images"],
                "properties": {
                    "slug": _slug,
                    "display_name": _str,
                    "description": {"type": "string"},
                    "cpu": {"type": "number", "exclusiveMinimum": 0},
                    "memory": _quantity,
                    "shm": _quantity,
                    "images": {"type": "array", "minItems": 1, "items": _slug},
                    "groups": {"type": "array", "minItems": 1, "items": _str},
                    "default": {"type": "boolean"},
                    "kueue_queue": _slug,
                    "priority_class": _slug,
                    "idle_culling": IDLE_CULLING_SCHEMA,
                    "jobs": JOBS_SCHEMA,
                    "gpu": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["types", "counts"],
                        "properties": {
                            "types": {"type": "array", "minItems": 1, "items": _slug},
                            "counts": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "integer", "minimum": 1, "maximum": 64},
                            },
                        },
                    },
                },
            },
        },
        "quotas": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "per_user_gpus": {"type": "integer", "minimum": 0},
                "groups": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["gpus"],
                        "properties": {
                            "gpus": {"type": "integer", "minimum": 0},
                            "per_type": {
                                "type": "object",
                                "additionalProperties": {"type": "integer", "minimum": 0},
                            },
                        },
                    },
                },
            },
        },
        "groups": {
            "type": "object",
            "propertyNames": {"pattern": NAME},
            "additionalProperties": {"type": "array", "items": _name},
        },
        "local": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "inventory": {"enum": ["auto", "nvml", "declared"]},
                "devices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["index", "type"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "type": _slug,
                        },
                    },
                },
            },
        },
        "monitor": MONITOR_SCHEMA,
        "jobs": JOBS_SCHEMA,
        "auth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "admin_users": {"type": "array", "items": _name},
                "allow_all": {"type": "boolean"},
            },
        },
    },
}

_FIX_BY_VALIDATOR = {
    "additionalProperties": "remove the key or correct its spelling",
    "required": "add the missing key",
    "enum": "use one of the listed values",
    "type": "use a value of the stated type",
    "minItems": "list at least one entry",
    "minLength": "give a non-empty value",
}

_FIX_BY_PATTERN = {
    SLUG: "use lowercase letters, digits, '.', '_' and '-', starting and ending with a "
    "letter or digit (see docs/configuration.md)",
    NAME: "use letters, digits, '.', '_', '@' and '-', starting with a letter or digit (no spaces)",
    QUANTITY: "write a number and an optional unit K, M, G, T (or Ki, Mi, Gi, Ti) with no "
    "space, e.g. 4G or 512Mi",
    _DRIVER: "write the driver version as numbers separated by dots, e.g. 525.60.13",
    _CUDA: 'write the CUDA version as major.minor in quotes, e.g. "12.8"',
    _IMAGE_REF: "write an image reference such as ghcr.io/org/name:tag (starting with a "
    "lowercase letter or digit, no spaces)",
    _NODE_LABEL: "use letters, digits, '.', '_' and '-' (a Kubernetes label value such as "
    "NVIDIA-A100-SXM4-80GB)",
}

_VERSION_IN_QUOTES = 'write the version in quotes, e.g. "12.8" (unquoted, YAML reads a number)'
_FIX_FOR_NUMBER_BY_KEY = {
    "cuda": _VERSION_IN_QUOTES,
    "min_driver": 'write the version in quotes, e.g. "525.60.13"',
    "python": 'write the version in quotes, e.g. "3.12" (unquoted, YAML reads 3.1 for 3.10)',
    "framework_version": _VERSION_IN_QUOTES,
    "memory": "write a size with its unit, e.g. 4G or 512Mi",
    "shm": "write a size with its unit, e.g. 1G or 512Mi",
}

_FIX_FOR_TYPE_BY_KEY = {
    "time_limit_minutes": "write a number of minutes, e.g. 120 for two hours (null: no limit)",
}

MatrixLoader = Callable[[Path], Mapping[str, Mapping[str, Any]]]


def key_path(source: str, parts: Iterable[str | int]) -> str:
    """``gpuhub.yaml: profiles[1].gpu.types[0]`` from a list of keys and indices."""
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return f"{source}: {text}" if text else source


def validate_schema(data: Any, source: str) -> None:
    """Raise :class:`ConfigError` for the first schema violation, naming its key path."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    problem = err.message
    if "propertyNames" in err.schema_path:
        problem = f"key {problem}"
    raise ConfigError(key_path(source, err.absolute_path), problem, schema_fix(err))


def schema_fix(err: jsonschema.ValidationError) -> str | None:
    """The fix for one schema violation, worded for the kind of value at that key."""
    kind, value = str(err.validator), err.validator_value
    if kind == "pattern":
        return _FIX_BY_PATTERN.get(str(value), "see docs/configuration.md for the format")
    if kind == "minimum":
        return f"use {value} or more"
    if kind == "exclusiveMinimum":
        return f"use a value above {value}"
    if kind == "maximum":
        return f"use {value} or less"
    key = err.absolute_path[-1] if err.absolute_path else None
    if (
        kind == "type"
        and isinstance(err.instance, int | float)
        and str(key) in _FIX_FOR_NUMBER_BY_KEY
    ):
        return _FIX_FOR_NUMBER_BY_KEY[str(key)]
    if kind == "type" and str(key) in _FIX_FOR_TYPE_BY_KEY:
        return _FIX_FOR_TYPE_BY_KEY[str(key)]
    return _FIX_BY_VALIDATOR.get(kind)


def _default_matrix_loader(path: Path) -> Mapping[str, Mapping[str, Any]]:
    from .imagematrix import catalog_from_matrix, load_matrix

    catalog: Mapping[str, Mapping[str, Any]] = catalog_from_matrix(load_matrix(path))
    return catalog


def parse_config(
    data: Any,
    source: str = "gpuhub.yaml",
    base_dir: Path | None = None,
    matrix_loader: MatrixLoader = _default_matrix_loader,
) -> GpuhubConfig:
    """Validate the parsed YAML and turn it into a :class:`GpuhubConfig`."""
    if data is None:
        raise ConfigError(
            source,
            "the file is empty",
            "write a starter config with gpuhub-config init PATH, or start from the example "
            "in docs/configuration.md",
        )
    validate_schema(data, source)
    gpu_types = {
        slug: GpuType(
            slug=slug,
            display_name=t["display_name"],
            node_label=t["node_label"],
            local_models=tuple(t.get("local_models", ())),
            memory_gib=t.get("memory_gib"),
        )
        for slug, t in data.get("gpu_types", {}).items()
    }
    images = _images(data, source, base_dir or Path("."), matrix_loader)
    profiles = tuple(_profile(p, i, source) for i, p in enumerate(data["profiles"]))
    quotas = _quotas(data.get("quotas", {}))
    groups = {g: tuple(users) for g, users in data.get("groups", {}).items()}
    local = data.get("local", {})
    auth = data.get("auth", {})
    config = GpuhubConfig(
        gpu_types=gpu_types,
        images=images,
        profiles=profiles,
        quotas=quotas,
        groups=groups,
        local=LocalConfig(
            inventory=local.get("inventory", "auto"),
            devices=tuple(DeclaredDevice(d["index"], d["type"]) for d in local.get("devices", [])),
        ),
        auth=AuthConfig(
            admin_users=tuple(auth.get("admin_users", ())),
            allow_all=bool(auth.get("allow_all", False)),
        ),
        source=source,
        monitor=monitor_from(data.get("monitor", {}), source, base_dir or Path(".")),
        jobs=job_limits_from(data.get("jobs")) or JobLimits(),
    )
    check_references(config)
    return config


def _images(
    data: Mapping[str, Any], source: str, base_dir: Path, matrix_loader: MatrixLoader
) -> dict[str, ImageSpec]:
    entries: dict[str, Mapping[str, Any]] = {}
    if "image_matrix" in data:
        matrix_path = base_dir / data["image_matrix"]
        if not matrix_path.is_file():
            raise ConfigError(
                key_path(source, ["image_matrix"]),
                f"{matrix_path} does not exist",
                "point image_matrix at images/matrix.yaml (relative to this file)",
            )
        entries.update(matrix_loader(matrix_path))
        for slug, entry in entries.items():
            try:
                jsonschema.validate(entry, IMAGE_SCHEMA)
            except jsonschema.ValidationError as e:
                raise ConfigError(f"{matrix_path}: {slug}", e.message) from e
    entries.update(data.get("images", {}))
    return {
        slug: ImageSpec(
            slug=slug,
            display_name=e["display_name"],
            image=e["image"],
            framework=e.get("framework", "none"),
            framework_version=e.get("framework_version"),
            cuda=e.get("cuda"),
            min_driver=e.get("min_driver"),
            python=e.get("python"),
            local_env=e.get("local_env"),
        )
        for slug, e in entries.items()
    }


def _profile(p: Mapping[str, Any], index: int, source: str) -> Profile:
    gpu = p.get("gpu")
    choice = None
    if gpu is not None:
        counts = tuple(gpu["counts"])
        if len(set(counts)) != len(counts):
            raise ConfigError(
                key_path(source, ["profiles", index, "gpu", "counts"]),
                f"counts {list(counts)} repeat a value",
                "list each GPU count once",
            )
        choice = GpuChoice(types=tuple(gpu["types"]), counts=tuple(sorted(counts)))
    return Profile(
        slug=p["slug"],
        display_name=p["display_name"],
        description=p.get("description", ""),
        cpu=float(p.get("cpu", 1)),
        memory=p.get("memory", "2G"),
        shm=p.get("shm", "1G" if gpu is None else "8G"),
        images=tuple(p["images"]),
        groups=tuple(p.get("groups", [ALL_GROUPS])),
        gpu=choice,
        default=bool(p.get("default", False)),
        kueue_queue=p.get("kueue_queue"),
        priority_class=p.get("priority_class"),
        idle_culling=idle_culling_from(p.get("idle_culling")),
        jobs=job_limits_from(p.get("jobs")),
    )


def _quotas(q: Mapping[str, Any]) -> QuotaConfig:
    return QuotaConfig(
        groups=tuple(
            GroupQuota(group=g, gpus=v["gpus"], per_type=dict(v.get("per_type", {})))
            for g, v in q.get("groups", {}).items()
        ),
        per_user_gpus=q.get("per_user_gpus"),
    )


def check_references(config: GpuhubConfig) -> None:
    """Cross-reference checks the schema cannot express (unknown slugs, duplicates)."""
    src = config.source
    types = sorted(config.gpu_types)
    seen: set[str] = set()
    defaults = 0
    for i, p in enumerate(config.profiles):
        if p.slug in seen:
            raise ConfigError(
                key_path(src, ["profiles", i, "slug"]),
                f"profile slug {p.slug!r} is used twice",
                "give every profile its own slug",
            )
        seen.add(p.slug)
        defaults += p.default
        for j, img in enumerate(p.images):
            if img not in config.images:
                raise ConfigError(
                    key_path(src, ["profiles", i, "images", j]),
                    f"image {img!r} is not in the image catalog "
                    f"(known: {', '.join(sorted(config.images)) or 'none'})",
                    "add it under images (or to images/matrix.yaml) or remove it here",
                )
        if p.gpu is None:
            continue
        for j, t in enumerate(p.gpu.types):
            if t not in config.gpu_types:
                raise ConfigError(
                    key_path(src, ["profiles", i, "gpu", "types", j]),
                    f"GPU type {t!r} is not defined under gpu_types "
                    f"(defined: {', '.join(types) or 'none'})",
                    "define it under gpu_types or remove it here",
                )
    if defaults > 1:
        raise ConfigError(
            key_path(src, ["profiles"]),
            "more than one profile has default: true",
            "mark at most one profile as default",
        )
    for q in config.quotas.groups:
        for t in q.per_type:
            if t not in config.gpu_types:
                raise ConfigError(
                    key_path(src, ["quotas", "groups", q.group, "per_type", t]),
                    f"GPU type {t!r} is not defined under gpu_types "
                    f"(defined: {', '.join(types) or 'none'})",
                    "define it under gpu_types or remove it here",
                )
            if q.per_type[t] > q.gpus:
                raise ConfigError(
                    key_path(src, ["quotas", "groups", q.group, "per_type", t]),
                    f"per-type quota {q.per_type[t]} is larger than the group total {q.gpus}",
                    "lower it, or raise quotas.groups.<group>.gpus",
                )
    check_idle_culling(config)
    indices: set[int] = set()
    for i, d in enumerate(config.local.devices):
        if d.type not in config.gpu_types:
            raise ConfigError(
                key_path(src, ["local", "devices", i, "type"]),
                f"GPU type {d.type!r} is not defined under gpu_types "
                f"(defined: {', '.join(types) or 'none'})",
                "define it under gpu_types or correct the device's type",
            )
        if d.index in indices:
            raise ConfigError(
                key_path(src, ["local", "devices", i, "index"]),
                f"device index {d.index} is declared twice",
                "declare each device index once",
            )
        indices.add(d.index)


def default_config_path() -> Path:
    """``$GPUHUB_CONFIG``, else ``./gpuhub.yaml``."""
    return Path(os.environ.get(CONFIG_ENV, "gpuhub.yaml"))


def read_config_bytes(path: Path) -> bytes:
    """The file's bytes, or :class:`ConfigError` naming the fix when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), "file not found", f"create it or set {CONFIG_ENV} to the config's path"
        ) from None
    except OSError as e:
        raise ConfigError(
            str(path), f"cannot read the file ({e.strerror})", "check its permissions"
        ) from e


def config_from_bytes(raw: bytes, path: Path) -> GpuhubConfig:
    """Validate and parse the YAML ``raw`` read from ``path`` (relative paths in it, such
    as ``image_matrix``, are resolved against the file's directory)."""
    try:
        data = yaml.safe_load(raw.decode())
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text ({e.reason})", "save it as UTF-8") from e
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"not valid YAML: {e}") from e
    return parse_config(data, source=str(path), base_dir=path.parent)


def load_config(path: Path | str | None = None) -> GpuhubConfig:
    """Read, validate and parse the gpuhub YAML at ``path``."""
    p = Path(path) if path is not None else default_config_path()
    if p.is_dir():
        raise ConfigError(str(p), "is a directory", "give the path of the YAML file")
    return config_from_bytes(read_config_bytes(p), p)


_NAME_RE = re.compile(NAME)


def is_valid_name(name: str) -> bool:
    """True for a user or group name the config accepts (full match)."""
    return _NAME_RE.fullmatch(name) is not None
