"""Staging a Weave Net -> Cilium migration (issue 5): inventory (S0), plan and artifacts, and the
journaled stage runner (S0-S6).

Hooks for the gateway integration:

* :meth:`gateway.migration.journal.Journal.placement` (or
  ``read_state(path).placement`` without taking the lock): node -> ``weave`` | ``cutover`` |
  ``cilium`` for the router (``cutover``: spool envelopes for that node's workloads);
* :meth:`gateway.migration.executor.Executor.probe` with
  :class:`~gateway.migration.executor.ProbeRequest`: governed probes; ``SubprocessExecutor`` takes
  a ``prober`` callable.
"""

from __future__ import annotations
