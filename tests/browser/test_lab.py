"""JupyterLab in Chromium: "Run as distributed job" on a CPU DDP notebook, the jobs panel,
and VS Code in the browser from the launcher (a terminal in it on the server's GPUs)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pwd
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import requests
from browserkit import login
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from test_jobs_local import DDP, torch_missing
from test_local_hub import ledger_keys

from hubproc import Hub, ancestry, auth, process_env

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


def test_vscode_terminal_sees_the_servers_gpus(hub: Hub, new_page: Any, shots: Path):
    """bob starts 2 A100s from the spawn form (carol holds the first), opens VS Code from
    the JupyterLab launcher, runs Python in a VS Code terminal and reads on screen the
    devices the hub allocated to his server; code-server listens on a socket only his
    account can reach; the hub's home page links to it.

    Reading the terminal: xterm.js draws the screen on a canvas (WebGL) where Chromium
    can, so the text is not in the page.  bob's VS Code settings turn the terminal's
    GPU acceleration off (``terminal.integrated.gpuAcceleration``, a user setting in
    his home, owned by his account as if VS Code's settings editor had written it):
    xterm.js then draws with its DOM renderer, one ``.xterm-rows`` element per screen
    row, which is exactly what the screenshot shows.  The output is matched as a whole
    row, so the echoed command line (which holds no such row) cannot match.
    """
    token = hub.token("carol")
    r = requests.post(
        f"{hub.api}/users/carol/server",
        json={"profile": "gpu", "gpus": 1, "gpu_type": "a100"},
        headers=auth(token),
        timeout=60,
    )
    assert r.status_code in (201, 202), r.text

    page = new_page()
    login(page, hub, "bob")
    expect(page).to_have_url(re.compile(r"/hub/spawn"))
    page.get_by_role("radio", name="GPU", exact=True).check()
    card = page.locator('.gh-card[data-profile="gpu"]')
    card.get_by_label("Image").select_option(label="Python")
    card.get_by_label("GPU type").select_option("a100")
    card.get_by_label("GPUs", exact=True).select_option("2")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/user/bob/lab"), timeout=120_000)
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=120_000)
    # what the hub allocated: the machine-wide ledger, and the server's own environment
    devices = ledger_keys(hub)["server:bob/"]
    assert devices == (1, 2), ledger_keys(hub)
    server_pid = hub.server_pid("bob", hub.admin_token())
    server_env = process_env(server_pid)
    assert server_env["CUDA_VISIBLE_DEVICES"] == "1,2"
    vscode_user_settings(hub, "bob", {"terminal.integrated.gpuAcceleration": "off"})

    # jupyter-server-proxy marks entries that open a new tab: "VS Code [↗]"
    tile = page.locator(".jp-Launcher").get_by_role("button", name=re.compile(r"^VS Code\b"))
    expect(tile).to_be_visible()
    with page.context.expect_page() as opened:
        tile.click()
    vscode = opened.value
    expect(vscode).to_have_url(re.compile(r"/user/bob/vscode/"))
    expect(vscode.locator(".monaco-workbench")).to_be_visible(timeout=120_000)
    trust = vscode.get_by_role("button", name="Yes, I trust the authors")
    with contextlib.suppress(PlaywrightTimeout):
        trust.click(timeout=5_000)  # VS Code asks once per folder whether to trust it
    terminal = open_terminal(vscode)
    terminal.click()
    vscode.keyboard.type(COMMAND)
    vscode.keyboard.press("Enter")
    ids = ",".join(str(d) for d in devices)
    output = terminal.locator(".xterm-rows > div").filter(has_text=re.compile(rf"^\s*{ids}\s*$"))
    expect(output).to_have_count(1, timeout=60_000)
    vscode.screenshot(path=vscode_shot(shots))

    # code-server: bob's account, a Unix socket in a folder only that account may enter
    sockets = code_server_sockets(server_pid)
    assert len(sockets) == 1, sockets
    owner, sock = sockets[0]
    account = pwd.getpwnam("gpuhub-bob").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert owner == account
    folder = sock.parent.stat()
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode)) == (account, 0o700)
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600

    # the hub's home page links to VS Code while the server runs
    page.goto(f"{hub.url}/hub/home")
    link = page.get_by_role("link", name="VS Code", exact=True)
    expect(link).to_have_attribute("href", "/user/bob/vscode/")


COMMAND = """python -c "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])\""""
VSCODE_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "vscode-terminal.png"


def vscode_shot(shots: Path) -> Path:
    """docs/img/ when refreshing the README's pictures, else the session's folder."""
    if os.environ.get("GPUHUB_SCREENSHOTS") == "1":
        VSCODE_SHOT.parent.mkdir(parents=True, exist_ok=True)
        return VSCODE_SHOT
    return shots / VSCODE_SHOT.name


def vscode_user_settings(hub: Hub, user: str, settings: dict[str, Any]) -> None:
    """``user``'s VS Code user settings (code-server's ``User/settings.json`` in their
    home), owned by their account as if VS Code had written them.  Call it once the
    server runs (the home and the account exist) and before VS Code starts."""
    home = hub.data_dir / "users" / user
    owner = home.stat()
    path = home / ".local" / "share" / "code-server" / "User" / "settings.json"
    for folder in reversed(path.relative_to(home).parents[:-1]):
        (home / folder).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / folder, owner.st_uid, owner.st_gid)
    path.write_text(json.dumps(settings))
    os.chown(path, owner.st_uid, owner.st_gid)


def open_terminal(vscode: Any) -> Any:
    """A new terminal from the command palette (F1), as a keyboard user opens one."""
    vscode.keyboard.press("F1")
    palette = vscode.locator(".quick-input-widget")
    query = palette.locator("input.input")
    expect(query).to_be_focused()
    query.fill(">Terminal: Create New Terminal")
    expect(palette.locator(".monaco-list-row").first).to_contain_text("Create New Terminal")
    query.press("Enter")
    terminal = vscode.locator(".terminal-wrapper.active .xterm")
    expect(terminal).to_be_visible(timeout=60_000)
    expect(terminal.locator(".xterm-rows")).to_contain_text(re.compile(r"\S"), timeout=60_000)
    return terminal


def code_server_sockets(server_pid: int) -> list[tuple[int, Path]]:
    """``(uid, socket)`` of each code-server started with ``--socket`` under the
    single-user server ``server_pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            uid = entry.stat().st_uid
        except OSError:
            continue
        if (
            any(a.endswith(b"code-server") for a in argv[:2])
            and b"--socket" in argv
            and server_pid in ancestry(int(entry.name))
        ):
            found.add((uid, Path(argv[argv.index(b"--socket") + 1].decode())))
    return sorted(found)
