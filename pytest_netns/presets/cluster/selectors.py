"""Kubernetes label selectors: checked from plain data, matched against a pod's or a namespace's labels.

A service's selector is an equality selector (``{"app": "web"}``: every label present with that value,
``matches_labels``).  A NetworkPolicy's selectors are ``LabelSelector``s: ``{"key": "value"}`` (the
same as ``{"match_labels": {...}}``) or ``{"match_labels": {...}, "match_expressions": [{"key",
"operator", "values"}, ...]}``; ``{}`` selects everything.  A mapping is read as the structured form
when its keys are ``match_labels`` and/or ``match_expressions`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..._kernel import validate as _validate

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: tuple[Operator, ...] = ("In", "NotIn", "Exists", "DoesNotExist")
_STRUCTURED = frozenset({"match_labels", "match_expressions"})
_REQUIREMENT_KEYS = frozenset({"key", "operator", "values"})


def matches_labels(wanted: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every label of ``wanted`` is in ``labels`` with that value (an equality selector; ``{}`` matches all)."""
    return all(labels.get(key) == value for key, value in wanted.items())


@dataclass(frozen=True)
class Requirement:
    """One of ``match_expressions``: ``key`` ``operator`` ``values``."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn, as Kubernetes reads it


@dataclass(frozen=True)
class Selector:
    """A checked label selector: all of ``match_labels`` and every requirement must hold."""

    match_labels: Mapping[str, str]
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_labels(self.match_labels, labels) and all(r.matches(labels) for r in self.match_expressions)

    @property
    def empty(self) -> bool:
        """It selects everything (``{}``)."""
        return not self.match_labels and not self.match_expressions

    def __repr__(self) -> str:
        parts = [f"{key}={value}" for key, value in self.match_labels.items()]
        parts += [
            f"{r.key} {r.operator} {list(r.values)}" if r.values else f"{r.key} {r.operator}"
            for r in self.match_expressions
        ]
        return f"<Selector {', '.join(parts) or 'everything'}>"


def selector(value: object, what: str) -> Selector:
    """A label selector from plain data; ``ValueError`` naming ``what`` and the bad value."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping (labels, or match_labels/match_expressions), got {value!r}")
    if value and set(value) <= _STRUCTURED:
        labels = _validate.labels(value.get("match_labels"), f"{what}: match_labels")
        expressions = value.get("match_expressions")
        if expressions is None:
            expressions = []
        if isinstance(expressions, (str, bytes, Mapping)) or not isinstance(expressions, Sequence):
            raise ValueError(f"{what}: match_expressions must be a list of requirements, got {expressions!r}")
        checked = tuple(
            _requirement(item, f"{what}: match_expressions[{number}]") for number, item in enumerate(expressions)
        )
        return Selector(MappingProxyType(labels), checked)
    return Selector(MappingProxyType(_validate.labels(value, what)))


def _requirement(value: object, what: str) -> Requirement:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping with key, operator and values, got {value!r}")
    unknown = [key for key in value if key not in _REQUIREMENT_KEYS]
    if unknown:
        raise ValueError(f"{what}: unknown field {unknown[0]!r} (a requirement has key, operator, values)")
    if "key" not in value:
        raise ValueError(f"{what}: no key in {dict(value)!r}")
    key = _validate.label_key(value["key"])
    operator = value.get("operator")
    if operator not in OPERATORS:
        raise ValueError(f"{what}: operator {operator!r} is not one of {', '.join(OPERATORS)}")
    raw = value.get("values")
    if raw is None:
        raw = []
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise ValueError(f"{what}: values must be a list of strings, got {raw!r}")
    values = tuple(_validate.label_value(key, item) for item in raw)
    if operator in ("In", "NotIn") and not values:
        raise ValueError(f"{what}: operator {operator!r} needs at least one value for key {key!r}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"{what}: operator {operator!r} takes no values, got {list(values)!r} for key {key!r}")
    return Requirement(key, operator, values)
