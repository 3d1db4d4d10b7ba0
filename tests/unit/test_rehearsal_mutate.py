"""The mutation operators of `rehearse --mutate`: pure functions from a procedure's YAML data to mutants."""

from __future__ import annotations

from engine.rehearsal import mutate

PROCEDURE = {
    "id": "test/p",
    "title": "t",
    "section": "s",
    "description": "d",
    "params": {
        "ttl": {"type": "duration", "default": "1h"},
        "limit": {"type": "integer", "default": 10},
        "flush": {"type": "boolean", "default": True},
        "password": {"type": "string", "default": "x", "secret": True},
    },
    "steps": [
        {
            "id": "look",
            "name": "Look",
            "redis": {"command": ["DBSIZE"]},
            "register": "n",
            "expect": [
                {"that": "n > 0", "message": "empty"},
                {"that": "n < 5", "severity": "info", "message": "big"},
            ],
        },
        {
            "id": "expire",
            "name": "Expire",
            "when": "n > 0",
            "redis": {"command": ["EXPIRE", "k:{{ n }}", "60"]},
            "confirm": "Expire?",
        },
        {
            "id": "copy",
            "name": "Copy",
            "effect": "write",
            "ssh": {"command": "cp {{ paths.rdb }} /tmp/x && sleep 1"},
            "confirm": "Copy?",
        },
    ],
}


def names(found: list[mutate.Mutant]) -> list[str]:
    return [m.name for m in found]


def test_every_operator_plants_its_bug_in_a_copy():
    found = {m.name: m for m in mutate.mutants(PROCEDURE)}
    assert set(found) == {
        "drop-step:look",
        "drop-step:expire",
        "drop-step:copy",
        "invert-when:expire",
        "weaken-expect:look[0]",
        "effect-to-read:expire",
        "effect-to-read:copy",
        "change-default:ttl",
        "change-default:limit",
        "change-default:flush",
        "change-literal:expire",
        "change-literal:copy",
        "drop-confirm:expire",
        "drop-confirm:copy",
    }
    assert [s["id"] for s in found["drop-step:expire"].data["steps"]] == ["look", "copy"]
    assert found["invert-when:expire"].data["steps"][1]["when"] == "not (n > 0)"
    assert found["weaken-expect:look[0]"].data["steps"][0]["expect"][0]["that"] == "true"
    assert found["effect-to-read:expire"].data["steps"][1]["effect"] == "read"
    assert found["change-default:ttl"].data["params"]["ttl"]["default"] == "3h"
    assert found["change-default:limit"].data["params"]["limit"]["default"] == 21
    assert found["change-default:flush"].data["params"]["flush"]["default"] is False
    assert found["change-literal:expire"].data["steps"][1]["redis"]["command"] == ["EXPIRE", "k:{{ n }}", "61"]
    assert found["change-literal:copy"].data["steps"][2]["ssh"]["command"] == "cp {{ paths.rdb }} /tmp/x && sleep 2"
    assert "confirm" not in found["drop-confirm:copy"].data["steps"][2]
    assert PROCEDURE["steps"][1]["when"] == "n > 0" and "confirm" in PROCEDURE["steps"][2]  # original untouched


def test_what_is_not_mutated():
    found = names(mutate.mutants(PROCEDURE))
    assert "weaken-expect:look[1]" not in found  # an info expectation fails nothing: weakening it changes no run
    assert "change-default:password" not in found  # a secret's default is never written to a mutant file
    assert "effect-to-read:look" not in found  # already a read


def test_literals_inside_templates_are_left_alone():
    assert mutate._mutate_command("redis-cli -p {{ port + 1 }} ping") is None
    assert mutate._mutate_command("tail -n 200 {{ paths.log }}") == "tail -n 201 {{ paths.log }}"
    assert mutate._mutate_command(["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]) == [
        "CONFIG",
        "SET",
        "maxmemory-policy",
        "allkeys-lrux",
    ]


def test_the_sample_is_deterministic_and_spreads_over_operators():
    found = mutate.mutants(PROCEDURE)
    first = mutate.sample(found, 5)
    assert names(first) == names(mutate.sample(list(reversed(found)), 5))
    assert len(first) == 5
    assert len({m.name.split(":")[0] for m in first}) == 5  # five different operators
    assert mutate.sample(found, None) == found


def test_score_does_not_count_equivalent_mutants():
    m = mutate.mutants(PROCEDURE)[0]
    outcomes = [
        mutate.Outcome(m, "killed", ""),
        mutate.Outcome(m, "killed", ""),
        mutate.Outcome(m, "survived", ""),
        mutate.Outcome(m, "equivalent", ""),
    ]
    killed, counted, percent = mutate.score(outcomes)
    assert (killed, counted) == (2, 3) and round(percent, 1) == 66.7
