"""`dvpsim report RUN_DIR`: one self-contained HTML page that shows what a run did.

A run folder (``dvpsim run`` or ``dvpsim sim``) holds ``history.jsonl`` (``docs/HISTORY.md``)
and ``summary.json``. :func:`read_run` turns them into a :class:`RunView`, plain data
extracted from the history: a lane per node (the rounds it led, the certificates it formed
and accepted, its transmissions, the windows it was down), a lane per settlement leg (its
``leg`` steps), the fault windows, the latency of every committed settlement, the messages
of every round, and the verdicts with what their witnesses name. :func:`render_html` turns
a view into the page (inline CSS, SVG and a few lines of JS; nothing is fetched), and
:func:`write_report` does both. The page is described in ``docs/REPORT.md``.

The page stays light for large runs: a node lane draws each kind of mark as one SVG path
(marks closer than half a pixel merge), the charts aggregate to a few hundred points, and
the leg lanes, a few elements each, let the browser skip laying out those off screen.

This module only reads the run folder and writes the one page it is asked for; it never
judges a run (the verdicts are the run's own, from ``summary.json``).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from node.modes import MODES

__all__ = [
    "FaultWindow",
    "LegLane",
    "LegStep",
    "NodeLane",
    "ReportError",
    "RunView",
    "Span",
    "VerdictView",
    "extract",
    "read_run",
    "render_html",
    "write_report",
]


class ReportError(Exception):
    """A folder that is not a readable run; the message is one line."""


# --- the data ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """An interval on a lane, in run seconds; ``label`` says what it was."""

    start: float
    end: float
    label: str


@dataclass(frozen=True, slots=True)
class NodeLane:
    """One node process (a member, or a member's twin copy, named like ``2b``)."""

    node: str
    rounds: tuple[float, ...]  # rounds it started as leader
    certificates: tuple[float, ...]  # certificates it formed as leader
    accepted: tuple[float, ...]  # certificates it accepted
    transmissions_ok: tuple[Span, ...]
    transmissions_failed: tuple[Span, ...]
    transmissions_open: tuple[Span, ...]  # never answered before the run ended
    down: tuple[Span, ...]  # stopped or killed until restarted (or the run's end)
    byzantine: str = ""  # its behaviours, when it is Byzantine


@dataclass(frozen=True, slots=True)
class LegStep:
    t: float
    step: str  # create, lock, hold, pay, release, refund, ...
    phase: str  # invoke, ok, fail
    detail: str = ""  # the revert on a fail


@dataclass(frozen=True, slots=True)
class LegLane:
    """One leg ("A", "B", "bank") of one settlement, with every ``leg`` line about it."""

    settlement: str
    leg: str
    index: int | None  # the settlement's place in the workload
    fail: str  # "" or the reason it was meant to fail
    steps: tuple[LegStep, ...]

    @property
    def outcome(self) -> str:
        """The last step that succeeded (``release``, ``refund``, ``pay``, ...), or
        ``none``."""
        done = [s.step for s in self.steps if s.phase == "ok"]
        return done[-1] if done else "none"


@dataclass(frozen=True, slots=True)
class FaultWindow:
    kind: str
    start: float
    end: float
    subject: str  # which node, link or leg, and the value
    run_end: bool = False  # still in force when the run ended


@dataclass(frozen=True, slots=True)
class VerdictView:
    """A check's verdict and what its witness names: settlements (full ids of the legs
    the witness's id prefixes match), nodes and times (run seconds)."""

    check: str
    status: str  # valid | invalid | unknown
    witness: str
    settlements: tuple[str, ...]
    nodes: tuple[str, ...]
    times: tuple[float, ...]


@dataclass(frozen=True)
class RunView:
    run: Mapping[str, Any]  # the history's "run" line
    summary: Mapping[str, Any]
    start: float
    end: float
    nodes: tuple[NodeLane, ...]
    legs: tuple[LegLane, ...]
    faults: tuple[FaultWindow, ...]
    verdicts: tuple[VerdictView, ...]
    latencies: tuple[float, ...]  # asset leg lock to release, committed settlements, sorted
    messages_per_round: tuple[int, ...]  # messages sent in each (epoch, round), in order
    message_kinds: Mapping[str, int]
    messages_without_round: int  # new-epoch messages


# --- reading a run folder ------------------------------------------------------


def read_run(run_dir: Path) -> RunView:
    """The view of the run in ``run_dir``; :class:`ReportError` if it is not a run."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder (give a run folder of dvpsim run or sim)")
    history = run_dir / "history.jsonl"
    summary_path = run_dir / "summary.json"
    for path in (history, summary_path):
        if not path.is_file():
            raise ReportError(f"{run_dir} is not a run folder: it has no {path.name}")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{summary_path}: not readable JSON ({_one_line(exc)})") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_path}: not a run summary (a JSON object is expected)")
    records = _records(history)
    try:
        return extract(records, summary)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(
            f"{history}: a line lacks a field docs/HISTORY.md gives it, or has a wrong value "
            f"({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ReportError(
                        f"{path}:{number}: not a JSON line ({_one_line(exc)})"
                    ) from None
                if not (
                    isinstance(record, dict)
                    and isinstance(record.get("t"), int | float)
                    and isinstance(record.get("event"), str)
                ):
                    raise ReportError(f"{path}:{number}: not a history line (no t and event)")
                records.append(record)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not readable ({_one_line(exc)})") from None
    if not records:
        raise ReportError(f"{path} is empty: the run wrote no history")
    return records


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# --- extraction ----------------------------------------------------------------


def extract(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> RunView:
    """The view of a run from its history records and its summary (no I/O)."""
    run = next((r for r in records if r["event"] == "run"), {})
    start = min(float(r["t"]) for r in records)
    end = max(float(r["t"]) for r in records)
    if end <= start:
        end = start + 1.0
    legs = _leg_lanes(records)
    rounds, kinds, without_round = _messages(records)
    return RunView(
        run=dict(run),
        summary=summary,
        start=start,
        end=end,
        nodes=_node_lanes(records, end),
        legs=legs,
        faults=_fault_windows(records, end),
        verdicts=_verdicts(summary, legs),
        latencies=_latencies(legs, str(run.get("mode", ""))),
        messages_per_round=rounds,
        message_kinds=kinds,
        messages_without_round=without_round,
    )


def _node_name(record: Mapping[str, Any]) -> str:
    return f"{record['node']}b" if record.get("twin") else str(record["node"])


def _node_lanes(records: Sequence[Mapping[str, Any]], end: float) -> tuple[NodeLane, ...]:
    marks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    pending: dict[tuple[Any, ...], tuple[float, str]] = {}
    transmissions: dict[str, dict[str, list[Span]]] = defaultdict(lambda: defaultdict(list))
    down_since: dict[str, float] = {}
    down: dict[str, list[Span]] = defaultdict(list)
    byzantine: dict[str, str] = {}
    for r in records:
        event = r["event"]
        if event in ("round", "certificate", "certified", "node-start"):
            node = _node_name(r)
            marks[node][event].append(float(r["t"]))
            if event == "node-start" and node in down_since:
                down[node].append(Span(down_since.pop(node), float(r["t"]), "down"))
        elif event == "node-stop":
            node = _node_name(r)
            down_since.setdefault(node, float(r["t"]))
        elif event == "byzantine":
            byzantine[str(r["node"])] = ", ".join(str(b) for b in r.get("behaviours", ()))
        elif event == "transmission":
            node = _node_name(r)
            key = (node, r.get("target"), r.get("epoch"), r.get("round"))
            what = f"{r.get('target')} epoch {r.get('epoch')} round {r.get('round')}"
            if r.get("phase") == "invoke":
                pending.setdefault(key, (float(r["t"]), what))
            else:
                # A later stage's member finds it already applied without sending it.
                began, _ = pending.pop(key, (float(r["t"]), what))
                outcome = "ok" if r.get("phase") == "ok" else "failed"
                label = f"{what}: {r.get('result', r.get('phase'))}"
                transmissions[node][outcome].append(Span(began, float(r["t"]), label))
    for (node, *_), (began, what) in pending.items():
        transmissions[node]["open"].append(Span(began, end, f"{what}: no answer"))
    for node, since in down_since.items():
        down[node].append(Span(since, end, "down"))
    names = set(marks) | set(transmissions) | set(down)
    lanes = []
    for node in sorted(names, key=_node_order):
        own = marks[node]
        sent = transmissions[node]
        lanes.append(
            NodeLane(
                node=node,
                rounds=tuple(own["round"]),
                certificates=tuple(own["certificate"]),
                accepted=tuple(own["certified"]),
                transmissions_ok=tuple(sent["ok"]),
                transmissions_failed=tuple(sent["failed"]),
                transmissions_open=tuple(sent["open"]),
                down=tuple(down[node]),
                byzantine=byzantine.get(node.rstrip("b"), ""),
            )
        )
    return tuple(lanes)


def _node_order(name: str) -> tuple[int, str]:
    digits = name.rstrip("b")
    return (int(digits) if digits.isdigit() else 1 << 30, name)


def _leg_lanes(records: Sequence[Mapping[str, Any]]) -> tuple[LegLane, ...]:
    driven: dict[str, Mapping[str, Any]] = {}
    steps: dict[tuple[str, str], list[LegStep]] = {}
    for r in records:
        if r["event"] == "settlement":
            driven.setdefault(str(r["settlement"]), r)
        elif r["event"] == "leg":
            key = (str(r["settlement"]), str(r["leg"]))
            steps.setdefault(key, []).append(
                LegStep(float(r["t"]), str(r["step"]), str(r["phase"]), str(r.get("error", "")))
            )

    def order(key: tuple[str, str]) -> tuple[int, str, str]:
        index = driven.get(key[0], {}).get("index")
        return (index if isinstance(index, int) else 1 << 30, key[0], key[1])

    lanes = []
    for key in sorted(steps, key=order):
        settlement, leg = key
        info = driven.get(settlement, {})
        index = info.get("index")
        lanes.append(
            LegLane(
                settlement=settlement,
                leg=leg,
                index=index if isinstance(index, int) else None,
                fail=str(info.get("fail", "")),
                steps=tuple(sorted(steps[key], key=lambda s: s.t)),
            )
        )
    return tuple(lanes)


#: Begin-line keys that say what a fault acts on (besides its kind).
_FAULT_KEYS: Final = ("node", "leg", "side", "from", "to", "value", "jitter", "one_way", "lie")


def _fault_windows(records: Sequence[Mapping[str, Any]], end: float) -> tuple[FaultWindow, ...]:
    open_: dict[tuple[str, str], deque[tuple[float, str]]] = defaultdict(deque)
    windows = []
    for r in records:
        if r["event"] != "fault":
            continue
        key = (str(r["kind"]), str(r.get("node")))
        if r.get("phase") == "begin":
            subject = ", ".join(
                f"{k} {_plain(r[k])}" for k in _FAULT_KEYS if r.get(k) not in (None, "", [])
            )
            open_[key].append((float(r["t"]), subject))
        elif open_[key]:
            began, subject = open_[key].popleft()
            windows.append(
                FaultWindow(str(r["kind"]), began, float(r["t"]), subject, bool(r.get("run_end")))
            )
    for (kind, _), waiting in open_.items():
        windows.extend(FaultWindow(kind, began, end, subject, True) for began, subject in waiting)
    return tuple(sorted(windows, key=lambda w: (w.start, w.kind)))


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _latencies(legs: Sequence[LegLane], mode: str) -> tuple[float, ...]:
    """Seconds from a settlement's first lock to its asset leg's release (as
    ``summary.json``'s latency percentiles, here from the history's lines)."""
    asset_leg = MODES[mode].asset_leg if mode in MODES else "A"
    locked: dict[str, float] = {}
    released: dict[str, float] = {}
    for lane in legs:
        for step in lane.steps:
            if step.phase != "ok":
                continue
            if step.step == "lock":
                locked[lane.settlement] = min(step.t, locked.get(lane.settlement, math.inf))
            elif step.step == "release" and lane.leg == asset_leg:
                released.setdefault(lane.settlement, step.t)
    return tuple(sorted(released[s] - locked[s] for s in released if s in locked))


def _messages(records: Iterable[Mapping[str, Any]]) -> tuple[tuple[int, ...], dict[str, int], int]:
    per_round: dict[tuple[int, int], int] = {}
    kinds: Counter[str] = Counter()
    without_round = 0
    for r in records:
        if r["event"] != "send":
            continue
        kinds[str(r["kind"])] += 1
        if "round" in r:
            key = (int(r["epoch"]), int(r["round"]))
            per_round[key] = per_round.get(key, 0) + 1
        else:
            without_round += 1
    return tuple(per_round[k] for k in sorted(per_round)), dict(kinds), without_round


_SETTLEMENT_PREFIX: Final = re.compile(r"0x[0-9a-f]{8,64}")
_NODE: Final = re.compile(r"\bnode (\d+b?)\b")
_TIME: Final = re.compile(r"\bat (\d+(?:\.\d+)?) s\b")


def _verdicts(summary: Mapping[str, Any], legs: Sequence[LegLane]) -> tuple[VerdictView, ...]:
    checks = summary.get("checks")
    if not isinstance(checks, Mapping):
        return ()
    ids = sorted({lane.settlement for lane in legs})
    out = []
    for check, verdict in checks.items():
        verdict = verdict if isinstance(verdict, Mapping) else {}
        witness = str(verdict.get("witness", ""))
        prefixes = _SETTLEMENT_PREFIX.findall(witness)
        out.append(
            VerdictView(
                check=str(check),
                status=str(verdict.get("status", "unknown")),
                witness=witness,
                settlements=tuple(s for s in ids if any(s.startswith(p) for p in prefixes)),
                nodes=tuple(dict.fromkeys(_NODE.findall(witness))),
                times=tuple(float(t) for t in dict.fromkeys(_TIME.findall(witness))),
            )
        )
    return tuple(out)


# --- the page ------------------------------------------------------------------

#: The timeline's drawing width (px) and its label column.
WIDTH: Final = 1000
LABEL: Final = 190
NODE_LANE_H: Final = 26
LEG_LANE_H: Final = 14
#: Charts aggregate to at most this many points or bars.
CHART_POINTS: Final = 300

STEP_COLOURS: Final = {
    "create": "#6b7280",
    "lock": "#2563eb",
    "lock-payment": "#2563eb",
    "hold": "#0891b2",
    "pay": "#16a34a",
    "release": "#16a34a",
    "refund": "#d97706",
    "cancel": "#d97706",
    "reject": "#dc2626",
}
OUTCOME_COLOURS: Final = {
    "release": "#bbf7d0",
    "pay": "#bbf7d0",
    "refund": "#fde68a",
    "cancel": "#fde68a",
    "reject": "#fecaca",
}


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = end - start

    def x(self, t: float) -> float:
        return round((t - self.start) / self.span * WIDTH, 1)


def render_html(view: RunView) -> str:
    """The report page of ``view``: one HTML document that needs nothing else."""
    scale = _Scale(view.start, view.end)
    witness_settlements: dict[str, list[str]] = defaultdict(list)
    witness_nodes: dict[str, list[str]] = defaultdict(list)
    for v in view.verdicts:
        if v.status != "valid":
            for s in v.settlements:
                witness_settlements[s].append(v.check)
            for n in v.nodes:
                witness_nodes[n].append(v.check)
    run = view.run
    title = f"dvpsim report: {run.get('scenario', '?')} ({run.get('world', '?')})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _header(view),
        _verdict_table(view),
        "<h2>Timeline</h2>",
        _legend(),
        f'<div class="timeline" id="timeline" style="width:{LABEL + WIDTH}px">',
        _axis(scale, view),
        _overlays(scale, view),
        '<div class="section">Nodes</div>',
        *(_node_lane(lane, scale, witness_nodes.get(lane.node, [])) for lane in view.nodes),
        _leg_controls(view),
        '<div id="legs">',
        *(
            _leg_lane(lane, scale, witness_settlements.get(lane.settlement, []))
            for lane in view.legs
        ),
        "</div></div>",
        '<h2>Latency and messages</h2><div class="charts">',
        _latency_cdf(view.latencies),
        _messages_chart(view),
        "</div>",
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(parts)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Read the run in ``run_dir`` and write its page to ``out`` (default
    ``run_dir/report.html``); the path written."""
    page = render_html(read_run(run_dir))
    target = out if out is not None else run_dir / "report.html"
    try:
        target.write_text(page)
    except OSError as exc:
        raise ReportError(f"cannot write {target}: {_one_line(exc)}") from None
    return target


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _header(view: RunView) -> str:
    s, run = view.summary, view.run
    facts = [
        ("world", run.get("world", s.get("world"))),
        ("mode", run.get("mode", s.get("mode"))),
        ("seed", run.get("seed", s.get("seed"))),
        ("crypto", run.get("crypto", s.get("crypto"))),
        ("n / f / t", f"{s.get('n')} / {s.get('f')} / {s.get('t')}"),
        ("settlements", s.get("settlements")),
        ("committed", s.get("committed")),
        ("aborted", s.get("aborted")),
        ("latency p50 / p99 (s)", f"{s.get('latency_p50_s')} / {s.get('latency_p99_s')}"),
        ("messages per settlement", s.get("messages_per_settlement")),
        ("span (s)", f"{view.start:.3f} to {view.end:.3f}"),
        ("expectation met", s.get("expectation_met")),
    ]
    cells = "".join(f"<div><b>{_e(k)}</b> {_e(v)}</div>" for k, v in facts)
    return f'<div class="facts">{cells}</div>'


def _verdict_table(view: RunView) -> str:
    if not view.verdicts:
        return "<p>The summary holds no verdicts.</p>"
    rows = []
    for v in view.verdicts:
        witness = _SETTLEMENT_PREFIX.sub(partial(_lane_link, view, v.settlements), _e(v.witness))
        rows.append(
            f'<tr class="verdict {_e(v.status)}" data-check="{_e(v.check)}">'
            f"<td>{_e(v.check)}</td><td>{_e(v.status)}</td><td>{witness or '&nbsp;'}</td></tr>"
        )
    return (
        '<h2>Verdicts</h2><table class="verdicts"><tr><th>check</th><th>verdict</th>'
        f"<th>witness</th></tr>{''.join(rows)}</table>"
    )


def _lane_link(view: RunView, settlements: Sequence[str], match: re.Match[str]) -> str:
    """A settlement id as a witness shortens it, linked to its first leg lane."""
    prefix = match.group(0)
    for lane in view.legs:
        if lane.settlement in settlements and lane.settlement.startswith(prefix):
            return f'<a href="#leg-{_e(lane.settlement)}-{_e(lane.leg)}">{prefix}</a>'
    return prefix


def _legend() -> str:
    items = [
        ("tick", "#1d4ed8", "round led"),
        ("tick", "#7c3aed", "certificate formed"),
        ("tick", "#9ca3af", "certificate accepted"),
        ("bar", "#16a34a", "transmission ok"),
        ("bar", "#dc2626", "transmission failed"),
        ("bar", "#f59e0b", "transmission unanswered"),
        ("box", "#e5e7eb", "node down"),
        ("box", "rgba(239,68,68,.15)", "fault window"),
        ("line", "#db2777", "witness time"),
    ]
    items += [("tick", c, f"leg {s}") for s, c in STEP_COLOURS.items() if s != "lock-payment"]
    spans = "".join(
        f'<span class="key {kind}"><i style="background:{colour}"></i>{_e(text)}</span>'
        for kind, colour, text in items
    )
    return f'<div class="legend">{spans}</div>'


def _nice_step(span: float) -> float:
    raw = span / 10
    power: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _axis(scale: _Scale, view: RunView) -> str:
    step = _nice_step(view.end - view.start)
    first = math.ceil(view.start / step) * step
    ticks = []
    t = first
    while t <= view.end + 1e-9:
        x = scale.x(t)
        ticks.append(
            f'<path d="M{x} 14v8" stroke="#555"/><text x="{x}" y="11" '
            f'text-anchor="middle">{_fmt(t)}</text>'
        )
        t += step
    return (
        f'<div class="lane axis"><span class="label">run seconds</span>'
        f'<svg width="{WIDTH}" height="24">{"".join(ticks)}</svg></div>'
    )


def _fmt(t: float) -> str:
    return f"{t:.0f}" if abs(t - round(t)) < 1e-9 else f"{t:g}"


def _overlays(scale: _Scale, view: RunView) -> str:
    out = []
    label_ends: list[float] = []  # per label row: where its last label ends (px)
    for w in view.faults:
        left = LABEL + scale.x(w.start)
        width = max(2.0, scale.x(w.end) - scale.x(w.start))
        row = next((i for i, e in enumerate(label_ends) if e < left), len(label_ends))
        if row == len(label_ends):
            label_ends.append(0.0)
        label_ends[row] = left + 7 * len(w.kind) + 6
        tip = f"{w.kind} {w.subject} from {w.start:.3f} s to {w.end:.3f} s" + (
            " (still in force at the run's end)" if w.run_end else ""
        )
        out.append(
            f'<div class="fault" style="left:{left}px;width:{width}px" '
            f'data-kind="{_e(w.kind)}" title="{_e(tip)}">'
            f'<span style="top:{row * 11}px">{_e(w.kind)}</span></div>'
        )
    for v in view.verdicts:
        if v.status == "valid":
            continue
        for t in v.times:
            out.append(
                f'<div class="witness-time" style="left:{LABEL + scale.x(t)}px" '
                f'title="{_e(v.check)} witness at {t:.3f} s" data-check="{_e(v.check)}"></div>'
            )
    return "".join(out)


def _ticks(times: Sequence[float], scale: _Scale, top: float, height: float) -> str:
    """One path of vertical ticks; ticks within half a pixel merge (a big run stays light)."""
    xs = sorted({round(scale.x(t) * 2) / 2 for t in times})
    return "".join(f"M{x} {top}v{height}" for x in xs)


def _bars(spans: Sequence[Span], scale: _Scale, y: float) -> str:
    """One path of horizontal segments at ``y`` (each at least a pixel; overlapping ones
    on the same pixels merge)."""
    segments = sorted(
        {(scale.x(s.start), max(1.0, scale.x(s.end) - scale.x(s.start))) for s in spans}
    )
    merged: list[list[float]] = []
    for x, w in segments:
        if merged and x <= merged[-1][0] + merged[-1][1] + 0.5:
            merged[-1][1] = max(merged[-1][1], x + w - merged[-1][0])
        else:
            merged.append([x, w])
    return "".join(f"M{x} {y}h{round(w, 1)}" for x, w in merged)


def _node_lane(lane: NodeLane, scale: _Scale, checks: Sequence[str]) -> str:
    h = NODE_LANE_H
    body = [
        f'<rect class="down" x="{scale.x(s.start)}" y="0" width="{max(1.0, scale.x(s.end) - scale.x(s.start))}" height="{h}"/>'
        for s in lane.down
    ]
    for colour, spans, y in (
        ("#16a34a", lane.transmissions_ok, h - 4),
        ("#dc2626", lane.transmissions_failed, h - 4),
        ("#f59e0b", lane.transmissions_open, h - 1.5),
    ):
        if spans:
            body.append(f'<path d="{_bars(spans, scale, y)}" stroke="{colour}" stroke-width="3"/>')
    for colour, times, top, height in (
        ("#9ca3af", lane.accepted, 14, 5),
        ("#1d4ed8", lane.rounds, 3, 10),
        ("#7c3aed", lane.certificates, 1, 6),
    ):
        if times:
            body.append(f'<path d="{_ticks(times, scale, top, height)}" stroke="{colour}"/>')
    tip = (
        f"node {lane.node}: {len(lane.rounds)} rounds led, {len(lane.certificates)} "
        f"certificates formed, {len(lane.accepted)} accepted; transmissions "
        f"{len(lane.transmissions_ok)} ok, {len(lane.transmissions_failed)} failed, "
        f"{len(lane.transmissions_open)} unanswered"
        + (f"; Byzantine: {lane.byzantine}" if lane.byzantine else "")
        + (f"; named by the witness of {', '.join(checks)}" if checks else "")
    )
    classes = "lane node-lane" + (" witness" if checks else "")
    label = f"node {lane.node}" + (" (Byzantine)" if lane.byzantine else "")
    return (
        f'<div class="{classes}" data-node="{_e(lane.node)}" title="{_e(tip)}">'
        f'<span class="label">{_e(label)}</span>'
        f'<svg width="{WIDTH}" height="{h}">{"".join(body)}</svg></div>'
    )


def _leg_controls(view: RunView) -> str:
    outcomes = sorted({lane.outcome for lane in view.legs})
    options = "".join(f'<option value="{_e(o)}">{_e(o)}</option>' for o in outcomes)
    return (
        f'<div class="section">Settlement legs: <span id="leg-count">{len(view.legs)}</span> '
        f'lanes <input id="leg-filter" placeholder="settlement id or index"> '
        f'<select id="leg-outcome"><option value="">any outcome</option>{options}</select> '
        '<label><input type="checkbox" id="leg-witness"> witnesses only</label></div>'
    )


def _leg_lane(lane: LegLane, scale: _Scale, checks: Sequence[str]) -> str:
    h = LEG_LANE_H
    first, last = lane.steps[0].t, lane.steps[-1].t
    fill = OUTCOME_COLOURS.get(lane.outcome, "#dbeafe")
    body = [
        f'<rect x="{scale.x(first)}" y="3" width="{max(2.0, scale.x(last) - scale.x(first))}" '
        f'height="{h - 6}" fill="{fill}"/>'
    ]
    for step in lane.steps:
        if step.phase == "invoke" and any(
            s.step == step.step and s.phase != "invoke" for s in lane.steps
        ):
            continue  # the ok or fail line marks the step
        colour = "#111" if step.phase == "fail" else STEP_COLOURS.get(step.step, "#6b7280")
        tip = f"{step.step} {step.phase} at {step.t:.3f} s" + (
            f": {step.detail}" if step.detail else ""
        )
        body.append(
            f'<rect class="step" x="{scale.x(step.t) - 1}" y="1" width="3" height="{h - 2}" '
            f'fill="{colour}"><title>{_e(tip)}</title></rect>'
        )
    name = f"#{lane.index}" if lane.index is not None else "?"
    label = f"{name} {lane.settlement[:10]} {lane.leg}"
    tip = (
        f"settlement {lane.settlement}, leg {lane.leg}: {lane.outcome}"
        + (f" (meant to fail: {lane.fail})" if lane.fail else "")
        + (f"; witness of {', '.join(checks)}" if checks else "")
    )
    classes = "lane leg-lane" + (" witness" if checks else "")
    return (
        f'<div class="{classes}" id="leg-{_e(lane.settlement)}-{_e(lane.leg)}" '
        f'data-settlement="{_e(lane.settlement)}" data-index="{_e(lane.index)}" '
        f'data-leg="{_e(lane.leg)}" data-outcome="{_e(lane.outcome)}" title="{_e(tip)}">'
        f'<span class="label">{_e(label)}{" ⚑" if lane.fail else ""}</span>'
        f'<svg width="{WIDTH}" height="{h}">{"".join(body)}</svg></div>'
    )


def _chart(title: str, body: str, note: str = "") -> str:
    return (
        f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
        f'<svg width="460" height="260" viewBox="0 0 460 260">{body}</svg>'
        f"<p>{_e(note)}</p></figure>"
    )


#: Chart plot area inside its 460 x 260 SVG.
_PX, _PY, _PW, _PH = 50, 10, 390, 210


def _frame(x_label: str, x_max: float, y_label: str, y_max: float) -> str:
    return (
        f'<path d="M{_PX} {_PY}V{_PY + _PH}H{_PX + _PW}" stroke="#555" fill="none"/>'
        f'<text x="{_PX + _PW / 2}" y="{_PY + _PH + 28}" text-anchor="middle">{_e(x_label)}</text>'
        f'<text x="{_PX}" y="{_PY + _PH + 14}" text-anchor="middle">0</text>'
        f'<text x="{_PX + _PW}" y="{_PY + _PH + 14}" text-anchor="end">{_e(f"{x_max:g}")}</text>'
        f'<text x="{_PX - 4}" y="{_PY + 8}" text-anchor="end">{_e(f"{y_max:g}")}</text>'
        f'<text x="{_PX - 4}" y="{_PY + _PH}" text-anchor="end">0</text>'
        f'<text x="12" y="{_PY + _PH / 2}" transform="rotate(-90 12 {_PY + _PH / 2})" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )


def _latency_cdf(latencies: Sequence[float]) -> str:
    if not latencies:
        return _chart("Latency CDF", "", "No settlement was released: no latency to show.")
    top = max(latencies) or 1.0
    n = len(latencies)
    # At most CHART_POINTS steps: every k-th sorted latency (the last always).
    k = max(1, math.ceil(n / CHART_POINTS))
    picks = sorted(set(range(k - 1, n, k)) | {n - 1})
    d = f"M{_PX} {_PY + _PH}"
    for i in picks:
        x = _PX + latencies[i] / top * _PW
        d += f"H{x:.1f}V{_PY + _PH - (i + 1) / n * _PH:.1f}"
    p50 = latencies[min(n - 1, int(0.5 * n))]
    p99 = latencies[min(n - 1, int(0.99 * n))]
    body = _frame("seconds from lock to release", round(top, 3), "share", 1) + (
        f'<path class="cdf" d="{d}" stroke="#2563eb" fill="none" stroke-width="1.5"/>'
    )
    return _chart(
        "Latency CDF",
        body,
        f"{n} settlements released; p50 {p50:.3f} s, p99 {p99:.3f} s, max {top:.3f} s",
    )


def _messages_chart(view: RunView) -> str:
    counts = view.messages_per_round
    if not counts:
        return _chart(
            "Messages per round",
            "",
            "No messages recorded (a real run records them only when its nodes trace messages).",
        )
    k = max(1, math.ceil(len(counts) / CHART_POINTS))
    bins = [sum(counts[i : i + k]) / len(counts[i : i + k]) for i in range(0, len(counts), k)]
    top = max(bins) or 1.0
    width = _PW / len(bins)
    bars = "".join(
        f'<rect x="{_PX + i * width:.1f}" y="{_PY + _PH - b / top * _PH:.1f}" '
        f'width="{max(0.5, width - 0.5):.1f}" height="{b / top * _PH:.1f}"/>'
        for i, b in enumerate(bins)
    )
    body = _frame(f"rounds in order ({len(counts)})", len(counts), "messages sent", round(top, 1))
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(view.message_kinds.items()))
    note = (
        f"mean {sum(counts) / len(counts):.1f}, max {max(counts)} per round"
        + (f" (each bar the mean of {k} rounds)" if k > 1 else "")
        + f"; by kind: {kinds}"
    )
    return _chart("Messages per round", body + f'<g class="bars">{bars}</g>', note)


_CSS: Final = """
body{font:13px system-ui,sans-serif;margin:16px;color:#111}
h1{font-size:18px}h2{font-size:15px;margin-top:22px}
.facts{display:flex;flex-wrap:wrap;gap:4px 18px}
table.verdicts{border-collapse:collapse}
.verdicts td,.verdicts th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
tr.valid td:nth-child(2){color:#15803d;font-weight:bold}
tr.invalid td:nth-child(2){color:#b91c1c;font-weight:bold}
tr.unknown td:nth-child(2){color:#a16207;font-weight:bold}
tr.invalid td,tr.unknown td{background:#fff1f2}
.legend{display:flex;flex-wrap:wrap;gap:2px 14px;margin:6px 0}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.key.tick i{width:3px}.key.bar i{height:3px}.key.line i{width:2px}
.timeline{position:relative;overflow:hidden;border:1px solid #ddd}
.lane{display:flex;align-items:center;border-bottom:1px solid #f1f1f1}
.lane .label{width:190px;flex:none;font:11px ui-monospace,monospace;white-space:nowrap;overflow:hidden;padding-left:4px}
.lane svg{display:block;flex:none}
.leg-lane{content-visibility:auto;contain-intrinsic-size:auto 15px}
.lane.witness{background:#fce7f3}.lane.witness .label{font-weight:bold;color:#9d174d}
.lane.hidden{display:none}
.node-lane{height:26px}
rect.down{fill:#e5e7eb}
.axis text{font-size:10px}.axis svg{overflow:visible}
.section{background:#f8fafc;padding:3px 4px;border-bottom:1px solid #ddd;position:relative;z-index:2}
.fault{position:absolute;top:0;bottom:0;background:rgba(239,68,68,.15);border-left:1px solid rgba(239,68,68,.5);pointer-events:none;z-index:1}
.fault span{font-size:10px;color:#b91c1c;position:absolute;top:0;left:2px;white-space:nowrap}
.witness-time{position:absolute;top:0;bottom:0;width:0;border-left:2px dashed #db2777;pointer-events:none;z-index:1}
.charts{display:flex;flex-wrap:wrap;gap:20px}
.chart{margin:0}.chart figcaption{font-weight:bold}.chart text{font-size:10px}
.chart p{max-width:460px;margin:2px 0}
.bars rect{fill:#7c3aed}
"""

_JS: Final = """
(function () {
  var lanes = Array.prototype.slice.call(document.querySelectorAll('.leg-lane'));
  var text = document.getElementById('leg-filter');
  var outcome = document.getElementById('leg-outcome');
  var witness = document.getElementById('leg-witness');
  var count = document.getElementById('leg-count');
  function apply() {
    var q = text.value.trim().toLowerCase(), o = outcome.value, w = witness.checked, shown = 0;
    lanes.forEach(function (lane) {
      var d = lane.dataset;
      var ok = (!q || d.settlement.indexOf(q) === 0 || d.index === q.replace('#', '')) &&
               (!o || d.outcome === o) && (!w || lane.classList.contains('witness'));
      lane.classList.toggle('hidden', !ok);
      if (ok) { shown += 1; }
    });
    count.textContent = shown === lanes.length ? String(lanes.length) : shown + ' of ' + lanes.length;
  }
  [text, outcome, witness].forEach(function (el) { el.addEventListener('input', apply); });
  document.querySelectorAll('.verdicts a').forEach(function (a) {
    a.addEventListener('click', function () {
      text.value = ''; outcome.value = ''; witness.checked = false; apply();
    });
  });
})();
"""
