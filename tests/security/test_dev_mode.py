"""Dev mode and the demo serve unauthenticated (or self-issued) callers: loopback only,
enforced by the service itself, not only by the ``tonle`` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.demo_issuer import ensure_demo_issuer
from tests.serving.service_process import TonleProcess


@pytest.mark.slow
def test_demo_mode_refuses_to_start_on_a_public_address(tmp_path: Path) -> None:
    issuer = tmp_path / "demo-issuer"
    env = {
        "TONLE_DEMO_ISSUER_DIR": str(issuer),
        "TONLE_ALLOWED_ISSUERS": str(ensure_demo_issuer(issuer)),
    }
    service = TonleProcess(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}", env=env, host="0.0.0.0")
    with pytest.raises(RuntimeError, match="did not become ready"):
        service.start(ready_timeout_s=40)
    assert "allowed on a loopback address only" in service.log_tail(20000)
