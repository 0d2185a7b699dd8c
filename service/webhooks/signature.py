"""HMAC-SHA256 signature checks over the raw request body."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from service.settings import secret_id

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """The request is not verifiable; `reason` is safe to return to the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Keyring:
    """Accepted secrets with their short ids, tried in order."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_secrets(cls, secrets: list[bytes]) -> Keyring:
        return cls(tuple((secret_id(s), s) for s in secrets))

    def __repr__(self) -> str:  # never show secret values
        return f"Keyring(ids={[k for k, _ in self.keys]})"


def parse_header(header: str | None) -> bytes:
    """Decode a signature header (bare hex, optional `sha256=` prefix) into digest bytes."""
    sig = header.strip() if header is not None else ""
    if not sig:
        raise SignatureError("missing signature header")
    if sig[:7].lower() == "sha256=":
        sig = sig[7:]
    if not sig.isascii() or not _HEX64.fullmatch(sig):
        raise SignatureError("malformed signature: expected 64 hex characters")
    return bytes.fromhex(sig)


def verify(body: bytes, header: str | None, keyring: Keyring) -> str:
    """Return the id of the secret whose HMAC of `body` matches `header`, else raise."""
    expected = parse_header(header)
    matched = None
    for key_id, secret in keyring.keys:
        digest = hmac.digest(secret, body, "sha256")
        # compare against every key so timing does not reveal which one matched
        if hmac.compare_digest(digest, expected) and matched is None:
            matched = key_id
    if matched is None:
        raise SignatureError("signature does not match any configured secret")
    return matched


def sign(secret: bytes, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 that Kapso sends for `body`."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()
