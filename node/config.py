"""The oracle node's config file: what one node process needs to join its committee.

A node config is a JSON file (the runner writes one per node; an operator can write
their own). It names:

- ``index``: this node's position in the committee (bitmap and leader order);
- ``keystore`` and ``password_file``: the node's BLS key as an EIP-2335 keystore;
- ``identity_key``: a file with the node's Ed25519 identity seed (hex), which is both its
  libp2p identity (unless ``transport_key`` names another, below) and the key its
  observations are signed with;
- ``committee``: f, every member's Ed25519 public key, BLS public key with its proof of
  possession, and libp2p multiaddr (any host: a committee can span machines), the
  leader-selection key. A BLS key whose proof does not verify is refused at load: a
  member could otherwise choose a rogue key that cancels the others' in an aggregate
  (the chain's ``admitKeys`` and the bank refuse such a key too);
- ``timing``: OCR's Delta parameters;
- ``mode``: the settlement mode, and ``targets``: where certified reports go (each EVM
  chain's coordinator with its RPC URL and transmitter key, and the bank's URL and
  client credentials), each with its committee config (chain id / domain, verifier
  address, config count, threshold t);
- ``listen``: the libp2p multiaddr to listen on; ``metrics``: host:port of the
  Prometheus endpoint (127.0.0.1 by default). Every address is one IPv4 interface's
  (127.0.0.1 by default, another machine's for a committee across machines:
  docs/DEPLOY.md), never 0.0.0.0; target URLs may name any host; ``data_dir``: where the safety store and
  the node's trace (``trace.jsonl``, its part of a run's history) live;
  ``trace_messages``: also trace every message sent and received (off by default);
  ``fault_plan``: a file of network-fault windows a run's driver may write, applied to
  every frame this node sends (``node.netfaults``; none by default); ``byzantine``: makes
  this node a Byzantine member for a study (``node.byzantine``: ``behaviours``,
  ``coalition``, ``lie``, ``seed``; none by default);
- twins (``node.twins``), for studies: ``committee.twins`` lists the transport endpoints
  of members that run as two copies (``{"member", "address"}``: the twin copy's multiaddr,
  a peer id of its own), which every node of such a committee needs; ``twin``: true in
  the twin copy's own config, which signs with member ``index``'s keys (``keystore``,
  ``identity_key``) but speaks on the transport with ``transport_key`` (an identity file
  of its own: libp2p cannot hold two peers with one peer id).

Every mistake is one :class:`NodeConfigError` line naming the file, the key and the fix.
This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus import bls
from node.byzantine import BEHAVIOURS, LIES, ByzantineSpec
from node.driver import TARGET_KINDS
from node.modes import MODES

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class NodeConfigError(ValueError):
    """A node config file is invalid; one line: file, key, problem, fix."""


@dataclass(frozen=True)
class Member:
    identity_key: bytes  # Ed25519 public key, 32 B
    bls_public_key: bytes  # 48 B compressed G1
    address: str  # libp2p multiaddr ending in /p2p/<peer id>
    bls_pop: bytes  # 96 B: proof of possession of bls_public_key (verified at load)


@dataclass(frozen=True)
class TwinEntry:
    """The transport endpoint of a member's twin copy (``committee.twins``)."""

    member: int
    address: str  # libp2p multiaddr ending in /p2p/<the twin copy's own peer id>


@dataclass(frozen=True)
class TargetConfig:
    name: str  # consensus target name, e.g. "chain-A" or "bank"
    leg: str  # the leg it carries in the DvP rules: "A", "B" or "bank"
    kind: str  # "evm", "bank" or "file" (dry run, see node.pumps.file)
    chain_id: int  # EVM chain id, or the bank's domain id
    verifier: bytes  # 20 B: coordinator address, or the bank's domain address
    config_count: int
    t: int
    url: str  # RPC URL or bank URL
    transmitter_key: str = ""  # EVM: hex private key of this node's transmitter account
    confirmations: int = 0
    client_id: str = ""  # bank: API client id and secret (HMAC)
    client_secret: str = ""
    webhook_listen: str = ""  # bank: host:port where this node receives callbacks
    currency: str = "USD"  # bank: the currency of the payment leg


@dataclass(frozen=True)
class Timing:
    delta_progress: float = 4.0
    delta_resend: float = 1.0
    delta_round: float = 0.5
    delta_grace: float = 0.05
    delta_stage: float = 1.0
    r_max: int = 20
    max_decisions_per_report: int = 128
    max_observation_bytes: int = 32768


def consensus_parameters(timing: Timing) -> dict[str, Any]:
    """The ConsensusConfig keywords a Timing stands for (both worlds build with these)."""
    return {
        "delta_progress": timing.delta_progress,
        "delta_resend": timing.delta_resend,
        "delta_round": timing.delta_round,
        "delta_grace": timing.delta_grace,
        "delta_stage": timing.delta_stage,
        "r_max": timing.r_max,
        "max_decisions_per_report": timing.max_decisions_per_report,
        "max_observation_bytes": timing.max_observation_bytes,
    }


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    index: int
    mode: str
    keystore: Path
    password_file: Path
    identity_key: Path
    f: int
    members: tuple[Member, ...]
    leader_selection_key: bytes
    targets: tuple[TargetConfig, ...]
    listen: str
    data_dir: Path
    metrics: str = "127.0.0.1:0"
    timing: Timing = field(default_factory=Timing)
    allow_unsafe_threshold: bool = False
    log_level: str = "info"
    trace_messages: bool = False  # also write every message sent and received to the trace
    fault_plan: Path | None = None  # network-fault windows for the frames sent (netfaults)
    byzantine: ByzantineSpec | None = None  # a Byzantine member's behaviours (studies only)
    twins: tuple[TwinEntry, ...] = ()  # endpoints of members' twin copies (node.twins)
    twin: bool = False  # this process is the twin copy of member `index`
    transport_key: Path | None = None  # its own libp2p identity (default: identity_key)

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def endpoint(self) -> int:
        """This process's place among the transport's endpoints (``node.twins``)."""
        if not self.twin:
            return self.index
        return self.n + [t.member for t in self.twins].index(self.index)

    @property
    def member_of(self) -> tuple[int, ...]:
        """The member each transport endpoint serves: the members, then the twin copies."""
        return (*range(self.n), *(t.member for t in self.twins))

    @property
    def endpoint_addresses(self) -> tuple[str, ...]:
        return (*(m.address for m in self.members), *(t.address for t in self.twins))


def _hex(reader: _Reader, key: str, value: Any, length: int) -> bytes:
    if value is None:
        raise reader.fail(key, "missing", f'add it: "0x" and {length} bytes in hex')
    if not isinstance(value, str):
        raise reader.fail(
            key, f"expected a hex string, got {type(value).__name__}", 'write it as "0x..."'
        )
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise reader.fail(key, "not hex", 'write it as "0x..." with hex digits') from None
    if len(raw) != length:
        raise reader.fail(key, f"{len(raw)} bytes, expected {length}", f"give {length} bytes")
    return raw


class _Reader:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path, self.raw = path, raw

    def fail(self, key: str, problem: str, fix: str) -> NodeConfigError:
        return NodeConfigError(f"{self.path}: {key}: {problem}: {fix}")

    def get(
        self,
        obj: dict[str, Any],
        prefix: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        full = f"{prefix}{key}"
        if key not in obj:
            if default is ...:
                raise self.fail(full, "missing", f'add "{key}"')
            return default
        value = obj[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.fail(
                full,
                f"wrong type {type(value).__name__}",
                f"give a {getattr(kind, '__name__', kind)}",
            )
        return value

    def path_of(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.path.parent / p


def load(path: str | Path) -> NodeConfig:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NodeConfigError(
            f"{path}: no such file: give the path of a node config (dvpsim run writes them)"
        ) from None
    except json.JSONDecodeError as exc:
        raise NodeConfigError(
            f"{path}: not valid JSON (line {exc.lineno}): fix the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise NodeConfigError(f"{path}: the file is not a JSON object: write {{...}}")
    return parse(raw, path)


_TOP = {
    "index",
    "mode",
    "keystore",
    "password_file",
    "identity_key",
    "committee",
    "targets",
    "listen",
    "data_dir",
    "metrics",
    "timing",
    "allow_unsafe_threshold",
    "log_level",
    "trace_messages",
    "fault_plan",
    "byzantine",
    "twin",
    "transport_key",
}


def parse(raw: dict[str, Any], path: Path = Path("<node config>")) -> NodeConfig:
    r = _Reader(path, raw)
    for key in raw:
        if key not in _TOP:
            raise r.fail(key, "unknown key", f"remove it or use one of {', '.join(sorted(_TOP))}")
    mode = r.get(raw, "", "mode", str)
    if mode not in MODES:
        raise r.fail("mode", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    committee = r.get(raw, "", "committee", dict)
    f = r.get(committee, "committee.", "f", int)
    members_raw = r.get(committee, "committee.", "members", list)
    members = []
    for i, m in enumerate(members_raw):
        prefix = f"committee.members[{i}]."
        if not isinstance(m, dict):
            raise r.fail(
                prefix[:-1],
                "not an object",
                "give identity_key, bls_public_key, bls_pop and address",
            )
        address = _p2p_address(r, m, prefix, "append the member's peer id")
        bls_public_key = _hex(r, prefix + "bls_public_key", m.get("bls_public_key"), 48)
        bls_pop = _hex(r, prefix + "bls_pop", m.get("bls_pop"), 96)
        if not bls.pop_verify(bls_public_key, bls_pop):
            raise r.fail(
                prefix + "bls_pop",
                "does not prove possession of this member's bls_public_key "
                "(a rogue key, or another key's proof)",
                "give the proof made with this member's BLS secret key (bls.pop_prove)",
            )
        members.append(
            Member(
                _hex(r, prefix + "identity_key", m.get("identity_key"), 32),
                bls_public_key,
                address,
                bls_pop,
            )
        )
    n = len(members)
    if n < 3 * f + 1 or f < 0:
        raise r.fail(
            "committee.f",
            f"f = {f} is too large for n = {n} members (n >= 3f+1)",
            "lower f or add members",
        )
    index = r.get(raw, "", "index", int)
    if not 0 <= index < n:
        raise r.fail(
            "index",
            f"{index} is not a member index (0..{n - 1})",
            "give this node's position in committee.members",
        )
    twins = _twins(r, committee, n)
    twin = r.get(raw, "", "twin", bool, False)
    if twin and index not in {t.member for t in twins}:
        raise r.fail(
            "twin",
            f"this node is the twin copy of member {index} but committee.twins has no "
            f"entry for member {index}",
            f'add {{"member": {index}, "address": ...}} to committee.twins, or drop "twin"',
        )
    if twin and "transport_key" not in raw:
        raise r.fail(
            "transport_key",
            "missing for a twin copy: it needs a transport identity of its own",
            "give the path of an identity file of its own (node.identity)",
        )
    targets = []
    for i, t in enumerate(r.get(raw, "", "targets", list)):
        prefix = f"targets[{i}]."
        if not isinstance(t, dict):
            raise r.fail(prefix[:-1], "not an object", "see docs/INTERFACES.md")
        kind = r.get(t, prefix, "kind", str)
        if kind not in TARGET_KINDS:
            raise r.fail(
                prefix + "kind",
                f"unknown kind {kind!r}",
                "use "
                + ", ".join(f'"{k}"' for k in TARGET_KINDS[:-1])
                + f' or "{TARGET_KINDS[-1]}"',
            )
        target = TargetConfig(
            name=r.get(t, prefix, "name", str),
            leg=r.get(t, prefix, "leg", str),
            kind=kind,
            chain_id=r.get(t, prefix, "chain_id", int),
            verifier=_hex(r, prefix + "verifier", t.get("verifier"), 20),
            config_count=r.get(t, prefix, "config_count", int),
            t=r.get(t, prefix, "t", int),
            url=r.get(t, prefix, "url", str),
            transmitter_key=r.get(t, prefix, "transmitter_key", str, ""),
            confirmations=r.get(t, prefix, "confirmations", int, 0),
            client_id=r.get(t, prefix, "client_id", str, ""),
            client_secret=r.get(t, prefix, "client_secret", str, ""),
            webhook_listen=r.get(t, prefix, "webhook_listen", str, ""),
            currency=r.get(t, prefix, "currency", str, "USD"),
        )
        if kind == "file" and not target.url.startswith("file://"):
            raise r.fail(
                prefix + "url",
                f"{target.url!r} is not a file:// URL",
                "give file:///path/to/facts.json",
            )
        if kind != "file":
            _url(r, prefix + "url", target.url)
        if target.webhook_listen:
            _host_port(r, prefix + "webhook_listen", target.webhook_listen)
        if kind == "evm" and not target.transmitter_key:
            raise r.fail(
                prefix + "transmitter_key",
                "missing for an EVM target",
                "give the transmitter account's private key",
            )
        if kind == "bank" and not (target.client_id and target.client_secret):
            raise r.fail(
                prefix + "client_id",
                "a bank target needs client_id and client_secret",
                "add the bank API credentials",
            )
        targets.append(target)
    legs = set(MODES[mode].targets)
    missing = legs - {t.leg for t in targets}
    if missing:
        raise r.fail(
            "targets",
            f"mode {mode} needs targets for legs {sorted(missing)}",
            'add a target with that "leg"',
        )
    timing_raw = r.get(raw, "", "timing", dict, {})
    timing_kwargs = {}
    for key, default in Timing().__dict__.items():
        timing_kwargs[key] = r.get(timing_raw, "timing.", key, type(default), default)
    unknown_timing = set(timing_raw) - set(timing_kwargs)
    if unknown_timing:
        raise r.fail(
            f"timing.{sorted(unknown_timing)[0]}",
            "unknown key",
            f"use one of {', '.join(timing_kwargs)}",
        )
    return NodeConfig(
        path=path,
        index=index,
        mode=mode,
        keystore=r.path_of(r.get(raw, "", "keystore", str)),
        password_file=r.path_of(r.get(raw, "", "password_file", str)),
        identity_key=r.path_of(r.get(raw, "", "identity_key", str)),
        f=f,
        members=tuple(members),
        leader_selection_key=_hex(
            r, "committee.leader_selection_key", committee.get("leader_selection_key"), 32
        ),
        targets=tuple(targets),
        listen=_listen(r, r.get(raw, "", "listen", str)),
        data_dir=r.path_of(r.get(raw, "", "data_dir", str)),
        metrics=_host_port(r, "metrics", r.get(raw, "", "metrics", str, "127.0.0.1:0")),
        timing=Timing(**timing_kwargs),
        allow_unsafe_threshold=r.get(raw, "", "allow_unsafe_threshold", bool, False),
        log_level=r.get(raw, "", "log_level", str, "info"),
        trace_messages=r.get(raw, "", "trace_messages", bool, False),
        fault_plan=(r.path_of(r.get(raw, "", "fault_plan", str)) if "fault_plan" in raw else None),
        byzantine=_byzantine(r, raw["byzantine"], n) if "byzantine" in raw else None,
        twins=twins,
        twin=twin,
        transport_key=(
            r.path_of(r.get(raw, "", "transport_key", str)) if "transport_key" in raw else None
        ),
    )


def _twins(r: _Reader, committee: dict[str, Any], n: int) -> tuple[TwinEntry, ...]:
    entries: list[TwinEntry] = []
    for i, t in enumerate(r.get(committee, "committee.", "twins", list, [])):
        prefix = f"committee.twins[{i}]."
        if not isinstance(t, dict):
            raise r.fail(prefix[:-1], "not an object", 'give {"member": INDEX, "address": ...}')
        member = r.get(t, prefix, "member", int)
        if not 0 <= member < n or member in {e.member for e in entries}:
            raise r.fail(
                prefix + "member",
                f"{member} is not a member index (0..{n - 1}) or has a twin already",
                "name each member with a twin once",
            )
        address = _p2p_address(r, t, prefix, "append the twin copy's own peer id")
        entries.append(TwinEntry(member, address))
    return tuple(entries)


def _p2p_address(r: _Reader, entry: dict[str, Any], prefix: str, fix: str) -> str:
    """``entry``'s libp2p address, which must end in the peer it names (/p2p/<peer id>)."""
    address: str = r.get(entry, prefix, "address", str)
    if "/p2p/" not in address:
        raise r.fail(prefix + "address", f"{address!r} has no /p2p/<peer id>", fix)
    head, _, peer_id = address.rpartition("/p2p/")
    _ip4_tcp(r, prefix + "address", head, address, lowest_port=1)
    try:
        from multiaddr import Multiaddr

        Multiaddr(address)
    except Exception:  # the library raises several kinds for a malformed peer id
        raise r.fail(
            prefix + "address",
            f"{peer_id!r} is not a libp2p peer id",
            "give the peer id the member's node prints in its ready file (12D3KooW...)",
        ) from None
    return address


def _listen(r: _Reader, value: str) -> str:
    """The libp2p listen address: /ip4/ADDRESS/tcp/PORT (port 0: any free port)."""
    _ip4_tcp(r, "listen", value, value, lowest_port=0)
    return value


def _ip4_tcp(r: _Reader, key: str, head: str, whole: str, *, lowest_port: int) -> None:
    """``head`` must be /ip4/A.B.C.D/tcp/PORT with one interface's address: a node binds
    or dials one address, never every interface (0.0.0.0)."""
    parts = head.split("/")
    example = "/ip4/127.0.0.1/tcp/4001"
    if len(parts) != 5 or parts[0] or parts[1] != "ip4" or parts[3] != "tcp":
        raise r.fail(key, f"{whole!r} is not an /ip4/ADDRESS/tcp/PORT multiaddr", f"e.g. {example}")
    _host(r, key, parts[2], whole)
    _port(r, key, parts[4], whole, lowest_port)


def host_problem(host: str) -> str | None:
    """What is wrong with ``host`` as an address to bind or dial, or None: it must be one
    interface's IPv4 address (127.0.0.1 by default; another machine's for a committee that
    spans machines), never every interface (0.0.0.0), a broadcast or multicast address."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return f"{host!r} is not an IPv4 address"
    if address.is_unspecified or address.is_multicast or address == _BROADCAST:
        return f"{host} is not one interface's address"
    return None


def _host(r: _Reader, key: str, host: str, whole: str) -> None:
    problem = host_problem(host)
    if problem is not None:
        raise r.fail(
            key,
            f"{problem} (in {whole!r})",
            "give the address of one interface, e.g. 127.0.0.1 (the default) or 10.0.0.2",
        )


def _port(r: _Reader, key: str, port: str, whole: str, lowest: int) -> None:
    if not (port.isdigit() and lowest <= int(port) <= 65535):
        raise r.fail(key, f"port {port!r} in {whole!r} is not in {lowest}..65535", "fix the port")


def _host_port(r: _Reader, key: str, value: str) -> str:
    """A listening address as HOST:PORT (IPv4; port 0: any free port)."""
    host, colon, port = value.rpartition(":")
    if not colon:
        raise r.fail(key, f"{value!r} is not HOST:PORT", "give e.g. 127.0.0.1:0")
    _host(r, key, host, value)
    _port(r, key, port, value, 0)
    return value


def _url(r: _Reader, key: str, value: str) -> str:
    """An http(s) URL of a service on any host: scheme, host and a valid port if given."""
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # ValueError if out of range or not a number
    except ValueError:
        raise r.fail(key, f"{value!r} has a bad port", "give http://HOST:PORT") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.fail(key, f"{value!r} is not an http(s) URL", "give http://HOST:PORT")
    if port == 0 or any(c.isspace() for c in value):
        raise r.fail(key, f"{value!r} is not a usable URL", "give http://HOST:PORT")
    return value


def _byzantine(r: _Reader, raw: Any, n: int) -> ByzantineSpec:
    spec = r.get({"byzantine": raw}, "", "byzantine", dict)
    behaviours = r.get(spec, "byzantine.", "behaviours", list)
    unknown = [b for b in behaviours if b not in BEHAVIOURS]
    if not behaviours or unknown:
        raise r.fail(
            "byzantine.behaviours",
            f"unknown behaviour {unknown[0]!r}" if unknown else "no behaviours",
            f"use some of {', '.join(BEHAVIOURS)}",
        )
    coalition = r.get(spec, "byzantine.", "coalition", list)
    if not all(isinstance(i, int) and 0 <= i < n for i in coalition):
        raise r.fail("byzantine.coalition", "not a list of member indexes", f"use 0..{n - 1}")
    lie = r.get(spec, "byzantine.", "lie", str, "claim-payment")
    if lie not in LIES:
        raise r.fail("byzantine.lie", f"unknown lie {lie!r}", f"use one of {', '.join(LIES)}")
    return ByzantineSpec(
        tuple(behaviours), frozenset(coalition), lie, r.get(spec, "byzantine.", "seed", int, 0)
    )
