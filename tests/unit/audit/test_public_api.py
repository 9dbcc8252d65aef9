"""The pinned public surface of ``keel.audit`` (what accounts, auth and the API build on)."""

from __future__ import annotations

import keel.audit


def test_exported_names() -> None:
    assert sorted(keel.audit.__all__) == sorted(
        [
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
    )
    for name in keel.audit.__all__:
        assert getattr(keel.audit, name) is not None


def test_the_vocabulary_has_the_sec_64_names() -> None:
    names = {action.value for action in keel.audit.Action}
    assert {
        "authn_login_success",
        "authn_login_fail",
        "authn_login_fail_max",
        "authn_login_lock",
        "session_created",
        "session_logout",
        "session_expired",
        "authn_token_created",
        "authn_token_revoked",
        "authn_token_reuse",
        "authn_password_change",
        "authn_password_change_fail",
        "authz_fail",
        "authz_change",
        "authz_admin",
        "user_created",
        "user_updated",
        "user_deleted",
        "excess_rate_limit_exceeded",
        "input_validation_fail",
        "sequence_fail",
        "audit_pruned",
        "key_staged",
        "key_promoted",
        "key_retired",
        "key_dropped",
    } <= names
