"""Builds keel's account services for ``create_app``: the one place they are put together.

:func:`build_account_service` makes the password hasher and policy (warmed
up by the supervisor), the mailer, its per-recipient cap and the durable
outbox with its body sealer, the access-token issuer when none is given, and
the ``AccountService`` over them; it keeps the service among the app's
services by type (``AppContext.service(AccountService)``). It mounts no
route: ``create_app`` hands the service's areas to the routers
(``keel.api.accounts``, ``keel.api.passwords``, ``keel.api.admin_users``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from keel._logging import event
from keel.accounts import (
    AccountService,
    LoginGuard,
    Mailer,
    Outbox,
    OutboxObserver,
    SessionHooks,
    UserChanged,
    account_settings_from,
    build_mailer,
)
from keel.accounts.mail import ConsoleMailer
from keel.accounts.mailcap import CappedMailer
from keel.accounts.sealing import BodySealer
from keel.api.services import keep_service
from keel.api.state import AppContext
from keel.auth.ratelimit import RateLimiter
from keel.runtime.lifecycle import Warmup
from keel.security.hashing import PasswordHasher
from keel.security.keys import load_key_set
from keel.security.passwords import PasswordPolicy
from keel.security.tokens import AccessTokens
from keel.settings import MailSettings

__all__ = ["build_account_service"]

_log = logging.getLogger("keel.api.accounts")


def build_account_service(
    context: AppContext,
    *,
    access_tokens: AccessTokens | None = None,
    mailer: Mailer | None = None,
    hasher: PasswordHasher | None = None,
    on_user_changed: UserChanged | Sequence[UserChanged] = (),
    outbox_settings: MailSettings | None = None,
    outbox_observer: OutboxObserver | None = None,
    sessions: SessionHooks | None = None,
    guard: LoginGuard | None = None,
) -> AccountService:
    """Build the ``AccountService`` for ``context``, keep it by type and return it.

    - ``access_tokens``: the issuer; pass the same ``AccessTokens`` (same key
      set) the bearer authenticator verifies with. Without one, a key set is
      loaded from the settings here, which in development without a key file
      is a throwaway key no other component shares.
    - ``mailer``: default from the settings (``KEEL_MAIL_BACKEND``, console).
      Messages go through the durable outbox (``keel.accounts.outbox``); its
      sender runs as a supervised service in every worker unless
      ``KEEL_MAIL_SENDER_ENABLED`` is false. ``outbox_settings`` defaults to
      the ``KEEL_MAIL_*`` settings; ``outbox_observer`` is where metrics attach.
    - ``hasher``: default one per app, pre-warmed by a warm-up and closed at
      shutdown; the password blocklist is loaded by a warm-up too.
    - ``on_user_changed``: called with a user id after every committed change
      (``keel.auth`` refreshes its cached user state there).
    - ``sessions`` and ``guard``: the session hooks (logins start a session,
      credential changes revoke them) and the brute-force limits asked before
      every password check (``keel.accounts.hooks``); without them logins
      start no session and nothing is limited.

    The mail budget is the app's ``RateLimiter`` (built by ``create_app``).
    Call before the app starts (warm-ups are registered on the supervisor).
    """
    settings = context.settings
    supervisor = context.supervisor
    account_settings = dataclasses.replace(
        account_settings_from(settings), known_roles=context.roles.names
    )

    if hasher is None:
        owned = PasswordHasher(settings.passwords)

        async def close_hasher() -> None:
            owned.close()

        supervisor.add_warmup(Warmup("password_hasher", owned.prewarm))
        supervisor.add_closer("password_hasher", close_hasher)
        hasher = owned
    policy = PasswordPolicy(settings.passwords)

    async def load_blocklist() -> None:
        await asyncio.to_thread(lambda: policy.blocklist)

    supervisor.add_warmup(Warmup("password_blocklist", load_blocklist))

    if access_tokens is None:
        keys = load_key_set(settings.tokens, production=settings.is_production)
        access_tokens = AccessTokens(keys, settings.tokens, clock=context.clock)
    if mailer is None:
        mailer = build_mailer(
            settings.mail,
            service_name=settings.service_name,
            development=not settings.is_production,
            clock=context.clock,
        )
    if isinstance(mailer, ConsoleMailer) and settings.is_production:
        event(
            _log,
            logging.WARNING,
            "mail_console_in_production",
            detail="account mail is only logged, never delivered: set KEEL_MAIL_BACKEND=smtp",
        )
    budget = context.service(RateLimiter)  # mails per recipient and hour
    audit_keys = settings.audit
    outbox = Outbox(
        CappedMailer(mailer, budget),
        database=context.database,
        sealer=BodySealer(audit_keys.keys, audit_keys.current_key_id),
        audit=context.audit,
        settings=outbox_settings or settings.mail,
        observer=outbox_observer,
    )
    if outbox.settings.sender_enabled:
        supervisor.add_service("mail_sender", outbox.run_forever)
    listeners = [on_user_changed] if callable(on_user_changed) else list(on_user_changed)
    service = AccountService(
        database=context.database,
        audit=context.audit,
        hasher=hasher,
        policy=policy,
        settings=account_settings,
        clock=context.clock,
        tokens=access_tokens,
        outbox=outbox,
        on_user_changed=listeners,
        sessions=sessions,
        guard=guard,
        mail_budget=budget,
    )
    keep_service(context, service)
    return service
