"""From the validated gpuhub YAML to JupyterHub's traitlets config (TLJH style: pure
mappings tested with ``Config()``), plus the embedded default's secrets and reload hook."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from traitlets.config import Config

from .activeconfig import active_config
from .config import CONFIG_ENV, load_config
from .datadir import (
    ADMIN_PASSWORD_FILE,
    DATA_ENV,
    PASSWORD_DB,
    PID_FILE,
    default_data_dir,
    resolve_data_dir,
)
from .errors import ConfigError
from .jobs.singleton import HUB_PID_ENV
from .model import GpuhubConfig
from .scopes import DEFINITIONS, JOBS_CANCEL_ANY, MONITOR_ADMIN, MONITOR_ADMIN_ROLE

BIND_ENV = "GPUHUB_BIND_URL"
DEFAULT_BIND = "http://127.0.0.1:8000"
JOBS_PORT_ENV = "GPUHUB_JOBS_PORT"
JOBS_SERVICE = "gpuhub-jobs"
JOBS_SERVICE_SCOPES = ["read:users:name", "read:users:groups", "read:servers"]
"""The jobs service's own token: identify users' groups (always current) and read the
user_options of their running server (the default image of a job).  Nothing else."""
MONITOR_PORT_ENV = "GPUHUB_MONITOR_PORT"
MONITOR_SERVICE = "gpuhub-monitor"
MONITOR_URL_ENV = "GPUHUB_MONITOR_URL"
MONITOR_SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups", "servers"]
"""The monitor's own token: list active servers with their profile, stop an idle one (or
one an admin stops from the GPU page) and start it again on CPU, read a user's groups
(the CPU profile of "give the GPUs back"); with the jobs service, also
:data:`~gpuhub.scopes.JOBS_CANCEL_ANY` (the page's cancel).  Nothing else."""


NAMED_SERVER_LIMIT = 3
"""Named servers a user may have besides the default one (embedded default)."""

AUTHENTICATOR = "gpuhub.auth.GpuhubAuthenticator"
"""The embedded default's authenticator, by import path (also registered as the entry
point ``gpuhub-firstuse``; the import path works before the package's metadata is
reinstalled, e.g. in an editable checkout)."""


def apply_users(c: Config, cfg: GpuhubConfig) -> None:
    """Who exists at start and who is admin.  Who may log in and the groups are decided
    by :class:`gpuhub.auth.GpuhubAuthenticator` from the YAML as it is at that moment."""
    members = {u for users in cfg.groups.values() for u in users}
    c.GpuhubAuthenticator.admin_users = set(cfg.auth.admin_users)
    c.GpuhubAuthenticator.allowed_users = members | set(cfg.auth.admin_users)


def read_or_create_secret(path: Path, nbytes: int) -> tuple[str, bool]:
    """A secret kept in ``path`` with mode 0600; ``(value, created)``."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


def embedded_config(
    cfg: GpuhubConfig,
    config_path: Path,
    data_dir: Path,
    bind_url: str,
    jobs_port: int | None = None,
    monitor_port: int | None = None,
) -> Config:
    """The whole embedded-default hub config (local processes, per-user passwords, groups
    from the YAML); with ``jobs_port``, the jobs service listening on that loopback port."""
    c = Config()
    c.JupyterHub.bind_url = bind_url
    c.JupyterHub.spawner_class = "gpu-local"
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data_dir / PID_FILE)
    # servers outlive the hub (a restart or an upgrade never stops anyone's work)
    c.JupyterHub.cleanup_servers = False
    # a CPU server and a GPU server side by side, each reachable from VS Code; GPUs are
    # charged per server, and each server's memory and CPU are its profile's limits
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = NAMED_SERVER_LIMIT
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
    c.JupyterHub.authenticator_class = AUTHENTICATOR
    c.GpuhubAuthenticator.gpuhub_config_file = str(config_path)
    c.GpuhubAuthenticator.dbm_path = str(data_dir / PASSWORD_DB)
    if cfg.auth.admin_users:
        c.GpuhubAuthenticator.admin_password_file = str(data_dir / ADMIN_PASSWORD_FILE)
    c.GPULocalSpawner.gpuhub_config_file = str(config_path)
    c.GPULocalSpawner.data_dir = str(data_dir)
    # the home page shows gpuhub's word about the user's server (e.g. an out-of-memory kill)
    c.JupyterHub.template_paths = [str(Path(__file__).parent / "templates" / "hub")]
    apply_users(c, cfg)
    if jobs_port is not None:
        apply_jobs_service(c, config_path, data_dir, bind_url, jobs_port)
    if monitor_port is not None:
        apply_monitor_service(c, config_path, data_dir, monitor_port, cfg.auth.admin_users)
    return c


def apply_jobs_service(
    c: Config, config_path: Path, data_dir: Path, bind_url: str, port: int
) -> None:
    """The managed ``gpuhub-jobs`` service with least-privilege roles.

    - the service's role: :data:`JOBS_SERVICE_SCOPES`;
    - every user may reach the service (``access:services!service=gpuhub-jobs``);
    - single-user servers' ``$JUPYTERHUB_API_TOKEN`` may call it on the user's behalf
      (the lab extension's server side), and identify the user with their groups;
    - servers learn the service's URL through the proxy as ``$GPUHUB_JOBS_URL``;
    - the service learns this hub's PID (``$GPUHUB_HUB_PID``) and ends with it.
    """
    access = f"access:services!service={JOBS_SERVICE}"
    c.JupyterHub.services = [
        {
            "name": JOBS_SERVICE,
            "url": f"http://127.0.0.1:{port}",
            "command": [sys.executable, "-m", "gpuhub.jobs"],
            "environment": {
                "GPUHUB_CONFIG": str(config_path),
                "GPUHUB_DATA": str(data_dir),
                # this hub (the config runs in it): the service ends when it does
                HUB_PID_ENV: str(os.getpid()),
            },
            "display": False,
        }
    ]
    define_scopes(c, JOBS_CANCEL_ANY)
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", access]},
        {
            "name": f"{JOBS_SERVICE}-service",
            "description": "gpuhub jobs service: read users' names, groups and servers",
            "scopes": list(JOBS_SERVICE_SCOPES),
            "services": [JOBS_SERVICE],
        },
    ]
    c.Spawner.server_token_scopes = [
        "access:servers!server",
        "users:activity!user",
        "read:users:name!user",
        "read:users:groups!user",
        access,
    ]
    c.GPULocalSpawner.jobs_url = f"{bind_url.rstrip('/')}/services/{JOBS_SERVICE}/"


def define_scopes(c: Config, *names: str) -> None:
    """Add gpuhub's custom scopes ``names`` (:mod:`gpuhub.scopes`) to the hub's."""
    c.JupyterHub.custom_scopes = {
        **c.JupyterHub.get("custom_scopes", {}),
        **{n: dict(DEFINITIONS[n]) for n in names},
    }


def apply_monitor_service(
    c: Config, config_path: Path, data_dir: Path, port: int, admins: Iterable[str] = ()
) -> None:
    """The managed ``gpuhub-monitor`` service (GPU utilisation, idle culling, history,
    ``/metrics``, the admin's GPU page) with :data:`MONITOR_SERVICE_SCOPES`; users and
    their servers' tokens may reach it (their own GPU servers, "keep it", "give the GPUs
    back"), and servers learn its URL as ``$GPUHUB_MONITOR_URL``.  Ends with this hub,
    like the jobs service.

    The GPU page: ``admins`` get :data:`~gpuhub.scopes.MONITOR_ADMIN` through
    :data:`MONITOR_ADMIN_ROLE`, and the service's OAuth lets that scope through (without
    a confirmation prompt: the service is the hub's own), so a browser login carries it
    for admins only.  With the jobs service configured first, the monitor may cancel any
    job (:data:`~gpuhub.scopes.JOBS_CANCEL_ANY`) and learns its URL as
    ``$GPUHUB_JOBS_URL``."""
    access = f"access:services!service={MONITOR_SERVICE}"
    services = list(c.JupyterHub.get("services", []))
    jobs = next((s for s in services if s["name"] == JOBS_SERVICE), None)
    env = {
        "GPUHUB_CONFIG": str(config_path),
        "GPUHUB_DATA": str(data_dir),
        HUB_PID_ENV: str(os.getpid()),
    }
    scopes = list(MONITOR_SERVICE_SCOPES)
    if jobs is not None:
        env["GPUHUB_JOBS_URL"] = f"{jobs['url']}/services/{JOBS_SERVICE}/"
        scopes.append(JOBS_CANCEL_ANY)
    define_scopes(c, MONITOR_ADMIN)
    c.JupyterHub.services = [
        *services,
        {
            "name": MONITOR_SERVICE,
            "url": f"http://127.0.0.1:{port}",
            "command": [sys.executable, "-m", "gpuhub.monitor"],
            "environment": env,
            "display": False,
            "oauth_client_allowed_scopes": [MONITOR_ADMIN],
            "oauth_no_confirm": True,
        },
    ]
    roles = list(c.JupyterHub.get("load_roles", []))
    user = next((r for r in roles if r["name"] == "user"), None)
    if user is None:
        roles.append({"name": "user", "scopes": ["self", access]})
    else:
        user["scopes"] = [*user["scopes"], access]
    roles.append(
        {
            "name": f"{MONITOR_SERVICE}-service",
            "description": "gpuhub monitor: list servers, stop idle GPU servers",
            "scopes": scopes,
            "services": [MONITOR_SERVICE],
        }
    )
    roles.append(
        {
            "name": MONITOR_ADMIN_ROLE,
            "description": "the GPU page of gpuhub-monitor (the hub's admins)",
            "scopes": [MONITOR_ADMIN],
            "users": sorted(set(admins)),
        }
    )
    c.JupyterHub.load_roles = roles
    base = c.Spawner.get("server_token_scopes", ["access:servers!server", "users:activity!user"])
    c.Spawner.server_token_scopes = [*base, access]
    # the lab extension's server side asks the monitor about its own server (status bar)
    c.Spawner.environment = {
        **c.Spawner.get("environment", {}),
        MONITOR_URL_ENV: f"http://127.0.0.1:{port}/services/{MONITOR_SERVICE}/",
    }


def private_data_dir(data: Path) -> None:
    """The data directory holds secrets, the hub database and the ledger: only root may
    read it; users' accounts may only pass through it to their own homes (mode 0711)."""
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o711)
    if os.geteuid() == 0:
        for parent in data.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise ConfigError(
                    "GPUHUB_DATA",
                    f"the data directory {data} is inside {parent} (mode "
                    f"{parent.stat().st_mode & 0o777:o}), which users' accounts cannot pass "
                    "through to their homes",
                    "set GPUHUB_DATA to a directory outside it, e.g. /var/lib/gpuhub",
                )
    db = data / "jupyterhub.sqlite"
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    db.chmod(0o600)


def announce_isolation(c: Config, data: Path, log: Any) -> None:
    """Say at start-up how servers and jobs are isolated; where GPUs cannot be fenced,
    warn in the log and on admins' home page that GPU assignment is advisory."""
    from .cgroups import open_fence

    (data / "state").mkdir(parents=True, exist_ok=True, mode=0o700)
    fence = open_fence(data / "state")
    accounts = "per-user system accounts" if os.geteuid() == 0 else "the hub's own user"
    log.info("gpuhub: servers and jobs run as %s, in %s", accounts, fence.mechanism)
    advisory = ""
    if not fence.fences_devices:
        advisory = (
            f"GPU assignment is advisory on this host ({fence.mechanism}): a user's code "
            "can open GPUs it was not given. Run the hub as root on a host with cgroup v1 "
            "device control to fence them."
        )
        log.warning("gpuhub: %s", advisory)
    c.JupyterHub.template_vars = {"gpuhub_advisory": advisory}


def free_port() -> int:
    """A free loopback TCP port (for the jobs service when none is configured)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure_embedded(
    c: Any, config_path: str | None = None, data_dir: str | None = None
) -> GpuhubConfig:
    """Load and validate the gpuhub YAML and fill ``c`` for the embedded default.

    Called from the top-level ``jupyterhub_config.py``.  An invalid YAML raises
    :class:`~gpuhub.errors.ConfigError`, so the hub refuses to start with the key path.
    Inside the hub it also installs the ``SIGHUP`` handler of ``gpuhub-config reload``
    (:mod:`gpuhub.hubreload`).
    """
    from jupyterhub.app import JupyterHub

    from . import hubreload

    path = Path(
        config_path
        or os.environ.get(CONFIG_ENV)
        or Path(os.environ.get(DATA_ENV) or default_data_dir()) / "gpuhub.yaml"
    ).resolve()
    data = Path(data_dir or resolve_data_dir(path)).resolve()
    log = JupyterHub.instance().log if JupyterHub.initialized() else logging.getLogger(__name__)
    holder = active_config(path, log)
    cfg = holder.config
    private_data_dir(data)
    read_or_create_secret(data / ADMIN_PASSWORD_FILE, 32)
    # the proxy outlives a hub restart only if the new hub can talk to it: keep its token
    c.ConfigurableHTTPProxy.auth_token = read_or_create_secret(data / "proxy-auth-token", 32)[0]
    bind = os.environ.get(BIND_ENV, DEFAULT_BIND)
    jobs_port = int(os.environ.get(JOBS_PORT_ENV) or free_port())
    monitor_port = int(os.environ.get(MONITOR_PORT_ENV) or free_port())
    c.merge(embedded_config(cfg, path, data, bind, jobs_port=jobs_port, monitor_port=monitor_port))
    announce_isolation(c, data, log)
    hubreload.install(holder, data, log)
    return cfg


def oauth_config(
    issuer: str,
    client_id: str,
    client_secret: str,
    callback_url: str,
    *,
    groups_claim: str = "groups",
    admin_groups: Iterable[str] = (),
    allowed_groups: Iterable[str] = (),
    endpoints: Mapping[str, str] | None = None,
    username_claim: str = "preferred_username",
) -> Config:
    """Login through an OIDC identity provider (``GenericOAuthenticator``), groups from a claim.

    - JupyterHub groups follow the provider's ``groups_claim`` on every login
      (``manage_groups``), so the gpuhub YAML's ``profiles[].groups`` and ``quotas.groups``
      name the provider's groups;
    - members of ``admin_groups`` are JupyterHub admins; only members of ``allowed_groups``
      or ``admin_groups`` may log in;
    - ``enable_auth_state`` + ``refresh_pre_spawn``: before every spawn the hub asks the
      provider's userinfo endpoint again (with the stored access token, else the refresh
      token), so a user removed from a group loses its profiles at the next spawn, not only
      at the next login.  Auth state needs ``$JUPYTERHUB_CRYPT_KEY`` (z2jh generates
      ``hub.config.CryptKeeper.keys``).

    ``endpoints`` maps ``authorize``/``token``/``userinfo`` to URLs, e.g. from the provider's
    ``/.well-known/openid-configuration``; without it, Keycloak's layout under ``issuer``
    (``…/realms/<realm>/protocol/openid-connect/{auth,token,userinfo}``) is assumed.
    """
    base = issuer.rstrip("/")
    urls = dict(endpoints or {})
    admins = set(admin_groups)
    c = Config()
    c.JupyterHub.authenticator_class = "generic-oauth"
    g = c.GenericOAuthenticator
    g.client_id = client_id
    g.client_secret = client_secret
    g.oauth_callback_url = callback_url
    g.authorize_url = urls.get("authorize", f"{base}/protocol/openid-connect/auth")
    g.token_url = urls.get("token", f"{base}/protocol/openid-connect/token")
    g.userdata_url = urls.get("userinfo", f"{base}/protocol/openid-connect/userinfo")
    g.scope = ["openid", "profile", "email"]
    g.username_claim = username_claim
    g.login_service = "your organisation's sign-in"
    g.manage_groups = True
    g.auth_state_groups_key = f"oauth_user.{groups_claim}"
    g.admin_groups = admins
    g.allowed_groups = set(allowed_groups) | admins
    g.enable_auth_state = True
    g.refresh_pre_spawn = True
    return c


KUBE_CONFIG_PATH = "/usr/local/etc/gpuhub/gpuhub.yaml"
KUBE_SERVICE_ENV = (
    "POD_NAMESPACE",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBECONFIG",
)
"""What the hub pod's environment tells gpuhub's services about the cluster: the release
namespace (the chart sets ``POD_NAMESPACE``), the in-cluster API address (set by Kubernetes
in every pod), or a kubeconfig where the hub uses one.  JupyterHub starts a managed service
with none of its own environment but ``PATH``/``LANG``-like keys."""


def kube_config(cfg: GpuhubConfig, config_path: Path) -> Config:
    """The gpuhub part of a Kubernetes hub's config (the Zero to JupyterHub chart supplies
    the rest): the ``gpu-kube`` spawner reading the mounted gpuhub YAML."""
    c = Config()
    c.JupyterHub.spawner_class = "gpu-kube"
    c.GPUKubeSpawner.gpuhub_config_file = str(config_path)
    # The chart's profileList is not used: profiles come from the gpuhub YAML.
    c.GPUKubeSpawner.profile_list = []
    return c


def kube_jobs_service_env(
    services: Iterable[dict[str, Any]], config_path: Path, environ: Mapping[str, str]
) -> None:
    """Give the chart's ``gpuhub-jobs`` and ``gpuhub-monitor`` services (``hub.services``)
    what they need from the hub pod: the gpuhub YAML the hub reads (``$GPUHUB_CONFIG``) and
    :data:`KUBE_SERVICE_ENV` where set.  Keys the chart's values already set win."""
    for service in services:
        if service.get("name") not in (JOBS_SERVICE, MONITOR_SERVICE):
            continue
        env = {k: environ[k] for k in KUBE_SERVICE_ENV if environ.get(k)}
        env[CONFIG_ENV] = str(config_path)
        service["environment"] = {**env, **(service.get("environment") or {})}


def configure_kube(c: Any, config_path: str | None = None) -> GpuhubConfig:
    """Load and validate the gpuhub YAML and fill ``c`` for a Kubernetes hub.

    Called from a ``jupyterhub_config.d`` snippet mounted by ``helm-values/``; an invalid
    YAML stops the hub with the key path of the problem, and so does an account that may
    not watch the spawner's namespaces (checked once the config is loaded).  The chart's
    ``gpuhub-jobs`` and ``gpuhub-monitor`` services (already in ``c.JupyterHub.services``)
    get their environment (:func:`kube_jobs_service_env`); servers get the jobs service's
    URL as ``$GPUHUB_JOBS_URL`` (:class:`~gpuhub.spawners.base.GpuhubSpawnerMixin`).
    """
    from .kube.access import check_at_hub_start

    path = Path(config_path or os.environ.get("GPUHUB_CONFIG") or KUBE_CONFIG_PATH)
    cfg = load_config(path)
    c.merge(kube_config(cfg, path))
    services = c.JupyterHub.get("services")
    if isinstance(services, list):
        kube_jobs_service_env(services, path, os.environ)
    check_at_hub_start()
    return cfg
