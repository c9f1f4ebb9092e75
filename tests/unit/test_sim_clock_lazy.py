"""SimClock's lazy re-push (``SimCall.reset``) fires every call where the clock
that pushed a heap entry per reset did, in the same order.

The simulator's outcome depends on the order calls fire in, ties included;
the lazy heap must not change it.  So the old clock is kept here (its
semantics, compact) and both are driven by the same random program: calls
scheduled, reset (to the same time, back to a time they had before, to now),
cancelled, deliveries batched, halts, runs cut at ``until``.
"""

from __future__ import annotations

import heapq
import random

import pytest

from murder.sim.clock import SimClock


class OldCall:
    """Session 10's ``SimCall``: a reset pushes a fresh heap entry."""

    def __init__(self, clock: "OldClock", when: float, func, args) -> None:
        self.clock, self.time, self.func, self.args = clock, when, func, args
        self.cancelled = self.called = False

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True

    def reset(self, seconds: float) -> None:
        self.time = self.clock.now + max(0.0, seconds)
        self.clock._push(self.time, self)


class OldBatch:
    def __init__(self, calls: list) -> None:
        self.calls = calls


class OldClock:
    """Session 10's ``SimClock``: fires a call at its first entry whose time matches."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        self.events = self.batched = 0
        self.open: dict = {}
        self._halt = False

    def _push(self, when, call) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, call))
        if self.open and when in self.open:
            del self.open[when]

    def callLater(self, delay, f, *args):  # noqa: N802
        when = self.now + (delay if delay > 0 else 0.0)
        call = OldCall(self, when, f, args)
        self._push(when, call)
        return call

    def deliver_later(self, delay, f, arg) -> None:
        when = self.now + (delay if delay > 0 else 0.0)
        batch = self.open.get(when)
        if batch is not None:
            batch.calls.append((f, arg))
            return
        batch = OldBatch([(f, arg)])
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, batch))
        self.open[when] = batch

    def halt(self) -> None:
        self._halt = True

    def run(self, until: float) -> None:
        heap = self.heap
        self._halt = False
        while heap and not self._halt:
            when, seq, call = heap[0]
            if when > until:
                break
            heapq.heappop(heap)
            if isinstance(call, OldBatch):
                self.now = when
                self.events += 1
                if self.open.get(when) is call:
                    del self.open[when]
                it = iter(call.calls)
                rest: list = []
                for f, arg in it:
                    f(arg)
                    if self._halt:
                        rest = list(it)
                        break
                if rest:
                    heapq.heappush(heap, (when, seq, OldBatch(rest)))
                self.batched += len(call.calls) - len(rest) - 1
                continue
            if call.cancelled or call.called or call.time != when:
                continue
            self.now = when
            call.called = True
            self.events += 1
            call.func(*call.args)


DELAYS = (0.0, 0.0, 0.25, 0.5, 0.5, 1.0, 1.5)


def drive(clock, seed: int, steps: int) -> tuple[list, int, int]:
    """Run a random program on ``clock``; what fired (label, time), events, batched.

    Every choice comes from a generator seeded by the seed and the label of
    the call making it, so two clocks that fire alike make the same choices.
    """
    fired: list = []
    calls: list = []
    count = [0]

    def act(label: str) -> None:
        fired.append((label, clock.now))
        if len(fired) > steps:
            return
        rng = random.Random(f"{seed}/{label}")
        for _ in range(rng.randrange(1, 5)):
            op = rng.random()
            if op < 0.3:
                count[0] += 1
                calls.append(clock.callLater(rng.choice(DELAYS), act, f"c{count[0]}"))
            elif op < 0.65 and calls:
                call = rng.choice(calls[-12:])
                if call.active():
                    call.reset(rng.choice(DELAYS))
            elif op < 0.72 and calls:
                call = rng.choice(calls[-12:])
                if call.active():
                    call.cancel()
            elif op < 0.98:
                count[0] += 1
                clock.deliver_later(rng.choice(DELAYS), act, f"d{count[0]}")
            else:
                clock.halt()

    for k in range(4):
        count[0] += 1
        calls.append(clock.callLater(0.25 * k, act, f"c{count[0]}"))
    until = 0.0
    for _ in range(400):
        if not clock._heap if isinstance(clock, SimClock) else not clock.heap:
            break
        until += 0.75
        clock.run(until)
        act(f"between{until}")  # resets and new calls outside run, too
    return fired, clock.events, clock.batched


class LazyResetTests:
    """The lazy heap fires exactly as the entry-per-reset heap did."""

    @pytest.mark.parametrize("seed", range(40))
    def test_same_firing_order(self, seed):
        """Same calls, same order, same times, same event and batch counts on a random program."""
        old = drive(OldClock(), seed, 3000)
        new = drive(SimClock(), seed, 3000)
        assert len(old[0]) > 100
        assert new == old

    def test_back_to_an_earlier_time_fires_at_its_old_place(self):
        """A call moved away and back to its time fires before a call scheduled for
        that time in between (its old entry's place), as the old clock did."""
        for clock in (OldClock(), SimClock()):
            fired: list = []
            a = clock.callLater(1.0, fired.append, "a")
            a.reset(2.0)
            clock.callLater(1.0, fired.append, "b")
            a.reset(1.0)
            clock.run(5)
            assert fired == ["a", "b"]

    def test_moved_later_fires_after_calls_made_before_the_move(self):
        """A call moved later fires after calls for that time scheduled before the
        move and before those scheduled after it (the heap has no entry for it yet)."""
        clock = SimClock()
        fired: list = []
        clock.callLater(2.0, fired.append, "before")
        a = clock.callLater(1.0, fired.append, "a")
        a.reset(2.0)
        clock.callLater(2.0, fired.append, "after")
        assert len(clock._heap) == 3
        clock.run(5)
        assert fired == ["before", "a", "after"]
        assert clock.getDelayedCalls() == []

    def test_back_to_a_passed_entry_takes_a_new_place(self):
        """A call whose entry for a time was popped (stale, at the end of a run
        cut at ``until``) and that is reset back to that time fires after calls
        scheduled for it in between, as the old clock did (its entry is gone)."""
        for clock in (OldClock(), SimClock()):
            fired: list = []
            a = clock.callLater(1.0, fired.append, "a")
            a.reset(2.0)
            clock.callLater(1.5, fired.append, "late")
            clock.run(1.2)  # pops a's entry for 1.0 (stale), fires nothing
            assert fired == []
            clock.callLater(1.0, fired.append, "c")
            a.reset(1.0)
            clock.run(5)
            assert fired == ["c", "a", "late"]
