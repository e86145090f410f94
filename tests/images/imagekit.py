"""Helpers of the images tier: images/build.py loaded as a module, and what the tier builds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpuhub_images_build", ROOT / "images/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpuhub_images_build"] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()

#: The targets this tier builds: hub, proxy and the CPU single-user image always; the
#: PyTorch CUDA image (several GB) only with GPUHUB_IMAGES_CUDA=1.
TARGETS = ["hub", "proxy", "scipy-cpu"]
CUDA_TARGET = "pytorch-2.11-cu130"
