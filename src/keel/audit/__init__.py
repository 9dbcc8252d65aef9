"""keel.audit (layer L3): the append-only, hash-chained audit trail.

Writing: build an ``AuditEvent`` (or ``AuditTrail.event``) and ``record`` it in
the unit of work that makes the change, or ``record_alone`` for a failure that
changes nothing else. Checking: ``verify`` (optionally ``against`` a head kept
elsewhere, from ``take_checkpoint``). Reading: ``query_events`` (admin pages),
``export_events`` (SIEM stream). Retention: ``prune``. The chain's design is in
``writer``, ``verify``, ``canonical`` and ``models``.
"""

from keel.audit.app_actions import AppAction, AuditActions, app_action
from keel.audit.chain import GENESIS_HASH, AuditKeyring, ChainLink, keyring_from_settings
from keel.audit.checkpoints import Checkpoint, CheckpointKind, take_checkpoint
from keel.audit.event import AuditEvent
from keel.audit.query import MAX_PAGE, AuditRecord, export_events, query_events
from keel.audit.retention import PruneResult, prune
from keel.audit.scrub import scrub
from keel.audit.trail import AuditTrail
from keel.audit.verify import AuditChainBroken, Problem, ProblemKind, VerifyResult, verify
from keel.audit.vocabulary import Action, ActorType, Result
from keel.audit.writer import record, record_alone, record_many

__all__ = [
    "GENESIS_HASH",
    "MAX_PAGE",
    "Action",
    "ActorType",
    "AppAction",
    "AuditActions",
    "AuditChainBroken",
    "AuditEvent",
    "AuditKeyring",
    "AuditRecord",
    "AuditTrail",
    "ChainLink",
    "Checkpoint",
    "CheckpointKind",
    "Problem",
    "ProblemKind",
    "PruneResult",
    "Result",
    "VerifyResult",
    "app_action",
    "export_events",
    "keyring_from_settings",
    "prune",
    "query_events",
    "record",
    "record_alone",
    "record_many",
    "scrub",
    "take_checkpoint",
    "verify",
]
