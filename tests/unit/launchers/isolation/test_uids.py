"""Uid leases: one uid per sandbox, shared out across environments through lock files."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.environment import UidRange
from supervisor.errors import SandboxStateError
from supervisor.launchers.isolation.uids import UidLeases


def test_each_lease_gets_a_uid_no_other_lease_holds(tmp_path: Path) -> None:
    """Two environments over one range (one directory) never hold the same uid at once."""
    uids = UidRange(first=2_000_000_000, count=3)
    first, second = UidLeases(tmp_path, uids), UidLeases(tmp_path, uids)
    held = [first.lease(), second.lease(), first.lease()]
    assert sorted(lease.uid for lease in held) == [2_000_000_000, 2_000_000_001, 2_000_000_002]
    with pytest.raises(SandboxStateError, match=r"widen `uids\.count`"):
        second.lease()
    held[1].release()
    assert second.lease().uid == held[1].uid  # freed, so leased again


def test_a_uid_with_an_account_is_never_leased(tmp_path: Path) -> None:
    """A range over real accounts (root is uid 0... here the range starts at 1000 and the
    lease skips any uid that /etc/passwd or NSS knows)."""
    leases = UidLeases(tmp_path, UidRange(first=65_534, count=2))  # 65534 is nobody
    assert leases.lease().uid == 65_535


def test_a_released_lease_is_released_once(tmp_path: Path) -> None:
    """release() twice is harmless (it never closes a reused descriptor)."""
    lease = UidLeases(tmp_path, UidRange(first=2_000_000_000, count=1)).lease()
    lease.release()
    lease.release()
