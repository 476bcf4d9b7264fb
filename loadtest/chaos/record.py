"""What a soak observed: the requests' outcomes, the faults, the server's samples."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest.chaos.faults import Event
from loadtest.chaos.traffic import Outcome

WARMUP_S = 5.0  # traffic before the first fault; the memory baseline is taken after it


@dataclass(frozen=True)
class Sample:
    """The server's process tree at one moment: seconds since the start, memory, descriptors."""

    at: float
    rss_bytes: int
    fds: int
    processes: int


@dataclass
class SoakRecord:
    """Everything a soak observed, for the report."""

    minutes: float
    seed: int
    outcomes: list[Outcome]
    events: list[Event]
    samples: list[Sample]
    warmup_s: float = WARMUP_S
    server_log: str = ""
    notes: list[str] = field(default_factory=list)


