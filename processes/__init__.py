"""Child processes of dvpsim: start one, stop it by its PID (see ``processes.managed``).

A package of its own at the bottom of the layers: the chain launcher, the bank service,
the node provisioner and the runners all start processes, so the one way to do it must
import none of them. It imports nothing of dvpsim's.
"""

from processes.managed import (
    ManagedProcess,
    ProcessStartError,
    die_with_parent,
    start_process,
    start_python,
    stop_all,
)

__all__ = [
    "ManagedProcess",
    "ProcessStartError",
    "die_with_parent",
    "start_process",
    "start_python",
    "stop_all",
]
