"""Settings: TOML, environment and flags, validated once with one clear line per error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import BrokerAddress, load_settings
from gateway.errors import ConfigError


def test_defaults() -> None:
    settings = load_settings()
    assert str(settings.broker) == "127.0.0.1:1883"
    assert settings.executor == "local"
    assert settings.mqtt_version == "5"
    assert settings.functions == ()  # nothing is served unless the settings name it


def test_priority_flags_over_environment_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "roost.toml"
    config.write_text('broker = "10.0.0.1:1884"\nworkers = 3\nexecutor = "inline"\n[limits]\ncall_timeout = 2.5\n')
    settings = load_settings(config)
    assert (str(settings.broker), settings.workers, settings.executor) == ("10.0.0.1:1884", 3, "inline")
    assert settings.limits.call_timeout == 2.5
    monkeypatch.setenv("ROOST_WORKERS", "5")
    monkeypatch.setenv("ROOST_LIMITS__MAX_QUEUE", "7")
    settings = load_settings(config)
    assert (settings.workers, settings.limits.max_queue, settings.limits.call_timeout) == (5, 7, 2.5)
    settings = load_settings(config, workers=9, broker="h:1")
    assert (settings.workers, str(settings.broker)) == (9, "h:1")


def test_the_reply_space_follows_the_reply_prefix_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().reply_spaces == ("roost/replies/{device_id}",)
    assert load_settings(reply_prefix="pi/in").reply_spaces == ("pi/in/{device_id}",)
    spaces = load_settings(reply_spaces="roost/replies/{device_id}, b/{device_id}/x").reply_space_templates()
    assert spaces is not None
    assert [space.template for space in spaces] == ["roost/replies/{device_id}", "b/{device_id}/x"]
    assert load_settings(reply_prefix="r", reply_spaces="r/{device_id}").reply_spaces == ("r/{device_id}",)
    assert load_settings(reply_spaces="#").reply_space_templates() is None
    monkeypatch.setenv("ROOST_REPLY_PREFIX", "env/in")
    assert load_settings().reply_spaces == ("env/in/{device_id}",)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.workers = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"workers": 0}, "invalid setting 'workers': Input should be greater than or equal to 1"),
        ({"broker": "host:port"}, "invalid setting 'broker': broker port must be a number, got 'port'"),
        ({"broker": ":1883"}, "invalid setting 'broker': broker address ':1883' has no host"),
        ({"executor": "gpu"}, "invalid setting 'executor': Input should be 'local', 'inline' or 'mesos'"),
        ({"mqtt_version": "4"}, "invalid setting 'mqtt_version'"),
        ({"namespace": "devices/+/#"}, "invalid setting 'namespace': topic template 'devices/+/#' uses an MQTT"),
        ({"reply_prefix": "r/#"}, "invalid setting 'reply_prefix': must be a topic without wildcards"),
        ({"no_such": 1}, "invalid setting 'no_such': Extra inputs are not permitted"),
        ({"reply_spaces": ""}, "invalid setting 'reply_spaces': name at least one reply space, or \"#\""),
        ({"reply_spaces": "#,r/{device_id}"}, "invalid setting 'reply_spaces': \"#\" (any topic) cannot be combined"),
        ({"reply_spaces": "r/{site}"}, "invalid setting 'reply_spaces': reply space 'r/{site}' must use {device_id}"),
        ({"reply_spaces": "sites/{device_id}/inbox"}, "invalid setting 'reply_spaces': no reply space holds roost/"),
    ],
)
def test_bad_settings_name_the_setting(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**flags)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*missing.toml' does not exist"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("workers = = 2\n")
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings(broken)
    tls = tmp_path / "tls.toml"
    tls.write_text('[tls]\nca_file = "/nonexistent/ca.pem"\n')
    with pytest.raises(ConfigError, match=r"invalid setting 'tls': .*ca_file '/nonexistent/ca.pem' is not a readable"):
        load_settings(tls)


def test_environment_errors_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_KEEPALIVE", "soon")
    with pytest.raises(ConfigError, match="invalid setting 'keepalive'"):
        load_settings()


def test_broker_address_forms() -> None:
    assert BrokerAddress.parse("example.org") == BrokerAddress(host="example.org", port=1883)
    assert BrokerAddress.parse("[::1]:1884") == BrokerAddress(host="::1", port=1884)


def test_default_state_follows_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    settings = load_settings(client_id="gw/1")
    assert settings.durable.file_for("gw/1") == tmp_path / "state" / "roost" / "gw_1.queue.sqlite3"
    assert settings.mesos.state_file == tmp_path / "state" / "roost" / "mesos-framework.json"
    # The XDG spec ignores a relative path: the default under HOME applies.
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings().durable.file_for("x") == tmp_path / "home" / ".local" / "state" / "roost" / "x.queue.sqlite3"
