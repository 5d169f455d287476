"""Where a reply may go: the checks on a request's reply topic, made before anything runs.

A reply topic arrives with each request (MQTT 5 Response Topic, or ``$rt``), so
it is checked per request; devices reuse theirs, so verdicts are cached
(bounded). Refused (docs/protocol.md, "Guards"):

* topics the broker would refuse (:func:`gateway.topics.publish_problem`:
  wildcards, a leading ``$``, control characters, non-characters, over 65,535
  bytes or ``max_topic_levels`` levels): a PUBLISH there would cost the gateway
  its connection, for every device; dead-lettered by the dispatcher, since the
  device can be told;
* topics that one of the gateway's own subscriptions matches (a reply loop): dropped;
* with reply spaces, a topic outside the requesting device's space: dead-lettered;
* with reply spaces, a request under the devices' own filters that names no
  device (``devices/A/``): nothing to check it against, so it fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway import limits
from gateway.registry import Registry
from gateway.topics import TopicTemplate, filter_matches, publish_problem

REPLY_TOPIC_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reply topic is refused, and how the refusal is counted."""

    problem: str  # completes "its reply topic 'x' …"
    reason: str  # the drop reason in the metrics: reply_topic_refused or reply_space
    dead_letter: bool  # report it on the device's dead-letter topic


_NO_DEVICE = Refusal("cannot be checked: the request's topic names no device", "reply_space", False)


class ReplyGuard:
    """Decides, per request, whether its reply may go to its reply topic."""

    def __init__(
        self,
        spaces: tuple[TopicTemplate, ...] | None,
        namespace: Sequence[TopicTemplate],
        registry: Registry,
        subscribed: Sequence[str],
        max_levels: int = 32,
    ) -> None:
        self._spaces = spaces
        self._max_levels = max_levels
        self._namespace = tuple(namespace)
        self._verdicts: dict[tuple[str, str | None], Refusal | None] = {}
        self.rebuild(registry, subscribed)

    def rebuild(self, registry: Registry, subscribed: Sequence[str]) -> None:
        """Follow a reload: other functions, other subscriptions."""
        self._subscribed = tuple(subscribed)
        templates = [*self._namespace, *(spec.template for spec in registry.specs)]
        # The devices' own topics: the filters of the templates that name a device.
        self._device_filters = tuple(dict.fromkeys(t.mqtt_filter for t in templates if "device_id" in t.params))
        self._verdicts.clear()

    def check(self, target: str, topic: str, device_id: str | None) -> Refusal | None:
        """Why a request on ``topic`` from ``device_id`` may not be answered on ``target``; ``None``: it may."""
        if device_id is None and self._spaces is not None and self._device_scoped(topic):
            return _NO_DEVICE
        key = (target, device_id)
        try:
            return self._verdicts[key]
        except KeyError:
            if len(self._verdicts) >= REPLY_TOPIC_CACHE:
                self._verdicts.clear()
            verdict = self._verdicts[key] = self._problem(target, device_id)
            return verdict

    def _device_scoped(self, topic: str) -> bool:
        return any(filter_matches(mqtt_filter, topic) for mqtt_filter in self._device_filters)

    def _problem(self, target: str, device_id: str | None) -> Refusal | None:
        problem = publish_problem(target, self._max_levels)
        if problem is not None:
            return Refusal(f"is not a topic the broker accepts: it {problem}", "reply_topic_refused", True)
        for mqtt_filter in self._subscribed:
            if filter_matches(mqtt_filter, target):
                return Refusal(f"matches the gateway's subscription {mqtt_filter!r} (reply loop)",
                               "reply_topic_refused", False)  # fmt: skip
        if self._spaces is not None and device_id is not None:  # no device, outside device-scoped filters: the ACL's
            problem = limits.reply_space_problem(target, device_id, self._spaces)
            if problem is not None:
                return Refusal(problem, "reply_space", True)
        return None
