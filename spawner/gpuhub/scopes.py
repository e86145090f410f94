"""The custom JupyterHub scopes gpuhub defines (``c.JupyterHub.custom_scopes``), granted
through roles in :mod:`gpuhub.hubconfig` and checked by the services that own them."""

from __future__ import annotations

MONITOR_ADMIN = "custom:gpuhub-monitor:admin"
"""Open the admin's GPU page of ``gpuhub-monitor`` (every holder, stop, cancel, GPU-hours
of everyone).  Granted to the hub's admins; let through the service's OAuth."""

MONITOR_ADMIN_ROLE = "gpuhub-monitor-admin"
"""The role holding :data:`MONITOR_ADMIN`, granted to the YAML's ``auth.admin_users`` at
start and reload (the hub's built-in ``admin`` role cannot be given more scopes)."""

JOBS_CANCEL_ANY = "custom:gpuhub-jobs:cancel-any"
"""Cancel any user's job in ``gpuhub-jobs`` (``DELETE api/jobs/{id}`` only; nothing else
about others' jobs).  Granted to the ``gpuhub-monitor`` service, whose admin page cancels
on an admin's behalf."""

DEFINITIONS: dict[str, dict[str, str]] = {
    MONITOR_ADMIN: {
        "description": "Open the GPU page of gpuhub-monitor: every GPU holder, stop a "
        "server, cancel a job, everyone's GPU-hours",
    },
    JOBS_CANCEL_ANY: {"description": "Cancel any user's gpuhub job"},
}
