"""JupyterLab in Chromium: "Run as distributed job" on a CPU DDP notebook, the jobs panel,
and VS Code from the launcher when code-server is installed."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from browserkit import login
from playwright.sync_api import expect
from test_jobs_local import DDP, torch_missing

from hubproc import Hub, auth

pytestmark = pytest.mark.browser

LAB_SHELL = "#jp-main-dock-panel"

# The DDP notebook of the jobs tier, with gloo even when the job holds GPUs: this hub's GPUs
# are declared, not real.  The job takes one "A100" per worker so the dialog's GPU path (type,
# group, quota left) is exercised; CPU workers (0 GPUs) are offered too.
DDP_GLOO = copy.deepcopy(DDP)
DDP_GLOO["cells"][2]["source"] = DDP["cells"][2]["source"].replace(
    "os.environ.get('GPUHUB_DIST_BACKEND', 'gloo')", "'gloo'"
)
assert DDP_GLOO["cells"][2]["source"].startswith("dist.init_process_group('gloo')")


def start_lab(page: Any, hub: Hub, user: str) -> None:
    """Log in, start the default (CPU) profile from the form, wait for JupyterLab."""
    login(page, hub, user)
    expect(page).to_have_url(re.compile(r"/hub/spawn"))
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=120_000)
    expect(page.locator(LAB_SHELL)).to_be_visible(timeout=120_000)
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=60_000)
    # JupyterLab's "get notified about news?" toast covers the lower right corner
    no = page.locator(".jp-Notification-Toast-Close, .Toastify__toast").get_by_role(
        "button", name="No"
    )
    if no.count():
        no.first.click()


def put_notebook(hub: Hub, user: str, path: str, nb: dict[str, Any]) -> None:
    r = requests.put(
        f"{hub.url}/user/{user}/api/contents/{path}",
        headers=auth(hub.token(user)),
        data=json.dumps({"type": "notebook", "format": "json", "content": nb}),
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def test_run_as_job_to_succeeded_with_both_ranks_logs(hub: Hub, new_page: Any, shots: Path):
    if torch_missing:
        pytest.fail("torch is not installed: run `source scripts/bootstrap.sh && gpuhub_torch`")
    page = new_page()
    start_lab(page, hub, "bob")
    put_notebook(hub, "bob", "train.ipynb", DDP_GLOO)
    page.goto(f"{hub.url}/user/bob/lab/tree/train.ipynb")
    notebook = page.locator(".jp-NotebookPanel:visible")
    expect(notebook.locator(".jp-Cell").nth(2)).to_contain_text("DistributedDataParallel")
    # the toolbar button opens the dialog
    notebook.get_by_test_id("gpuhub-run-as-job").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog.get_by_role("form", name="Run as distributed job")).to_be_visible()
    dialog.get_by_label("Framework").select_option("pytorch")
    dialog.get_by_label("Workers").fill("2")
    dialog.get_by_label("GPUs per worker").select_option("1")
    dialog.get_by_label("GPU type").select_option("a100")
    dialog.get_by_label("Group to charge").select_option("vision")
    quota = dialog.get_by_test_id("gpuhub-quota-group-vision")
    expect(quota).to_contain_text("2")
    summary = dialog.locator(".gpuhub-RunJobForm-summary")
    expect(summary).to_have_text("PyTorch · 2 workers × 1 GPU")
    dialog.get_by_test_id("gpuhub-job-submit").click()
    expect(dialog).to_have_count(0)
    # the jobs panel opens on the new job; the row reaches Succeeded
    panel = page.get_by_test_id("gpuhub-jobs-panel")
    if not panel.is_visible():
        page.locator('.jp-SideBar [title="GPU jobs"]').first.click()
    expect(panel).to_be_visible()
    row = panel.locator(".gpuhub-Job[data-state]")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("gpuhub-job-state")).to_have_text(
        re.compile("Succeeded|Failed"), timeout=240_000
    )
    log = panel.get_by_test_id("gpuhub-job-log")
    if not log.is_visible():  # open the job to see its logs
        row.locator(".gpuhub-JobRow").click()
    expect(row).to_have_attribute("data-state", "Succeeded")
    worker = panel.get_by_test_id("gpuhub-log-worker")
    worker.select_option("1")
    expect(log).to_contain_text(re.compile(r"rank 1/2 loss \d"))
    worker.select_option("0")
    expect(log).to_contain_text(re.compile(r"rank 0/2 loss \d"))
    expect(log).not_to_contain_text("rank 1/2")
    page.screenshot(path=shots / "job-panel.png")


def test_vscode_from_the_launcher(hub: Hub, new_page: Any):
    if shutil.which("code-server") is None:
        pytest.skip(
            "code-server is not installed: VS Code in the browser needs code-server and "
            "jupyter-vscode-proxy in the single-user environment (they are in the GPU images)"
        )
    page = new_page()
    start_lab(page, hub, "bob")
    tile = page.locator(".jp-Launcher").get_by_text(re.compile("VS Code"))
    expect(tile).to_be_visible()
    with page.context.expect_page() as opened:
        tile.first.click()
    vscode = opened.value
    expect(vscode.locator(".monaco-workbench")).to_be_visible(timeout=120_000)
