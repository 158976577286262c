"""Child process for the SIGKILL durability test: writes audit rows and acknowledges them.

``python -m tests.serving.crash_writer DB_URL PREFIX MODE`` prints ``ok <request id>``
after each committed row (MODE ``commit-then-ack``), or, as the negative control, before
committing it (MODE ``ack-then-commit``: a service that answers before its audit row is
durable). The parent kills it at a random moment and checks every acknowledged row.
"""

from __future__ import annotations

import sys
import time

from serving.audit import AuditRecord, AuditStore


def main() -> None:
    database_url, prefix, mode = sys.argv[1:4]
    store = AuditStore.open(database_url)
    print("ready", flush=True)
    for i in range(1_000_000):
        row = AuditRecord(
            request_id=f"{prefix}-{i}",
            service_id="ncd-cvd-risk",
            card_ids=[f"{prefix}-{i}-card"],
            outcome="advice",
            latency_ms=1.0,
        )
        if mode == "ack-then-commit":
            print(f"ok {row.request_id}", flush=True)
            time.sleep(0.1)  # the window in which an acknowledged row is not yet stored
            store.record(row)
        else:
            store.record(row)
            print(f"ok {row.request_id}", flush=True)


if __name__ == "__main__":
    main()
