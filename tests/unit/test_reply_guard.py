"""gateway.reply_guard: where a request's reply may go.

Refused: topics the broker would refuse (dead-lettered), topics the gateway itself subscribes to (a reply
loop: dropped only), topics outside the requesting device's reply space (dead-lettered), and, with reply
spaces, any reply of a request under the devices' own filters that names no device. A reload rebuilds
the subscriptions and device filters the guard checks against, and forgets its cached verdicts.
"""

from __future__ import annotations

import pytest

from gateway import reply_guard
from gateway.registry import Registry, build_spec
from gateway.reply_guard import Refusal, ReplyGuard
from gateway.topics import TopicTemplate

NAMESPACE = (TopicTemplate.parse("devices/{device_id}/{function:path}"),)
SPACES = (TopicTemplate.parse("roost/replies/{device_id}"),)
SUBSCRIBED = ["devices/+/#"]
NO_DEVICE = Refusal("cannot be checked: the request's topic names no device", "reply_space", False)


def status(device_id: str) -> str:
    return device_id


def reset(site: str) -> str:
    return site


def registry(*templates: str) -> Registry:
    functions = {"pi/{device_id}/status": status, "sites/{site}/reset": reset}
    return Registry.from_specs(build_spec(functions[template], template) for template in templates)


def guard(spaces: tuple[TopicTemplate, ...] | None = SPACES, max_levels: int = 32) -> ReplyGuard:
    return ReplyGuard(spaces, NAMESPACE, registry("sites/{site}/reset"), SUBSCRIBED, max_levels)


def outside(device_id: str) -> Refusal:
    return Refusal(f"is outside device {device_id!r}'s reply space", "reply_space", True)


def loop(mqtt_filter: str) -> Refusal:
    return Refusal(f"matches the gateway's subscription {mqtt_filter!r} (reply loop)", "reply_topic_refused", False)


@pytest.mark.parametrize("target", ["roost/replies/A", "roost/replies/A/7", "roost/replies/A/x/y/z"])
def test_a_reply_in_the_device_s_own_space_may_go(target: str) -> None:
    assert guard().check(target, "devices/A/add", "A") is None


@pytest.mark.parametrize("target", ["roost/replies/B", "roost/replies/B/A", "roost/replies/AB", "roost/replies", "x"])
def test_a_reply_outside_the_device_s_space_is_refused_and_dead_lettered(target: str) -> None:
    assert guard().check(target, "devices/A/add", "A") == outside("A")


def test_the_verdict_is_the_requesting_device_s_not_the_first_asker_s() -> None:
    checks = guard()
    assert checks.check("roost/replies/A", "devices/A/add", "A") is None
    assert checks.check("roost/replies/A", "devices/B/add", "B") == outside("B")  # B forging A's reply topic
    assert checks.check("roost/replies/A", "devices/A/add", "A") is None


def test_without_reply_spaces_a_reply_may_go_to_any_publishable_topic() -> None:
    checks = guard(spaces=None)
    assert checks.check("roost/replies/B", "devices/A/add", "A") is None
    assert checks.check("anywhere/at/all", "devices/A/add", "A") is None


@pytest.mark.parametrize("spaces", [SPACES, None, (TopicTemplate.parse("devices/{device_id}"),)])
@pytest.mark.parametrize("target", ["devices/A/add", "devices/B/add/more", "devices/A/"])
def test_a_reply_topic_the_gateway_subscribes_to_is_a_reply_loop_dropped_without_a_dead_letter(
    spaces: tuple[TopicTemplate, ...] | None, target: str
) -> None:
    # Refused whatever the reply spaces say, even a space that holds it.
    assert guard(spaces).check(target, "devices/A/add", "A") == loop("devices/+/#")


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("", "is empty"),
        ("roost/replies/A/+", "holds an MQTT wildcard"),
        ("roost/replies/A/#", "holds an MQTT wildcard"),
        ("devices/+/add", "holds an MQTT wildcard"),  # would match the subscription too: unpublishable comes first
        ("$SYS/roost/replies/A", "starts with '$' (the broker's own topics)"),
        ("roost/replies/A/\x00", "holds U+0000, which MQTT forbids in a topic"),
        ("roost/replies/A/\ufffe", "holds U+FFFE, which MQTT forbids in a topic"),
        ("roost/replies/A/" + "x" * 65_535, "is over 65535 bytes"),
        ("roost/replies/A/1/2/3", "has 6 levels, over the limit of 5"),
    ],
)
def test_a_topic_the_broker_would_refuse_is_refused_and_dead_lettered(target: str, problem: str) -> None:
    expected = Refusal(f"is not a topic the broker accepts: it {problem}", "reply_topic_refused", True)
    assert guard(max_levels=5).check(target, "devices/A/add", "A") == expected
    assert guard(spaces=None, max_levels=5).check(target, "devices/A/add", "A") == expected


def test_a_request_under_the_devices_filters_that_names_no_device_fails_closed() -> None:
    checks = guard()
    # Not device-scoped and naming no device: not held to a space (the broker ACL's business).
    assert checks.check("roost/replies/A", "sites/s1/reset", None) is None
    # The same reply topic, cached as allowed for "no device" just now, from under the devices' filters.
    assert checks.check("roost/replies/A", "devices/A/", None) == NO_DEVICE
    assert checks.check("roost/replies/A", "devices/A/add", "A") is None


def test_without_reply_spaces_a_request_naming_no_device_is_not_refused_for_it() -> None:
    assert guard(spaces=None).check("roost/replies/A", "devices/A/", None) is None


def test_other_refusals_come_before_a_space_check_on_a_request_naming_no_device() -> None:
    checks = guard()
    assert checks.check("sites/s1/x/+", "sites/s1/reset", None) == Refusal(
        "is not a topic the broker accepts: it holds an MQTT wildcard", "reply_topic_refused", True
    )
    assert checks.check("devices/A/add", "sites/s1/reset", None) == loop("devices/+/#")


def test_a_reload_brings_new_subscriptions_and_device_filters_and_forgets_old_verdicts() -> None:
    checks = guard()
    assert checks.check("pi/A/status", "devices/A/add", "A") == outside("A")
    assert checks.check("roost/replies/A", "pi/A/status", None) is None  # pi/... is no device's topic yet
    checks.rebuild(registry("sites/{site}/reset", "pi/{device_id}/status"), [*SUBSCRIBED, "pi/+/status"])
    assert checks.check("pi/A/status", "devices/A/add", "A") == loop("pi/+/status")
    assert checks.check("roost/replies/A", "pi/A/status", None) == NO_DEVICE
    assert checks.check("roost/replies/A", "devices/A/", None) == NO_DEVICE  # the namespace stays the devices'


def test_a_reload_that_drops_a_subscription_lets_replies_go_there_again() -> None:
    checks = guard(spaces=None)
    assert checks.check("devices/A/add", "devices/A/add", "A") == loop("devices/+/#")
    checks.rebuild(registry("sites/{site}/reset"), ["sites/+/reset"])
    assert checks.check("devices/A/add", "devices/A/add", "A") is None
    assert checks.check("sites/s1/reset", "devices/A/add", "A") == loop("sites/+/reset")


def test_cached_verdicts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reply_guard, "REPLY_TOPIC_CACHE", 3)
    checks = guard()
    for n in range(10):
        assert checks.check(f"roost/replies/A/{n}", "devices/A/add", "A") is None
        assert checks.check(f"roost/replies/B/{n}", "devices/A/add", "A") == outside("A")
        assert len(checks._verdicts) <= 3
