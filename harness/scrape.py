"""A server's ``/metrics`` page read as Prometheus reads it: over HTTP, parsed by the client library's own parser.

The tests and the benchmark check what a server counted against what was
sent to it; they read the page a scraper reads, not the server's objects,
so a metric that is counted but not served (or served under another name)
fails them as it would fail a dashboard.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Expected", "Scrape", "differences", "scrape"]


@dataclass(frozen=True)
class Scrape:
    """Every sample of one page: by sample name (``..._total``, ``..._count``), each with its labels."""

    samples: Mapping[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
        return sum(v for have, v in self.samples.get(name, []) if all(have.get(k) == w for k, w in labels.items()))

    def labels(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed by the value of ``label``: ``{"MARK_REGION": 12.0, ...}``."""
        out: dict[str, float] = {}
        for have, v in self.samples.get(name, []):
            key = have.get(label, "")
            out[key] = out.get(key, 0.0) + v
        return out


def parse(text: str) -> Scrape:
    """A page's text, as Prometheus's text format parser reads it."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return Scrape(samples)


def scrape(address: str, timeout: float = 5.0) -> Scrape:
    """GET ``http://ADDRESS/metrics`` and parse it (blocking: from a test's thread, ``asyncio.to_thread``)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        return parse(response.read().decode("utf-8"))


@dataclass(frozen=True)
class Expected:
    """One sample's value as the sender counted it: ``name``, with (at least) ``labels``."""

    name: str
    labels: Mapping[str, str]
    value: float


def differences(got: Scrape, expected: Iterable[Expected]) -> list[str]:
    """``name{labels}: served X, sent Y`` for each expected sample the page disagrees with; [] when none does."""
    out = []
    for e in expected:
        served = got.value(e.name, **e.labels)
        if served != e.value:
            shown = ",".join(f'{k}="{v}"' for k, v in sorted(e.labels.items()))
            out.append(f"{e.name}{{{shown}}}: served {served:g}, sent {e.value:g}")
    return out
