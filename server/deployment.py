"""Loads this installation's deployment from the store, or makes it at the first start."""

from __future__ import annotations

import logging

from licensing_server import RELEASED_AT
from licensing_server.domain.deployment import check_pins, first_deployment, unpinned_date_warning
from licensing_server.domain.license import Deployment, iso_time
from licensing_server.domain.runtime import RuntimeState
from licensing_server.storage import Storage

log = logging.getLogger("licensing")


def load_deployment(
    store: Storage, pinned_id: str | None, pinned_time: float | None, now: float
) -> Deployment:
    """The stored deployment, checked against the pins; or a new one, stored before it is used.

    Replicas starting together on an empty database agree by construction: each offers a
    deployment, the first one stored stays, and every one uses what the store holds.
    Raises DeploymentRefused, with nothing stored, for pins that do not fit.
    """
    row = store.deployment()
    if row is None:
        offered = first_deployment(pinned_id, pinned_time, now, RELEASED_AT)
        row = store.create_deployment(
            offered.deployment_id, offered.deployment_time, RuntimeState.NORMAL.value
        )
        if row["deployment_id"] == offered.deployment_id:
            log.info(
                "deployment created: id %s, deployment date %s%s",
                offered.deployment_id,
                iso_time(offered.deployment_time),
                " (pinned in configuration)" if pinned_id else "",
            )
            return offered
    stored = Deployment(row["deployment_id"], row["deployment_time"])
    check_pins(stored, pinned_id, pinned_time)
    if pinned_id is not None and pinned_time is None:
        log.warning("%s", unpinned_date_warning(stored))
    return stored
