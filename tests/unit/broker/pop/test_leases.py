"""Deliveries in flight built from pop log records: leases found and settled by their pop time, superseded by
newer checkpoints, due in order when their invisible time passes, and the pop log offset replay must start at."""

from __future__ import annotations

from krocket.broker.pop.leases import OffsetChange, PopLeases
from krocket.broker.pop.records import ACK, CHECKPOINT, REWIND, PopRecord

G, T, Q = "G", "T", 0


def ck(
    offsets: list[int],
    pop_ms: int,
    invisible_ms: int = 1_000,
    attempts: list[int] | None = None,
    *,
    group: str = G,
    topic: str = T,
    queue_id: int = Q,
    client_id: str = "c1",
    auto_renew: bool = False,
    first_pop_ms: int = 0,
) -> PopRecord:
    return PopRecord(
        CHECKPOINT,
        group,
        topic,
        queue_id,
        offsets,
        pop_ms,
        invisible_ms,
        attempts if attempts is not None else [1] * len(offsets),
        client_id,
        auto_renew,
        first_pop_ms,
    )


def ack(offsets: list[int], pop_ms: int, queue_id: int = Q) -> PopRecord:
    return PopRecord(ACK, G, T, queue_id, offsets, pop_ms)


def rewind(offsets: list[int], attempts: list[int], queue_id: int = Q) -> PopRecord:
    return PopRecord(REWIND, G, T, queue_id, offsets, attempts=attempts)


def key(offset: int, queue_id: int = Q) -> tuple[str, str, int, int]:
    return (G, T, queue_id, offset)


# -- apply ---------------------------------------------------------------------------------------------------
def test_checkpoint_makes_one_lease_per_offset_with_its_fields() -> None:
    leases = PopLeases()
    leases.apply(ck([3, 4], 1_000, 5_000, [1, 2], client_id="c9", auto_renew=True), log_offset=17)
    assert len(leases) == 2
    lease = leases.get(key(4))
    assert lease is not None
    assert (lease.group, lease.topic, lease.queue_id, lease.offset) == (G, T, Q, 4)
    assert (lease.pop_ms, lease.invisible_ms, lease.due_ms) == (1_000, 5_000, 6_000)
    assert (lease.attempt, lease.log_offset, lease.client_id, lease.auto_renew) == (2, 17, "c9", True)
    assert lease.first_pop_ms == 1_000  # no renewal: the handle's pop time is the pop time
    assert leases.get(key(3)).attempt == 1  # type: ignore[union-attr]


def test_checkpoint_raises_the_pop_offset_to_past_its_highest_offset() -> None:
    change = PopLeases().apply(ck([7, 3, 5], 1_000), 0)
    assert change == OffsetChange(G, T, Q, 8, True)


def test_checkpoint_without_offsets_changes_nothing() -> None:
    leases = PopLeases()
    assert leases.apply(ck([], 1_000), 0) is None
    assert len(leases) == 0


def test_ack_settles_the_delivery_of_its_pop_time_and_changes_no_offset() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2], 1_000), 0)
    assert leases.apply(ack([1], 1_000), 1) is None
    assert leases.get(key(1)) is None
    assert leases.get(key(2)) is not None


def test_ack_of_another_pop_time_leaves_the_lease() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    leases.apply(ack([1], 999), 1)
    assert leases.get(key(1)) is not None


def test_ack_of_an_unknown_offset_is_ignored() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    leases.apply(ack([42], 1_000), 1)
    assert len(leases) == 1


def test_rewind_drops_the_deliveries_at_or_past_its_offset_and_sets_the_pop_offset() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2, 3, 4], 1_000), 0)
    leases.apply(ck([9], 1_000, queue_id=1), 1)  # another queue
    change = leases.apply(rewind([3, 4], [2, 2]), 2)
    assert change == OffsetChange(G, T, Q, 3, False)
    assert [lease.offset for lease in leases.in_queue(G, T, Q)] == [1, 2]
    assert leases.get(key(9, queue_id=1)) is not None


def test_rewind_sets_the_pop_offset_to_its_lowest_offset() -> None:
    change = PopLeases().apply(rewind([6, 4, 5], [2, 2, 2]), 0)
    assert change == OffsetChange(G, T, Q, 4, False)


def test_redelivery_attempt_after_a_rewind_is_the_rewound_attempt_once() -> None:
    leases = PopLeases()
    leases.apply(ck([3, 4], 1_000, attempts=[1, 2]), 0)
    leases.apply(rewind([3, 4], [2, 3]), 1)
    assert leases.redelivery_attempt(key(3), default=1) == 2
    assert leases.redelivery_attempt(key(4), default=1) == 3
    assert leases.redelivery_attempt(key(3), default=1) == 1  # taken by the pop that redelivered it


def test_redelivery_attempt_without_a_rewind_is_the_default() -> None:
    leases = PopLeases()
    leases.apply(ck([3], 1_000), 0)
    assert leases.redelivery_attempt(key(3), default=5) == 5


# -- find and settle -----------------------------------------------------------------------------------------
def test_find_by_pop_time() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    assert leases.find(key(1), 1_000) is leases.get(key(1))
    assert leases.find(key(1), 1_001) is None
    assert leases.find(key(2), 1_000) is None


def test_settle_removes_the_lease_once() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    settled = leases.settle(key(1), 1_000)
    assert settled is not None and settled.offset == 1
    assert leases.settle(key(1), 1_000) is None
    assert len(leases) == 0


def test_settle_with_a_wrong_pop_time_keeps_the_lease() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    assert leases.settle(key(1), 2_000) is None
    assert len(leases) == 1


def test_a_renewal_is_found_and_settled_by_the_first_pop_time_and_by_its_own() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, auto_renew=True), 0)
    leases.apply(ck([1], 50_000, 60_000, auto_renew=True, first_pop_ms=1_000), 1)
    lease = leases.get(key(1))
    assert lease is not None and (lease.pop_ms, lease.first_pop_ms) == (50_000, 1_000)
    assert leases.find(key(1), 1_000) is lease  # the handle the client holds
    assert leases.find(key(1), 50_000) is lease
    assert leases.settle(key(1), 1_000) is lease
    assert len(leases) == 0


def test_an_ack_record_settles_a_renewal_by_the_first_pop_time() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    leases.apply(ck([1], 50_000, first_pop_ms=1_000), 1)
    leases.apply(ack([1], 1_000), 2)
    assert len(leases) == 0


# -- supersede and replay_from -------------------------------------------------------------------------------
def test_a_newer_checkpoint_supersedes_the_older_lease_of_the_same_key() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    leases.apply(ck([1], 2_000, 5_000, attempts=[2]), 1)
    assert len(leases) == 1
    assert leases.find(key(1), 1_000) is None  # the old handle is stale
    lease = leases.find(key(1), 2_000)
    assert lease is not None and (lease.due_ms, lease.attempt, lease.log_offset) == (7_000, 2, 1)
    assert leases.in_queue(G, T, Q) == [lease]


def test_superseding_frees_the_old_checkpoints_log_reference() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 10)
    leases.apply(ck([1], 2_000), 11)
    assert leases.replay_from(log_end=99) == 11


def test_replay_from_is_the_log_end_without_leases() -> None:
    assert PopLeases().replay_from(log_end=42) == 42


def test_replay_from_is_the_oldest_checkpoint_a_live_lease_needs() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2], 1_000), 10)
    leases.apply(ck([3], 1_100), 12)
    assert leases.replay_from(99) == 10
    leases.settle(key(1), 1_000)
    assert leases.replay_from(99) == 10  # offset 2 still needs checkpoint 10
    leases.settle(key(2), 1_000)
    assert leases.replay_from(99) == 12
    leases.settle(key(3), 1_100)
    assert leases.replay_from(99) == 99


def test_a_rewind_frees_the_log_references_of_the_leases_it_drops() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 10)
    leases.apply(ck([2], 1_100), 11)
    leases.apply(rewind([1, 2], [2, 2]), 12)
    assert leases.replay_from(99) == 99


# -- due -----------------------------------------------------------------------------------------------------
def test_due_returns_nothing_before_the_invisible_time_passes() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    assert leases.due(1_999, limit=10) == []


def test_due_returns_a_lease_once_its_time_is_reached() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    assert [lease.offset for lease in leases.due(2_000, limit=10)] == [1]
    assert leases.due(10_000, limit=10) == []  # handed out once; retry_later brings it back
    assert leases.get(key(1)) is not None  # it stays until settled


def test_due_returns_oldest_first() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 3_000), 0)  # due 4000
    leases.apply(ck([2], 1_000, 1_000), 1)  # due 2000
    leases.apply(ck([3], 1_500, 1_000), 2)  # due 2500
    assert [lease.offset for lease in leases.due(5_000, limit=10)] == [2, 3, 1]


def test_due_honours_its_limit_and_keeps_the_rest_for_later() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2, 3], 1_000, 1_000), 0)
    first = leases.due(5_000, limit=2)
    assert len(first) == 2
    rest = leases.due(5_000, limit=2)
    assert [lease.offset for lease in first + rest] == [1, 2, 3]


def test_due_with_limit_zero_returns_nothing_and_keeps_the_leases_due() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    assert leases.due(5_000, limit=0) == []
    assert [lease.offset for lease in leases.due(5_000, limit=1)] == [1]


def test_due_skips_a_superseded_delivery() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)  # due 2000
    leases.apply(ck([1], 1_500, 10_000), 1)  # due 11500
    assert leases.due(5_000, limit=10) == []
    due = leases.due(11_500, limit=10)
    assert [(lease.offset, lease.pop_ms) for lease in due] == [(1, 1_500)]


def test_due_skips_a_superseded_delivery_with_the_same_pop_time() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    leases.apply(ck([1], 1_000, 9_000), 1)  # same pop time, longer invisible time
    assert leases.due(5_000, limit=10) == []
    assert len(leases.due(10_000, limit=10)) == 1


def test_due_returns_a_delivery_superseded_by_an_identical_checkpoint_once() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    leases.apply(ck([1], 1_000, 1_000), 1)
    assert len(leases.due(5_000, limit=10)) == 1


def test_due_skips_settled_deliveries() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2], 1_000, 1_000), 0)
    leases.settle(key(1), 1_000)
    assert [lease.offset for lease in leases.due(5_000, limit=10)] == [2]


def test_due_skips_deliveries_dropped_by_a_rewind() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2], 1_000, 1_000), 0)
    leases.apply(rewind([2], [2]), 1)
    assert [lease.offset for lease in leases.due(5_000, limit=10)] == [1]


def test_skipped_entries_do_not_count_against_the_limit() -> None:
    leases = PopLeases()
    leases.apply(ck([1, 2, 3], 1_000, 1_000), 0)
    leases.settle(key(1), 1_000)
    leases.settle(key(2), 1_000)
    assert [lease.offset for lease in leases.due(5_000, limit=1)] == [3]


# -- release_soon and retry_later ----------------------------------------------------------------------------
def test_release_soon_makes_a_lease_due_earlier_and_stops_its_renewal() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 60_000, auto_renew=True), 0)
    lease = leases.get(key(1))
    assert lease is not None
    leases.release_soon(lease, 5_000)
    assert (lease.due_ms, lease.auto_renew) == (5_000, False)
    assert leases.due(4_999, limit=10) == []
    assert leases.due(5_000, limit=10) == [lease]
    assert leases.due(61_000, limit=10) == []  # the original due time does not hand it out again


def test_release_soon_to_a_later_time_changes_nothing() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000, auto_renew=True), 0)
    lease = leases.get(key(1))
    assert lease is not None
    leases.release_soon(lease, 9_000)
    assert (lease.due_ms, lease.auto_renew) == (2_000, True)
    assert leases.due(2_000, limit=10) == [lease]


def test_retry_later_makes_a_handed_out_lease_due_again_at_the_new_time() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 1_000), 0)
    (lease,) = leases.due(2_000, limit=10)
    leases.retry_later(lease, 7_000)
    assert lease.due_ms == 7_000
    assert leases.due(6_999, limit=10) == []
    assert leases.due(7_000, limit=10) == [lease]


# -- queries -------------------------------------------------------------------------------------------------
def test_busy_while_a_queue_has_a_delivery_in_flight() -> None:
    leases = PopLeases()
    assert not leases.busy(G, T, Q)
    leases.apply(ck([1, 2], 1_000), 0)
    assert leases.busy(G, T, Q)
    assert not leases.busy(G, T, 1)
    assert not leases.busy("other", T, Q)
    leases.settle(key(1), 1_000)
    assert leases.busy(G, T, Q)
    leases.settle(key(2), 1_000)
    assert not leases.busy(G, T, Q)


def test_busy_is_unchanged_by_superseding() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000), 0)
    leases.apply(ck([1], 2_000), 1)
    leases.settle(key(1), 2_000)
    assert not leases.busy(G, T, Q)


def test_in_queue_lists_a_queues_leases_by_offset() -> None:
    leases = PopLeases()
    leases.apply(ck([5, 2], 1_000), 0)
    leases.apply(ck([3], 1_100), 1)
    leases.apply(ck([4], 1_100, queue_id=1), 2)
    leases.apply(ck([1], 1_100, group="other"), 3)
    assert [lease.offset for lease in leases.in_queue(G, T, Q)] == [2, 3, 5]
    assert [lease.offset for lease in leases.in_queue(G, T, 1)] == [4]
    assert leases.in_queue(G, T, 7) == []


def test_of_client_renewable_and_in_flight() -> None:
    leases = PopLeases()
    leases.apply(ck([1], 1_000, 60_000, client_id="a", auto_renew=True), 0)
    leases.apply(ck([2], 1_000, 10_000, client_id="b"), 1)
    leases.apply(ck([3], 1_000, 10_000, client_id="b", group="other"), 2)
    assert [lease.offset for lease in leases.of_client("b")] == [2, 3]
    assert [lease.offset for lease in leases.renewable(61_001)] == [1]
    assert leases.renewable(61_000) == []  # due at 61000: not before it
    assert (leases.in_flight(), leases.in_flight(G), leases.in_flight("other"), leases.in_flight("x")) == (3, 2, 1, 0)
