"""One oracle node process: `python -m node --config FILE` (or `dvpsim node --config FILE`).

It loads the node config (``node.config``), the BLS keystore and the identity seed,
builds the consensus node, the libp2p transport, the durable safety store and the
targets (chains, bank), serves Prometheus metrics on its config's ``metrics`` address
(127.0.0.1 by default), logs JSON lines with the node id to stderr, and runs until SIGTERM or SIGINT, after which it stops within about a
second: the safety store is already durable (every Persist is fsynced when it happens),
so nothing needs flushing and SIGKILL loses nothing that was promised.
"""

from __future__ import annotations

import argparse
import cProfile
import errno
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

EXIT_CONFIG = 2
PROFILE_ENV = "DVPSIM_PROFILE_DIR"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the node id and any structured fields."""

    def __init__(self, node_index: int) -> None:
        super().__init__()
        self.node_index = node_index

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "node": self.node_index,
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def setup_logging(node_index: int, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_index))
    root = logging.getLogger("dvpsim")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvpsim node", description="Run one dvpsim oracle node until SIGTERM."
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="node config (JSON) written by `dvpsim run` or by hand",
    )
    parser.add_argument(
        "--ready-file",
        metavar="FILE",
        help="write the listen address and metrics port here once running",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from node.assemble import AssemblyError, assemble
    from node.config import NodeConfigError, load

    try:
        config = load(args.config)
    except NodeConfigError as exc:
        print(f"dvpsim node: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.index, config.log_level)
    try:
        parts = assemble(config)
    except AssemblyError as exc:
        print(f"dvpsim node: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    profiler = _profiler()
    try:
        trio.run(_serve, parts, args.ready_file)
    except KeyboardInterrupt:
        pass
    except (OSError, BaseExceptionGroup) as exc:
        failure = _bind_failure(exc)
        if failure is None:
            raise
        print(f"dvpsim node: {config.path}: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        parts.close()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(Path(os.environ[PROFILE_ENV]) / f"node{config.index}.prof")
    return 0


def _profiler() -> cProfile.Profile | None:
    """With ``$DVPSIM_PROFILE_DIR`` set, a CPU profile of the node's whole life (CPU time,
    not wall time), written to ``node{index}.prof`` in that folder when the node stops:
    read it with ``python -m pstats``. Costs about a third more CPU while on."""
    if not os.environ.get(PROFILE_ENV):
        return None
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    return profiler


def _bind_failure(exc: BaseException) -> str | None:
    """The one line for an address the node could not listen on (not this machine's, or
    in use), if that is what ``exc`` holds: a config mistake, not a crash."""
    from node.p2p import P2PListenError

    if isinstance(exc, P2PListenError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
        return f"cannot listen ({exc.strerror}): give an address of this machine and a free port"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _bind_failure(inner)
            if found is not None:
                return found
    return None


async def _serve(parts: Any, ready_file: str | None) -> None:
    log = logging.getLogger("dvpsim.node")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(parts.runtime.run)
            info = {
                "pid": __import__("os").getpid(),
                "peer_id": parts.peer_id,
                "listen": parts.transport.listen_addrs(),
                "metrics_port": parts.metrics_port,
                "started": time.time(),
            }
            log.info("node running", extra={"fields": info})
            if ready_file:
                tmp = Path(ready_file + ".tmp")
                tmp.write_text(json.dumps(info))
                tmp.replace(ready_file)
            async for signum in signals:
                log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    sys.exit(main())
