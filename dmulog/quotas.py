"""A tenant's quotas, and the words by which logsvc and the bridge agree on what a refusal means.

Both limits of capacity (logs, regions) and the request rate answer
RESOURCE_EXHAUSTED, but they ask different things of the bridge: a rate
refusal passes with time, so it is retried within the request's budget like
an unreachable logsvc; a capacity refusal does not, so retrying it would only
make the kernel wait for the same answer. logsvc starts the message of a
capacity refusal with ``CAPACITY_REFUSED``; the bridge answers it at once
with EDQUOT (bridge/errors.py). The kernel turns any failed CTR into a table
load that fails with EINVAL ("Userspace log server failed to create log",
then "Error creating mirror dirty log"), so the reason is read in the
bridge's and logsvc's logs; what the errno buys is the answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CAPACITY_REFUSED", "Quota"]

CAPACITY_REFUSED = "quota exceeded: "


@dataclass(frozen=True)
class Quota:
    """Limits of one tenant; None is no limit."""

    logs: int | None = None
    """Logs that exist at once."""
    regions: int | None = None
    """Regions of all its logs together."""
    rate: float | None = None
    """Requests a second, per logsvc process (a burst of one second's worth passes)."""
