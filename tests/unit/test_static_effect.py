"""engine.spec.effects: a step's effect without a server, and when a rendered value decides it instead.

The class: any kind whose static rule reads a templated value. A step reported with a fixed effect must
keep that effect whatever its templates render to (checked by rendering them to hostile values); one whose
effect can change is reported as decided at run time, with the effect for the values given when known.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.spec.effects import StaticEffect, static_effect
from engine.spec.loader import Catalog
from engine.spec.model import Effect

# What a template could render to that changes an effect somewhere.
PROBES = [
    "0",
    "-1",
    "RESET",
    "REPLACE",
    "dir",
    "requirepass",
    "POST",
    "DELETE",
    "true",
    "FLUSHALL",
    "KILL",
    "GET",
    "LIST",
]

RUN_TIME: list[tuple[str, Any, Effect | None]] = [  # (kind, body, declared)
    ("redis", {"command": ["{{ cmd }}", "k"]}, None),
    ("redis", {"command": ["CONFIG", "{{ sub }}", "maxmemory"]}, None),
    ("redis", {"command": ["CONFIG", "SET", "{{ param }}", "1"]}, None),
    ("redis", {"command": ["EXPIRE", "k", "{{ ttl }}"]}, None),
    ("redis", {"command": ["ACL", "LOG", "{{ n }}"]}, None),
    ("redis", {"command": ["CLIENT", "{{ sub }}", "ID", "7"]}, None),
    ("redis", {"command": ["ACL", "{{ sub }}", "bob"]}, Effect.WRITE),  # declared: at least write, maybe more
    ("http", {"path": "/x", "method": "{{ method }}"}, None),
    ("tenant_data", {"import": {"input": "f", "replace": "{{ replace }}"}}, None),
]

STATIC: list[tuple[str, Any, Effect | None, Effect]] = [  # (kind, body, declared, effect)
    ("redis", {"command": ["GET", "{{ key }}"]}, None, Effect.READ),
    ("redis", {"command": ["HSET", "{{ key }}", "f", "{{ value }}"]}, None, Effect.WRITE),
    ("redis", {"command": ["CONFIG", "GET", "{{ pattern }}"]}, None, Effect.READ),
    ("redis", {"command": ["CONFIG", "SET", "maxmemory", "{{ value }}"]}, None, Effect.WRITE),
    ("redis", {"command": ["UNLINK", "{{ key }}"]}, None, Effect.DESTRUCTIVE),
    ("redis", {"command": ["ACL", "LOG", "{{ n }}"]}, Effect.DESTRUCTIVE, Effect.DESTRUCTIVE),
    ("http", {"url": "{{ url }}"}, None, Effect.READ),
    ("keyspace", {"delete_matching": {"match": "tenant:{{ t }}:*"}}, None, Effect.DESTRUCTIVE),
    ("ssh", {"run": "{{ service.restart }}"}, None, Effect.DESTRUCTIVE),
    ("ssh", {"run": "{{ service.status }}"}, Effect.READ, Effect.READ),
]


def _render_all(value: Any, to: str) -> Any:
    if isinstance(value, str) and "{{" in value:
        return to
    if isinstance(value, list):
        return [_render_all(v, to) for v in value]
    if isinstance(value, dict):
        return {k: _render_all(v, to) for k, v in value.items()}
    return value


def _effects_over_probes(kind: str, body: Any, declared: Effect | None) -> set[Effect | None]:
    return {static_effect(kind, _render_all(body, probe), declared).effect for probe in PROBES}


@pytest.mark.parametrize(("kind", "body", "declared"), RUN_TIME)
def test_an_effect_a_rendered_value_decides_is_decided_at_run_time(kind, body, declared) -> None:
    assert len(_effects_over_probes(kind, body, declared)) > 1  # the premise: the values do change it
    view = static_effect(kind, body, declared)
    assert view.at_run_time and view.effect is None


@pytest.mark.parametrize(("kind", "body", "declared", "effect"), STATIC)
def test_an_effect_no_value_can_change_is_told(kind, body, declared, effect) -> None:
    assert static_effect(kind, body, declared) == StaticEffect(effect)
    assert _effects_over_probes(kind, body, declared) == {effect}


def _shipped_steps() -> list[tuple[str, Any, Effect | None]]:
    catalog = Catalog()
    steps = []
    for pid in sorted(catalog.entries()):
        for step in catalog.load(pid).steps:
            steps.append(pytest.param(step.kind, step.action, step.effect, id=f"{pid}:{step.id}"))
    return steps


@pytest.mark.parametrize(("kind", "body", "declared"), _shipped_steps())
def test_every_shipped_step_told_a_fixed_effect_keeps_it_whatever_its_templates_render(kind, body, declared) -> None:
    view = static_effect(kind, body, declared)
    if not view.at_run_time:
        assert _effects_over_probes(kind, body, declared) == {view.effect}


@pytest.mark.parametrize(
    ("argv", "effect"),
    [
        (["ACL", "LOG", "RESET"], Effect.WRITE),
        (["ACL", "LOG", "10"], Effect.READ),
        (["EXPIRE", "k", "0"], Effect.DESTRUCTIVE),
    ],
)
def test_the_effect_for_the_values_given_when_they_tell_it(argv: list[str], effect: Effect) -> None:
    templated = {"command": [*argv[:-1], "{{ x }}"]}
    view = static_effect("redis", templated, None, rendered={"command": argv})
    assert view == StaticEffect(None, effect)
    unknown = static_effect("redis", templated, None, rendered=templated)  # a register: still not rendered
    assert unknown == StaticEffect(None, None)
