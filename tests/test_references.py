"""`${...}` references and `when:` conditions, resolved and evaluated without running any code."""

import pytest

from granary_flows.errors import ReferenceProblem
from granary_flows.references import Mapped, condition_references, holds, parse, resolve, whole_reference

pytestmark = pytest.mark.unit

SCOPE = {
    "args": {"n": 3, "tags": ["a", "b"], "scene": "s3://b/scene.tif"},
    "steps": {
        "ndvi": Mapped(
            [
                {"results": [{"href": "s3://r/0/ndvi.tif", "title": "ndvi"}], "value": {"mean": 0.2}},
                {"results": [{"href": "s3://r/1/ndvi.tif", "title": "ndvi"}], "value": {"mean": 0.4}},
            ]
        ),
        "stats": {"results": [], "value": {"vegetated": 0.5, "label": "wet"}},
    },
}


def test_a_whole_reference_keeps_its_type_and_a_reference_in_text_is_written_in():
    assert resolve("${args.n}", SCOPE) == 3
    assert resolve("tile-${args.n}.tif", SCOPE) == "tile-3.tif"
    assert resolve({"list": ["${args.tags}"]}, SCOPE) == {"list": [["a", "b"]]}


def test_results_by_output_name_and_position_and_across_a_mapped_step():
    assert resolve("${steps.ndvi.results.ndvi.href}", SCOPE) == ["s3://r/0/ndvi.tif", "s3://r/1/ndvi.tif"]
    assert resolve("${steps.ndvi[1].results[0].href}", SCOPE) == "s3://r/1/ndvi.tif"
    assert resolve("${steps.ndvi.value.mean}", SCOPE) == [0.2, 0.4]


def test_a_reference_to_nothing_is_named():
    with pytest.raises(ReferenceProblem, match=r"steps.stats.value has no 'nothing'"):
        resolve("${steps.stats.value.nothing}", SCOPE)
    with pytest.raises(ReferenceProblem, match=r"has 2 item\(s\), no \[5\]"):
        resolve("${steps.ndvi[5].value}", SCOPE)
    with pytest.raises(ReferenceProblem, match="a reference starts with one of"):
        parse("env.HOME")


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("${args.n} > 2", True),
        ("${args.n} >= 4", False),
        ("'b' in ${args.tags} and not ${args.n} == 4", True),
        ("${steps.stats.value.vegetated} > 0.25 or false", True),
        ("${steps.stats.value.label} != 'wet'", False),
        ("1 < ${args.n} < 3", False),
        ("'c' not in ${args.tags}", True),
        (True, True),
    ],
)
def test_conditions_compare_references_and_literals(condition, expected):
    assert holds(condition, SCOPE) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "__import__('os').system('id')",
        "${args.n}.__class__",
        "[x for x in ${args.tags}]",
        "${args.n} + 1 > 2",
        "open('/etc/passwd')",
        "lambda: 1",
    ],
)
def test_anything_but_a_comparison_is_refused_before_it_could_run(condition):
    with pytest.raises(ReferenceProblem, match=r"is not allowed|is not a condition|cannot read"):
        condition_references(condition)


def test_comparing_what_cannot_be_compared_is_a_problem_not_a_crash():
    with pytest.raises(ReferenceProblem, match="cannot compare"):
        holds("${args.tags} > 1", SCOPE)
    assert whole_reference("  ${args.n} ") is not None and whole_reference("x ${args.n}") is None
