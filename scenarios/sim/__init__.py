"""The simulated world: every node, the chains and the bank in one process, on a virtual
clock with one seeded random generator, so a seed replays the exact same run.

The nodes are the real node driver (``node.driver``); the chains are the escrow model
(``chain_adapters.model``) with blocks, confirmations and reorgs; the bank is the bank's
own service core (``bank_adapter.service``) on memory storage. Only the world around the
nodes is simulated. Nothing here is ever used by a real-mode run.
"""

from native import extend

__path__ = extend(__path__, __name__)  # compiled modules first, when current (see native)
