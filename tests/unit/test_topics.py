"""Topic templates: parsing errors, MQTT filters, matching and filter relations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import TemplateError
from gateway.topics import TopicTemplate, filter_covers, filter_matches, filters_overlap, publish_problem


def test_template_compiles_to_filter_and_params() -> None:
    template = TopicTemplate.parse("devices/{device_id}/files/{path:path}")
    assert template.mqtt_filter == "devices/+/files/#"
    assert template.params == ("device_id", "path")


def test_match_extracts_parameters() -> None:
    template = TopicTemplate.parse("devices/{device_id}/add")
    assert template.match("devices/d1/add") == {"device_id": "d1"}
    assert template.match("devices/d1/sub") is None
    assert template.match("devices/d1/add/more") is None
    assert template.match("devices//add") is None


def test_path_parameter_takes_the_rest() -> None:
    template = TopicTemplate.parse("files/{name:path}")
    assert template.match("files/a/b/c") == {"name": "a/b/c"}
    assert template.match("files") is None


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "is empty"),
        ("devices/+/add", "uses an MQTT wildcard"),
        ("devices/#", "uses an MQTT wildcard"),
        ("devices/x{id}/add", "must be a whole"),
        ("devices/{id}/{id}", "repeats parameter 'id'"),
        ("{rest:path}/add", "must be the last level"),
        ("sites/{device_id:path}", "{device_id} names one level, not a path"),
        ("$SYS/{x}", "must not start with '$'"),
        ("devices/{1abc}/add", "must be a whole"),
    ],
)
def test_bad_templates_are_refused_with_a_clear_message(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("$", r"\$").replace("+", r"\+")):
        TopicTemplate.parse(template)


def test_render_fills_parameters_and_names_missing_ones() -> None:
    template = TopicTemplate.parse("alerts/{device_id}/t")
    assert template.render({"device_id": "d9"}) == "alerts/d9/t"
    with pytest.raises(TemplateError, match="needs parameter 'device_id'"):
        template.render({})


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("#", "$SYS/x", False),
        ("a/b", "a/b", True),
    ],
)
def test_filter_matches(flt: str, topic: str, expected: bool) -> None:
    assert filter_matches(flt, topic) is expected


def test_overlap_and_cover() -> None:
    assert filters_overlap("devices/+/add", "devices/special/add")
    assert filters_overlap("devices/#", "devices/x/y")
    assert not filters_overlap("devices/+/add", "devices/+/sub")
    assert not filters_overlap("a/+/c", "a/b")
    assert filter_covers("devices/+/#", "devices/+/add")
    assert not filter_covers("devices/+/add", "devices/+/#")
    assert not filter_covers("devices/x/#", "devices/+/add")


levels = st.lists(st.sampled_from(["a", "b", "+"]), min_size=1, max_size=4)


@given(levels, levels, st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=5))
def test_cover_and_overlap_agree_with_matching(a: list[str], b: list[str], topic: list[str]) -> None:
    fa, fb, t = "/".join(a), "/".join(b), "/".join(topic)
    if filter_matches(fa, t) and filter_matches(fb, t):
        assert filters_overlap(fa, fb)
    if filter_covers(fa, fb) and filter_matches(fb, t):
        assert filter_matches(fa, t)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("", "is empty"),
        ("a/+/b", "holds an MQTT wildcard"),
        ("a/#", "holds an MQTT wildcard"),
        ("$SYS/x", "starts with '$' (the broker's own topics)"),
        ("a/\x00", "holds U+0000, which MQTT forbids in a topic"),
        ("a/\x1f", "holds U+001F, which MQTT forbids in a topic"),
        ("a/\x7f", "holds U+007F, which MQTT forbids in a topic"),
        ("a/\x85", "holds U+0085, which MQTT forbids in a topic"),
        ("a/\ud800", "holds U+D800, which MQTT forbids in a topic"),
        ("a/\ufdd0", "holds U+FDD0, which MQTT forbids in a topic"),
        ("a/\ufffe", "holds U+FFFE, which MQTT forbids in a topic"),
        ("a/\U0001ffff", "holds U+1FFFF, which MQTT forbids in a topic"),
        ("a/\U0010fffe", "holds U+10FFFE, which MQTT forbids in a topic"),
        ("é" * 32768, "is over 65535 bytes"),
        ("/".join("x" * 33), "has 33 levels, over the limit of 32"),
    ],
)
def test_publish_problem_names_what_the_broker_would_refuse(topic: str, problem: str) -> None:
    assert publish_problem(topic, 32) == problem


@pytest.mark.parametrize("topic", ["a", "roost/replies/d1/x", "/".join("x" * 32), "é" * 32767, "a/\u00a0/\U0001f600"])
def test_publish_problem_passes_what_the_broker_takes(topic: str) -> None:
    assert publish_problem(topic, 32) is None


def test_a_template_with_a_character_mqtt_forbids_fails_at_parse() -> None:
    with pytest.raises(TemplateError) as raised:
        TopicTemplate.parse("alerts/\x01/{device_id}")
    assert str(raised.value) == "topic template 'alerts/\\x01/{device_id}' holds U+0001, which MQTT forbids in a topic"
