"""The gate, with a lease taken before the first change is even asked about.

A second operator must learn that someone else is changing this target *before* approving anything,
so the lease is taken ahead of the first approval of a live run; reads and dry-runs never take one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import TargetError
from engine.run.gate import ApprovalRequest, Decision, Gate
from engine.run.lease import FileStore, Holder, Lease, LeaseHeld, RedisStore

Record = Callable[..., Any]


class LeasingGate:
    def __init__(
        self,
        gate: Gate,
        holder: Holder,
        *,
        redis_call: Callable[[list[Any]], Any] | None,
        fallback: FileStore,
        record: Record,
        ttl: float,
        steal_reason: str | None = None,
        resumes: str | None = None,
    ):
        self.gate = gate
        self.operator = gate.operator
        self.holder = holder
        self.redis_call = redis_call
        self.fallback = fallback
        self.record = record
        self.ttl = ttl
        self.steal_reason = steal_reason
        self.resumes = resumes  # a continued run takes over the lease its stopped run (killed) left behind
        self.lease: Lease | None = None
        self._lost_recorded = False

    def review(self, request: ApprovalRequest) -> Decision:
        if self.lease is None:
            refused = self._acquire()
            if refused is not None:
                return refused
        assert self.lease is not None
        if not self.lease.still_held():
            self._record_lost()
            return Decision(False, self.operator.name, "lease", "the lease on this target was lost (taken over)")
        return self.gate.review(request)

    def _acquire(self) -> Decision | None:
        steal = self.steal_reason is not None
        lease = None
        replaced = None
        if self.redis_call is not None:
            store = RedisStore(self.redis_call)
            lease = Lease(store, self.holder, self.ttl)
            try:
                replaced = lease.acquire(steal)
            except LeaseHeld as exc:
                return self._refuse(exc)
            except TargetError:
                lease = None  # the Redis is down: the team's shared directory holds the lease instead
            else:
                store.where = getattr(self.redis_call, "where", store.where)
        if lease is None:
            lease = Lease(self.fallback, self.holder, self.ttl)
            try:
                replaced = lease.acquire(steal)
            except LeaseHeld as exc:
                return self._refuse(exc)
            except OSError as exc:
                return Decision(False, self.operator.name, "lease", f"cannot take the lease: {exc.strerror or exc}")
        self.lease = lease
        self.record(
            "lease.acquired",
            durable=True,
            where=lease.store.where,
            ttl_s=lease.ttl_ms / 1000,
            holder=self.holder.public(),
        )
        if steal and replaced is not None:
            self.record(
                "lease.stolen",
                durable=True,
                where=lease.store.where,
                reason=self.steal_reason,
                previous=replaced.public(),
            )
        return None

    def _refuse(self, exc: LeaseHeld) -> Decision | None:
        """The refusal; None when the lease is the stopped run's this one continues, and was taken over."""
        if self.resumes is not None and exc.holder.run_id == self.resumes and self.steal_reason is None:
            self.steal_reason = f"continuing run {self.resumes}, which held it when it stopped"
            return self._acquire()
        self.record("lease.refused", durable=True, where=exc.where, holder=exc.holder.public())
        return Decision(
            False,
            self.operator.name,
            "lease",
            f"{exc}; wait for it to end, or take it over with --steal-lease REASON",
        )

    def _record_lost(self) -> None:
        if not self._lost_recorded:
            self._lost_recorded = True
            assert self.lease is not None
            self.record("lease.lost", durable=True, where=self.lease.store.where)

    def release(self) -> None:
        """At the run's end, before the connections close. Says in the transcript whether it was released."""
        if self.lease is None:
            return
        if self.lease.lost:
            self._record_lost()
        released = self.lease.release()
        self.record("lease.released", durable=True, where=self.lease.store.where, released=released)
        close = getattr(self.redis_call, "close", None)
        if close is not None:
            close()
