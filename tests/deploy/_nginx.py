"""deploy/nginx/keel.conf made runnable on loopback: free ports, a throwaway certificate.

The shipped file is changed only where a test machine must differ, each
replacement asserted so that an edit to the file cannot silently skip it: the
ports it listens on and proxies to, the certificate paths, and its IPv6
``listen`` lines (dropped: the IPv4 loopback is enough to prove the proxying).
Everything else (headers, timeouts, buffering, the redirect) runs as shipped.
A small main configuration keeps nginx's pid, logs and temporary files in the
test's directory; the distribution's nginx binary is used, never its service.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = ["NginxFiles", "nginx_files", "nginx_test", "require_nginx", "running_nginx"]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx" / "keel.conf"
HOST = "id.example.com"

_MAIN = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
daemon off;
events {{ worker_connections 128; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/keel.conf;
}}
"""


def require_nginx() -> str:
    """The nginx binary; skip (fail under KEEL_TEST_REQUIRE_BACKENDS) when it is not installed."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        reason = "nginx is not installed (apt-get install nginx-light)"
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass(frozen=True)
class NginxFiles:
    """A runnable copy of the shipped configuration under ``directory``."""

    directory: Path
    main: Path
    certificate: Path
    http_port: int
    https_port: int


def _replace(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    assert found == count, f"deploy/nginx/keel.conf: expected {count} of {old!r}, found {found}"
    return text.replace(old, new)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST and 127.0.0.1 (the test's client trusts only it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def nginx_files(
    directory: Path, *, http_port: int, https_port: int, upstream_port: int
) -> NginxFiles:
    """Write the runnable copy of deploy/nginx/keel.conf and its main configuration."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = _certificate(directory)
    text = SHIPPED.read_text(encoding="utf-8")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};", 1)
    text = _replace(text, "listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl", 1)
    text = _replace(text, "    listen [::]:80;\n", "", 1)
    text = _replace(text, "    listen [::]:443 ssl http2;\n", "", 1)
    text = _replace(text, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};", 1)
    text = _replace(text, f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(cert), 1)
    text = _replace(text, f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key), 1)
    (directory / "keel.conf").write_text(text, encoding="utf-8")
    # Run as root (CI), nginx's workers would switch to "nobody", who cannot enter the
    # test's directory; they stay root here instead.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(_MAIN.format(dir=directory, user=user), encoding="utf-8")
    return NginxFiles(directory, main, cert, http_port, https_port)


def nginx_test(binary: str, files: NginxFiles) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the runnable copy (prefix, logs and files in the test directory)."""
    return subprocess.run(
        [
            binary,
            "-t",
            "-p",
            str(files.directory),
            "-e",
            str(files.directory / "error.log"),
            "-c",
            str(files.main),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextlib.contextmanager
def running_nginx(binary: str, files: NginxFiles) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground with ``files``; stopped (SIGQUIT, then SIGKILL) on exit."""
    log = (files.directory / "nginx.out").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(files.directory),
            "-e",
            str(files.directory / "error.log"),
            "-c",
            str(files.main),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{files.http_port}/", timeout=0.5)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                errors = (files.directory / "error.log").read_text(errors="replace")
                raise AssertionError(f"nginx did not start:\n{errors}")
            time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
