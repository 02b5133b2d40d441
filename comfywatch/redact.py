"""Secret redaction: keep API keys, header values and passwords out of logs, errors and output.

Two layers, applied together by :meth:`SecretRegistry.scrub`:

* **Known secrets.** Whatever the daemon loads as a secret (a Cloud API key, a proxy header value, the
  password in a target URL) is registered once; every occurrence is replaced by ``***`` afterwards.
* **Shapes of secrets.** Text that *looks* like a credential is masked even if nobody registered it:
  URL userinfo (``http://user:pass@host`` → ``http://***@host``), ``Authorization:``/``X-API-Key:``
  style header values and ``token=``-like query parameters.

Everything here is pure string work (no I/O), so the log processor in :mod:`comfywatch.logs`, exception
messages and the doctor's output can all share it.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRETS",
    "SecretRegistry",
    "register_secret",
    "scrub",
    "strip_userinfo",
]

MASK = "***"
# Shorter values would mask innocent text everywhere ("1", "on", "GPU") and are not credentials anyway.
MIN_SECRET_LENGTH = 4
# Each pass either removes text (a secret becomes the shorter MASK) or is a no-op on already masked text,
# so a handful of passes always converges; the cap is a guard, and hitting it masks the whole text.
_MAX_PASSES = 16

# scheme://userinfo@ — userinfo runs to the *last* "@" before the path, so a raw "@" inside a password
# (http://u:p@ss@host) is masked entirely.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#@]*(?:@[^/\s?#@]*)*)@")

# "Authorization: Bearer x", "X-API-Key=x", "'authorization': 'Basic x'" (a dict repr). The auth scheme
# stays readable because "which scheme was sent" is useful when debugging a 401.
_HEADER = re.compile(
    r"""(?P<name>\b(?:x-api-key|authorization|proxy-authorization|cookie|set-cookie)\b)"""
    r"""(?P<sep>["']?\s*[:=]\s*)"""
    r"""(?P<quote>["'])?"""
    r"""(?P<scheme>(?:bearer|basic|token|digest|apikey)\s+)?"""
    r"""(?P<value>(?(quote)[^"'\r\n]*|\S+))""",
    re.IGNORECASE,
)

# token=…, access_token=…, api_key=… (Comfy Cloud's WebSocket URL carries "&token=").
_PARAM = re.compile(
    r"(?P<name>(?<![\w-])(?:token|access_token|refresh_token|api_key|apikey|password|secret)=)"
    r"(?P<value>[^&\s#\"',;]*)",
    re.IGNORECASE,
)


def _mask_structure(text: str) -> str:
    """Mask credential-shaped substrings (userinfo, auth headers, token parameters)."""
    text = _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)
    text = _HEADER.sub(
        lambda m: (
            m["name"] + m["sep"] + (m["quote"] or "") + (m["scheme"] or "") + MASK if m["value"] else m[0]
        ),
        text,
    )
    return _PARAM.sub(lambda m: m["name"] + MASK if m["value"] else m[0], text)


class SecretRegistry:
    """A thread-safe set of known secret strings, and the scrubber that masks them.

    Registration is rare (config load and reload) and scrubbing is on every log line, so registration
    rebuilds one compiled pattern under a lock and :meth:`scrub` reads the current pattern without one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str) -> None:
        """Remember ``value`` as a secret; later :meth:`scrub` calls replace it with ``***``.

        Values shorter than :data:`MIN_SECRET_LENGTH` (after stripping) are ignored. The stripped form
        (secret files end in a newline) and the percent-encoded form (as it appears inside a URL) are
        registered too.
        """
        if len(value.strip()) < MIN_SECRET_LENGTH:
            return
        plain = {value, value.strip()}
        new = plain | {quote(v, safe="") for v in plain}
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets = self._secrets | new
            self._pattern = self._compile(self._secrets)

    def clear(self) -> None:
        """Forget every registered secret (tests; a reload that drops a target keeps old ones on purpose)."""
        with self._lock:
            self._secrets = frozenset()
            self._pattern = None

    def __contains__(self, value: object) -> bool:
        return value in self._secrets

    def __len__(self) -> int:
        return len(self._secrets)

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret and credential-shaped substring replaced by ``***``.

        Guarantee: no registered secret occurs in the result, whatever surrounds it in ``text``.
        """
        pattern = self._pattern
        for _ in range(_MAX_PASSES):
            new = _mask_structure(text)
            if pattern is not None:
                new = pattern.sub(MASK, new)
            if new == text:
                return new
            text = new
        return MASK

    @staticmethod
    def _compile(secrets: frozenset[str]) -> re.Pattern[str]:
        # Longest first: when one secret contains another, the whole of the longer one is masked.
        ordered = sorted(secrets, key=lambda s: (-len(s), s))
        return re.compile("|".join(re.escape(s) for s in ordered))


def strip_userinfo(url: str) -> str:
    """Return ``url`` without its ``user:password@`` part (``http://u:p@h:1/x`` → ``http://h:1/x``).

    For labels and display: unlike :func:`scrub` it leaves no marker. Strings without ``scheme://``
    are returned unchanged; the rest of the URL is kept byte for byte.
    """
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return url
    start = scheme_end + 3
    end = len(url)
    for stop in "/?#":
        pos = url.find(stop, start)
        if pos != -1:
            end = min(end, pos)
    at = url.rfind("@", start, end)
    if at == -1:
        return url
    return url[:start] + url[at + 1 :]


SECRETS = SecretRegistry()
"""The process-wide registry used by logging, errors and the doctor."""


def register_secret(value: str) -> None:
    """Register ``value`` in the process-wide :data:`SECRETS` registry."""
    SECRETS.register(value)


def scrub(text: str) -> str:
    """Scrub ``text`` with the process-wide :data:`SECRETS` registry."""
    return SECRETS.scrub(text)
