"""The first admin key: on first start with an empty key store, Somner creates one, shows it once and writes it to
`<data_dir>/admin.key` (mode 0600). `SOMNER_ADMIN_KEY` (or `auth.admin_key`) sets it instead, for containers."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from somner.gateway.keys import ADMIN, INFERENCE, KEY_PREFIX, KeyRights
from somner.store.keys import KeyStore

log = logging.getLogger(__name__)

ADMIN_USER = "admin"


async def ensure_admin_key(keys: KeyStore, data_dir: Path, given: str | None) -> str | None:
    """Create the first admin key when there is no key at all; returns its secret when one was created."""
    if await keys.count_active() > 0:
        return None
    if given is not None and not given.startswith(KEY_PREFIX):
        raise ValueError(f"the admin key must start with '{KEY_PREFIX}'")
    record, secret = await keys.create_key(
        ADMIN_USER,
        KeyRights(scopes=frozenset({ADMIN, INFERENCE})),
        secret=given,
        name="first admin key",
        create_user=True,
    )
    if given is None:
        path = data_dir / "admin.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret + "\n")
        os.chmod(path, 0o600)
        # Shown once, on the terminal only: the log may be shipped elsewhere.
        print(f"\nCreated the first admin key (also in {path}):\n\n    {secret}\n", file=sys.stderr)  # noqa: T201
        log.info("created the first admin key %s (%s...)", record.id, record.prefix)
    else:
        log.info("installed the admin key given by the environment as %s", record.id)
    return secret
