"""Validation of a job request (the ``POST api/jobs`` body) and notebook → script.

Pure: no I/O (CPU-bound: the service runs it in a worker process, see
:mod:`gpuhub.jobs.offloop`).  Profile, image, GPU type and count and group are decided by
:func:`gpuhub.profiles.resolve_request`, the one function that decides notebook
``user_options`` too; this module adds only the job's own fields.  The result,
:class:`JobSpec`, carries a
:class:`~gpuhub.model.SpawnRequest` for the ledger (``gpus = workers × gpus_per_worker``,
key ``job:<id>``, kind ``"job"``).

IPython syntax does not run under ``torchrun``: code cells using magics (``%``, ``%%``),
shell escapes (``!``) or ``get_ipython()`` are refused with an :class:`OptionError`
naming the cell.  A few magics that only change interactive display are stripped
instead (:data:`STRIPPED_MAGICS`).
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ..errors import OptionError, QuotaDenied
from ..model import GpuhubConfig, ImageSpec, Profile, SpawnRequest
from ..profiles import given, resolve_request, visible_profiles

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
    """A job request after validation: every value is known to be allowed.

    ``workers`` are the API's workers: a worker pod each on Kubernetes; on one machine a
    torchrun node of ``gpus_per_worker`` ranks (one rank for CPU workers), or one
    TensorFlow worker process.  ``gpus_per_worker`` is per worker, not per rank."""

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
    time_limit_minutes: float | None = None
    """Run time after which the job is ended (:func:`time_limit_for`), fixed at submit."""

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
    if not isinstance(raw, list) or len(raw) > MAX_ARGS:
        raise OptionError("args", f"must be a list of at most {MAX_ARGS} strings")
    return tuple(_plain_text("args", a, MAX_ARG_LEN) for a in raw)


def validate_path(raw: Any) -> tuple[str, str]:
    """``path`` of the notebook (informational): ``(path, job name)``; ``None``: not
    given."""
    if raw is None:
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


# --- time limit -------------------------------------------------------------------------


def time_limit_for(config: GpuhubConfig, profile: Profile) -> float | None:
    """THE time limit (minutes) of a job on ``profile``: the profile's ``jobs`` section
    when it has one (``time_limit_minutes: null`` there lifts the top-level limit), else
    the top-level ``jobs.time_limit_minutes``; ``None``: no limit."""
    limits = profile.jobs if profile.jobs is not None else config.jobs
    return limits.time_limit_minutes


def time_limit_text(minutes: float) -> str:
    """``"90 min"``, ``"0.5 min"``: a limit as users read it."""
    return f"{minutes:g} min"


def time_limit_reason(minutes: float) -> str:
    """The message of a job ended at its time limit."""
    return f"time limit ({time_limit_text(minutes)}) reached"


def time_limits(config: GpuhubConfig, user: str, groups: Iterable[str]) -> list[dict[str, Any]]:
    """For ``GET api/options``: the time limit of a job of each GPU type and count the
    user is offered (``gpu_type`` ``None`` and ``gpus_per_worker`` 0: CPU workers), for
    the default image and group, decided by :func:`resolve_request` exactly as a
    submitted job's profile is."""
    groups = list(groups)
    choices: list[tuple[str | None, int]] = [(None, 0)]
    for p in visible_profiles(config, groups):
        if p.gpu is not None:
            choices += [(t, n) for t in p.gpu.types for n in p.gpu.counts]
    rows = []
    for gpu_type, gpus in dict.fromkeys(choices):
        options: dict[str, Any] = {"gpus": gpus} | ({"gpu_type": gpu_type} if gpu_type else {})
        try:
            request = resolve_request(
                config, user, groups, options, names={"gpus": "gpus_per_worker"}, cpu_anywhere=True
            )
        except OptionError:
            continue
        rows.append(
            {
                "gpu_type": gpu_type,
                "gpus_per_worker": gpus,
                "minutes": time_limit_for(config, request.profile),
            }
        )
    return rows


# --- the whole request --------------------------------------------------------------------

NULLABLE = frozenset({"gpu_type", "group", "image"})
"""Job fields docs/jobs-api.md declares ``str|null``: ``null`` there means "the default"
(the dialog sends it); ``""`` is refused like any other empty field."""

MAX_DEPTH = 100
"""Deepest JSON nesting a request body may have (a notebook's structure is 6 levels; the
rest is cell metadata and outputs)."""


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_body(raw: bytes) -> Any:
    """The JSON of a request body, or :class:`OptionError` (field ``body``) when it is not
    JSON or nests deeper than :data:`MAX_DEPTH` levels."""
    try:
        body = json.loads(raw or b"null")
    except RecursionError as e:
        raise OptionError("body", f"nests deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:
        raise OptionError("body", f"is not valid JSON: {e}") from e
    if _depth(body) > MAX_DEPTH:
        raise OptionError("body", f"nests deeper than {MAX_DEPTH} levels")
    return body


def job_from_request(
    config: GpuhubConfig,
    user: str,
    groups: Iterable[str],
    raw: bytes,
    *,
    job_id: str,
    max_workers: int,
    server_image: str | None = None,
) -> JobSpec:
    """:func:`validate_job` of a raw request body (:func:`parse_body`)."""
    return validate_job(
        config,
        user,
        groups,
        parse_body(raw),
        job_id=job_id,
        max_workers=max_workers,
        server_image=server_image,
    )


def validate_job(
    config: GpuhubConfig,
    user: str,
    groups: Iterable[str],
    body: Any,
    *,
    job_id: str,
    max_workers: int,
    server_image: str | None = None,
) -> JobSpec:
    """Turn an untrusted ``POST api/jobs`` body into a :class:`JobSpec` (converting its
    notebook) or raise :class:`OptionError` naming the field.

    Profile, image, GPU type and count and group are decided by
    :func:`gpuhub.profiles.resolve_request`, exactly as for a notebook; this adds only
    the job's own fields.  ``server_image`` is the catalog slug of the user's running
    server (preferred when the body names no image).  CPU-bound (the conversion): the
    service runs it in a worker process.
    """
    groups = list(groups)
    if not isinstance(body, dict):
        raise OptionError("body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in JOB_KEYS)
    if unknown:
        raise OptionError(unknown[0], f"unknown field (allowed: {', '.join(JOB_KEYS)})")
    fields = {k: v for k, v in body.items() if not (v is None and k in NULLABLE)}
    framework = cast(
        Framework,
        _choice("framework", fields["framework"], FRAMEWORKS, "framework")
        if given(fields, "framework")
        else "pytorch",
    )
    workers = (
        _plain_int("workers", fields["workers"], 1, max_workers, "workers")
        if given(fields, "workers")
        else 1
    )
    per = fields["gpus_per_worker"] if given(fields, "gpus_per_worker") else 0
    if isinstance(per, bool) or not isinstance(per, int):
        raise OptionError("gpus_per_worker", f"{per!r} is not a whole number (0 = CPU workers)")
    options = {"gpus": per, **{k: fields[k] for k in ("gpu_type", "image", "group") if k in fields}}
    request = resolve_request(
        config,
        user,
        groups,
        options,
        names={"gpus": "gpus_per_worker"},
        cpu_anywhere=True,
        preferred_image=server_image,
    )
    args = validate_args(fields["args"]) if given(fields, "args") else ()
    path, name = validate_path(fields["path"]) if given(fields, "path") else validate_path(None)
    if not given(fields, "notebook"):
        raise OptionError("notebook", "is missing: send the nbformat v4 notebook to run")
    script = notebook_to_script(fields["notebook"])
    return JobSpec(
        id=job_id,
        user=user,
        name=name,
        path=path,
        framework=framework,
        workers=workers,
        gpus_per_worker=per,
        gpu_type=request.gpu_type,
        group=request.group,
        args=args,
        image=request.image,
        profile=request.profile,
        script=script,
        time_limit_minutes=time_limit_for(config, request.profile),
    )


# --- running jobs ---------------------------------------------------------------------------


def cpu_workers(job: Job | JobSpec) -> int:
    """CPU worker processes (ranks) of a job: one per worker of a CPU job, none on GPUs."""
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
