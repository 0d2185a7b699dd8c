import hashlib
import json

import pytest

from service.webhooks import signature
from service.webhooks.signature import Keyring, SignatureError
from tests import vectors

KEYS = Keyring.from_secrets([vectors.SECRET])


def test_vector_body_is_exact():
    assert len(vectors.KAPSO_BODY) == 467
    assert hashlib.sha256(vectors.META_BODY).hexdigest() == vectors.META_SHA256


def test_kapso_vector_verifies():
    assert signature.verify(vectors.KAPSO_BODY, vectors.KAPSO_SIGNATURE, KEYS) == KEYS.keys[0][0]


def test_meta_vector_verifies():
    assert signature.verify(vectors.META_BODY, vectors.META_SIGNATURE, KEYS)


def test_reserialised_body_signature_is_rejected():
    reserialised = json.dumps(json.loads(vectors.KAPSO_BODY)).encode()
    assert signature.sign(vectors.SECRET, reserialised) == vectors.KAPSO_RESERIALISED_SIGNATURE
    with pytest.raises(SignatureError, match="does not match"):
        signature.verify(vectors.KAPSO_BODY, vectors.KAPSO_RESERIALISED_SIGNATURE, KEYS)


@pytest.mark.parametrize(
    "header",
    [
        "sha256=" + vectors.KAPSO_SIGNATURE,
        "SHA256=" + vectors.KAPSO_SIGNATURE,
        vectors.KAPSO_SIGNATURE.upper(),
        "  " + vectors.KAPSO_SIGNATURE + " ",
    ],
)
def test_tolerated_spellings(header):
    assert signature.verify(vectors.KAPSO_BODY, header, KEYS)


@pytest.mark.parametrize(
    "header, reason",
    [
        (None, "missing"),
        ("", "missing"),
        (vectors.KAPSO_SIGNATURE[:-1], "malformed"),
        (vectors.KAPSO_SIGNATURE + "0", "malformed"),
        ("z" * 64, "malformed"),
        ("é" + vectors.KAPSO_SIGNATURE[1:], "malformed"),
        ("٣" * 64, "malformed"),  # non-ASCII digits
        ("sha1=" + vectors.KAPSO_SIGNATURE, "malformed"),
    ],
)
def test_malformed_headers(header, reason):
    with pytest.raises(SignatureError, match=reason):
        signature.verify(vectors.KAPSO_BODY, header, KEYS)


def test_one_flipped_byte_fails():
    body = bytearray(vectors.KAPSO_BODY)
    body[10] ^= 1
    with pytest.raises(SignatureError):
        signature.verify(bytes(body), vectors.KAPSO_SIGNATURE, KEYS)


def test_rotation_accepts_each_secret_and_names_it():
    keys = Keyring.from_secrets([b"new-secret", vectors.SECRET])
    matched = signature.verify(vectors.KAPSO_BODY, vectors.KAPSO_SIGNATURE, keys)
    assert matched == hashlib.sha256(vectors.SECRET).hexdigest()[:8]
    new_sig = signature.sign(b"new-secret", vectors.KAPSO_BODY)
    assert signature.verify(vectors.KAPSO_BODY, new_sig, keys) == keys.keys[0][0]


def test_keyring_repr_hides_secrets():
    assert vectors.SECRET.decode() not in repr(KEYS)
