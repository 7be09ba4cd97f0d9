"""The multiple-choice knapsack ``fit`` solves: one option (bytes, error) per item, total bytes
within a budget, least total error.

A Lagrangian sweep over each item's lower convex hull (the options no mix of two others beats)
gives the LP relaxation's solution and, rounded down, a first choice; a depth-first branch and
bound over every non-dominated option, bounded by that relaxation on the items not yet decided,
then fills the remaining budget exactly. The search stops after ``node_limit`` nodes and then
says so (``Choice.optimal`` is False; the choice is still within the budget and at least as
good as the sweep's)."""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Choice", "combined", "lower_hull", "solve"]

Option = tuple[int, float]


@dataclass(frozen=True)
class Choice:
    """One option index per item, their total bytes and error, whether the search proved the
    choice optimal, and a lower bound on the optimum."""

    picks: tuple[int, ...]
    bytes: int
    error: float
    optimal: bool
    # The LP relaxation's error at this budget: no choice does better.
    lower_bound: float


def _pareto(options: Sequence[Option]) -> list[int]:
    """Indices of the options no other option beats (fewer or equal bytes and less error), by
    increasing bytes."""
    order = sorted(range(len(options)), key=lambda k: (options[k][0], options[k][1], k))
    kept: list[int] = []
    for k in order:
        if not kept or options[k][1] < options[kept[-1]][1]:
            if kept and options[k][0] == options[kept[-1]][0]:
                continue
            kept.append(k)
    return kept


def combined(items: Sequence[Sequence[Option]]) -> tuple[list[Option], list[tuple[int, ...]]]:
    """Several items taken as one (an option of each): the sums of their options that no other
    sum beats, by increasing bytes, each with the option index of every item."""
    sums: list[Option] = [(0, 0.0)]
    picks: list[tuple[int, ...]] = [()]
    for options in items:
        pairs = [
            ((b + ob, e + oe), p + (k,))
            for (b, e), p in zip(sums, picks)
            for k, (ob, oe) in enumerate(options)
        ]
        kept = _pareto([s for s, _ in pairs])
        sums, picks = [pairs[k][0] for k in kept], [pairs[k][1] for k in kept]
    return sums, picks


def lower_hull(options: Sequence[Option]) -> list[int]:
    """Indices of the options on the lower convex hull of (bytes, error), by increasing bytes:
    each step to the next buys error at a falling rate per byte."""
    hull: list[int] = []
    for k in _pareto(options):
        while len(hull) >= 2:
            (c0, e0), (c1, e1), (c2, e2) = options[hull[-2]], options[hull[-1]], options[k]
            # hull[-1] is above the chord from hull[-2] to k: not on the hull.
            if (e0 - e1) * (c2 - c1) <= (e1 - e2) * (c1 - c0):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


@dataclass
class _Relaxation:
    """The LP relaxation of the items from one position on: their cheapest options' bytes and
    error, and the hull segments by falling rate with running sums of bytes and error saved."""

    base_bytes: int
    base_error: float
    cum_bytes: list[int]
    cum_saved: list[float]

    def bound(self, budget: int) -> float | None:
        """The least error the relaxation reaches within ``budget`` (None: not even the cheapest
        options fit)."""
        spare = budget - self.base_bytes
        if spare < 0:
            return None
        k = bisect.bisect_right(self.cum_bytes, spare)
        saved = self.cum_saved[k - 1] if k else 0.0
        if k < len(self.cum_bytes):
            done_bytes = self.cum_bytes[k - 1] if k else 0
            step_bytes = self.cum_bytes[k] - done_bytes
            step_saved = self.cum_saved[k] - saved
            saved += step_saved * (spare - done_bytes) / step_bytes
        return self.base_error - saved


def _segments(options: Sequence[Option], hull: list[int]) -> list[tuple[float, int, float]]:
    """(rate, bytes, error saved) of each step along a hull."""
    out = []
    for a, b in itertools.pairwise(hull):
        dc, de = options[b][0] - options[a][0], options[a][1] - options[b][1]
        out.append((de / dc, dc, de))
    return out


def _relaxations(items: Sequence[Sequence[Option]], hulls: list[list[int]]) -> list[_Relaxation]:
    """The relaxation of items[i:] for every i (and an empty one at the end)."""
    out = [_Relaxation(0, 0.0, [], [])]
    segments: list[tuple[float, int, float]] = []
    for options, hull in zip(reversed(items), reversed(hulls)):
        segments = sorted(segments + _segments(options, hull), key=lambda s: -s[0])
        cum_bytes, cum_saved, tb, ts = [], [], 0, 0.0
        for _, db, ds in segments:
            tb, ts = tb + db, ts + ds
            cum_bytes.append(tb)
            cum_saved.append(ts)
        first = options[hull[0]]
        prev = out[-1]
        out.append(
            _Relaxation(
                prev.base_bytes + first[0], prev.base_error + first[1], cum_bytes, cum_saved
            )
        )
    out.reverse()
    return out


def _sweep(items: Sequence[Sequence[Option]], hulls: list[list[int]], budget: int) -> list[int]:
    """The Lagrangian choice: from every item's cheapest hull option, take hull steps by falling
    rate while they fit (a step that does not fit ends its item's climb)."""
    position = [0] * len(items)
    spare = budget - sum(o[h[0]][0] for o, h in zip(items, hulls))
    steps = sorted(
        (
            (rate, i, j, db)
            for i, (o, h) in enumerate(zip(items, hulls))
            for j, (rate, db, _) in enumerate(_segments(o, h))
        ),
        key=lambda s: (-s[0], s[1], s[2]),
    )
    blocked = set()
    for _, i, j, db in steps:
        if i in blocked or position[i] != j:
            continue
        if db <= spare:
            spare -= db
            position[i] = j + 1
        else:
            blocked.add(i)
    return [hulls[i][position[i]] for i in range(len(items))]


def solve(
    items: Sequence[Sequence[Option]], budget: int, *, node_limit: int = 200_000
) -> Choice | None:
    """The option per item with the least total error whose bytes total at most ``budget``;
    None when even the cheapest options do not fit. Every item needs one option at least.

    The search decides the items with the widest byte range first: their choice moves the
    relaxation's bound most, so the bound prunes best below them."""
    order = sorted(range(len(items)), key=lambda i: (-_byte_range(items[i]), i))
    choice = _solve_in_order([items[i] for i in order], budget, node_limit)
    if choice is None:
        return None
    picks = [0] * len(items)
    for position, i in enumerate(order):
        picks[i] = choice.picks[position]
    return Choice(tuple(picks), choice.bytes, choice.error, choice.optimal, choice.lower_bound)


def _byte_range(options: Sequence[Option]) -> int:
    return max(o[0] for o in options) - min(o[0] for o in options)


def _solve_in_order(
    items: Sequence[Sequence[Option]], budget: int, node_limit: int
) -> Choice | None:
    hulls = [lower_hull(o) for o in items]
    if sum(o[h[0]][0] for o, h in zip(items, hulls)) > budget:
        return None
    picks = _sweep(items, hulls, budget)
    best = [sum(o[k][1] for o, k in zip(items, picks)), list(picks)]
    fronts = [_pareto(o) for o in items]
    relax = _relaxations(items, hulls)
    n = len(items)
    chosen = [0] * n
    nodes = 0
    tolerance = 1e-12

    def search(i: int, spare: int, error: float) -> bool:
        """False when the node limit stopped the search."""
        nonlocal nodes
        nodes += 1
        if nodes > node_limit:
            return False
        if i == n:
            if error < best[0] * (1 - tolerance) - tolerance:
                best[0], best[1] = error, list(chosen)
            return True
        bound = relax[i].bound(spare)
        if bound is None or error + bound >= best[0] * (1 - tolerance) - tolerance:
            return True
        rest = relax[i + 1].base_bytes
        for k in reversed(fronts[i]):  # most bytes (least error) first
            cost, err = items[i][k]
            if cost + rest > spare:
                continue
            chosen[i] = k
            if not search(i + 1, spare - cost, error + err):
                return False
        return True

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, n + 100))
    try:
        complete = search(0, budget, 0.0)
    finally:
        sys.setrecursionlimit(limit)
    total = sum(items[i][k][0] for i, k in enumerate(best[1]))
    root = relax[0].bound(budget)
    return Choice(
        tuple(best[1]), total, best[0], complete, best[0] if root is None else min(root, best[0])
    )
