"""Errors of the node's runtime contract (re-exported by ``consensus.protocol``).

Its own module because the native build (``native``) compiles ``consensus.protocol``, and
mypyc cannot compile a subclass of ``RuntimeError``."""

from __future__ import annotations

__all__ = ["LocalProtocolError"]


class LocalProtocolError(RuntimeError):
    """The runtime driving a node broke its contract (not a peer's fault)."""
