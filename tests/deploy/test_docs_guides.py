"""docs/deploy and docs/runbooks stay true to keel: commands, settings, finding ids, links.

- Every ``keel ...`` command line quoted in them (in code blocks and inline
  code) is parsed by keel's own argument parser, never run: an unknown command,
  a missing or misspelt argument, or a value the parser refuses (a malformed
  ``SEQ:HASH``) fails here. Shell variables in them are replaced by the sample
  values below; a variable without one fails, so none is skipped silently.
- Every ``KEEL_*`` name is a setting keel reads, every ``keel.E0xx``/``keel.W0xx``
  a finding keel can report.
- Every relative link (README included) reaches a file, and its ``#anchor`` a
  heading in it.
- Each deployment guide has the sections an operator looks for.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices

from keel.cli import build_parser
from keel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ("container", "compose", "render", "heroku", "vm")
RUNBOOKS = ("rotate-secrets", "restore", "metrics")
DOCS = [
    *(ROOT / "docs" / "deploy" / f"{name}.md" for name in GUIDES),
    *(ROOT / "docs" / "runbooks" / f"{name}.md" for name in RUNBOOKS),
]
SECTIONS = (
    "Prerequisites",
    "Secrets",
    "Migrations",
    "Health checks",
    "Scaling",
    "Proxy headers",
    "Verify it is up",
)
#: What each shell variable used inside a keel command line stands for.
SAMPLES = {"CHECKPOINT": "1042:" + "5e" * 32, "KID": "kb7Qd2"}
#: Options after which the word ``keel`` is a user or group name, not the command.
_NAME_OPTIONS = frozenset({"-u", "-U", "-g", "-o", "--user", "--owner", "--group"})
_OPERATOR = re.compile(r"[();<>|&]+")
_FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_SHELL_FENCES = {"", "sh", "bash", "console"}


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_lines(text: str) -> Iterator[str]:
    """Logical lines of shell code blocks (continuations joined), then inline code spans."""
    for match in _FENCE.finditer(text):
        if match.group(1) in _SHELL_FENCES:
            yield from match.group(2).replace("\\\n", " ").splitlines()
    yield from re.findall(r"`([^`\n]+)`", _FENCE.sub("", text))


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: not a command line
        return []


def _is_keel(tokens: list[str], index: int) -> bool:
    word = tokens[index]
    if word != "keel" and not word.endswith("/bin/keel"):
        return False
    if index > 0 and tokens[index - 1] in _NAME_OPTIONS:
        return False
    following = tokens[index + 1] if index + 1 < len(tokens) else ""
    # `docker compose exec keel keel check`: the first is the service's name.
    return bool(re.fullmatch(r"[a-z][a-z-]*", following)) and following != "keel"


def _substitute(word: str, where: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in SAMPLES, f"{where}: add a sample value for ${name} to SAMPLES"
        return SAMPLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sample, word)


def keel_commands(text: str, where: str) -> list[list[str]]:
    """Every keel invocation in ``text``, as the argument list keel would get."""
    commands = []
    for line in _code_lines(text):
        tokens = _tokens(line)
        for index in range(len(tokens)):
            if not _is_keel(tokens, index):
                continue
            argv = []
            for word in tokens[index + 1 :]:
                if _OPERATOR.fullmatch(word):
                    break
                argv.append(_substitute(word, where))
            commands.append(argv)
    return commands


def _all_commands() -> list[tuple[str, list[str]]]:
    return [
        (_doc_id(doc), argv)
        for doc in DOCS
        for argv in keel_commands(doc.read_text(encoding="utf-8"), _doc_id(doc))
    ]


def test_every_guide_and_runbook_exists() -> None:
    missing = [_doc_id(doc) for doc in DOCS if not doc.is_file()]
    assert not missing


@pytest.mark.parametrize("guide", GUIDES)
def test_each_guide_has_the_sections_an_operator_looks_for(guide: str) -> None:
    text = (ROOT / "docs" / "deploy" / f"{guide}.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), f"{guide}.md lacks {section!r}"


@pytest.mark.parametrize("guide", GUIDES)
def test_each_guide_covers_health_scaling_and_proxies(guide: str) -> None:
    text = (ROOT / "docs" / "deploy" / f"{guide}.md").read_text(encoding="utf-8")
    for needed in (
        "/livez",
        "/readyz",
        "WEB_CONCURRENCY",
        "keel.E030",
        "KEEL_TRUSTED_PROXIES",
        "keel check",
        "keel db upgrade",
        "KEEL_AUDIT_KEY",
    ):
        assert needed in text, f"{guide}.md never mentions {needed}"


@pytest.mark.parametrize(
    ("runbook", "sections"),
    [
        (
            "rotate-secrets",
            (
                "SECRET_KEY",
                "Signing keys",
                "KEEL_JWT_SECRET",
                "KEEL_AUDIT_KEY",
                "Database password",
                "Redis password",
                "KEEL_METRICS_TOKEN",
            ),
        ),
        ("restore", ("Routine: checkpoints and backups", "Restore", "After the restore")),
        (
            "metrics",
            (
                "A worker was killed",
                "A warm-up timed out",
                "The cache degraded",
                "Logins are throttled",
            ),
        ),
    ],
)
def test_each_runbook_covers_its_cases(runbook: str, sections: tuple[str, ...]) -> None:
    text = (ROOT / "docs" / "runbooks" / f"{runbook}.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    for section in sections:
        assert any(h.startswith(section) for h in headings), f"{runbook}.md lacks {section!r}"


def test_the_docs_quote_the_commands_an_operator_needs() -> None:
    quoted = {" ".join(argv[:2]) for _, argv in _all_commands()}
    for needed in (
        "check",
        "serve",
        "db upgrade",
        "db current",
        "audit verify",
        "audit checkpoint",
        "keys rotate",
        "keys promote",
        "keys revoke",
        "users create-admin",
    ):
        assert any(q == needed or q.startswith(needed + " ") for q in quoted), needed


def test_every_quoted_keel_command_parses() -> None:
    parser = build_parser()
    commands = _all_commands()
    assert len(commands) > 40  # the extraction finds them at all
    refused = []
    for where, argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # argparse refuses with exit status 2 (its message is on stderr)
            refused.append(f"{where}: keel {shlex.join(argv)}")
            continue
        assert callable(args.handler)
    assert not refused, "\n".join(refused)


def test_the_command_extraction_catches_a_wrong_command() -> None:
    """The check above would see a mistake: a wrong command, a bad value, a missing argument."""
    text = (
        "```sh\nsudo -u keel /opt/keel/bin/keel audit verify --against 12:beef\n```\n"
        "Run `keel keys promote` then `docker compose exec keel keel chek`."
    )
    commands = keel_commands(text, "sample")
    assert commands == [
        ["audit", "verify", "--against", "12:beef"],
        ["keys", "promote"],
        ["chek"],
    ]
    parser = build_parser()
    for argv in commands:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def _known_settings() -> set[str]:
    """``KEEL_`` + each field's name, or the ``KEEL_`` names its aliases give it."""
    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            known.add(f"KEEL_{name.upper()}")
        elif isinstance(alias, AliasChoices):
            known |= {
                choice.upper()
                for choice in alias.choices
                if isinstance(choice, str) and choice.upper().startswith("KEEL_")
            }
    return known


def test_every_keel_setting_named_exists() -> None:
    known = _known_settings()
    assert "KEEL_TRUSTED_PROXIES" in known
    assert "KEEL_DATABASE_URL" not in known  # DATABASE_URL is read without the prefix
    unknown = {
        f"{_doc_id(doc)}: {name}"
        for doc in DOCS
        for name in re.findall(r"\bKEEL_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text(encoding="utf-8"))
        if name not in known
    }
    assert not unknown, sorted(unknown)


def test_every_finding_id_named_exists() -> None:
    source = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "src" / "keel").rglob("*.py")
    )
    unknown = {
        f"{_doc_id(doc)}: keel.{finding}"
        for doc in DOCS
        for finding in re.findall(r"\bkeel\.([EW]\d{3})\b", doc.read_text(encoding="utf-8"))
        if f'"{finding}"' not in source
    }
    assert not unknown, sorted(unknown)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in [*DOCS, ROOT / "README.md"]:
        text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (doc.parent / path_part).resolve() if path_part else doc
            if not resolved.exists():
                broken.append(f"{_doc_id(doc)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{_doc_id(doc)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_guide_and_runbook() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in DOCS:
        assert f"]({_doc_id(doc)})" in readme, _doc_id(doc)
