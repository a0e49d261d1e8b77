"""Build a running node's parts from its config: keys, consensus node, transport, store,
targets and the metrics endpoint. The process entry point (``node.cli``) runs them.

Errors a user can meet here (a wrong password, a key that is not the committee's, an
unreachable chain) come back as one :class:`AssemblyError` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from consensus import keystore
from consensus.config import ConfigError, ConsensusConfig, Target
from consensus.identity import identity_key_from_seed
from consensus.protocol import LocalProtocolError, NodeKeys
from consensus.report import CommitteeConfig, CommitteeConfigError
from node.config import NodeConfig, consensus_parameters
from node.driver import DriverConfig, NodeDriver, TargetSpec
from node.identity import IdentityError, load_identity_file
from node.metrics import serve_metrics
from node.netfaults import FaultyTransport, NodeClock, PlanFile
from node.p2p import P2PConfig, P2PConfigError, P2PTransport
from node.pumps import Pump, TargetError, build_pumps
from node.runtime import NodeRuntime, TraceFile
from node.store import SafetyFile
from node.transport import Transport
from node.twins import MemberTransport


class AssemblyError(Exception):
    """The node cannot start with this config; one line saying why and what to do."""


@dataclass
class Parts:
    runtime: NodeRuntime
    transport: P2PTransport
    store: SafetyFile
    peer_id: str
    metrics_port: int
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def consensus_config(config: NodeConfig) -> ConsensusConfig:
    bls_keys = tuple(m.bls_public_key for m in config.members)
    targets = tuple(
        Target(
            t.name,
            CommitteeConfig(
                chain_id=t.chain_id,
                verifier=t.verifier,
                config_count=t.config_count,
                public_keys=bls_keys,
                f=config.f,
                t=t.t,
            ),
        )
        for t in config.targets
    )
    return ConsensusConfig(
        f=config.f,
        identity_keys=tuple(m.identity_key for m in config.members),
        targets=targets,
        leader_selection_key=config.leader_selection_key,
        allow_unsafe_threshold=config.allow_unsafe_threshold,
        **consensus_parameters(config.timing),
    )


def driver_config(config: NodeConfig) -> DriverConfig:
    """What the node driver needs of a node config (the world-facing parts stay out)."""
    return DriverConfig(
        consensus=consensus_config(config),
        index=config.index,
        mode=config.mode,
        targets=tuple(TargetSpec(t.name, t.leg, t.kind, t.currency) for t in config.targets),
    )


def read_seed(config: NodeConfig) -> bytes:
    try:
        return bytes.fromhex(config.identity_key.read_text().strip())
    except (OSError, ValueError) as exc:
        raise AssemblyError(
            f"{config.identity_key}: cannot read the identity seed ({exc}): check identity_key in {config.path}"
        ) from None


def assemble(config: NodeConfig, pumps: dict[str, Pump] | None = None) -> Parts:
    """All parts of one node. ``pumps`` default to the config's targets."""
    try:
        password = config.password_file.read_text().rstrip("\n")
        bls_secret = keystore.load_bls_key(config.keystore, password)
    except OSError as exc:
        raise AssemblyError(
            f"{config.password_file}: cannot read the keystore password ({exc.strerror}): check password_file in {config.path}"
        ) from None
    except keystore.KeystoreError as exc:
        raise AssemblyError(str(exc)) from None
    try:
        # A twin copy speaks on the transport with an identity of its own (node.twins).
        identity = load_identity_file(config.transport_key or config.identity_key)
    except IdentityError as exc:
        raise AssemblyError(str(exc)) from None
    seed = read_seed(config)
    try:
        driver = NodeDriver(
            driver_config(config),
            NodeKeys(identity_key_from_seed(seed), bls_secret),
            byzantine=config.byzantine,
        )
        # The transport's peers are endpoints: the members, then their twin copies.
        transport = P2PTransport(
            identity,
            config.endpoint,
            list(config.endpoint_addresses),
            P2PConfig(listen_addr=config.listen),
        )
    except (
        ConfigError,
        CommitteeConfigError,
        LocalProtocolError,
        P2PConfigError,
        ValueError,
    ) as exc:
        raise AssemblyError(f"{config.path}: {exc}") from None
    closers: list[Callable[[], None]] = []
    plan = None if config.fault_plan is None else PlanFile(config.fault_plan)
    if pumps is None:
        artifacts = None
        if any(t.kind == "evm" for t in config.targets):
            from chain_adapters.build import CompileError, compile_contracts

            try:
                artifacts = compile_contracts()
            except CompileError as exc:
                raise AssemblyError(f"the contracts do not compile: {exc}") from None
        try:
            pumps = build_pumps(config, artifacts, plan)
        except TargetError as exc:
            raise AssemblyError(str(exc)) from None
    store = SafetyFile(config.data_dir / "safety.sqlite")
    closers.append(store.close)
    sending: Transport = transport
    if plan is not None:
        sending = FaultyTransport(transport, plan)  # faults act per endpoint
    members: MemberTransport | None = None
    if config.twins:
        sending = members = MemberTransport(sending, config.member_of)
    trace = TraceFile(
        config.data_dir / "trace.jsonl",
        config.index,
        config.n,
        messages=config.trace_messages,
        twin=config.twin,
        endpoints=members,
    )
    clock = None if plan is None else NodeClock(plan)
    runtime = NodeRuntime(driver, sending, store, pumps, trace, clock)
    closers.append(runtime.close)
    host, _, port = config.metrics.rpartition(":")
    try:
        metrics_port = serve_metrics(runtime, host or "127.0.0.1", int(port or 0))
    except OSError as exc:
        for close in reversed(closers):
            close()
        raise AssemblyError(
            f"{config.path}: metrics: cannot listen on {config.metrics} ({exc.strerror}): "
            "give an address of this machine and a free port (0: any)"
        ) from None
    return Parts(runtime, transport, store, identity.peer_id_text, metrics_port, closers)
