"""Secret redaction: keep API keys, header values and passwords out of logs, errors and output.

Two layers, applied together by :meth:`SecretRegistry.scrub`:

* **Known secrets.** Whatever the daemon loads as a secret (a Cloud API key, a proxy header value, the
  password in a target URL) is registered, in every form it travels in (percent-encoded, JSON-escaped, the
  token of an ``Authorization`` value and the password inside HTTP Basic's base64); every occurrence of any
  of them is replaced by ``***`` afterwards. The configuration's secrets are *replaced* on reload, so the
  set is what the configuration holds now; a request's own secrets (a ``/probe`` target's password) live in
  a :meth:`~SecretRegistry.request_scope` and are forgotten when the request ends.
* **Shapes of secrets.** Text that *looks* like a credential is masked even if nobody registered it:
  URL userinfo, plain (``http://user:pass@host`` → ``http://***@host``) or percent-encoded as a query
  parameter (``target=http%3A%2F%2Fuser%3Apass%40host``), ``Authorization:``/``X-API-Key:`` style header
  values, ``Basic <base64 of user:password>`` wherever it appears, and ``token=``-like query parameters.

Everything here is pure string work (no I/O), so the log processor in :mod:`comfywatch.logs`, exception
messages, the doctor's and the canary's output can all share it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import overload
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRETS",
    "SecretRegistry",
    "register_secret",
    "replace_secrets",
    "request_scope",
    "scrub",
    "scrub_output",
    "secret_forms",
    "strip_userinfo",
    "target_scope",
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

# The same URL percent-encoded whole, as a query parameter (Prometheus sends /probe?target=http%3A%2F%2F…),
# at any depth of encoding (%253A…): the delimiters are those of the scheme's own depth, so a "%252F" in a
# once-encoded URL is a character of the password, not the start of the path.
_ENCODED_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*%(?P<depth>(?:25)*)3A%(?P=depth)2F%(?P=depth)2F)"
    r"(?:[^%\s/?#&'\"]|%(?!(?P=depth)(?:2F|3F|23)))*"
    r"(?P<at>%(?P=depth)40)",
    re.IGNORECASE,
)

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

# "Basic <base64>" away from any header name (a server echoing its request headers as a list). Only a token
# that decodes to "user:password" is masked, so prose such as "Basic auth" is left alone.
_BASIC = re.compile(
    r"(?P<scheme>\bbasic\s+)(?P<token>[A-Za-z0-9+/]+={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE | re.ASCII
)

# token=…, access_token=…, api_key=… (Comfy Cloud's WebSocket URL carries "&token=").
_PARAM = re.compile(
    r"(?P<name>(?<![\w-])(?:token|access_token|refresh_token|api_key|apikey|password|secret)=)"
    r"(?P<value>[^&\s#\"',;]*)",
    re.IGNORECASE,
)

# A registered header value "<scheme> <token>": the token travels (and is echoed) without its scheme.
_AUTH_VALUE = re.compile(r"(?P<scheme>basic|bearer|token|digest|apikey)\s+(?P<token>\S+)", re.IGNORECASE)


def _basic_credentials(token: str) -> str | None:
    """``user:password`` when *token* is the base64 of one, else None."""
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return text if ":" in text else None


def _mask_basic(match: re.Match[str]) -> str:
    return match["scheme"] + MASK if _basic_credentials(match["token"]) is not None else match[0]


def _mask_structure(text: str) -> str:
    """Mask credential-shaped substrings (userinfo, auth headers, Basic credentials, token parameters)."""
    text = _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)
    # Cheap tests first: this runs on every log line, and most have neither a "%" nor the word "basic".
    if "%" in text:
        text = _ENCODED_USERINFO.sub(lambda m: m["scheme"] + MASK + m["at"], text)
    text = _HEADER.sub(
        lambda m: (
            m["name"] + m["sep"] + (m["quote"] or "") + (m["scheme"] or "") + MASK if m["value"] else m[0]
        ),
        text,
    )
    if "basic" in text.lower():
        text = _BASIC.sub(_mask_basic, text)
    return _PARAM.sub(lambda m: m["name"] + MASK if m["value"] else m[0], text)


def _forms(value: str) -> frozenset[str]:
    """Every string *value* may appear as in output; empty when it is too short to be a secret.

    The value as given and stripped (secret files end in a newline); for an ``Authorization`` value, its
    token, and for Basic the password inside (a user name is no secret, and masking a common one would
    garble unrelated text); and of each, the percent-encoded forms (``quote``
    with and without "/" safe, ``quote_plus``) and the JSON-escaped ones (ASCII-only and not).
    """
    if len(value.strip()) < MIN_SECRET_LENGTH:
        return frozenset()
    roots = {value, value.strip()}
    auth = _AUTH_VALUE.fullmatch(value.strip())
    if auth is not None:
        roots.add(auth["token"])
        credentials = _basic_credentials(auth["token"]) if auth["scheme"].lower() == "basic" else None
        if credentials is not None:
            roots.add(credentials.partition(":")[2])
    forms: set[str] = set()
    for root in roots:
        if len(root.strip()) >= MIN_SECRET_LENGTH:
            forms.update((root, quote(root, safe=""), quote(root), quote_plus(root),
                          json.dumps(root)[1:-1], json.dumps(root, ensure_ascii=False)[1:-1]))
    return frozenset(forms)


def _replaced(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _until_stable(text: str, one_pass: Callable[[str], str]) -> str:
    """*one_pass* applied until it changes nothing: masking can join the halves of a secret around what it
    removed. A text still changing after :data:`_MAX_PASSES` passes is masked whole."""
    for _ in range(_MAX_PASSES):
        new = one_pass(text)
        if new == text:
            return new
        text = new
    return MASK


def _longest_first(secrets: frozenset[str]) -> list[str]:
    # When one secret contains another, the whole of the longer one is masked.
    return sorted(secrets, key=lambda s: (-len(s), s))


class _RequestSecrets:
    """The secrets one request registered (with those of the request it runs inside)."""

    def __init__(self, owner: SecretRegistry, inherited: frozenset[str]) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self.secrets = inherited
        self.longest_first = _longest_first(inherited)

    def add(self, forms: frozenset[str]) -> None:
        # Tasks and threads the request starts share this object (they copy the context).
        with self._lock:
            if forms <= self.secrets:
                return
            self.secrets = self.secrets | forms
            self.longest_first = _longest_first(self.secrets)


_REQUEST: ContextVar[_RequestSecrets | None] = ContextVar("comfywatch_request_secrets", default=None)
#: The secret forms of the target whose answer is being parsed (see :func:`target_scope`), longest first.
_TARGET: ContextVar[tuple[str, ...]] = ContextVar("comfywatch_target_secrets", default=())


def secret_forms(values: Iterable[str]) -> tuple[str, ...]:
    """Every form *values* may appear in (as :meth:`SecretRegistry.register` masks them), longest first."""
    return tuple(_longest_first(frozenset().union(*(_forms(value) for value in values))))


@contextlib.contextmanager
def target_scope(forms: tuple[str, ...]) -> Iterator[None]:
    """Within this block, the strings parsers keep have *forms* (a target's :func:`secret_forms`) masked: what
    that target's server was sent, and so may echo."""
    token = _TARGET.set(forms)
    try:
        yield
    finally:
        _TARGET.reset(token)


class SecretRegistry:
    """A thread-safe set of known secret strings, and the scrubber that masks them.

    Registration is rare (config load and reload) and scrubbing is on every log line, so registration
    rebuilds one compiled pattern under a lock and :meth:`scrub` reads the current pattern without one.
    Secrets registered inside :meth:`request_scope` never reach that pattern: they are the request's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str) -> None:
        """Remember ``value`` (in all its forms) as a secret; later :meth:`scrub` calls replace it with ``***``.

        Values shorter than :data:`MIN_SECRET_LENGTH` (after stripping) are ignored. Inside
        :meth:`request_scope` the value belongs to the request and is forgotten when the scope ends.
        """
        forms = _forms(value)
        if not forms:
            return
        request = _REQUEST.get()
        if request is not None and request.owner is self:
            request.add(forms)
            return
        with self._lock:
            if forms <= self._secrets:
                return
            self._set(self._secrets | forms)

    def replace(self, values: Iterable[str]) -> None:
        """Make ``values`` (in all their forms) the whole set: what a reload's configuration holds, no more."""
        forms = frozenset().union(*(_forms(value) for value in values))
        with self._lock:
            self._set(forms)

    def clear(self) -> None:
        """Forget every registered secret."""
        self.replace(())

    def _set(self, secrets: frozenset[str]) -> None:
        self._secrets = secrets
        self._pattern = re.compile("|".join(map(re.escape, _longest_first(secrets)))) if secrets else None

    @contextlib.contextmanager
    def request_scope(self) -> Iterator[None]:
        """Within this block (and the tasks it starts), registrations mask only this request's output.

        The request's secrets are layered on the process-wide ones for every :meth:`scrub` in the block's
        context, and dropped at its end, so requests with fresh credentials cost the registry nothing.
        """
        outer = _REQUEST.get()
        inherited = outer.secrets if outer is not None and outer.owner is self else frozenset()
        token = _REQUEST.set(_RequestSecrets(self, inherited))
        try:
            yield
        finally:
            _REQUEST.reset(token)

    def __contains__(self, value: object) -> bool:
        return value in self._secrets

    def __len__(self) -> int:
        """How many strings the process-wide pattern holds (its size is the cost of every scrub)."""
        return len(self._secrets)

    def echoable(self) -> Sequence[str]:
        """The secrets a server's answer may echo, longest first: those of the target whose answer is being read
        (:func:`target_scope`) and the current request's. A server can only echo what it was sent, so the
        process-wide set (every target's) is not among them: searching it would cost every string of every
        answer in proportion to the fleet, and one target's password could mask another target's ids."""
        request = _REQUEST.get()
        extra = request.longest_first if request is not None and request.owner is self else []
        target = _TARGET.get()
        if not extra or not target:
            return extra or target  # already longest first: no copy for each string a parser keeps
        return _longest_first(frozenset(target).union(extra))

    def scrub_known(self, text: str, echoable: Sequence[str]) -> str:
        """Return ``text`` with each of *echoable* (see :meth:`echoable`) replaced by ``***``; no shapes."""
        return _until_stable(text, lambda current: _replaced(current, echoable))

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret and credential-shaped substring replaced by ``***``.

        Guarantee: no registered secret (the current request's included) occurs in the result, whatever
        surrounds it in ``text``.
        """
        pattern = self._pattern
        request = _REQUEST.get()
        extra = request.longest_first if request is not None and request.owner is self else []

        def one_pass(current: str) -> str:
            masked = _mask_structure(current)
            if pattern is not None:
                masked = pattern.sub(MASK, masked)
            return _replaced(masked, extra)

        return _until_stable(text, one_pass)

    @overload
    def scrub_output(self, value: str) -> str: ...

    @overload
    def scrub_output(self, value: object) -> object: ...

    def scrub_output(self, value: object) -> object:
        """A JSON-able copy of ``value`` with every string in it (mapping keys included) scrubbed.

        For output documents (``--json``): scrubbing before serialising also covers what ``json.dumps``
        would escape (quotes, non-ASCII). Numbers, booleans and None are kept; sequences become lists;
        anything else becomes its scrubbed ``str()``.
        """
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, bytes | bytearray):
            return self.scrub(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            return {self.scrub_output(key): self.scrub_output(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub_output(item) for item in value]
        return self.scrub(str(value))


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
    """Register ``value`` in the process-wide :data:`SECRETS` registry (or the current request's scope)."""
    SECRETS.register(value)


def replace_secrets(values: Iterable[str]) -> None:
    """Make ``values`` the whole set of the process-wide :data:`SECRETS` registry."""
    SECRETS.replace(values)


def request_scope() -> contextlib.AbstractContextManager[None]:
    """A :meth:`SecretRegistry.request_scope` of the process-wide :data:`SECRETS` registry."""
    return SECRETS.request_scope()


def scrub(text: str) -> str:
    """Scrub ``text`` with the process-wide :data:`SECRETS` registry."""
    return SECRETS.scrub(text)


@overload
def scrub_output(value: str) -> str: ...


@overload
def scrub_output(value: object) -> object: ...


def scrub_output(value: object) -> object:
    """:meth:`SecretRegistry.scrub_output` with the process-wide :data:`SECRETS` registry."""
    return SECRETS.scrub_output(value)
