"""A virtual clock on one event heap: Twisted's ``IReactorTime`` for thousands of cores.

``twisted.internet.task.Clock`` keeps its calls in a sorted list (insertion
and removal are O(n)); a fleet of 10,000 swarms ticking four times a second,
plus the network's own events, makes that list the simulator's hot spot.
This clock keeps a binary heap with lazy cancellation instead: scheduling and
firing are O(log n), a cancelled call is skipped when it surfaces.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, ClassVar

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer


@implementer(IDelayedCall)
class SimCall:
    """One scheduled call (the ``IDelayedCall`` subset Twisted's helpers use)."""

    __slots__ = ("time", "func", "args", "kw", "cancelled", "called", "_clock")

    def __init__(self, clock: "SimClock", when: float, func: Callable[..., Any],
                 args: tuple, kw: dict) -> None:
        self._clock = clock
        self.time = when
        self.func = func
        self.args = args
        self.kw = kw
        self.cancelled = False
        self.called = False

    def getTime(self) -> float:  # noqa: N802 (Twisted API)
        return self.time

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()
        self.cancelled = True

    def delay(self, seconds: float) -> None:
        self.reset(self.time - self._clock.now + seconds)

    def reset(self, seconds: float) -> None:
        """Move the call to ``seconds`` from now; its old heap entry goes stale."""
        if not self.active():
            raise AlreadyCalled()
        self.time = self._clock.now + max(0.0, seconds)
        self._clock._push(self.time, self)


class SimClock:
    """Virtual time: ``seconds``/``callLater`` for the code under test, ``run`` for the driver."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, SimCall]] = []
        self._seq = 0
        #: Calls fired so far (the simulator's "events").
        self.events = 0
        self.running = True
        self._halt = False

    def seconds(self) -> float:
        return self.now

    def _push(self, when: float, call: SimCall) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, call))

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any,  # noqa: N802
                  **kwargs: Any) -> SimCall:
        when = self.now + (delay if delay > 0 else 0.0)
        call = SimCall(self, when, f, args, kwargs)
        self._push(when, call)
        return call

    def getDelayedCalls(self) -> list[SimCall]:  # noqa: N802 (Twisted API)
        return [c for _, _, c in self._heap if c.active()]

    def halt(self) -> None:
        """End :meth:`run` after the call being fired (e.g. the last host finished)."""
        self._halt = True

    #: Called with each call about to fire (bench/sim_profile.py counts
    #: events by kind); None, the default, costs one test per event.
    observer: ClassVar[Callable[[SimCall], None] | None] = None

    def run(self, until: float) -> None:
        """Fire calls in time order up to virtual time ``until`` (or :meth:`halt`)."""
        heap = self._heap
        pop = heapq.heappop
        observe = type(self).observer  # a class attribute: not bound to self
        self._halt = False
        while heap and not self._halt:
            when, _, call = heap[0]
            if when > until:
                break
            pop(heap)
            if call.cancelled or call.called or call.time != when:
                continue
            self.now = when
            call.called = True
            self.events += 1
            if observe is not None:
                observe(call)
            call.func(*call.args, **call.kw)
