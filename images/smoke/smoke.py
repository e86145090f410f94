#!/usr/bin/env python3
"""Smoke test run inside a gpuhub image: framework, CUDA/cuDNN/NCCL versions, GPUs, NCCL.

Expectations (what the image should contain) come from one of:

* ``--expectations /etc/gpuhub/image.json`` (baked in at build time; the default if present),
* ``--matrix images/matrix.yaml --entry pytorch-2.11-cu128``,
* ``--expect-torch 2.11.0 --expect-cuda 12.8 ...`` (override either of the above).

Checks:

1. versions (no GPU needed): Python, framework import and version, the CUDA / cuDNN / NCCL
   versions the framework was built with equal the expectations;
2. GPU (skipped with "no GPU: <reason>" when there is none, failed with ``--require-gpu``):
   ``torch.cuda.is_available()`` / ``tf.config.list_physical_devices("GPU")``, ``nvidia-smi -L``,
   a matmul on every device;
3. multi-GPU: ``torchrun --standalone --nproc_per_node=N allreduce.py`` (NCCL) asserting
   ``n(n+1)/2``.

Prints one line per check, then a one-line JSON summary.  Exit 0 unless a check failed
(1), or the arguments were wrong (2).  Standard library only, so it runs in any image.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_EXPECTATIONS = Path("/etc/gpuhub/image.json")
KEYS = ("framework", "framework_version", "cuda", "cudnn", "nccl", "python")
ALLREDUCE_TIMEOUT_S = 600


@dataclass
class Result:
    check: str
    status: str  # pass | fail | skip
    detail: str


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str) -> None:
        self.results.append(Result(check, status, detail))
        print(f"{status.upper():<4}  {check}: {detail}", flush=True)

    def passed(self, check: str, detail: str) -> None:
        self.add(check, "pass", detail)

    def failed(self, check: str, detail: str) -> None:
        self.add(check, "fail", detail)

    def skipped(self, check: str, detail: str) -> None:
        self.add(check, "skip", detail)

    def summary(self, expect: dict[str, Any]) -> dict[str, Any]:
        count = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        return {
            "ok": count["fail"] == 0,
            "entry": expect.get("id"),
            "expected": {k: expect.get(k) for k in KEYS},
            "passed": count["pass"],
            "failed": count["fail"],
            "skipped": count["skip"],
            "failures": [f"{r.check}: {r.detail}" for r in self.results if r.status == "fail"],
            "results": [asdict(r) for r in self.results],
        }


# --- expectations ------------------------------------------------------------------------


def _null(value: Any) -> str | None:
    """YAML/JSON/CLI value -> version string or None (``null``, ``""``, ``none``)."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "none", "null") else text


def from_image_json(path: Path) -> dict[str, Any]:
    """Read the expectations file written by images/singleuser/Dockerfile."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        "id": data.get("gpuhub_image_id"),
        "framework": _null(data.get("framework")) or "none",
        "framework_version": _null(data.get("framework_version")),
        "cuda": _null(data.get("cuda_version")),
        "cudnn": _null(data.get("cudnn_version")),
        "nccl": _null(data.get("nccl_version")),
        "python": _null(data.get("python_version")),
    }


def from_matrix(path: Path, entry_id: str) -> dict[str, Any]:
    """Read one entry of images/matrix.yaml (needs PyYAML, which Jupyter brings)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entry in data.get("images", []):
        if entry.get("id") == entry_id:
            return {
                "id": entry_id,
                "framework": entry.get("framework", "none"),
                "framework_version": _null(entry.get("version")),
                "cuda": _null(entry.get("cuda")),
                "cudnn": _null(entry.get("cudnn")),
                "nccl": _null(entry.get("nccl")),
                "python": _null(entry.get("python")),
            }
    ids = ", ".join(str(e.get("id")) for e in data.get("images", []))
    raise SystemExit(f"smoke: {path}: no entry {entry_id!r} (ids: {ids})")


def expectations(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the expectation sources; CLI flags win."""
    expect: dict[str, Any] = {"id": None, "framework": "none"}
    if args.matrix or args.entry:
        if not (args.matrix and args.entry):
            raise SystemExit("smoke: --matrix and --entry go together")
        expect.update(from_matrix(args.matrix, args.entry))
    elif args.expectations:
        expect.update(from_image_json(args.expectations))
    elif DEFAULT_EXPECTATIONS.exists():
        expect.update(from_image_json(DEFAULT_EXPECTATIONS))
    elif not (args.expect_torch or args.expect_tensorflow):
        raise SystemExit(
            "smoke: no expectations: pass --expectations FILE, --matrix/--entry, "
            "or --expect-torch/--expect-tensorflow"
        )
    if args.expect_torch:
        expect.update(framework="pytorch", framework_version=args.expect_torch)
    if args.expect_tensorflow:
        expect.update(framework="tensorflow", framework_version=args.expect_tensorflow)
    for key in ("cuda", "cudnn", "nccl", "python"):
        value = getattr(args, f"expect_{key}")
        if value is not None:
            expect[key] = _null(value)
    return expect


# --- version comparison ------------------------------------------------------------------


def _numbers(version: str) -> list[int]:
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return out


def agrees(expected: str, actual: str) -> bool:
    """Equal to the shorter precision: ``12.8`` ~ ``12.8.93``, ``9.3`` ~ ``9`` (TF reports
    cuDNN's major only), ``9.17`` ~ ``9.17.1``; ``12.8`` !~ ``13.0``."""
    e, a = _numbers(expected), _numbers(actual)
    n = min(len(e), len(a))
    return n > 0 and e[:n] == a[:n]


def cudnn_text(version: int) -> str:
    """``torch.backends.cudnn.version()`` -> ``"9.17.1"``.

    cuDNN 9 encodes M*10000 + m*100 + p, cuDNN 8 M*1000 + m*100 + p.
    """
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def compare(report: Report, check: str, expected: str | None, actual: str | None) -> None:
    """Pass when equal (see :func:`agrees`); with no expectation just report the value."""
    if expected is None:
        report.passed(check, f"{actual} (no expectation)")
    elif actual is None:
        report.failed(check, f"expected {expected}, the framework reports none")
    elif agrees(expected, actual):
        report.passed(check, f"{actual} matches expected {expected}")
    else:
        report.failed(check, f"mismatch: expected {expected}, found {actual}")


# --- GPU presence ------------------------------------------------------------------------


def no_gpu_reason() -> str:
    """Why this machine shows no GPU, in words."""
    reasons = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        reasons.append("no /dev/nvidia* device")
    if shutil.which("nvidia-smi") is None:
        reasons.append("no nvidia-smi on PATH")
    return ", ".join(reasons) or "the driver reports no usable device"


def nvidia_smi(report: Report) -> None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        report.skipped(
            "nvidia-smi -L",
            "nvidia-smi not on PATH (needs NVIDIA_DRIVER_CAPABILITIES with utility)",
        )
        return
    proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 0:
        report.passed("nvidia-smi -L", "; ".join(proc.stdout.strip().splitlines()))
    else:
        report.failed("nvidia-smi -L", f"exit {proc.returncode}: {proc.stderr.strip()}")


def gpu_unavailable(report: Report, checks: list[str], reason: str, require: bool) -> None:
    for check in checks:
        if require:
            report.failed(check, f"no GPU: {reason} (--require-gpu)")
        else:
            report.skipped(check, f"no GPU: {reason}")


# --- PyTorch -----------------------------------------------------------------------------


def check_torch(report: Report, expect: dict[str, Any], args: argparse.Namespace) -> None:
    try:
        torch = importlib.import_module("torch")
    except ImportError as e:
        report.failed("import torch", str(e))
        return
    report.passed(
        "import torch", f"torch {torch.__version__} from {Path(str(torch.__file__)).parent}"
    )
    actual = torch.__version__.split("+")[0]
    want = expect.get("framework_version")
    if want is None or actual == want:
        report.passed("torch version", f"{torch.__version__}" + (f" == {want}" if want else ""))
    else:
        report.failed("torch version", f"mismatch: expected {want}, found {torch.__version__}")
    built_cuda = torch.version.cuda
    if expect.get("cuda") is None:
        if built_cuda is None:
            report.passed("torch CUDA build", "CPU-only build, as expected")
        else:
            report.failed("torch CUDA build", f"expected a CPU-only build, found CUDA {built_cuda}")
        return
    compare(report, "torch CUDA build", expect["cuda"], built_cuda)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    compare(report, "torch cuDNN", expect.get("cudnn"), cudnn_text(cudnn) if cudnn else None)
    try:
        nccl = ".".join(str(x) for x in torch.cuda.nccl.version())
    except (RuntimeError, AttributeError) as e:
        nccl = None
        if expect.get("nccl") is None:
            report.skipped("torch NCCL", f"NCCL version not available: {e}")
    if nccl is not None or expect.get("nccl") is not None:
        compare(report, "torch NCCL", expect.get("nccl"), nccl)
    torch_gpu(report, torch, args)


def torch_gpu(report: Report, torch: Any, args: argparse.Namespace) -> None:
    gpu_checks = ["torch.cuda.is_available", "nvidia-smi -L", "matmul per GPU", "NCCL all-reduce"]
    if not torch.cuda.is_available():
        reason = f"{no_gpu_reason()}; torch.cuda.is_available() is False"
        gpu_unavailable(report, gpu_checks, reason, args.require_gpu)
        cpu_allreduce(report, args)
        return
    n = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    report.passed("torch.cuda.is_available", f"{n} GPU(s): {', '.join(names)}")
    if args.expect_gpus is not None and n != args.expect_gpus:
        report.failed("GPU count", f"expected {args.expect_gpus}, found {n}")
    nvidia_smi(report)
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, dtype=torch.float64, generator=gen)
    want = a @ a
    bad = []
    for i in range(n):
        got = (a.to(f"cuda:{i}") @ a.to(f"cuda:{i}")).cpu()
        if not torch.allclose(got, want, rtol=1e-9, atol=1e-9):
            bad.append(f"cuda:{i} differs by {float((got - want).abs().max()):.3g}")
    if bad:
        report.failed("matmul per GPU", "; ".join(bad))
    else:
        report.passed(
            "matmul per GPU", f"512x512 float64 matmul equals the CPU result on {n} GPU(s)"
        )
    if args.no_allreduce:
        report.skipped("NCCL all-reduce", "--no-allreduce")
    else:
        run_allreduce(report, "NCCL all-reduce", n, "nccl")


def cpu_allreduce(report: Report, args: argparse.Namespace) -> None:
    if args.cpu_allreduce:
        run_allreduce(report, "gloo all-reduce (CPU)", args.cpu_allreduce, "gloo")


def run_allreduce(report: Report, check: str, n: int, backend: str) -> None:
    """``torchrun --standalone --nproc_per_node=n allreduce.py``; every rank must say ok."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        str(HERE / "allreduce.py"),
        "--backend",
        backend,
    ]
    env = dict(os.environ, NCCL_DEBUG=os.environ.get("NCCL_DEBUG", "WARN"), OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=ALLREDUCE_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        report.failed(check, f"torchrun did not finish in {ALLREDUCE_TIMEOUT_S}s")
        return
    # Match per rank, not per line: the ranks' output may interleave.
    lines = re.findall(r"rank \d+/\d+ .*?-> (?:ok|MISMATCH)", proc.stdout)
    for line in lines:
        print(f"      {line}", flush=True)
    oks = sum(line.endswith("-> ok") for line in lines)
    expected = n * (n + 1) // 2
    if proc.returncode == 0 and oks == n:
        report.passed(check, f"{n} rank(s) all-reduced rank+1 to n(n+1)/2 = {expected}")
    else:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        report.failed(
            check, f"exit {proc.returncode}, {oks}/{n} ranks ok (expected {expected})\n{tail}"
        )


# --- TensorFlow --------------------------------------------------------------------------


def check_tensorflow(report: Report, expect: dict[str, Any], args: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = importlib.import_module("tensorflow")
    except ImportError as e:
        report.failed("import tensorflow", str(e))
        return
    report.passed("import tensorflow", f"tensorflow {tf.__version__}")
    want = expect.get("framework_version")
    if want is None or tf.__version__ == want:
        report.passed("tensorflow version", tf.__version__)
    else:
        report.failed("tensorflow version", f"mismatch: expected {want}, found {tf.__version__}")
    info = dict(tf.sysconfig.get_build_info())
    if expect.get("cuda") is None:
        if info.get("is_cuda_build"):
            report.failed("tensorflow CUDA build", "expected a CPU-only build, found a CUDA build")
        else:
            report.passed("tensorflow CUDA build", "CPU-only build, as expected")
        return
    if not info.get("is_cuda_build"):
        report.failed("tensorflow CUDA build", "is_cuda_build is False")
        return
    compare(report, "tensorflow CUDA build", expect["cuda"], info.get("cuda_version"))
    compare(report, "tensorflow cuDNN", expect.get("cudnn"), info.get("cudnn_version"))
    report.skipped("tensorflow NCCL", "TensorFlow's build info records no NCCL version")
    gpus = tf.config.list_physical_devices("GPU")
    gpu_checks = ["tf GPU list", "nvidia-smi -L", "matmul per GPU"]
    if not gpus:
        reason = f"{no_gpu_reason()}; tf.config.list_physical_devices('GPU') is empty"
        gpu_unavailable(report, gpu_checks, reason, args.require_gpu)
        return
    report.passed("tf GPU list", ", ".join(g.name for g in gpus))
    if args.expect_gpus is not None and len(gpus) != args.expect_gpus:
        report.failed("GPU count", f"expected {args.expect_gpus}, found {len(gpus)}")
    nvidia_smi(report)
    bad = []
    for i in range(len(gpus)):
        with tf.device(f"/GPU:{i}"):
            x = tf.eye(256, dtype=tf.float64) * 2.0
            y = tf.linalg.matmul(x, x)
        if float(tf.reduce_sum(y)) != 4.0 * 256:
            bad.append(f"/GPU:{i}")
    if bad:
        report.failed("matmul per GPU", f"wrong result on {', '.join(bad)}")
    else:
        report.passed("matmul per GPU", f"matmul correct on {len(gpus)} GPU(s)")
    report.skipped("NCCL all-reduce", "the torchrun all-reduce runs in PyTorch images")


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--expectations", type=Path, help="JSON written at build time")
    p.add_argument("--matrix", type=Path, help="images/matrix.yaml (with --entry)")
    p.add_argument("--entry", help="matrix entry id, e.g. pytorch-2.11-cu128")
    p.add_argument("--expect-torch", metavar="VERSION")
    p.add_argument("--expect-tensorflow", metavar="VERSION")
    p.add_argument("--expect-cuda", metavar="X.Y", help="'none' for a CPU-only build")
    p.add_argument("--expect-cudnn", metavar="X.Y")
    p.add_argument("--expect-nccl", metavar="X.Y")
    p.add_argument("--expect-python", metavar="X.Y")
    p.add_argument("--expect-gpus", type=int, metavar="N", help="GPU count to require")
    p.add_argument("--require-gpu", action="store_true", help="fail, not skip, without a GPU")
    p.add_argument("--no-allreduce", action="store_true", help="skip the torchrun all-reduce")
    p.add_argument(
        "--cpu-allreduce",
        type=int,
        metavar="N",
        default=0,
        help="without a GPU, all-reduce over N CPU processes with gloo (tests torchrun)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    expect = expectations(args)
    report = Report()
    label = expect.get("id") or expect["framework"]
    print(f"gpuhub smoke test: {label} on {platform.node()} ({platform.machine()})", flush=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    if expect.get("python") is None or expect["python"] == py:
        report.passed("python", f"{platform.python_version()}")
    else:
        report.failed("python", f"mismatch: expected {expect['python']}, found {py}")
    if expect["framework"] == "pytorch":
        check_torch(report, expect, args)
    elif expect["framework"] == "tensorflow":
        check_tensorflow(report, expect, args)
    else:
        report.skipped("framework", "framework none: nothing to import")
        report.skipped("GPU checks", "CPU-only image (framework none)")
    summary = report.summary(expect)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
