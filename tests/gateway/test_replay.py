"""The replay window: check, record, expiry and the refuse-when-full rule."""

from __future__ import annotations

import pytest

from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason
from gateway.replay import ReplayWindow


def _reason(fn: object, *args: object) -> Reason:
    with pytest.raises(RemoteProtocolError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.reason


def test_record_then_check_refuses_until_expiry_plus_skew() -> None:
    w = ReplayWindow(capacity=10, skew=60)
    w.check(b"a", 100)
    w.record(b"a", 200, 100)
    assert _reason(w.check, b"a", 150) is Reason.REPLAYED
    assert _reason(w.check, b"a", 260) is Reason.REPLAYED
    w.check(b"a", 261)  # retention over: the envelope itself is expired by now
    assert _reason(w.record, b"a", 300, 150) is Reason.REPLAYED


def test_full_window_refuses_instead_of_evicting() -> None:
    w = ReplayWindow(capacity=2, skew=0)
    w.record(b"a", 100, 0)
    w.record(b"b", 200, 0)
    assert _reason(w.record, b"c", 300, 50) is Reason.OVERLOADED
    assert b"a" in w and b"b" in w  # nothing live was evicted
    w.record(b"c", 300, 101)  # "a" retention ended at 100: expired on demand, room made
    assert b"a" not in w and len(w) == 2


def test_expire_counts_and_ignores_stale_heap_entries() -> None:
    w = ReplayWindow(capacity=10, skew=0)
    w.record(b"a", 10, 0)
    w.record(b"a", 50, 20)  # re-recorded after its first retention ended
    assert w.expire(30) == 0  # the stale (10, a) entry must not drop the live record
    assert b"a" in w
    assert w.expire(51) == 1
    assert len(w) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(capacity=0)
