"""keel serve's runtime (server, gunicorn_config, worker, factory): gunicorn options,
worker sizing and the worker's uvicorn config."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.errors import AppImportError

from keel._logging import JsonFormatter
from keel.errors import ConfigurationError
from keel.runtime import gunicorn_config
from keel.runtime.cgroup import read_cgroup_limits
from keel.runtime.factory import import_factory
from keel.runtime.gunicorn_config import JsonGunicornLogger, gunicorn_options, worker_count
from keel.runtime.server import KeelApplication, dev, share_development_key
from keel.runtime.worker import (
    KeelWorker,
    graceful_shutdown_timeout,
    lifespan_reserve,
    require_fast_stack,
)
from keel.security.keys import load_key_set
from keel.settings import Settings

MIB = 1024 * 1024
GIB = 1024 * MIB
_LOGGERS = ("gunicorn.error", "gunicorn.access", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() reads the environment: nothing from the outer shell may leak in."""
    for name in list(os.environ):
        if name.startswith(("KEEL_", "GUNICORN_")) or name in {
            "WEB_CONCURRENCY",
            "PORT",
            "DATABASE_URL",
            "REDIS_URL",
            "FORWARDED_ALLOW_IPS",
        }:
            monkeypatch.delenv(name)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """gunicorn's logger and uvicorn's worker reconfigure process-wide loggers; undo it."""
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
        for name, lg in ((n, logging.getLogger(n)) for n in _LOGGERS)
    }
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers = handlers
        lg.setLevel(level)
        lg.propagate = propagate
        lg.disabled = disabled


def _settings(**values: Any) -> Settings:
    values.setdefault("web_concurrency", 2)
    return Settings(**values)


# -- gunicorn options ---------------------------------------------------------------------


def test_options_follow_the_settings() -> None:
    options = gunicorn_options(
        _settings(
            bind="0.0.0.0",
            port=9001,
            web_concurrency=3,
            timeout=12,
            graceful_timeout=20,
            keepalive=90,
            max_requests=1000,
            max_requests_jitter=50,
            log_level="WARNING",
        )
    )

    assert options["bind"] == ["0.0.0.0:9001"]
    assert options["workers"] == 3
    assert options["worker_class"] == "keel.runtime.worker.KeelWorker"
    assert options["timeout"] == 12
    assert options["graceful_timeout"] == 20
    assert options["keepalive"] == 90
    assert options["max_requests"] == 1000
    assert options["max_requests_jitter"] == 50
    assert options["loglevel"] == "warning"


def test_default_options_are_the_production_ones() -> None:
    options = gunicorn_options(_settings())

    assert options["bind"] == ["127.0.0.1:8000"]
    assert options["keepalive"] == 75  # above a proxy's idle timeout; gunicorn's 2 s is not
    assert options["max_requests"] == 0  # recycling drops a request per recycle
    assert options["control_socket_disable"] is True
    assert options["preload_app"] is False
    assert options["accesslog"] is None
    assert options["errorlog"] == "-"
    assert options["logger_class"] == "keel.runtime.gunicorn_config.JsonGunicornLogger"
    for hook in ("on_starting", "when_ready", "post_worker_init", "worker_abort"):
        assert callable(options[hook])


@pytest.mark.parametrize("bind", ["::1", "[::1]", " [::1] "])
def test_ipv6_bind_is_bracketed_once(bind: str) -> None:
    assert gunicorn_options(_settings(bind=bind, port=8080))["bind"] == ["[::1]:8080"]


def test_forwarded_allow_ips_is_the_trusted_list_and_never_star() -> None:
    options = gunicorn_options(_settings(trusted_proxies=["*", "10.1.2.3/8", "192.168.0.7"]))

    assert options["forwarded_allow_ips"] == "10.0.0.0/8,192.168.0.7/32"
    assert "*" not in str(options["forwarded_allow_ips"])


def test_forwarded_allow_ips_may_be_empty() -> None:
    assert gunicorn_options(_settings(trusted_proxies=[]))["forwarded_allow_ips"] == ""


def test_worker_tmp_dir_is_dev_shm_when_usable(tmp_path: Path) -> None:
    assert gunicorn_config._heartbeat_dir(tmp_path) == str(tmp_path)
    assert gunicorn_config._heartbeat_dir(tmp_path / "missing") is None
    expected = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    assert gunicorn_options(_settings())["worker_tmp_dir"] == expected


def test_graceful_shutdown_ends_before_the_masters_deadline() -> None:
    for graceful_timeout in range(2, 200):
        for reserve in (0, 1, 3, 5, 30):
            timeout = graceful_shutdown_timeout(graceful_timeout, reserve)
            assert 1 <= timeout < graceful_timeout
    assert graceful_shutdown_timeout(30) == 27


def test_lifespan_reserve_covers_the_supervisors_shutdown_deadline() -> None:
    assert lifespan_reserve(_settings(shutdown_timeout=1.0)) == 3
    assert lifespan_reserve(_settings(shutdown_timeout=7.5)) == 8


def test_application_loads_only_our_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No gunicorn.conf.py from the cwd, no GUNICORN_CMD_ARGS, no argv; gunicorn validates all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gunicorn.conf.py").write_text("workers = 9\nbind = ['0.0.0.0:1']\n")
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 7 --bind 0.0.0.0:2 --reload")
    monkeypatch.setattr(sys, "argv", ["keel", "--workers", "5"])

    application = KeelApplication(gunicorn_options(_settings(trusted_proxies=["10.0.0.0/8"])))
    cfg = application.cfg

    assert cfg.workers == 2
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.reload is False
    assert cfg.worker_class is KeelWorker
    assert cfg.logger_class is JsonGunicornLogger
    assert cfg.control_socket_disable is True
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8"]
    assert cfg.preload_app is False


def test_application_refuses_a_malformed_factory_reference() -> None:
    with pytest.raises(ConfigurationError):
        KeelApplication(gunicorn_options(_settings()), factory="not a reference")


def test_import_factory() -> None:
    assert import_factory("keel.runtime.gunicorn_config:gunicorn_options") is gunicorn_options
    with pytest.raises(AppImportError):
        import_factory("keel.no_such_module:create_app")
    with pytest.raises(AppImportError):
        import_factory("keel.runtime.factory:no_such_factory")
    with pytest.raises(AppImportError):
        import_factory("keel.runtime.factory:DEFAULT_FACTORY")  # a string, not callable


def test_dev_refuses_production() -> None:
    with pytest.raises(ConfigurationError):
        dev(_settings(env="production"))


# -- the development signing key ------------------------------------------------------------


def test_development_without_a_key_hands_every_worker_one_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_JWT_KEY_FILE", "")  # blank is unset; restored after the test
    with caplog.at_level(logging.INFO, logger="keel.server"):
        share_development_key(Settings())
    key_file = tmp_path / "var" / "dev-signing-keys.json"
    assert os.environ["KEEL_JWT_KEY_FILE"] == str(key_file)
    # What a worker builds from the inherited environment: that file, the same key each time.
    worker = Settings()
    assert worker.tokens.key_file == str(key_file)
    kid = load_key_set(worker.tokens, production=False).current.kid
    assert load_key_set(Settings().tokens, production=False).current.kid == kid
    [record] = [r for r in caplog.records if r.getMessage() == "jwt_development_key_file"]
    assert record.fields["path"] == str(key_file)  # type: ignore[attr-defined]
    assert record.fields["kid"] == kid  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "values",
    [
        {"env": "production"},
        {"jwt_algorithm": "HS256", "jwt_secret": "Jwt-Hm7Qx2Lp9Vr4Ks8Tn3Wb6Yc1Zd5Fg0Aj"},
    ],
)
def test_production_and_configured_keys_get_no_development_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: dict[str, str]
) -> None:
    monkeypatch.chdir(tmp_path)
    share_development_key(Settings(**values))  # type: ignore[arg-type]
    assert "KEEL_JWT_KEY_FILE" not in os.environ
    assert not (tmp_path / "var").exists()


# -- the worker ---------------------------------------------------------------------------


def _worker(tmp_path: Path, **settings: Any) -> Any:
    options = gunicorn_options(_settings(**settings))
    options["worker_tmp_dir"] = str(tmp_path)
    application = KeelApplication(options, lifespan_reserve=lifespan_reserve(_settings(**settings)))
    cfg = application.cfg
    worker = KeelWorker(
        1, os.getpid(), [], application, cfg.timeout / 2, cfg, JsonGunicornLogger(cfg)
    )
    worker.tmp.close()
    return worker


@pytest.mark.usefixtures("restore_logging")
def test_worker_forces_httptools_uvloop_and_keels_uvicorn_options(tmp_path: Path) -> None:
    worker = _worker(
        tmp_path, graceful_timeout=30, keepalive=75, shutdown_timeout=5.0, trusted_proxies=["*"]
    )
    config = worker.config

    # httptools, through the subclass that bounds request heads.
    assert config.http == "keel.runtime.http_head:HeadLimitedProtocol"
    assert config.loop == "uvloop"
    assert config.lifespan == "on"
    assert config.server_header is False
    assert config.date_header is True
    assert config.proxy_headers is False
    assert config.access_log is False
    assert config.timeout_keep_alive == 75
    assert config.timeout_graceful_shutdown == 25  # 30 - max(3, shutdown_timeout 5)
    assert config.forwarded_allow_ips == []


@pytest.mark.usefixtures("restore_logging")
def test_worker_graceful_deadline_is_below_gunicorns(tmp_path: Path) -> None:
    for graceful_timeout in (2, 4, 10, 31, 120):
        worker = _worker(tmp_path, graceful_timeout=graceful_timeout)
        assert 1 <= worker.config.timeout_graceful_shutdown < graceful_timeout


@pytest.mark.usefixtures("restore_logging")
def test_worker_drops_a_star_set_directly_in_gunicorn(tmp_path: Path) -> None:
    options = gunicorn_options(_settings())
    options.update(worker_tmp_dir=str(tmp_path), forwarded_allow_ips="*,10.0.0.1")
    application = KeelApplication(options)
    cfg = application.cfg
    worker = KeelWorker(1, os.getpid(), [], application, 15, cfg, JsonGunicornLogger(cfg))
    worker.tmp.close()

    assert worker.config.forwarded_allow_ips == ["10.0.0.1"]


@pytest.mark.parametrize("module", ["httptools", "uvloop"])
@pytest.mark.usefixtures("restore_logging")
def test_worker_refuses_to_fall_back_to_h11_or_asyncio(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # the next import raises ImportError

    with pytest.raises(ConfigurationError, match=module):
        require_fast_stack()
    with pytest.raises(ConfigurationError, match=module):
        _worker(tmp_path)


@pytest.mark.usefixtures("restore_logging")
def test_gunicorn_logger_writes_json() -> None:
    application = KeelApplication(gunicorn_options(_settings()))
    log = JsonGunicornLogger(application.cfg)

    handlers = log.error_log.handlers
    assert handlers
    assert all(isinstance(h.formatter, JsonFormatter) for h in handlers)


# -- worker count -------------------------------------------------------------------------


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _count(root: Path, cpus: int = 8, self_cgroup: str = "", **values: Any) -> int:
    proc = root.parent / f"{root.name}-proc-self-cgroup"
    proc.write_text(self_cgroup)
    values.setdefault("web_concurrency", None)
    return worker_count(
        Settings(**values), cgroup_root=root, proc_self_cgroup=proc, available_cpus=cpus
    )


def _v2(root: Path, cpu_max: str | None = None, memory_max: str | None = None) -> Path:
    _write(root, "cgroup.controllers", "cpu memory\n")
    if cpu_max is not None:
        _write(root, "cpu.max", cpu_max + "\n")
    if memory_max is not None:
        _write(root, "memory.max", memory_max + "\n")
    return root


def test_fractional_cpu_quota_rounds_down(tmp_path: Path) -> None:
    # floor(1.5 CPUs) = 1: a second worker would only share the half core under CFS throttling.
    assert _count(_v2(tmp_path, cpu_max="150000 100000"), cpus=4) == 1


def test_cpu_quota_is_capped_by_the_cpus_we_may_run_on(tmp_path: Path) -> None:
    assert _count(_v2(tmp_path, cpu_max="800000 100000"), cpus=2) == 2
    assert _count(_v2(tmp_path / "b", cpu_max="300000 100000"), cpus=8) == 3


def test_no_quota_uses_the_available_cpus(tmp_path: Path) -> None:
    assert _count(_v2(tmp_path, cpu_max="max 100000", memory_max="max"), cpus=4) == 4
    assert _count(tmp_path / "empty", cpus=3) == 3


def test_small_memory_means_one_worker(tmp_path: Path) -> None:
    assert _count(_v2(tmp_path, cpu_max="400000 100000", memory_max=str(512 * MIB)), cpus=8) == 1
    assert _count(_v2(tmp_path / "b", memory_max=str(1023 * MIB)), cpus=8) == 1


def test_memory_caps_workers_at_256_mib_each(tmp_path: Path) -> None:
    assert _count(_v2(tmp_path, memory_max=str(1 * GIB)), cpus=8) == 4
    assert _count(_v2(tmp_path / "b", memory_max=str(2 * GIB)), cpus=4) == 4
    assert _count(_v2(tmp_path / "c", memory_max=str(1280 * MIB)), cpus=16) == 5


def test_web_concurrency_wins(tmp_path: Path) -> None:
    root = _v2(tmp_path, cpu_max="50000 100000", memory_max=str(256 * MIB))
    assert _count(root, cpus=1, web_concurrency=5) == 5


def test_cgroup_v1_quota_and_memory(tmp_path: Path) -> None:
    _write(tmp_path, "cpu,cpuacct/cpu.cfs_quota_us", "250000\n")
    _write(tmp_path, "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    _write(tmp_path, "memory/memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    assert _count(tmp_path, cpus=4) == 2

    _write(tmp_path, "memory/memory.limit_in_bytes", f"{512 * MIB}\n")
    assert _count(tmp_path, cpus=4) == 1


def test_cgroup_v1_unlimited_quota(tmp_path: Path) -> None:
    _write(tmp_path, "cpu/cpu.cfs_quota_us", "-1\n")
    _write(tmp_path, "cpu/cpu.cfs_period_us", "100000\n")
    assert _count(tmp_path, cpus=6) == 6


def test_the_limit_of_an_ancestor_cgroup_applies(tmp_path: Path) -> None:
    # v2: this process is in /kubepods/pod1/ctr; the pod's cgroup carries the quota.
    _v2(tmp_path)
    _write(tmp_path, "kubepods/pod1/cpu.max", "200000 100000\n")
    _write(tmp_path, "kubepods/pod1/ctr/cpu.max", "max 100000\n")
    _write(tmp_path, "kubepods/pod1/ctr/memory.max", "max\n")
    assert _count(tmp_path, cpus=8, self_cgroup="0::/kubepods/pod1/ctr\n") == 2

    # v1: memory limit on the parent of this process's memory cgroup.
    v1 = tmp_path / "v1"
    _write(v1, "memory/app/memory.limit_in_bytes", f"{768 * MIB}\n")
    _write(v1, "memory/app/job/memory.limit_in_bytes", "9223372036854771712\n")
    assert _count(v1, cpus=8, self_cgroup="4:memory:/app/job\n1:cpu,cpuacct:/app/job\n") == 1


def test_a_path_outside_the_mount_falls_back_to_the_mount(tmp_path: Path) -> None:
    # Docker without a cgroup namespace: /proc/self/cgroup names the host path.
    _v2(tmp_path, cpu_max="100000 100000")
    assert _count(tmp_path, cpus=8, self_cgroup="0::/docker/abc123\n") == 1


def test_malformed_cgroup_files_are_ignored(tmp_path: Path) -> None:
    _v2(tmp_path, cpu_max="lots 0", memory_max="plenty")
    assert read_cgroup_limits(tmp_path, tmp_path / "none").cpus is None
    assert read_cgroup_limits(tmp_path, tmp_path / "none").memory_bytes is None
    assert _count(tmp_path, cpus=2) == 2
