"""The hash-chained decision log: record model, writer, verifier and filters.

Synchronous and blocking: the trio daemon calls the writer from a worker thread. Format and
guarantees: docs/audit.md.
"""

from gateway.audit.filters import AuditFilter
from gateway.audit.record import (
    AuditEntry,
    AuditFormatError,
    AuditRecord,
    Decision,
    genesis,
    parse_line,
)
from gateway.audit.verify import BrokenLink, LinkProblem, VerifyReport, read_entries, verify
from gateway.audit.writer import AuditLog, AuditLogError, FsyncMode, TruncatedTail

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "AuditFormatError",
    "AuditLog",
    "AuditLogError",
    "AuditRecord",
    "BrokenLink",
    "Decision",
    "FsyncMode",
    "LinkProblem",
    "TruncatedTail",
    "VerifyReport",
    "genesis",
    "parse_line",
    "read_entries",
    "verify",
]
