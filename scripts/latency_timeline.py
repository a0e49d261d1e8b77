"""Print where one settlement's time went, from a run folder's history (real or sim).

    .venv/bin/python scripts/latency_timeline.py RUN_DIR [INDEX]

Times are seconds after the asset lock was seen mined (the `leg` line `ok` of the lock):
the rounds the leaders started, the first certificate of each decision for each target
(as the first member accepted it), the bank's hold and payment (the bank's time), and
the release transmissions of the COMMIT round to the chain (their `invoke` and `ok`).
In a real run the release line itself has the block's whole-second timestamp; the
transmission's `ok` is when the transmitting node had the receipt. INDEX defaults to the
middle settlement that committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def timeline(history: list[dict[str, Any]], index: int) -> list[tuple[float, str]]:
    sid = next(
        r["settlement"] for r in history if r["event"] == "settlement" and r["index"] == index
    )
    lock = next(
        r["t"]
        for r in history
        if r["event"] == "leg" and r.get("settlement") == sid and r["step"] == "lock"
        and r["phase"] == "ok"
    )  # fmt: skip
    events: list[tuple[float, str]] = [(lock, "lock mined")]
    first: dict[tuple[str, str], tuple[float, int]] = {}
    for r in history:
        if r["event"] == "certified":
            for settlement, action in r["decisions"]:
                key = (r["target"], action)
                if settlement == sid and key not in first:
                    first[key] = (r["t"], r["round"])
                    events.append(
                        (r["t"], f"{action} for {r['target']} certified (round {r['round']})")
                    )
        elif r["event"] == "leg" and r.get("settlement") == sid and r["step"] in ("hold", "pay"):
            events.append((r["t"], f"bank {r['step']}"))
    commit = first.get(("chain-A", "COMMIT"))
    end = max(t for t, _ in events) + 0.5
    for r in history:
        if r["event"] == "round" and lock - 0.05 <= r["t"] <= end:
            events.append((r["t"], f"round {r['round']} starts (leader {r['node']})"))
        if (
            commit is not None
            and r["event"] == "transmission"
            and r["target"] == "chain-A"
            and r["round"] == commit[1]
            and r["t"] <= end
        ):
            events.append((r["t"], f"release transmission {r['phase']} (node {r['node']})"))
    return sorted((t - lock, what) for t, what in events)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        print("usage: latency_timeline.py RUN_DIR [INDEX]", file=sys.stderr)
        sys.exit(2)
    path = Path(sys.argv[1]) / "history.jsonl"
    if not path.is_file():
        print(f"{path}: no such file (is {sys.argv[1]} a run folder?)", file=sys.stderr)
        sys.exit(2)
    history = [json.loads(line) for line in path.read_text().splitlines()]
    summary = json.loads((path.parent / "summary.json").read_text())
    committed = set(summary.get("committed_ids", []))
    indexes = [
        r["index"] for r in history if r["event"] == "settlement" and r["settlement"] in committed
    ]
    if not indexes:
        print(f"{sys.argv[1]}: no settlement committed", file=sys.stderr)
        sys.exit(2)
    index = int(sys.argv[2]) if len(sys.argv) == 3 else indexes[len(indexes) // 2]
    print(f"settlement {index}, seconds after its lock was mined:")
    for t, what in timeline(history, index):
        print(f"  {t:+8.3f}  {what}")


if __name__ == "__main__":
    main()
