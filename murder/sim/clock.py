"""A virtual clock on one event heap: Twisted's ``IReactorTime`` for thousands of cores.

``twisted.internet.task.Clock`` keeps its calls in a sorted list (insertion
and removal are O(n)); a fleet of 10,000 swarms ticking four times a second,
plus the network's own events, makes that list the simulator's hot spot.
This clock keeps a binary heap with lazy cancellation instead: scheduling and
firing are O(log n), a cancelled call is skipped when it surfaces.

Deliveries (:meth:`SimClock.deliver_later`) share heap entries: calls for
one instant scheduled back to back ride on one entry and fire in the order
they were made.  A completed piece's HAVEs to every rack mate arrive at
the same instant; one entry instead of twenty saves the heap and the loop
their share of the work without changing the order anything fires in.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, ClassVar

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer


#: The keyword arguments of every delivery (never changed: shared).
_NO_KW: dict = {}


class _Batch:
    """Deliveries sharing one heap entry: ``[(f, arg), …]`` fired in order."""

    __slots__ = ("calls",)

    def __init__(self, calls: list) -> None:
        self.calls = calls


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
        self._heap: list[tuple[float, int, Any]] = []  # SimCall or _Batch
        self._seq = 0
        #: Calls fired so far (the simulator's "events").
        self.events = 0
        #: Calls fired that rode on another's heap entry (:meth:`deliver_later`):
        #: ``events + batched`` is the calls an unbatched clock would fire.
        self.batched = 0
        #: Batches still growing, by instant.
        self._open: dict[float, _Batch] = {}
        self.running = True
        self._halt = False

    def seconds(self) -> float:
        return self.now

    def _push(self, when: float, call: SimCall) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, call))
        if self._open and when in self._open:
            # Anything else for that instant closes its batch: a later
            # delivery must fire after it, as its own entry would.
            del self._open[when]

    def deliver_later(self, delay: float, f: Callable[[Any], None], arg: Any) -> None:
        """``callLater(delay, f, arg)`` for a call never cancelled or moved,
        which may share a heap entry with the calls for the same instant
        scheduled just before it (nothing else for that instant in between).

        The order of firing is exactly ``callLater``'s: the heap orders
        entries by (time, scheduling order), and a batch only grows while it
        is the last entry made for its instant, so its calls would have been
        adjacent anyway.
        """
        when = self.now + (delay if delay > 0 else 0.0)
        if not self.batching:
            self._push(when, SimCall(self, when, f, (arg,), _NO_KW))
            return
        batch = self._open.get(when)
        if batch is not None:
            batch.calls.append((f, arg))
            return
        batch = _Batch([(f, arg)])
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, batch))
        self._open[when] = batch

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any,  # noqa: N802
                  **kwargs: Any) -> SimCall:
        when = self.now + (delay if delay > 0 else 0.0)
        call = SimCall(self, when, f, args, kwargs)
        self._push(when, call)
        return call

    def getDelayedCalls(self) -> list[SimCall]:  # noqa: N802 (Twisted API)
        return [c for _, _, c in self._heap if isinstance(c, SimCall) and c.active()]

    def halt(self) -> None:
        """End :meth:`run` after the call being fired (e.g. the last host finished)."""
        self._halt = True

    #: False: every delivery its own heap entry (tests and
    #: bench/sim_speed.py compare); per clock or for the class.
    batching: ClassVar[bool] = True

    #: Called with each heap entry about to fire, a :class:`SimCall` or a
    #: batch of deliveries (bench/sim_profile.py counts calls by kind);
    #: None, the default, costs one test per event.
    observer: ClassVar[Callable[[Any], None] | None] = None

    def run(self, until: float) -> None:
        """Fire calls in time order up to virtual time ``until`` (or :meth:`halt`)."""
        heap = self._heap
        pop = heapq.heappop
        batches = self._open
        observe = type(self).observer  # a class attribute: not bound to self
        self._halt = False
        while heap and not self._halt:
            when, seq, call = heap[0]
            if when > until:
                break
            pop(heap)
            if call.__class__ is _Batch:
                # Deliveries (deliver_later), fired here: the hot path.
                self.now = when
                self.events += 1
                if observe is not None:
                    observe(call)
                if batches.get(when) is call:
                    del batches[when]
                calls = call.calls
                rest: list = []
                it = iter(calls)
                for f, arg in it:
                    f(arg)
                    if self._halt:
                        rest = list(it)
                        break
                if rest:
                    # Halted: the rest keep their place (this entry's
                    # sequence number) for a later run.
                    heapq.heappush(heap, (when, seq, _Batch(rest)))
                self.batched += len(calls) - len(rest) - 1
                continue
            if call.cancelled or call.called or call.time != when:
                continue
            self.now = when
            call.called = True
            self.events += 1
            if observe is not None:
                observe(call)
            if call.kw:
                call.func(*call.args, **call.kw)
            else:
                call.func(*call.args)
