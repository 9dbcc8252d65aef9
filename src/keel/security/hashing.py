"""Password hashing: argon2id for every new hash, legacy bcrypt verification (SEC-05..07, SEC-11).

New hashes are argon2id PHC strings with the settings' memory, time and
parallelism (OWASP: m ≥ 19456 KiB, t ≥ 2, p = 1), a 16-byte random salt and a
32-byte digest. Passwords are NFKC-normalised and UTF-8 encoded first, so NFC
and NFD spellings of one password verify alike; anything over the maximum
length is refused before any work is done.

Every argon2 or bcrypt run happens in a dedicated thread pool of
``hash_concurrency`` threads, never on the event loop, behind an
``asyncio.Semaphore`` of the same size: each argon2 run holds ``m`` KiB, so a
burst of logins queues instead of exhausting memory, and waiting callers stay
cancellable. A caller cancelled while its run is under way releases its place
at once; the thread finishes the run, and the pool size still caps the
concurrent runs.

Timing parity (SEC-10, SEC-11): :meth:`PasswordHasher.dummy_verify` runs one
argon2 verification against a fixed hash carrying the current parameters, so
a login for an unknown, disabled or locked account costs what a real one
costs. A password that cannot match a legacy bcrypt hash (over 72 bytes:
bcrypt 5 refuses it and keel never truncates) and a stored hash in an unknown
format are answered ``False`` after that same dummy work.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from keel._logging import event
from keel.errors import ConfigurationError
from keel.metrics import hash_slot_wait
from keel.security.passwords import hash_input
from keel.settings import PasswordSettings

__all__ = ["BCRYPT_MAX_BYTES", "PasswordHasher", "WorkProbe"]

BCRYPT_MAX_BYTES: Final = 72
SALT_BYTES: Final = 16
DIGEST_BYTES: Final = 32
_BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")
# Salt and digest of the dummy hash: fixed, public and unmatchable in practice
# (matching would take an argon2 preimage); only the parameters matter.
_DUMMY_SALT: Final = b"keel dummy salt!"
_DUMMY_DIGEST: Final = bytes(DIGEST_BYTES)

WorkProbe = Callable[[str], object]
"""Called in the worker thread as each run starts, with "hash", "verify" or "prewarm"."""

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).rstrip(b"=").decode("ascii")


def _verify_argon2(hasher: argon2.PasswordHasher, stored_hash: str, secret: bytes) -> bool:
    try:
        return hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):  # mismatch, or a damaged hash
        return False


def _verify_bcrypt(stored_hash: str, secret: bytes) -> bool:
    try:
        import bcrypt

        return bcrypt.checkpw(secret, stored_hash.encode("ascii"))
    except ValueError:  # a damaged hash
        return False


class PasswordHasher:
    """Hashes and verifies passwords off the event loop with bounded concurrency.

    One instance per process (per event loop). ``probe`` is a test seam: it is
    called in the worker thread at the start of every run.
    """

    def __init__(self, settings: PasswordSettings, *, probe: WorkProbe | None = None) -> None:
        if settings.hash_concurrency < 1:
            raise ConfigurationError("hash_concurrency must be at least 1")
        self._max_length = settings.max_length
        self._argon2 = argon2.PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=DIGEST_BYTES,
            salt_len=SALT_BYTES,
            type=argon2.Type.ID,
        )
        self._dummy_hash = (
            f"$argon2id$v={argon2.low_level.ARGON2_VERSION}"
            f"$m={settings.argon2_memory_kib},t={settings.argon2_time_cost},"
            f"p={settings.argon2_parallelism}${_b64(_DUMMY_SALT)}${_b64(_DUMMY_DIGEST)}"
        )
        self._slots = asyncio.Semaphore(settings.hash_concurrency)
        # Threads start on the first run, not here.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hash_concurrency, thread_name_prefix="keel-hash"
        )
        self._probe = probe
        self._lock = threading.Lock()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._hashes = 0
        self._verifications = 0
        self._closed = False

    @property
    def dummy_hash(self) -> str:
        """The fixed hash :meth:`dummy_verify` checks against (current parameters)."""
        return self._dummy_hash

    @property
    def hashes(self) -> int:
        """How many :meth:`hash` runs were started."""
        return self._hashes

    @property
    def verifications(self) -> int:
        """How many verifications (:meth:`verify` and :meth:`dummy_verify`) were started."""
        return self._verifications

    @property
    def peak_in_flight(self) -> int:
        """The most runs ever under way at once; never above ``hash_concurrency``."""
        return self._peak_in_flight

    async def hash(self, password: str) -> str:
        """The argon2id PHC string for ``password``.

        Raises :class:`~keel.security.passwords.PasswordRejected` for a password
        over the maximum length (or with NUL or unpaired surrogates) without
        hashing. The password policy is not applied here: check it first.
        """
        secret = hash_input(password, max_length=self._max_length)
        self._hashes += 1
        return await self._run("hash", functools.partial(self._argon2.hash, secret))

    async def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (argon2 or legacy bcrypt).

        Exactly one verification runs whatever the outcome. Raises
        :class:`~keel.security.passwords.PasswordRejected` like :meth:`hash`,
        for every account alike, before any work.
        """
        secret = hash_input(password, max_length=self._max_length)
        self._verifications += 1
        if stored_hash.startswith("$argon2"):
            check = functools.partial(_verify_argon2, self._argon2, stored_hash, secret)
            return await self._run("verify", check)
        if stored_hash.startswith(_BCRYPT_PREFIXES) and len(secret) <= BCRYPT_MAX_BYTES:
            return await self._run("verify", functools.partial(_verify_bcrypt, stored_hash, secret))
        if not stored_hash.startswith(_BCRYPT_PREFIXES):
            event(_log, logging.WARNING, "password_hash_unknown_format")
        await self._run("verify", self._dummy_check(secret))
        return False

    async def dummy_verify(self, password: str) -> None:
        """Spend exactly what one failed verification costs, for an account that cannot log in."""
        secret = hash_input(password, max_length=self._max_length)
        self._verifications += 1
        await self._run("verify", self._dummy_check(secret))

    def needs_rehash(self, stored_hash: str) -> bool:
        """True unless ``stored_hash`` is argon2id with exactly the current parameters (SEC-07)."""
        if not stored_hash.startswith("$argon2"):
            return True  # legacy bcrypt, or a format keel does not write
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    async def prewarm(self) -> None:
        """Run one throw-away hash: starts a worker thread and loads the argon2 library."""
        await self._run("prewarm", functools.partial(self._argon2.hash, b"keel prewarm"))

    def close(self) -> None:
        """Stop the worker threads after their current run; later calls raise ``RuntimeError``."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _dummy_check(self, secret: bytes) -> Callable[[], bool]:
        return functools.partial(_verify_argon2, self._argon2, self._dummy_hash, secret)

    async def _run(self, operation: str, work: Callable[[], _T]) -> _T:
        if self._closed:
            raise RuntimeError("the password hasher is closed")
        with hash_slot_wait():  # queue depth and wait, for keel_hash_* metrics
            await self._slots.acquire()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(self._in_worker, operation, work)
            )
        finally:
            self._slots.release()

    def _in_worker(self, operation: str, work: Callable[[], _T]) -> _T:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            if self._probe is not None:
                self._probe(operation)
            return work()
        finally:
            with self._lock:
                self._in_flight -= 1
