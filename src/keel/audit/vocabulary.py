"""The closed vocabulary of audit actions: OWASP Logging Vocabulary names.

An action not listed here cannot be recorded; adding one is a deliberate
change to this file (and to the SEC-64 tests that drive each action).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Action", "ActorType", "Result"]


class Action(StrEnum):
    """What happened (OWASP Logging Vocabulary, plus keel's ``mfa_*``, ``audit_*``, ``key_*``)."""

    # Authentication.
    AUTHN_LOGIN_SUCCESS = "authn_login_success"
    AUTHN_LOGIN_FAIL = "authn_login_fail"
    AUTHN_LOGIN_FAIL_MAX = "authn_login_fail_max"
    AUTHN_LOGIN_LOCK = "authn_login_lock"
    AUTHN_PASSWORD_CHANGE = "authn_password_change"
    AUTHN_PASSWORD_CHANGE_FAIL = "authn_password_change_fail"
    AUTHN_PASSWORD_RESET_REQUEST = "authn_password_reset_request"
    AUTHN_EMAIL_VERIFIED = "authn_email_verified"
    AUTHN_TOKEN_CREATED = "authn_token_created"
    AUTHN_TOKEN_REVOKED = "authn_token_revoked"
    AUTHN_TOKEN_REUSE = "authn_token_reuse"
    AUTHN_TOKEN_DELETE = "authn_token_delete"
    # Multi-factor.
    MFA_ENROLLED = "mfa_enrolled"
    MFA_REMOVED = "mfa_removed"
    MFA_VERIFY_FAIL = "mfa_verify_fail"
    # Authorization.
    AUTHZ_FAIL = "authz_fail"
    AUTHZ_CHANGE = "authz_change"
    AUTHZ_ADMIN = "authz_admin"
    # Sessions.
    SESSION_CREATED = "session_created"
    SESSION_RENEWED = "session_renewed"
    SESSION_LOGOUT = "session_logout"
    SESSION_EXPIRED = "session_expired"
    SESSION_USE_AFTER_EXPIRE = "session_use_after_expire"
    # Users.
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    USER_DELETED = "user_deleted"
    # Abuse and input.
    EXCESS_RATE_LIMIT_EXCEEDED = "excess_rate_limit_exceeded"
    INPUT_VALIDATION_FAIL = "input_validation_fail"
    SEQUENCE_FAIL = "sequence_fail"
    # Mail and the audit trail itself.
    MAIL_SEND_FAIL = "mail_send_fail"
    AUDIT_PRUNED = "audit_pruned"
    AUDIT_EXPORTED = "audit_exported"
    # Token signing keys (``keel keys``): staged, promoted to sign, retired, dropped.
    KEY_STAGED = "key_staged"
    KEY_PROMOTED = "key_promoted"
    KEY_RETIRED = "key_retired"
    KEY_DROPPED = "key_dropped"


class Result(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"
