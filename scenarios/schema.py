"""Scenario files: their schema, and the one loader that turns a TOML file into a Scenario.

A scenario says everything a run needs: the settlement mode, the committee (n, f,
thresholds), the Delta parameters of the protocol, the chains and the bank (started by
the runner or reached at a URL), the accounts and their balances, the settlements to
drive (how many, amounts, deadlines, arrival rate, which must fail and why), the faults
to inject, and a time limit.

Every mistake in a file is reported as one :class:`ScenarioError` line that names the
file, the key and the fix, for example::

    scenarios/x.toml: committee.f: f = 2 is too large for n = 4 (n >= 3f+1): lower f or raise n

Unknown keys are errors (a misspelt key must not silently fall back to a default).
This module reads files and validates; it never starts anything.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from node.byzantine import BEHAVIOURS, LIES, TWINS, ByzantineSpec
from node.config import Timing  # one definition of the Delta parameters, nodes and scenarios
from node.modes import MODES as MODE_REGISTRY
from node.modes import SCENARIO_MODES
from node.rpcfaults import RPC_LIES
from scenarios.checks import CHECK_NAMES

MODES = SCENARIO_MODES  # the registry: node.modes
FAILURE_REASONS = ("insufficient-funds", "deadline", "payment-delayed")
#: Network faults: they act on the messages between members during their window.
NETWORK_FAULTS = ("partition", "isolate", "drop", "delay", "duplicate", "reorder")
#: Faults of one member's chain endpoint (node.rpcfaults).
ENDPOINT_FAULTS = ("rpc-outage", "lying-rpc")
#: What a [[byzantine]] table may list: the behaviours a node runs (node.byzantine), and
#: "twins", which runs the member as two honest copies (the worlds deploy it).
SCENARIO_BEHAVIOURS = (*BEHAVIOURS, TWINS)
#: A twin copy's name in a network fault: "2b" is the twin of member 2.
_TWIN_LABEL = re.compile(r"^(0|[1-9][0-9]*)b$")
FAULT_KINDS = (
    "kill-node",
    "stop-node",
    "pause-node",
    "unsafe-wipe-restart",
    "reorg",
    "rpc-outage",
    "lying-rpc",
    "clock",
    "bank-outage",
    "bank-latency",
    "bank-error-rate",
    "bank-duplicate-callbacks",
    *NETWORK_FAULTS,
)


#: Faults that act on one member (in an explore budget they count toward faulty members).
MEMBER_FAULTS = (
    "pause-node",
    "kill-node",
    "stop-node",
    "unsafe-wipe-restart",
    "rpc-outage",
    "lying-rpc",
    "clock",
)
BANK_FAULTS = ("bank-outage", "bank-latency", "bank-error-rate", "bank-duplicate-callbacks")
#: What an explore budget draws when its scenario names no kinds: faults that heal, on the
#: network and on members' processes and endpoints.
DEFAULT_DRAWN = (*NETWORK_FAULTS, "pause-node", "kill-node", "rpc-outage", "lying-rpc", "clock")


class ScenarioError(ValueError):
    """A scenario file is invalid; ``str(e)`` is one line: file, key, problem, fix."""


@dataclass(frozen=True)
class Committee:
    n: int = 4
    f: int = 1
    threshold: int = 0  # 0 means the safe default floor((n+f)/2)+1
    unsafe_allow_low_threshold: bool = False

    @property
    def t(self) -> int:
        return self.threshold or (self.n + self.f) // 2 + 1


@dataclass(frozen=True)
class Chain:
    name: str
    chain_id: int
    rpc_url: str = ""  # empty: the runner starts an anvil chain
    block_time: float = 0.0  # 0: mine on every transaction
    confirmations: int = 0
    admission_floor: int = 0  # the coordinator's admissionFloor; 0: no admission


@dataclass(frozen=True)
class Bank:
    start: bool = True
    url: str = ""
    currency: str = "USD"


@dataclass(frozen=True)
class Account:
    name: str
    asset: int = 0  # asset tokens on the asset chain
    payment: int = 0  # payment tokens (on-chain payment modes)
    bank_balance: int = 0  # minor units at the bank


@dataclass(frozen=True)
class Failure:
    count: int
    reason: str


@dataclass(frozen=True)
class Settlements:
    count: int = 10
    asset_amount: int = 10
    payment_amount: int = 1000
    deadline: float = 60.0  # seconds after creation
    # Settlements meant to fail by a missing counterparty or missing funds on chain get this
    # shorter deadline, so a run does not wait the healthy deadline for them.
    missed_deadline: float = 4.0
    arrival_rate: float = 10.0  # settlements per second
    seller: str = "seller"
    buyer: str = "buyer"
    fail: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class Fault:
    """One ``[[faults]]`` entry: ``kind`` from ``at`` (seconds after the drive began) for
    ``duration`` seconds. Node faults name a ``node``; bank faults a ``value``. Network
    faults (``NETWORK_FAULTS``) must heal (a positive ``duration``). ``pause-node`` freezes
    ``node`` for ``duration`` (SIGSTOP and SIGCONT in a real run); ``unsafe-wipe-restart``
    kills it and restarts it after ``duration`` with its safety store wiped (unsafe: it
    forgets what it signed). ``reorg`` replaces the newest ``value`` blocks of chain ``leg``
    (default "A") at once, their transactions gone (anvil's own ``anvil_reorg`` in a real
    run). ``rpc-outage`` makes ``node``'s chain endpoint answer nothing for ``duration``;
    ``lying-rpc`` makes it tell ``lie`` (``fake-locks``, ``hide-locks``) for ``duration``
    (0: to the end). ``clock`` makes ``node``'s own clock jump ``value`` seconds ahead
    and run ``1 + drift`` times as fast for ``duration`` (0: to the end), keeping what it
    gained (``node.clockfaults``). Network faults:

    - ``partition``: messages between the members in ``side`` and the others are lost;
      with ``one_way = true`` only those sent from ``side``;
    - ``isolate``: the same, with ``node`` alone on its side;
    - ``drop``, ``duplicate``, ``reorder``: each message on the chosen links is lost, sent
      twice, or held back up to 200 ms (behind later ones) with probability ``value``;
    - ``delay``: each message on the chosen links takes ``value`` ms more, plus up to
      ``jitter`` ms.

    The chosen links run from the members in ``from`` to those in ``to`` (TOML keys; an
    empty or missing list means every member, twin copies included).

    Network faults may name the twin copy of a member that runs as twins (``[[byzantine]]``
    with ``"twins"``) as the string ``"2b"`` (member 2's twin) in ``side``, ``from``,
    ``to`` and an ``isolate``'s ``node``; a plain index names the member's first copy.
    Every other fault acts on the first copy."""

    kind: str
    at: float
    node: int | str = -1  # a str only in an isolate: a twin copy ("2b")
    duration: float = 0.0
    value: float = 0.0
    jitter: float = 0.0
    side: tuple[int | str, ...] = ()  # member indexes, and twin copies as "2b"
    one_way: bool = False
    from_nodes: tuple[int | str, ...] = ()  # TOML "from"
    to_nodes: tuple[int | str, ...] = ()  # TOML "to"
    leg: str = ""  # reorg: the chain leg ("A", "B")
    lie: str = ""  # lying-rpc: what the endpoint tells (node.rpcfaults.RPC_LIES)
    drift: float = 0.0  # clock: how much faster (> 0) or slower (< 0) the node's clock runs


@dataclass(frozen=True)
class Byzantine:
    """One ``[[byzantine]]`` table: ``nodes`` run the honest node wrapped by
    ``behaviours`` (``node.byzantine``), telling ``lie`` where a behaviour lies; the nodes
    of one table form a coalition that follows one plan. ``"twins"`` among the behaviours
    runs each of ``nodes`` as two copies with the member's keys and separate safety stores
    (the other behaviours, if any, wrap both copies; alone, both copies are honest)."""

    nodes: tuple[int, ...]
    behaviours: tuple[str, ...]
    lie: str = "claim-payment"
    # The (one) member publishes a rogue BLS key with a forged proof of possession
    # (consensus.devkeys.rogue_public_key): every committee check must refuse the run.
    rogue_key: bool = False


@dataclass(frozen=True)
class Budget:
    """``[explore]``: what ``dvpsim explore`` may draw into a schedule of this scenario
    (``scenarios.schedules``); runs of the scenario itself ignore it.

    - ``faults``: at most this many faults, of ``kinds`` (any of ``FAULT_KINDS``);
    - ``byzantine``: at most this many Byzantine members (-1: the committee's f), one
      coalition with one or two of ``behaviours``;
    - ``window``: faults begin within this many seconds after the drive began;
    - ``max_duration``: a fault lasts at most this many seconds;
    - ``reorg_depth``: a drawn reorg replaces at most this many blocks.
    """

    faults: int = 2
    kinds: tuple[str, ...] = DEFAULT_DRAWN
    byzantine: int = -1
    behaviours: tuple[str, ...] = SCENARIO_BEHAVIOURS
    window: float = 6.0
    max_duration: float = 3.0
    reorg_depth: int = 3

    def members(self, f: int) -> int:
        """How many Byzantine members a schedule may have."""
        return f if self.byzantine < 0 else self.byzantine


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    mode: str
    time_limit: float
    seed: int
    unsafe_self_refund: bool
    committee: Committee
    timing: Timing
    chains: tuple[Chain, ...]
    bank: Bank | None
    accounts: tuple[Account, ...]
    settlements: Settlements
    faults: tuple[Fault, ...] = field(default=())
    # The checks the run must fail, every other check passing; () is expect = "pass".
    expect: tuple[str, ...] = ()
    byzantine: tuple[Byzantine, ...] = ()
    explore: Budget = Budget()

    def honest_members(self) -> set[int]:
        """Members that are neither Byzantine nor twins (a twinned member counts toward f)."""
        return set(range(self.committee.n)) - {i for g in self.byzantine for i in g.nodes}

    def byzantine_spec(self, index: int) -> ByzantineSpec | None:
        """Member ``index``'s Byzantine behaviours, or None when it runs the honest node
        (an honest member, or a twin with no other behaviour)."""
        for group in self.byzantine:
            if index in group.nodes:
                behaviours = tuple(b for b in group.behaviours if b != TWINS)
                if not behaviours:
                    return None
                return ByzantineSpec(behaviours, frozenset(group.nodes), group.lie, self.seed)
        return None

    def rogue_member(self) -> tuple[int, str] | None:
        """The member that publishes a rogue BLS key, and the scenario key that says so."""
        for k, group in enumerate(self.byzantine):
            if group.rogue_key:
                return group.nodes[0], f"byzantine[{k}].rogue_key"
        return None

    def twins(self) -> tuple[int, ...]:
        """The members that run as twins, in index order: the twin copy of the j-th is
        the network's endpoint n + j (a member's first copy is endpoint = its index)."""
        return tuple(sorted(i for g in self.byzantine if TWINS in g.behaviours for i in g.nodes))

    @property
    def endpoints(self) -> int:
        """How many copies of members the network carries messages between."""
        return self.committee.n + len(self.twins())

    def endpoint(self, label: int | str) -> int:
        """The endpoint a fault's node label names: a member index (its first copy) or a
        twin copy ("2b")."""
        if isinstance(label, int):
            return label
        return self.committee.n + self.twins().index(twin_member(label))

    def endpoint_label(self, endpoint: int) -> int | str:
        """The label of an endpoint (``endpoint``'s inverse): an index or "2b"."""
        n = self.committee.n
        return endpoint if endpoint < n else f"{self.twins()[endpoint - n]}b"

    def uses_bank(self) -> bool:
        return MODE_REGISTRY[self.mode].uses_bank and self.bank is not None


def twin_member(label: str) -> int:
    """The member a twin copy's label ("2b") belongs to."""
    match = _TWIN_LABEL.match(label)
    if match is None:
        raise ValueError(f'{label!r} is not a twin copy\'s name (e.g. "2b")')
    return int(match.group(1))


_TOP_KEYS = {
    "name": str,
    "mode": str,
    "time_limit": float,
    "seed": int,
    "unsafe_self_refund": bool,
    "committee": dict,
    "timing": dict,
    "chains": list,
    "bank": dict,
    "accounts": list,
    "settlements": dict,
    "faults": list,
    "byzantine": list,
    "explore": dict,
    "expect": object,  # "pass" or a list of check names: read by _expect
}


def _type_name(kind: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }[kind]


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str, fix: str) -> ScenarioError:
        return ScenarioError(f"{self.path}: {key}: {problem}: {fix}")

    def value(self, key: str, raw: Any, kind: type) -> Any:
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            raw = float(raw)
        if kind is not bool and isinstance(raw, bool) or not isinstance(raw, kind):
            raise self.fail(
                key,
                f"expected {_type_name(kind)}, got {type(raw).__name__} {raw!r}",
                f"write {key} as {_type_name(kind)}",
            )
        if isinstance(raw, float) and not math.isfinite(raw):
            raise self.fail(key, f"{raw} is not a finite number", "give a finite number")
        return raw

    def table(self, prefix: str, raw: Any, cls: type, required: tuple[str, ...] = ()) -> Any:
        raw = self.value(prefix, raw, dict)
        aliases = _TOML_KEYS.get(cls, {})
        known = {aliases.get(f.name, f.name): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, item in raw.items():
            spec = known.get(key)
            if spec is None or key == "fail":
                if key == "fail" and cls is Settlements:
                    continue
                raise self.fail(
                    f"{prefix}.{key}",
                    "unknown key",
                    f"remove it or use one of {', '.join(sorted(k for k in known if k != 'fail'))}",
                )
            if str(spec.type) == "tuple[int, ...]":
                kwargs[spec.name] = self.nodes(f"{prefix}.{key}", item)
                continue
            if str(spec.type) == "tuple[int | str, ...]":
                kwargs[spec.name] = self.copies(f"{prefix}.{key}", item)
                continue
            if str(spec.type) == "int | str":
                kwargs[spec.name] = self.copy(f"{prefix}.{key}", item)
                continue
            if str(spec.type) == "tuple[str, ...]":
                kwargs[spec.name] = self.names(f"{prefix}.{key}", item)
                continue
            kind = {"int": int, "float": float, "str": str, "bool": bool}[str(spec.type)]
            kwargs[spec.name] = self.value(f"{prefix}.{key}", item, kind)
        for key in required:
            if key not in kwargs:
                raise self.fail(
                    f"{prefix}.{key}", "missing", f"add {key} = ... to [{prefix.split('[')[0]}]"
                )
        return cls(**kwargs)

    def nodes(self, key: str, raw: Any) -> tuple[int, ...]:
        """A list of member indexes (each once)."""
        items = self.value(key, raw, list)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise self.fail(
                    key, f"{item!r} is not a member index", "list integers, e.g. [0, 1]"
                )
        if len(set(items)) != len(items):
            raise self.fail(key, "a member is listed twice", "list each member once")
        return tuple(items)

    def copy(self, key: str, raw: Any) -> int | str:
        """A member index, or a twin copy's name ("2b")."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _TWIN_LABEL.match(raw):
            return raw
        raise self.fail(
            key,
            f"{raw!r} is neither a member index nor a twin copy",
            'give an integer, or "2b" for the twin copy of member 2',
        )

    def copies(self, key: str, raw: Any) -> tuple[int | str, ...]:
        """A list of member indexes and twin copies ("2b"), each once."""
        items = self.value(key, raw, list)
        for item in items:
            if isinstance(item, bool) or not (
                isinstance(item, int) or isinstance(item, str) and _TWIN_LABEL.match(item)
            ):
                raise self.fail(
                    key,
                    f"{item!r} is neither a member index nor a twin copy",
                    'list integers, and "2b" for the twin copy of member 2, e.g. [0, 1, "2b"]',
                )
        if len(set(items)) != len(items):
            raise self.fail(key, "a member is listed twice", "list each member once")
        return tuple(items)

    def names(self, key: str, raw: Any) -> tuple[str, ...]:
        """A list of names (each once)."""
        items = self.value(key, raw, list)
        for item in items:
            if not isinstance(item, str):
                raise self.fail(key, f"{item!r} is not a name", 'list strings, e.g. ["silent"]')
        if len(set(items)) != len(items):
            raise self.fail(key, "a name is listed twice", "list each once")
        return tuple(items)


#: Dataclass fields whose TOML key is another word ("from" is a Python keyword).
_TOML_KEYS: dict[type, dict[str, str]] = {Fault: {"from_nodes": "from", "to_nodes": "to"}}


def read_toml(
    path: Path, noun: str, hint: str = "", error: Callable[[str], Exception] = ScenarioError
) -> dict[str, Any]:
    """The top table of the TOML file at ``path``, which should hold a ``noun`` ("scenario",
    "grid", "hosts file"); ``error`` with one line (file, problem, fix) when it is missing,
    a folder, unreadable, not UTF-8 or not TOML. ``hint`` follows the fix for a missing
    file ("see scenarios/")."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        where = f" ({hint})" if hint else ""
        raise error(f"{path}: no such file: give the path of a {noun}{where}") from None
    except IsADirectoryError:
        raise error(
            f"{path}: a folder, not a {noun}: give the path of a .toml file in it"
        ) from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (byte {exc.start}): save the {noun} as UTF-8 TOML"
        ) from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror}): check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc}): fix the syntax at that line") from None


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises :class:`ScenarioError` (one line)."""
    path = Path(path)
    return parse(read_toml(path, "scenario", "see scenarios/"), path)


def parse(raw: dict[str, Any], path: Path = Path("<scenario>")) -> Scenario:
    reader = _Reader(path)
    for key, item in raw.items():
        if key not in _TOP_KEYS:
            raise reader.fail(
                key, "unknown key", f"remove it or use one of {', '.join(sorted(_TOP_KEYS))}"
            )
        if _TOP_KEYS[key] is not object:
            reader.value(key, item, _TOP_KEYS[key])
    for key in ("name", "mode"):
        if key not in raw:
            raise reader.fail(key, "missing", f'add {key} = "..." at the top of the file')
    mode = raw["mode"]
    if mode not in MODES:
        raise reader.fail("mode", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")

    committee: Committee = reader.table("committee", raw.get("committee", {}), Committee)
    _check_committee(reader, committee)
    timing: Timing = reader.table("timing", raw.get("timing", {}), Timing)
    _check_timing(reader, timing)

    chains = tuple(
        reader.table(f"chains[{i}]", item, Chain, ("name", "chain_id"))
        for i, item in enumerate(raw.get("chains", []))
    )
    needed = len(MODE_REGISTRY[mode].chains)
    if len(chains) < needed:
        raise reader.fail(
            "chains",
            f"mode {mode} needs {needed} chain(s), the file has {len(chains)}",
            "add [[chains]] tables with name and chain_id",
        )
    names = [c.name for c in chains]
    if len(set(names)) != len(names) or len({c.chain_id for c in chains}) != len(chains):
        raise reader.fail(
            "chains",
            "chain names and chain ids must be unique",
            "give each [[chains]] its own name and chain_id",
        )
    for i, chain in enumerate(chains):
        if chain.chain_id <= 0:
            raise reader.fail(
                f"chains[{i}].chain_id",
                f"{chain.chain_id} is not a valid chain id",
                "use a positive integer",
            )
        if chain.admission_floor < 0:
            raise reader.fail(
                f"chains[{i}].admission_floor",
                f"{chain.admission_floor} is negative",
                "use 0 (no admission) or the number of open settlements admitted without a check",
            )
        if chain.rpc_url and not chain.rpc_url.startswith(("http://", "https://")):
            raise reader.fail(
                f"chains[{i}].rpc_url",
                f"{chain.rpc_url!r} is not an http(s) URL",
                "give http://HOST:PORT or leave it out to start a chain",
            )

    bank = reader.table("bank", raw["bank"], Bank) if "bank" in raw else None
    if MODE_REGISTRY[mode].uses_bank and bank is None:
        raise reader.fail(
            "bank",
            f"mode {mode} pays through the bank but there is no [bank] table",
            "add [bank] (start = true)",
        )
    if bank is not None and not bank.start and not bank.url:
        raise reader.fail(
            "bank.url",
            "the bank is not started by the runner and has no URL",
            'set start = true or url = "http://127.0.0.1:PORT"',
        )

    accounts = tuple(
        reader.table(f"accounts[{i}]", item, Account, ("name",))
        for i, item in enumerate(raw.get("accounts", []))
    )
    for i, account in enumerate(accounts):
        for key in ("asset", "payment", "bank_balance"):
            if getattr(account, key) < 0:
                raise reader.fail(f"accounts[{i}].{key}", "negative balance", "use 0 or more")

    raw_settlements = raw.get("settlements", {})
    settlements: Settlements = reader.table("settlements", raw_settlements, Settlements)
    failures = []
    for i, item in enumerate(
        reader.value("settlements.fail", raw_settlements.get("fail", []), list)
    ):
        failure: Failure = reader.table(
            f"settlements.fail[{i}]", item, Failure, ("count", "reason")
        )
        if failure.reason not in FAILURE_REASONS:
            raise reader.fail(
                f"settlements.fail[{i}].reason",
                f"unknown reason {failure.reason!r}",
                f"use one of {', '.join(FAILURE_REASONS)}",
            )
        failures.append(failure)
    settlements = Settlements(**{**settlements.__dict__, "fail": tuple(failures)})
    _check_settlements(reader, settlements, accounts)

    byzantine = _byzantine(reader, raw.get("byzantine", []), committee.n)
    twins = tuple(sorted(i for g in byzantine if TWINS in g.behaviours for i in g.nodes))
    faults = tuple(
        reader.table(f"faults[{i}]", item, Fault, ("kind", "at"))
        for i, item in enumerate(raw.get("faults", []))
    )
    for i, fault in enumerate(faults):
        _check_fault(reader, f"faults[{i}]", fault, committee.n, MODE_REGISTRY[mode].chains, twins)
    _check_windows(reader, faults, committee.n, twins)

    time_limit = reader.value("time_limit", raw.get("time_limit", 120.0), float)
    if time_limit <= 0:
        raise reader.fail(
            "time_limit", "must be positive", "give the run's limit in seconds, e.g. 120"
        )
    explore: Budget = reader.table("explore", raw.get("explore", {}), Budget)
    _check_budget(reader, explore, committee)
    return Scenario(
        path=path,
        name=raw["name"],
        mode=mode,
        time_limit=time_limit,
        seed=reader.value("seed", raw.get("seed", 1), int),
        unsafe_self_refund=raw.get("unsafe_self_refund", False),
        committee=committee,
        timing=timing,
        chains=chains,
        bank=bank,
        accounts=accounts,
        settlements=settlements,
        faults=faults,
        expect=_expect(reader, raw.get("expect", "pass")),
        byzantine=byzantine,
        explore=explore,
    )


def check_faults(scenario: Scenario) -> None:
    """The schema's rules for a scenario's faults (each one, and their windows), for
    scenarios built in code; ScenarioError (one line) on the first broken rule."""
    reader = _Reader(scenario.path)
    twins = scenario.twins()
    chains = MODE_REGISTRY[scenario.mode].chains
    for i, fault in enumerate(scenario.faults):
        _check_fault(reader, f"faults[{i}]", fault, scenario.committee.n, chains, twins)
    _check_windows(reader, scenario.faults, scenario.committee.n, twins)


def _check_budget(reader: _Reader, budget: Budget, committee: Committee) -> None:
    for key, names, known, what in (
        ("kinds", budget.kinds, FAULT_KINDS, "fault"),
        ("behaviours", budget.behaviours, SCENARIO_BEHAVIOURS, "behaviour"),
    ):
        for name in names:
            if name not in known:
                raise reader.fail(
                    f"explore.{key}", f"unknown {what} {name!r}", f"use some of {', '.join(known)}"
                )
    if budget.faults < 0 or budget.reorg_depth < 1:
        raise reader.fail(
            "explore", "faults must be >= 0 and reorg_depth >= 1", "give e.g. faults = 2"
        )
    if not -1 <= budget.byzantine <= committee.n:
        raise reader.fail(
            "explore.byzantine",
            f"{budget.byzantine} Byzantine members in a committee of {committee.n}",
            f"give 0..{committee.n}, or -1 for f",
        )
    if budget.window < 0 or budget.max_duration < 0.25:
        raise reader.fail(
            "explore", "window must be >= 0 s and max_duration >= 0.25 s", "give seconds"
        )


def _byzantine(reader: _Reader, raw: list[Any], n: int) -> tuple[Byzantine, ...]:
    groups = tuple(
        reader.table(f"byzantine[{i}]", item, Byzantine, ("nodes", "behaviours"))
        for i, item in enumerate(raw)
    )
    seen: set[int] = set()
    for i, group in enumerate(groups):
        key = f"byzantine[{i}]"
        if not group.nodes:
            raise reader.fail(f"{key}.nodes", "no members", "list the Byzantine members")
        for member in group.nodes:
            if not 0 <= member < n:
                raise reader.fail(
                    f"{key}.nodes",
                    f"node {member} is not in the committee of {n}",
                    f"use 0..{n - 1}",
                )
            if member in seen:
                raise reader.fail(
                    f"{key}.nodes", f"node {member} is in two [[byzantine]] tables", "list it once"
                )
            seen.add(member)
        if not group.behaviours:
            raise reader.fail(
                f"{key}.behaviours",
                "no behaviours",
                f"use some of {', '.join(SCENARIO_BEHAVIOURS)}",
            )
        for name in group.behaviours:
            if name not in SCENARIO_BEHAVIOURS:
                raise reader.fail(
                    f"{key}.behaviours",
                    f"unknown behaviour {name!r}",
                    f"use one of {', '.join(SCENARIO_BEHAVIOURS)}",
                )
        if group.lie not in LIES:
            raise reader.fail(
                f"{key}.lie", f"unknown lie {group.lie!r}", f"use one of {', '.join(LIES)}"
            )
        if group.rogue_key and len(group.nodes) != 1:
            raise reader.fail(
                f"{key}.rogue_key",
                f"{len(group.nodes)} members would publish a rogue key",
                "a rogue key cancels every other member's: give it to one member (nodes = [i])",
            )
    if sum(group.rogue_key for group in groups) > 1:
        raise reader.fail(
            "byzantine", "two tables publish a rogue key", "give rogue_key to one member"
        )
    if len(seen) > n:
        raise reader.fail(
            "byzantine", f"{len(seen)} Byzantine members in a committee of {n}", "list fewer"
        )
    return groups


def _expect(reader: _Reader, raw: Any) -> tuple[str, ...]:
    """``expect``: "pass", or the non-empty list of checks the run must fail."""
    fix = f'write expect = "pass" or a list of checks that must fail, from {", ".join(CHECK_NAMES)}'
    if raw == "pass":
        return ()
    if not isinstance(raw, list) or not raw:
        raise reader.fail("expect", f'{raw!r} is neither "pass" nor a list of checks', fix)
    names: list[str] = []
    for item in raw:
        if item not in CHECK_NAMES:
            raise reader.fail("expect", f"unknown check {item!r}", fix)
        if item in names:
            raise reader.fail("expect", f"check {item!r} is named twice", "name each check once")
        names.append(item)
    return tuple(names)


#: The keys each fault kind may use besides kind, at and duration.
_FAULT_KEYS: dict[str, frozenset[str]] = {
    "kill-node": frozenset({"node"}),
    "stop-node": frozenset({"node"}),
    "pause-node": frozenset({"node"}),
    "unsafe-wipe-restart": frozenset({"node"}),
    "reorg": frozenset({"leg", "value"}),
    "rpc-outage": frozenset({"node"}),
    "lying-rpc": frozenset({"node", "lie"}),
    "clock": frozenset({"node", "value", "drift"}),
    "bank-outage": frozenset(),
    "bank-latency": frozenset({"value"}),
    "bank-error-rate": frozenset({"value"}),
    "bank-duplicate-callbacks": frozenset({"value"}),
    "partition": frozenset({"side", "one_way"}),
    "isolate": frozenset({"node"}),
    "drop": frozenset({"value", "from_nodes", "to_nodes"}),
    "delay": frozenset({"value", "jitter", "from_nodes", "to_nodes"}),
    "duplicate": frozenset({"value", "from_nodes", "to_nodes"}),
    "reorder": frozenset({"value", "from_nodes", "to_nodes"}),
}


def _check_copy(
    reader: _Reader, key: str, label: int | str, n: int, twins: tuple[int, ...]
) -> None:
    """A fault's node label names a member (0..n-1) or the twin copy of a twinned one."""
    member = label if isinstance(label, int) else twin_member(label)
    if not 0 <= member < n:
        raise reader.fail(key, f"node {member} is not in the committee of {n}", f"use 0..{n - 1}")
    if isinstance(label, str) and member not in twins:
        raise reader.fail(
            key,
            f"{label!r} names the twin copy of node {member}, but node {member} has no twin",
            f'declare one ([[byzantine]] nodes = [{member}], behaviours = ["twins"]) '
            f"or name node {member} itself",
        )


def _check_fault(
    reader: _Reader,
    key: str,
    fault: Fault,
    n: int,
    chains: tuple[str, ...],
    twins: tuple[int, ...] = (),
) -> None:
    if fault.kind not in FAULT_KINDS:
        raise reader.fail(
            f"{key}.kind", f"unknown fault {fault.kind!r}", f"use one of {', '.join(FAULT_KINDS)}"
        )
    defaults = Fault(fault.kind, fault.at)
    allowed = _FAULT_KEYS[fault.kind]
    for spec in fields(Fault):
        name = spec.name
        if name in ("kind", "at", "duration") or name in allowed:
            continue
        if getattr(fault, name) != getattr(defaults, name):
            toml = _TOML_KEYS[Fault].get(name, name)
            raise reader.fail(
                f"{key}.{toml}", f"a {fault.kind} fault has no {toml}", "remove the key"
            )
    if fault.at < 0 or fault.duration < 0:
        raise reader.fail(key, "at and duration must not be negative", "give seconds >= 0")
    if "node" in allowed:
        if isinstance(fault.node, str) and fault.kind != "isolate":
            member = twin_member(fault.node)
            raise reader.fail(
                f"{key}.node",
                f"a {fault.kind} fault acts on a member's first copy, not on the twin "
                f"copy {fault.node!r}",
                f"give node = {member}; only network faults (side, from, to, an isolate's "
                "node) can name a twin copy",
            )
        _check_copy(reader, f"{key}.node", fault.node, n, twins)
    for name in ("side", "from_nodes", "to_nodes"):
        for member in getattr(fault, name):
            _check_copy(reader, f"{key}.{_TOML_KEYS[Fault].get(name, name)}", member, n, twins)
    if fault.kind == "reorg":
        if fault.leg and fault.leg not in chains:
            raise reader.fail(
                f"{key}.leg",
                f"{fault.leg!r} is not a chain of this mode",
                f"use one of {', '.join(chains)}",
            )
        if fault.value < 1 or fault.value != int(fault.value) or fault.duration:
            raise reader.fail(
                f"{key}.value",
                "a reorg needs its depth in blocks (a whole number >= 1) and no duration",
                "give e.g. value = 2",
            )
    if fault.kind == "clock" and (fault.value < 0 or fault.drift <= -1):
        raise reader.fail(
            f"{key}.drift",
            "a node's clock must not run backwards: skew (value) >= 0 s, drift > -1",
            "give e.g. value = 2.0, drift = 0.5",
        )
    if fault.kind == "lying-rpc" and fault.lie not in RPC_LIES:
        raise reader.fail(
            f"{key}.lie", f"unknown lie {fault.lie!r}", f"use one of {', '.join(RPC_LIES)}"
        )
    if fault.kind in ("pause-node", "unsafe-wipe-restart", "rpc-outage") and fault.duration <= 0:
        raise reader.fail(
            f"{key}.duration",
            f"a {fault.kind} fault needs its window (the node resumes or restarts after it)",
            "give it in seconds, e.g. duration = 3",
        )
    if fault.kind not in NETWORK_FAULTS:
        return
    if fault.duration <= 0:
        raise reader.fail(
            f"{key}.duration",
            f"a {fault.kind} fault must heal",
            "give its window in seconds, e.g. duration = 5",
        )
    if fault.kind == "partition" and not 0 < len(fault.side) < n + len(twins):
        raise reader.fail(
            f"{key}.side",
            "a partition needs members on both sides",
            f"list some of the members 0..{n - 1}"
            + "".join(f', "{k}b"' for k in twins)
            + ", not none or all",
        )
    if fault.kind in ("drop", "duplicate", "reorder") and not 0 < fault.value <= 1:
        raise reader.fail(
            f"{key}.value", f"{fault.value} is not a probability in (0, 1]", "give e.g. 0.2"
        )
    if fault.kind == "delay" and (fault.value <= 0 or fault.jitter < 0):
        raise reader.fail(
            f"{key}.value",
            "a delay needs value > 0 ms and jitter >= 0 ms",
            "give e.g. value = 100, jitter = 10",
        )


def _window(fault: Fault) -> tuple[float, float]:
    """[begin, end): a stopped node stays down; a fault without a duration never ends."""
    if fault.kind == "stop-node" or fault.duration <= 0:
        return fault.at, math.inf
    return fault.at, fault.at + fault.duration


def _links(fault: Fault, n: int, twins: tuple[int, ...] = ()) -> set[tuple[int | str, int | str]]:
    everyone = (*range(n), *(f"{k}b" for k in twins))
    senders = fault.from_nodes or everyone
    receivers = fault.to_nodes or everyone
    return {(a, b) for a in senders for b in receivers if a != b}


def _check_windows(
    reader: _Reader, faults: tuple[Fault, ...], n: int, twins: tuple[int, ...] = ()
) -> None:
    """Two faults that say different things about one thing at one time: the same node
    stopped or isolated twice, two bank faults of one kind, or two link faults of one
    kind on a shared link, with overlapping windows."""
    for j, later in enumerate(faults):
        for i, earlier in enumerate(faults[:j]):
            (a0, a1), (b0, b1) = _window(earlier), _window(later)
            if not (a0 < b1 and b0 < a1):
                continue
            node_faults = ("kill-node", "stop-node", "pause-node", "unsafe-wipe-restart", "isolate")
            # Faults that say something about one member: same group, same node -> clash.
            groups = (node_faults, ENDPOINT_FAULTS, ("clock",))
            group = next((g for g in groups if earlier.kind in g and later.kind in g), None)
            if group is not None:
                clash = earlier.node == later.node
            elif earlier.kind != later.kind:
                continue
            elif earlier.kind in ("drop", "delay", "duplicate", "reorder"):
                clash = bool(_links(earlier, n, twins) & _links(later, n, twins))
            else:
                clash = earlier.kind.startswith("bank-")
            if clash:
                raise reader.fail(
                    f"faults[{j}]",
                    f"its window overlaps faults[{i}] ({earlier.kind}) on the same "
                    f"{'node' if group is not None else 'target'}",
                    "give them disjoint windows or merge them into one fault",
                )


def _check_committee(reader: _Reader, c: Committee) -> None:
    if c.f < 0:
        raise reader.fail("committee.f", f"f = {c.f} is negative", "use f >= 0")
    if c.n < 1 or c.n > 256:
        raise reader.fail(
            "committee.n", f"n = {c.n} is outside 1..256", "use a committee of 1 to 256 nodes"
        )
    if c.n < 3 * c.f + 1:
        raise reader.fail(
            "committee.f", f"f = {c.f} is too large for n = {c.n} (n >= 3f+1)", "lower f or raise n"
        )
    safe = (c.n + c.f) // 2 + 1
    if c.threshold and not c.f + 1 <= c.threshold <= c.n:
        raise reader.fail(
            "committee.threshold",
            f"t = {c.threshold} is outside f+1..n = {c.f + 1}..{c.n}",
            f"leave it out for the safe default {safe}",
        )
    if c.threshold and c.threshold < safe and not c.unsafe_allow_low_threshold:
        raise reader.fail(
            "committee.threshold",
            f"t = {c.threshold} is below the safe floor((n+f)/2)+1 = {safe}: conflicting certificates become possible",
            "raise it, or set unsafe_allow_low_threshold = true to study the violation",
        )


def _check_timing(reader: _Reader, t: Timing) -> None:
    for name in ("delta_progress", "delta_resend", "delta_round", "delta_stage"):
        if getattr(t, name) <= 0:
            raise reader.fail(f"timing.{name}", "must be positive", "give a duration in seconds")
    if t.delta_grace < 0:
        raise reader.fail(
            "timing.delta_grace", "must not be negative", "give a duration in seconds"
        )
    if t.delta_grace >= t.delta_round:
        raise reader.fail(
            "timing.delta_grace",
            f"{t.delta_grace} s is not below delta_round = {t.delta_round} s",
            "lower delta_grace or raise delta_round",
        )
    if t.delta_round >= t.delta_progress:
        raise reader.fail(
            "timing.delta_round",
            f"{t.delta_round} s is not below delta_progress = {t.delta_progress} s",
            "raise delta_progress",
        )
    if not 1 <= t.r_max <= 254:
        raise reader.fail(
            "timing.r_max", "must be in 1..254", "give the number of rounds per epoch"
        )
    if not 1 <= t.max_decisions_per_report <= 1024:
        raise reader.fail("timing.max_decisions_per_report", "must be in 1..1024", "use e.g. 128")


def _check_settlements(reader: _Reader, s: Settlements, accounts: tuple[Account, ...]) -> None:
    if s.count < 0 or s.count > 100_000:
        raise reader.fail(
            "settlements.count", f"{s.count} is outside 0..100000", "give a smaller count"
        )
    for key in ("asset_amount", "payment_amount"):
        if not 0 < getattr(s, key) < 2**128:
            raise reader.fail(
                f"settlements.{key}",
                f"{getattr(s, key)} is not a positive amount below 2^128",
                "give a positive integer in the token's smallest unit",
            )
    if s.deadline <= 0:
        raise reader.fail(
            "settlements.deadline", "must be positive", "give the seconds from creation to deadline"
        )
    if s.missed_deadline <= 0:
        raise reader.fail(
            "settlements.missed_deadline",
            "must be positive",
            "give the seconds from creation to deadline",
        )
    if s.arrival_rate <= 0:
        raise reader.fail(
            "settlements.arrival_rate", "must be positive", "give settlements per second"
        )
    if sum(f.count for f in s.fail) > s.count:
        raise reader.fail(
            "settlements.fail",
            f"{sum(f.count for f in s.fail)} failing settlements but count = {s.count}",
            "lower the fail counts or raise count",
        )
    names = {a.name for a in accounts}
    for role in ("seller", "buyer"):
        if getattr(s, role) not in names:
            raise reader.fail(
                f"settlements.{role}",
                f"account {getattr(s, role)!r} is not defined",
                "add it under [[accounts]]",
            )


#: One line per scenario key, for the scenario reference (docs/SCENARIOS.md, generated by
#: ``python -m scenarios.reference_doc``). Keys are dotted TOML paths; an array of tables
#: is named without an index ("chains.block_time"). A key the schema reads must be here,
#: and a key here must be one the schema reads (tests/scenarios/test_reference_doc.py).
KEY_DOCS: dict[str, str] = {
    "name": "the scenario's name, used in run folder names and reports",
    "mode": "the settlement mode: which legs live on chains and which at the bank (node.modes)",
    "time_limit": "seconds the run may take before it stops and judges what it has",
    "seed": "the seed of every random choice (workload, faults, simulated network), so a run replays",
    "unsafe_self_refund": "deploy the known-unsafe escrow that refunds itself at its deadline (to show atomicity fail)",
    "expect": 'what the run must show: "pass" (every check valid), or the checks that must fail, every other one passing',
    "committee": "the oracle committee",
    "committee.n": "number of oracle nodes (1..256)",
    "committee.f": "Byzantine nodes tolerated; n >= 3f+1",
    "committee.threshold": "signatures a certificate needs (f+1..n); 0: the safe floor((n+f)/2)+1",
    "committee.unsafe_allow_low_threshold": "allow a threshold below the safe floor, to study conflicting certificates",
    "timing": "the Delta parameters of the consensus protocol, in seconds",
    "timing.delta_progress": "how long a node waits for a certified round before it moves to a new epoch (leader)",
    "timing.delta_resend": "how often a node resends its epoch change while a new epoch is pending",
    "timing.delta_round": "the time between two rounds of one leader; below delta_progress",
    "timing.delta_grace": "how long a leader waits for more observations after the first quorum; below delta_round",
    "timing.delta_stage": "the time between two stages of the transmission schedule (who sends a report on chain)",
    "timing.r_max": "rounds per epoch before the leader changes (1..254)",
    "timing.max_decisions_per_report": "settlement decisions one report may carry (1..1024)",
    "timing.max_observation_bytes": "the largest observation a node sends for one round, in bytes",
    "chains": "the EVM chains: the asset chain first (leg A), then the payment chain (leg B) if the mode has one",
    "chains.name": "the chain's name, unique in the scenario",
    "chains.chain_id": "the chain id (a positive integer, unique in the scenario)",
    "chains.rpc_url": "an http(s) RPC URL of a running chain; empty: the runner starts an anvil chain",
    "chains.block_time": "seconds between blocks; 0: a block for every transaction",
    "chains.confirmations": "blocks a watcher waits on top of an event before it acts on it",
    "chains.admission_floor": (
        "0: the coordinator admits every settlement; N > 0: once N settlements are open, it "
        "refuses a new one (SettlementRefused, nothing locked) unless the committee's pace "
        "over the last 10 s of block time ends the open ones within half the time the new "
        "one has before its deadline (docs/ARCHITECTURE.md)"
    ),
    "bank": "the bank payment service; absent: no bank (modes that pay through the bank need it)",
    "bank.start": "the runner starts the bank; false: reach it at url",
    "bank.url": "the URL of a bank the runner does not start",
    "bank.currency": "the bank's currency code",
    "accounts": "the parties and their starting balances",
    "accounts.name": "the account's name (settlements.seller and settlements.buyer name one)",
    "accounts.asset": "asset tokens on the asset chain",
    "accounts.payment": "payment tokens (on-chain payment modes)",
    "accounts.bank_balance": "money at the bank, in minor units",
    "settlements": "the workload: the settlements the run drives",
    "settlements.count": "settlements to create (0..100000), the failing ones included",
    "settlements.asset_amount": "asset tokens each settlement delivers",
    "settlements.payment_amount": "what each settlement pays, in the payment leg's smallest unit",
    "settlements.deadline": "seconds from a settlement's creation to its deadline",
    "settlements.missed_deadline": "the shorter deadline of settlements meant to fail on chain, so the run need not wait the healthy one",
    "settlements.arrival_rate": "settlements created per second",
    "settlements.seller": "the account that delivers the asset",
    "settlements.buyer": "the account that pays",
    "settlements.fail": "settlements meant to fail, and why (at most count in all)",
    "settlements.fail.count": "how many settlements fail for this reason",
    "settlements.fail.reason": "why they fail",
    "faults": "faults injected during the drive (the Fault docstring in scenarios/schema.py tells each kind)",
    "faults.kind": "what goes wrong",
    "faults.at": "seconds after the drive began when the fault starts",
    "faults.node": 'the member it acts on (an index; an isolate may name a twin copy, "2b"; -1: none)',
    "faults.duration": "seconds the fault lasts; network faults must heal (> 0); 0 for lying-rpc and clock: to the end",
    "faults.value": "the size of the fault: a probability (drop, duplicate, reorder, bank-error-rate, bank-duplicate-callbacks), ms (delay, bank-latency), blocks (reorg), seconds ahead (clock)",
    "faults.jitter": "delay: up to this many ms more per message",
    "faults.side": 'partition: the members on one side (indexes, twin copies as "2b")',
    "faults.one_way": "partition: lose only the messages sent from side",
    "faults.from": "drop, delay, duplicate, reorder: the senders of the links it acts on (empty: every member)",
    "faults.to": "drop, delay, duplicate, reorder: the receivers of the links it acts on (empty: every member)",
    "faults.leg": 'reorg: the chain leg it reorganises ("A" or "B"; empty: "A")',
    "faults.lie": "lying-rpc: what the endpoint tells",
    "faults.drift": "clock: how much faster (> 0) or slower (< 0) the node's clock runs",
    "byzantine": "Byzantine members; the members of one table form one coalition with one plan",
    "byzantine.nodes": "the members that misbehave",
    "byzantine.behaviours": 'what they do (node.byzantine); "twins" runs each as two copies with the same keys',
    "byzantine.lie": 'what a "lie" behaviour claims',
    "byzantine.rogue_key": "the (one) member publishes a rogue BLS key with a forged proof of possession; every committee check must refuse the run",
    "explore": "the budget of `dvpsim explore`: what it may draw into a schedule (runs of the scenario itself ignore it)",
    "explore.faults": "at most this many faults per schedule",
    "explore.kinds": "the fault kinds it may draw",
    "explore.byzantine": "at most this many Byzantine members; -1: the committee's f",
    "explore.behaviours": "the behaviours it may give them (one or two, one coalition)",
    "explore.window": "faults begin within this many seconds after the drive began",
    "explore.max_duration": "a drawn fault lasts at most this many seconds (>= 0.25)",
    "explore.reorg_depth": "a drawn reorg replaces at most this many blocks",
}

#: The values a key may take, where the schema lists them (for the scenario reference).
KEY_VALUES: dict[str, tuple[str, ...]] = {
    "mode": MODES,
    "expect": ("pass", *CHECK_NAMES),
    "settlements.fail.reason": FAILURE_REASONS,
    "faults.kind": FAULT_KINDS,
    "faults.lie": RPC_LIES,
    "faults.leg": ("A", "B"),
    "byzantine.behaviours": SCENARIO_BEHAVIOURS,
    "byzantine.lie": LIES,
    "explore.kinds": FAULT_KINDS,
    "explore.behaviours": SCENARIO_BEHAVIOURS,
}
