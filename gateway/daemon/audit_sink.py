"""Group commit for the audit log: many connection tasks, one append per batch.

Every decision is appended before the envelope is answered, so a receipt implies the decision is
in the log. Connection tasks queue their record and wait; one writer task takes everything queued
so far and appends it with a single ``append_many``. Under load the batches grow by themselves.

Two durability modes (``[audit] fsync``):

* ``always``: each batch is written *and fsynced* in a worker thread before its senders are
  answered (the fsync must not block the event loop).
* ``interval``: each batch is written on the event loop (a ``write``, no fsync: moving it to a
  thread costs more than the write), and a timer task fsyncs every ``fsync_interval_ms`` in a
  worker thread, without holding the append lock. A crash loses at most that interval of records
  that were already answered.

Resource handling: the queue is bounded (backpressure reaches the connections); the writer task is
the only user of the log. Error handling: if the log cannot be written (disk full, I/O error), the
waiting records fail with :class:`AuditUnavailable` and the gateway refuses envelopes (fail
closed) until writes succeed again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gateway.audit.record import AuditEntry, AuditRecord
from gateway.audit.writer import AuditLog

log = logging.getLogger("sluice.audit")

QUEUE_LENGTH = 4096
MAX_BATCH = 512


class AuditUnavailable(Exception):
    """The decision could not be written to the audit log."""


@dataclass(slots=True)
class _Waiter:
    records: list[AuditRecord]
    done: trio.Event = field(default_factory=trio.Event)
    error: str = ""


class AuditSink:
    """The gateway's single path into its audit log."""

    def __init__(
        self,
        audit_log: AuditLog,
        *,
        interval: float | None = None,
        observer: Callable[[AuditEntry], None] | None = None,
    ) -> None:
        """``interval`` None: fsync every batch (open the log with ``fsync="always"``); a number
        of seconds: fsync on that timer (open the log with ``fsync="never"``)."""
        self.log = audit_log
        self._interval = interval
        # Sees every committed entry, in order (the live governance graph feeds on it).
        self._observer = observer
        self._send, self._receive = trio.open_memory_channel[_Waiter](QUEUE_LENGTH)

    def observe(self, observer: Callable[[AuditEntry], None]) -> None:
        """Call ``observer`` with every entry committed from now on."""
        self._observer = observer

    async def record(self, record: AuditRecord) -> None:
        """Append ``record``; return once the writer has committed it (:meth:`record_many`).

        Raises:
            AuditUnavailable: the write failed; the caller must not acknowledge the envelope.
        """
        await self.record_many([record])

    async def record_many(self, records: list[AuditRecord]) -> None:
        """Append ``records`` in this order (one wait for all); return once all are committed.

        Raises:
            AuditUnavailable: the write failed; none of them may be acknowledged.
        """
        waiter = _Waiter(records)
        await self._send.send(waiter)
        await waiter.done.wait()
        if waiter.error:
            raise AuditUnavailable(waiter.error)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task (and, in interval mode, the fsync timer); runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self._interval is not None:
                    nursery.start_soon(self._sync_every, self._interval)
                task_status.started()
                await self._write_batches()
        finally:
            if self._interval is not None:
                with contextlib.suppress(OSError):
                    self.log.flush()  # shutting down: make the last interval durable too

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._receive.receive()]
            records = list(batch[0].records)
            while len(records) < MAX_BATCH:
                try:
                    waiter = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(waiter)
                records.extend(waiter.records)
            error = ""
            try:
                if self._interval is None:
                    # Not cancellable: a half-done append must finish so the chain stays whole.
                    entries = await trio.to_thread.run_sync(self.log.append_many, records)
                else:
                    entries = self.log.append_many(records)
            except (OSError, ValueError) as exc:
                error = f"audit log write failed: {exc}"
                log.error(error)
            else:
                if self._observer is not None:
                    for entry in entries:
                        self._observer(entry)
            for waiter in batch:
                waiter.error = error
                waiter.done.set()

    async def _sync_every(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await trio.to_thread.run_sync(self.log.sync)
            except OSError as exc:
                log.error("audit log fsync failed: %s", exc)
