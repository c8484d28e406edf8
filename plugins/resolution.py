"""Resolving an orchestrator's plugin set: the highest versions that satisfy every range.

Plain Python over a catalog snapshot (no Django, no network): `resolvelib` (pip's resolver)
backtracks across versions; this module supplies the provider, then checks what resolvelib
accepts but a plugin set must not have (dependency cycles), and turns every failure into issues
carrying the chain of requirements that led to it, e.g.
`orchestrator → com.acme.crm 2.1.0 → com.acme.http >=3` against `orchestrator → com.acme.http <3`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep

from plugins.manifest import parse_range, parse_version

ROOT = "orchestrator"


@dataclass(frozen=True, slots=True)
class Candidate:
    plugin_id: str
    version: str
    dependencies: tuple[tuple[str, str], ...] = ()  # (plugin id, range text)
    source: str = "tenant"
    sha256: str = ""

    @property
    def parsed(self) -> Version:
        return parse_version(self.version)

    def label(self) -> str:
        return f"{self.plugin_id} {self.version}"


@dataclass(frozen=True, slots=True)
class Requirement:
    plugin_id: str
    range_text: str
    parent: Candidate | None = None

    @property
    def specifier(self) -> SpecifierSet:
        return parse_range(self.range_text)

    def label(self) -> str:
        return f"{self.plugin_id} {self.range_text or '*'}"


@dataclass
class ResolutionIssue:
    code: str
    message: str
    chains: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "chains": self.chains}


class ResolutionFailed(Exception):
    def __init__(self, issues: list[ResolutionIssue]):
        super().__init__(issues[0].message if issues else "resolution failed")
        self.issues = issues


class _Provider(AbstractProvider):
    def __init__(self, catalog: Mapping[str, list[Candidate]]):
        # Highest first: find_matches runs on every round, in preference order.
        self.versions: dict[str, Version] = {}
        self.catalog = {
            pid: sorted(cands, key=self._version, reverse=True) for pid, cands in catalog.items()
        }
        self.specifiers: dict[str, SpecifierSet] = {}
        # resolvelib re-checks the same (range, version) pairs every round; packaging's
        # `contains` is the cost of resolution, so each pair is decided once.
        self.decided: dict[tuple[str, str], bool] = {}

    def _version(self, candidate: Candidate) -> Version:
        parsed = self.versions.get(candidate.version)
        if parsed is None:
            parsed = self.versions[candidate.version] = candidate.parsed
        return parsed

    def _contains(self, requirement: Requirement, candidate: Candidate) -> bool:
        key = (requirement.range_text, candidate.version)
        found = self.decided.get(key)
        if found is None:
            spec = self.specifiers.get(requirement.range_text)
            if spec is None:
                spec = self.specifiers[requirement.range_text] = requirement.specifier
            found = self.decided[key] = spec.contains(self._version(candidate), prereleases=True)
        return found

    def identify(self, requirement_or_candidate: Requirement | Candidate) -> str:
        return requirement_or_candidate.plugin_id

    def get_preference(self, identifier, resolutions, candidates, information, backtrack_causes):
        # Fewest remaining choices first: conflicts surface early, backtracking stays shallow.
        return sum(1 for _ in candidates[identifier])

    def find_matches(self, identifier, requirements, incompatibilities) -> Iterator[Candidate]:
        wanted = list(requirements[identifier])
        bad = {c.version for c in incompatibilities[identifier]}
        for candidate in self.catalog.get(identifier, []):
            if candidate.version not in bad and all(self._contains(r, candidate) for r in wanted):
                yield candidate

    def is_satisfied_by(self, requirement: Requirement, candidate: Candidate) -> bool:
        return self._contains(requirement, candidate)

    def get_dependencies(self, candidate: Candidate) -> Iterable[Requirement]:
        return [Requirement(pid, text, candidate) for pid, text in candidate.dependencies]


def _chain(requirement: Requirement, parents: Mapping[str, Requirement]) -> list[str]:
    """Root → … → the requirement, following the first requirement recorded for each parent."""
    chain = [requirement.label()]
    node, seen = requirement.parent, set()
    while node is not None and node.plugin_id not in seen:
        seen.add(node.plugin_id)
        chain.append(node.label())
        via = parents.get(node.plugin_id)
        node = via.parent if via else None
    chain.append(ROOT)
    return list(reversed(chain))


def _cycles(mapping: Mapping[str, Candidate]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(pid: str) -> None:
        state[pid] = 1
        path.append(pid)
        for dep, _ in mapping[pid].dependencies:
            if dep not in mapping:
                continue
            if state.get(dep) == 1:
                loop = path[path.index(dep) :] + [dep]
                found.append([mapping[p].label() for p in loop])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[pid] = 2

    for pid in sorted(mapping):
        if pid not in state:
            visit(pid)
    return found


def resolve(
    requirements: list[tuple[str, str]], catalog: Mapping[str, list[Candidate]]
) -> dict[str, Candidate]:
    """{plugin id: chosen candidate} for the orchestrator's (id, range) list; ResolutionFailed
    listing every missing plugin, conflict or cycle with its chain."""
    issues: list[ResolutionIssue] = []
    for pid, text in requirements:
        try:
            parse_range(text)
        except ValueError as exc:
            issues.append(ResolutionIssue("bad_range", str(exc), [[ROOT, f"{pid} {text}"]]))
    if issues:
        raise ResolutionFailed(issues)
    provider = _Provider(catalog)
    for cands in provider.catalog.values():
        for cand in cands:
            for dep, text in cand.dependencies:
                try:
                    parse_range(text)
                except ValueError as exc:
                    issues.append(
                        ResolutionIssue("bad_range", str(exc), [[cand.label(), f"{dep} {text}"]])
                    )
    if issues:
        raise ResolutionFailed(issues)
    roots = [Requirement(pid, text) for pid, text in requirements]
    mapping = _greedy(roots, provider)
    if mapping is None:
        mapping = _backtrack(roots, provider)
    cycles = _cycles(mapping)
    if cycles:
        raise ResolutionFailed(
            [
                ResolutionIssue("dependency_cycle", "Dependency cycle: " + " → ".join(c), [c])
                for c in cycles
            ]
        )
    return mapping


def _greedy(roots: list[Requirement], provider: _Provider) -> dict[str, Candidate] | None:
    """The common case in one pass: each plugin at the highest version every range seen so far
    allows. None as soon as a later range rules out an earlier pick (or nothing fits): then
    resolvelib backtracks, and explains the failure if there is one."""
    constraints: dict[str, list[Requirement]] = {}
    chosen: dict[str, Candidate] = {}
    queue = list(roots)
    while queue:
        requirement = queue.pop(0)
        pid = requirement.plugin_id
        constraints.setdefault(pid, []).append(requirement)
        if pid in chosen:
            if not provider._contains(requirement, chosen[pid]):
                return None
            continue
        pick = next(
            (
                c
                for c in provider.catalog.get(pid, [])
                if all(provider._contains(r, c) for r in constraints[pid])
            ),
            None,
        )
        if pick is None:
            return None
        chosen[pid] = pick
        queue.extend(provider.get_dependencies(pick))
    return chosen


def _backtrack(roots: list[Requirement], provider: _Provider) -> dict[str, Candidate]:
    resolver = Resolver(provider, BaseReporter())
    try:
        result = resolver.resolve(roots, max_rounds=2000)
    except ResolutionImpossible as exc:
        raise ResolutionFailed(_explain(exc.causes, provider, roots)) from None
    except ResolutionTooDeep:
        raise ResolutionFailed(
            [
                ResolutionIssue(
                    "too_complex", "The plugin set needs too much backtracking to resolve."
                )
            ]
        ) from None
    return dict(result.mapping)


def _explain(causes, provider: _Provider, roots: list[Requirement]) -> list[ResolutionIssue]:
    parents: dict[str, Requirement] = {r.plugin_id: r for r in roots}
    for info in causes:
        parents.setdefault(info.requirement.plugin_id, info.requirement)
        if info.parent is not None:
            parents.setdefault(info.parent.plugin_id, Requirement(info.parent.plugin_id, "", None))
    by_id: dict[str, list[Requirement]] = {}
    for info in causes:
        by_id.setdefault(info.requirement.plugin_id, []).append(info.requirement)
    issues = []
    for pid, reqs in sorted(by_id.items()):
        chains = [_chain(r, parents) for r in reqs]
        available = [c.version for c in provider.catalog.get(pid, [])]
        if not available:
            issues.append(
                ResolutionIssue(
                    "missing_dependency",
                    f"No plugin {pid!r} is available to this organization "
                    f"(required by {' → '.join(chains[0][:-1])}).",
                    chains,
                )
            )
        elif len(reqs) == 1:
            issues.append(
                ResolutionIssue(
                    "no_matching_version",
                    f"No version of {pid} satisfies {reqs[0].range_text or '*'} "
                    f"(available: {', '.join(available)}).",
                    chains,
                )
            )
        else:
            issues.append(
                ResolutionIssue(
                    "version_conflict",
                    f"No version of {pid} satisfies every range: "
                    + "; ".join(" → ".join(chain) for chain in chains)
                    + f" (available: {', '.join(available)}).",
                    chains,
                )
            )
    return issues
