"""store: persistence for auditlog: the chained audit journal, keys, and the encrypted body store.

A leaf package: it imports the standard library, orjson and cryptography only (boto3 lazily).
"""

from __future__ import annotations

from store.bodies import LocalBodyStore, MemoryBodyStore, from_url
from store.exceptions import JournalCorrupt, JournalError, KeyError_, StoreError
from store.keys import KeyRing, MasterKey, generate_key_file, key_from_env, rotate_key_file

__all__ = [
    "JournalCorrupt",
    "JournalError",
    "KeyError_",
    "KeyRing",
    "LocalBodyStore",
    "MasterKey",
    "MemoryBodyStore",
    "StoreError",
    "from_url",
    "generate_key_file",
    "key_from_env",
    "rotate_key_file",
]
