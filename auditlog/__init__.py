"""auditlog: audit logging that redacts at the source.

``configure()`` wires structlog, stdlib logging and a tamper-evident journal in one call; arguments are
journaled as their *shape* (keys, types, lengths, counts), never their values, unless a policy opts a field
in, and then only after a secret/PII scan.
"""

from __future__ import annotations

from auditlog._configure import configure
from auditlog.handle import AuditHandle, Stats, current_handle
from auditlog.policy import Policy, PolicyError, Rule

__all__ = ["AuditHandle", "Policy", "PolicyError", "Rule", "Stats", "configure", "current_handle"]

__version__ = "0.1.0"
