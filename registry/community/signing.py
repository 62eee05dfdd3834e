"""Publisher keys and entry signatures: ed25519 through `cryptography`.

A key pair is two files: the private key (PKCS#8 PEM, readable by its owner only) and, beside it with `.pub`
added, the public key as one line, `ed25519:` and the base64 of its 32 bytes. That line is what index entries
carry and what `diffplugin index add --key` takes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from registry.community.errors import IndexRefused
from registry.community.format import KEY_PREFIX, signed_bytes

PUBLIC_SUFFIX = ".pub"


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + PUBLIC_SUFFIX)


def key_text(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def fingerprint(key: str) -> str:
    """A short name for a public key, for people comparing keys ('SHA256:' and 16 hex digits)."""
    return "SHA256:" + hashlib.sha256(key.encode("ascii")).hexdigest()[:16]


def generate_key(path: Path) -> str:
    """Write a new key pair at `path` (and `path`.pub); returns the public key. An existing key is never replaced:
    entries signed with it would no longer match their namespace's pinned key."""
    path = path.expanduser()
    pub = public_path(path)
    for existing in (path, pub):
        if existing.exists():
            raise IndexRefused(f"{existing}: exists; a publisher keeps one key (users pin it), so it is never "
                               "replaced; choose another file with -o")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key_text(private.public_key())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub.write_text(public + "\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = path.expanduser()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise IndexRefused(f"{path}: no such key; make one with `diffplugin index keygen`") from None
    except (OSError, ValueError, TypeError) as err:
        raise IndexRefused(f"{path}: not an unencrypted ed25519 private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IndexRefused(f"{path}: not an ed25519 key; make one with `diffplugin index keygen`")
    return key


def _public_key(key: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(key.removeprefix(KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise IndexRefused(f"'{key[:60]}' is not an ed25519 public key ('ed25519:' and 44 base64 "
                           "characters)") from None


def read_public_key(value: str) -> str:
    """A public key given as its text or as the path of a `.pub` file, checked and as its text."""
    text = value.strip()
    if not text.startswith(KEY_PREFIX):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise IndexRefused(f"{value}: neither a public key ('ed25519:…') nor a readable .pub file "
                               f"({getattr(err, 'strerror', None) or err})") from None
    _public_key(text)
    return text


def sign(raw: dict[str, Any], private: Ed25519PrivateKey) -> str:
    return base64.b64encode(private.sign(signed_bytes(raw))).decode("ascii")


def verify(raw: dict[str, Any], key: str, signature: str) -> bool:
    """Whether `signature` is `key`'s signature of the entry `raw` (its `signature` field left out)."""
    try:
        _public_key(key).verify(base64.b64decode(signature, validate=True), signed_bytes(raw))
    except (InvalidSignature, binascii.Error, ValueError, IndexRefused):
        return False
    return True
