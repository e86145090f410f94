"""Validation of a job request (the ``POST api/jobs`` body) and notebook → script.

Pure: no I/O.  Every value is checked against allow-lists built from the user's *current*
groups, by exact equality, exactly like notebook ``user_options``
(:func:`gpuhub.profiles.validate_options`).  The result, :class:`JobSpec`, carries a
:class:`~gpuhub.model.SpawnRequest` for the ledger (``gpus = workers × gpus_per_worker``,
key ``job:<id>``, kind ``"job"``).

IPython syntax does not run under ``torchrun``: code cells using magics (``%``, ``%%``),
shell escapes (``!``) or ``get_ipython()`` are refused with an :class:`OptionError`
naming the cell.  A few magics that only change interactive display are stripped
instead (:data:`STRIPPED_MAGICS`).
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ..errors import OptionError, QuotaDenied
from ..model import GpuhubConfig, ImageSpec, Profile, SpawnRequest
from ..profiles import chargeable_groups, default_image, visible_profiles

if TYPE_CHECKING:
    from .records import Job

Framework = Literal["pytorch", "tensorflow"]
FRAMEWORKS: tuple[Framework, ...] = ("pytorch", "tensorflow")
JOB_KEYS = (
    "notebook",
    "path",
    "framework",
    "workers",
    "gpus_per_worker",
    "gpu_type",
    "group",
    "args",
    "image",
)
STRIPPED_MAGICS = frozenset(
    {
        "%matplotlib inline",
        "%matplotlib agg",
        "%load_ext autoreload",
        "%autoreload 2",
        "%config InlineBackend.figure_format = 'retina'",
    }
)
"""Magic lines (whole line, after stripping blanks) replaced by a comment rather than
refused: they only affect interactive display or reloading, never the computation."""

MAX_ARGS = 64
MAX_ARG_LEN = 4096
MAX_PATH_LEN = 1024
_MAGIC = re.compile(r"^\s*(%%?[A-Za-z_][A-Za-z0-9_]*)")
_SHELL = re.compile(r"^\s*(?:[A-Za-z_][A-Za-z0-9_, ]*=\s*)?!{1,2}")


@dataclass(frozen=True)
class JobSpec:
    """A job request after validation: every value is known to be allowed."""

    id: str
    user: str
    name: str
    path: str
    framework: Framework
    workers: int
    gpus_per_worker: int
    gpu_type: str | None
    group: str | None
    args: tuple[str, ...]
    image: ImageSpec
    profile: Profile
    script: str

    @property
    def gpus(self) -> int:
        """GPUs the whole job holds (charged to the group at once)."""
        return self.workers * self.gpus_per_worker

    @property
    def key(self) -> str:
        """The ledger key of the job."""
        return f"job:{self.id}"

    def ledger_request(self) -> SpawnRequest:
        """The request the ledger checks, as for a notebook of ``gpus`` GPUs."""
        return SpawnRequest(
            user=self.user,
            profile=self.profile,
            image=self.image,
            gpu_type=self.gpu_type if self.gpus else None,
            gpus=self.gpus,
            group=self.group,
        )


# --- small checks -----------------------------------------------------------------------


def _plain_int(field: str, value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OptionError(field, f"{what} {value!r} is not allowed (use a whole number {lo}..{hi})")
    return value


def _choice(field: str, value: Any, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        shown = value if isinstance(value, str | int) else type(value).__name__
        raise OptionError(
            field,
            f"{what} {shown!r} is not available to you "
            f"(choose one of: {', '.join(allowed) or 'none'})",
        )
    return value


def _plain_text(field: str, value: Any, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len or re.search(r"[\x00\n\r]", value):
        raise OptionError(
            field, f"must be a string of at most {max_len} characters without NUL or newlines"
        )
    return value


def validate_args(raw: Any) -> tuple[str, ...]:
    """``args``: a list of plain strings (passed to the script, never to a shell)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_ARGS:
        raise OptionError("args", f"must be a list of at most {MAX_ARGS} strings")
    return tuple(_plain_text("args", a, MAX_ARG_LEN) for a in raw)


def validate_path(raw: Any) -> tuple[str, str]:
    """``path`` of the notebook (informational): ``(path, job name)``."""
    if raw in (None, ""):
        return "notebook.ipynb", "notebook"
    path = _plain_text("path", raw, MAX_PATH_LEN)
    name = posixpath.basename(path)
    if name.endswith(".ipynb"):
        name = name[: -len(".ipynb")]
    return path, name or "notebook"


# --- notebook → script ------------------------------------------------------------------


def _cell_source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        return "".join(str(s) for s in src)
    return str(src)


def _ipython_use(line: str) -> str:
    """What IPython-only syntax ``line`` uses, as shown to the user."""
    if m := _MAGIC.match(line):
        return f"the IPython magic {m.group(1)!r}"
    if _SHELL.match(line):
        return f"the shell escape {line.strip()[:60]!r}"
    if "get_ipython(" in line:
        return "get_ipython()"
    return f"IPython-only syntax ({line.strip()[:60]!r})"


def _transform(source: str) -> str:
    """The cell as IPython (and so nbconvert) turns it into Python."""
    from IPython.core.inputtransformer2 import TransformerManager

    manager: Any = cast(Any, TransformerManager)()
    return str(manager.transform_cell(source))


def clean_cells(nb: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the notebook without outputs, with :data:`STRIPPED_MAGICS` commented
    out; raises :class:`OptionError` (field ``notebook``) for any other IPython syntax,
    naming the cell (1-based, as JupyterLab counts)."""
    out = copy.deepcopy(dict(nb))
    cells = out.get("cells")
    if not isinstance(cells, list):
        raise OptionError("notebook", "is not an nbformat v4 notebook (no 'cells' list)")
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            raise OptionError("notebook", f"cell {number} is not an object")
        if cell.get("cell_type") != "code":
            continue
        lines = [
            f"# gpuhub: stripped {line.strip()}" if line.strip() in STRIPPED_MAGICS else line
            for line in _cell_source(cell).split("\n")
        ]
        source = "\n".join(lines)
        if "get_ipython()" in _transform(source + "\n"):
            bad = next(
                (ln for ln in lines if _transform(ln + "\n") != ln + "\n" and ln.strip()),
                next((ln for ln in lines if "get_ipython(" in ln), ""),
            )
            raise OptionError(
                "notebook",
                f"cell {number} uses {_ipython_use(bad)}; "
                "remove it or move it into a non-code cell",
            )
        cell["source"] = source
        cell["outputs"] = []
        cell["execution_count"] = None
    return out


def notebook_to_script(nb: Any, exporter: Any = None) -> str:
    """The Python script of a notebook (nbconvert's ``PythonExporter``)."""
    if not isinstance(nb, dict) or nb.get("nbformat") != 4:
        raise OptionError("notebook", "must be an nbformat v4 notebook (JSON object)")
    cleaned = clean_cells(nb)
    import nbformat
    from nbconvert import PythonExporter

    try:
        _changes, cleaned = nbformat.validator.normalize(cleaned)
        node = cast(Any, nbformat.from_dict)(cleaned)
        nbformat.validate(node)
    except Exception as e:  # nbformat raises several types
        raise OptionError("notebook", f"is not a valid nbformat v4 notebook: {e}") from e
    body, _resources = (exporter or cast(Any, PythonExporter)()).from_notebook_node(node)
    script = cast(str, body)
    if "get_ipython()" in script:  # anything our line check missed
        raise OptionError(
            "notebook", "uses IPython-only syntax; remove magics and shell escapes (! and %)"
        )
    return script


# --- the whole request --------------------------------------------------------------------


def _gpu_profiles(profiles: Iterable[Profile]) -> list[Profile]:
    return [p for p in profiles if p.gpu is not None]


def validate_job(
    config: GpuhubConfig,
    user: str,
    groups: Iterable[str],
    body: Any,
    *,
    job_id: str,
    max_workers: int,
    server_image: str | None = None,
    script: str | None = None,
) -> JobSpec:
    """Turn an untrusted ``POST api/jobs`` body into a :class:`JobSpec` or raise
    :class:`OptionError` naming the field.

    ``server_image`` is the catalog slug of the user's running server (the default image);
    ``script`` skips the notebook conversion (tests of the other fields).
    """
    groups = list(groups)
    if not isinstance(body, dict):
        raise OptionError("body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in JOB_KEYS)
    if unknown:
        raise OptionError(unknown[0], f"unknown field (allowed: {', '.join(JOB_KEYS)})")
    framework = cast(
        Framework,
        _choice("framework", body.get("framework") or "pytorch", FRAMEWORKS, "framework"),
    )
    workers = _plain_int("workers", body.get("workers", 1), 1, max_workers, "workers")
    visible = visible_profiles(config, groups)
    if not visible:
        raise OptionError("profile", "no profile is available to your groups; ask an admin")
    gpu_profiles = _gpu_profiles(visible)
    counts = sorted({n for p in gpu_profiles if p.gpu for n in p.gpu.counts})
    per = body.get("gpus_per_worker", 0)
    if isinstance(per, bool) or not isinstance(per, int) or (per != 0 and per not in counts):
        raise OptionError(
            "gpus_per_worker",
            f"{per!r} GPUs per worker is not offered to you "
            f"(choose one of: {', '.join(map(str, [0, *counts]))}; 0 = CPU workers)",
        )

    gpu_type: str | None = None
    if per == 0:
        if body.get("gpu_type") not in (None, ""):
            raise OptionError(
                "gpu_type", "CPU workers take no GPU type; set gpus_per_worker ≥ 1 or drop it"
            )
        candidates = visible
    else:
        types = list(dict.fromkeys(t for p in gpu_profiles if p.gpu for t in p.gpu.types))
        raw_type = body.get("gpu_type")
        gpu_type = (
            next(t for p in gpu_profiles if p.gpu and per in p.gpu.counts for t in p.gpu.types)
            if raw_type in (None, "")
            else _choice("gpu_type", raw_type, types, "GPU type")
        )
        candidates = [
            p for p in gpu_profiles if p.gpu and gpu_type in p.gpu.types and per in p.gpu.counts
        ]
        if not candidates:
            raise OptionError(
                "gpus_per_worker",
                f"no profile of yours offers {per} {gpu_type} GPUs per worker",
            )

    images = list(dict.fromkeys(s for p in candidates for s in p.images))
    raw_image = body.get("image")
    if raw_image in (None, ""):
        slug = server_image if server_image in images else None
    else:
        slug = _choice("image", raw_image, images, "image")
    if slug is None:
        profile = candidates[0]
        image = default_image(config, profile)
    else:
        profile = next(p for p in candidates if slug in p.images)
        image = config.images[slug]

    group: str | None = None
    if body.get("group") not in (None, ""):
        if per:
            allowed = list(
                dict.fromkeys(g for p in candidates for g in chargeable_groups(config, groups, p))
            )
        else:
            allowed = groups
        group = _choice("group", body["group"], allowed, "group")
        if per and group not in chargeable_groups(config, groups, profile):
            profile = next(p for p in candidates if group in chargeable_groups(config, groups, p))

    args = validate_args(body.get("args"))
    path, name = validate_path(body.get("path"))
    if script is None:
        script = notebook_to_script(body.get("notebook"))
    return JobSpec(
        id=job_id,
        user=user,
        name=name,
        path=path,
        framework=framework,
        workers=workers,
        gpus_per_worker=per,
        gpu_type=gpu_type,
        group=group,
        args=args,
        image=image,
        profile=profile,
        script=script,
    )


# --- running jobs ---------------------------------------------------------------------------


def cpu_workers(job: Job | JobSpec) -> int:
    """CPU worker processes of a job: one per worker of a CPU job, none on GPUs."""
    return 0 if job.gpus_per_worker else job.workers


def check_cpu_workers(spec: JobSpec, jobs: Iterable[Job], limit: int) -> None:
    """Refuse a CPU job that would take its user over ``limit`` CPU worker processes
    across their unfinished jobs (``jobs`` may hold anyone's; only the user's count).

    :class:`OptionError` (400, ``workers``) when the job alone is over the limit, else
    :class:`QuotaDenied` (403) naming the jobs that use the rest.
    """
    asked = cpu_workers(spec)
    if not asked:
        return
    if asked > limit:
        raise OptionError(
            "workers",
            f"{asked} CPU workers are more than the {limit} CPU worker processes a user may "
            f"run at a time; ask for at most {limit}, or use GPU workers",
        )
    mine = [j for j in jobs if j.user == spec.user and not j.done and cpu_workers(j)]
    used = sum(cpu_workers(j) for j in mine)
    if used + asked <= limit:
        return
    held = ", ".join(
        f"job {j.name!r} ({j.id}) {cpu_workers(j)}"
        + (f" (since {t:%H:%M})" if (t := j.started or j.created) else "")
        for j in sorted(mine, key=lambda j: j.created)
    )
    fewer = f", or ask for at most {limit - used}" if used < limit else ""
    raise QuotaDenied(
        f"Not enough CPU workers: you run {used} of {limit} CPU worker processes: {held} "
        f"— you asked for {asked}. Cancel a job or wait for one to end{fewer}"
    )
