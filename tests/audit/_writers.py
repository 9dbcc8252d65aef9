"""Clients that write through a real keel server as fast as it answers, and what it acknowledged.

``Writers`` runs account threads (register, log in, change the password and
log out; half of the accounts refresh their session a few times instead and
are left to the admins) and admin threads (disable an account, change its
roles, end its sessions, in turn). Each request goes on a
fresh connection; one whose worker dies under it counts as ``cut``. The
``Ledger`` keeps every acknowledged write, to be found in the database later.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.runtime._harness import RunningServer

__all__ = ["ACCOUNT_WRITERS", "PASSWORD", "Ledger", "Writers"]

ACCOUNT_WRITERS = 4
ADMINS = 2
PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "another horse battery staple 43"
REFRESHES = 3


def _claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass
class Ledger:
    """What the server acknowledged, and how many requests got no answer at all."""

    registered: set[str] = field(default_factory=set)
    sessions: set[uuid.UUID] = field(default_factory=set)
    changed: set[uuid.UUID] = field(default_factory=set)
    disabled: set[uuid.UUID] = field(default_factory=set)
    logged_out: set[uuid.UUID] = field(default_factory=set)
    # Per session, how many refreshes were acknowledged (its generation is at least that).
    renewed: Counter[uuid.UUID] = field(default_factory=Counter)
    victims: list[str] = field(default_factory=list)  # accounts the admins act on
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    cut: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writers:
    """Threads that register, log in, refresh, change passwords and log out, and admins who
    disable, change roles and end sessions, all as fast as the server answers, until stopped."""

    def __init__(self, server: RunningServer, admin_token: str) -> None:
        self._server = server
        self._admin_token = admin_token
        self._stop = threading.Event()
        self.ledger = Ledger()
        self._pool = ThreadPoolExecutor(ACCOUNT_WRITERS + ADMINS)
        self._futures = [self._pool.submit(self._accounts, n) for n in range(ACCOUNT_WRITERS)]
        self._futures += [self._pool.submit(self._admin, n) for n in range(ADMINS)]

    def _call(
        self, route: str, path: str, token: str | None = None, body: dict[str, Any] | None = None
    ) -> httpx.Response | None:
        """One request on a fresh connection; ``None`` when its worker died under it, or
        once the writers are stopped (nothing new is sent then)."""
        if self._stop.is_set():
            return None
        method = route.split(" ")[0]
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._server.client.request(
                method, path, headers=headers, json=body, timeout=30.0
            )
        except httpx.TransportError:
            with self.ledger.lock:
                self.ledger.cut += 1
            return None
        with self.ledger.lock:
            self.ledger.statuses[(route, response.status_code)] += 1
        return response

    def _login(self, email: str, password: str) -> dict[str, Any] | None:
        body = {"email": email, "password": password}
        response = self._call("POST /auth/login", "/auth/login", body=body)
        if response is None or response.status_code != 200:
            return None
        token = str(response.json()["access_token"])
        claims = {**_claims(token), "token": token, "refresh": response.json()["refresh_token"]}
        with self.ledger.lock:
            self.ledger.sessions.add(uuid.UUID(claims["sid"]))
        return claims

    def _accounts(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            email = f"writer{n}-{i}@example.com"
            body = {"email": email, "password": PASSWORD}
            registered = self._call("POST /auth/register", "/auth/register", body=body)
            if registered is None or registered.status_code != 202:
                continue
            with self.ledger.lock:
                self.ledger.registered.add(email)
            login = self._login(email, PASSWORD)
            if login is None:
                continue
            if n % 2:  # half the accounts are the admins' to disable, demote and revoke
                with self.ledger.lock:
                    self.ledger.victims.append(login["sub"])
                self._refresh(uuid.UUID(login["sid"]), str(login["refresh"]))
                continue
            change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
            path = "/auth/password/change"
            changed = self._call(f"POST {path}", path, login["token"], change)
            if changed is None or changed.status_code != 200:
                continue
            with self.ledger.lock:
                self.ledger.changed.add(uuid.UUID(login["sub"]))
            # The session the change kept goes on with the new token; then it ends.
            token = str(changed.json()["access_token"])
            logout = self._call("POST /auth/logout", "/auth/logout", token)
            if logout is not None and logout.status_code == 204:
                with self.ledger.lock:
                    self.ledger.logged_out.add(uuid.UUID(login["sid"]))

    def _refresh(self, session: uuid.UUID, token: str) -> None:
        """Rotate the session's refresh token ``REFRESHES`` times, while it is answered."""
        for _ in range(REFRESHES):
            body = {"refresh_token": token}
            answer = self._call("POST /auth/refresh", "/auth/refresh", body=body)
            if answer is None or answer.status_code != 200:
                return  # cut short (its rotation may or may not have committed), or ended
            token = str(answer.json()["refresh_token"])
            with self.ledger.lock:
                self.ledger.renewed[session] += 1

    def _admin(self, n: int) -> None:
        chance = random.Random(n)
        operations = ("disable", "roles", "revoke")
        i = n  # each admin starts with a different operation, then takes them in turn
        while not self._stop.is_set():
            with self.ledger.lock:
                victims = list(self.ledger.victims)
            if not victims:
                self._stop.wait(0.05)
                continue
            victim = chance.choice(victims)
            operation = operations[i % len(operations)]
            i += 1
            if operation == "revoke":
                path = f"/admin/users/{victim}/sessions:revoke"
                self._call("POST /admin/users/{id}/sessions:revoke", path, self._admin_token)
                continue
            body: dict[str, Any] = (
                {"active": False}
                if operation == "disable"
                else {"roles": chance.choice((["user"], ["user", "admin"]))}
            )
            path = f"/admin/users/{victim}"
            answer = self._call("PATCH /admin/users/{id}", path, self._admin_token, body)
            if operation == "disable" and answer is not None and answer.status_code == 200:
                with self.ledger.lock:
                    self.ledger.disabled.add(uuid.UUID(victim))

    def stop(self) -> Ledger:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()
        return self.ledger
