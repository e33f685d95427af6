"""The deployment's ID and date: made once at the first start, or pinned together in configuration.

A free trial runs 90 days from the deployment date, so the date is as much
part of the deployment as its ID: pinning the ID alone would let an emptied
data directory start the trial again with a new date. And a first start whose
clock reads before this version's release would fix a date the deployment
cannot have, rejecting every trial for good.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

from licensing_server.domain.license import Deployment, iso_time

PIN_THE_DATE = "--deployment-date (LICENSING_DEPLOYMENT_DATE, deployment_date)"


class DeploymentRefused(Exception):
    """The start would make or use the wrong deployment; nothing was stored."""


def _day(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).date().isoformat()


def _same_second(a: float, b: float) -> bool:
    # an operator pins the date GetStatus shows; a date the clock made has a fraction
    return math.floor(a) == math.floor(b)


def _check_date_not_alone(pinned_id: str | None, pinned_time: float | None) -> None:
    if pinned_time is not None and pinned_id is None:
        raise DeploymentRefused(
            f"the deployment date {iso_time(pinned_time)} is pinned without the deployment ID: "
            "pin both (--deployment-id and --deployment-date) or neither"
        )


def first_deployment(
    pinned_id: str | None, pinned_time: float | None, now: float, released_at: float
) -> Deployment:
    """The deployment a first start makes, on a data directory that holds none."""
    _check_date_not_alone(pinned_id, pinned_time)
    if pinned_id is not None:
        if pinned_time is None:
            raise DeploymentRefused(
                f"the data directory holds no deployment and only the deployment ID "
                f"{pinned_id!r} is pinned: pin the deployment date too, {PIN_THE_DATE}, the one "
                "GetStatus shows for this deployment (or now, for a new one), so that an "
                "emptied data directory cannot start a new free trial"
            )
        if pinned_time > now:
            raise DeploymentRefused(
                f"the pinned deployment date {iso_time(pinned_time)} is later than the clock "
                f"({iso_time(now)}): a deployment cannot be made in the future; check the pin "
                "and the system clock"
            )
        return Deployment(pinned_id, pinned_time)
    if now < released_at:
        raise DeploymentRefused(
            f"the clock reads {iso_time(now)}, before this version's release on "
            f"{_day(released_at)}: a first start would fix that as the deployment date and "
            "reject every free trial; set the system clock right and start again"
        )
    return Deployment(str(uuid.uuid4()), now)


def check_pins(stored: Deployment, pinned_id: str | None, pinned_time: float | None) -> None:
    """A pinned ID or date must be the data directory's own."""
    _check_date_not_alone(pinned_id, pinned_time)
    if pinned_id is not None and pinned_id != stored.deployment_id:
        raise DeploymentRefused(
            f"the data directory belongs to deployment {stored.deployment_id!r}, but the "
            f"configuration pins deployment {pinned_id!r}; use the right data directory or "
            "remove the pin"
        )
    if pinned_time is not None and not _same_second(pinned_time, stored.deployment_time):
        raise DeploymentRefused(
            f"the data directory's deployment was made {iso_time(stored.deployment_time)}, but "
            f"the configuration pins the deployment date {iso_time(pinned_time)}; pin the date "
            "the data directory holds, or use the right data directory"
        )


def unpinned_date_warning(stored: Deployment) -> str:
    """What to tell an operator who pins the ID of an existing deployment but not its date."""
    return (
        "the deployment ID is pinned without its date: pin "
        f"--deployment-date {iso_time(stored.deployment_time)} as well, or a start on an "
        "emptied data directory will be refused"
    )
