"""Who may use a dashboard: loopback is this machine's users; any other address needs a login.

``headmap serve --host 0.0.0.0`` would answer everyone on the network, the API included, so a
non-loopback address requires credentials (``--auth-file FILE`` or the ``HEADMAP_AUTH``
environment variable, each ``user:password``) or ``--open``, which says in so many words that the
server is meant to be open. Credentials never come from the command line alone: every user of the
machine can read a process's arguments (``ps``), and the shell keeps them in its history.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from headmap.errors import HeadmapError

#: The environment variable holding ``user:password`` (several separated by commas).
AUTH_ENV = "HEADMAP_AUTH"
HOW_TO_LOG_IN = f"--auth-file FILE (lines user:password) or the {AUTH_ENV}=user:password environment variable"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def parse_credentials(text: str, source: str) -> list[tuple[str, str]]:
    """``user:password`` pairs, one per line or comma-separated; blank lines and ``#`` comments skipped."""
    pairs: list[tuple[str, str]] = []
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise HeadmapError(
                f"{source}: each entry must be user:password (a user and a non-empty password)"
            )
        pairs.append((user.strip(), password))
    return pairs


def credentials(auth_file: str | None, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The logins from ``auth_file`` and from ``HEADMAP_AUTH`` (both may be given), or ``[]``."""
    pairs: list[tuple[str, str]] = []
    if auth_file is not None:
        path = Path(auth_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HeadmapError(f"--auth-file {auth_file}: cannot read it ({type(exc).__name__})") from None
        found = parse_credentials(text, f"--auth-file {auth_file}")
        if not found:
            raise HeadmapError(f"--auth-file {auth_file} holds no user:password line")
        pairs += found
    if environ.get(AUTH_ENV):
        pairs += parse_credentials(environ[AUTH_ENV], AUTH_ENV)
    return pairs


def exposure_problem(host: str, logins: list[tuple[str, str]], open_server: bool) -> str | None:
    """Why serving on ``host`` this way is refused (one line naming the fixes), or None."""
    if logins or open_server or is_loopback(host):
        return None
    return (
        f"--host {host} would serve everyone who can reach this machine, with no login: give {HOW_TO_LOG_IN}, "
        "or --open to serve without authentication on purpose"
    )
