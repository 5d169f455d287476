"""Routers, argument models and validation: bad signatures fail at decoration."""

from __future__ import annotations

import pydantic
import pytest

from gateway.errors import InvalidArguments, RegistryError
from gateway.registry import Registry, Router, build_spec, routers_of


def add(a: int, b: int) -> int:
    return a + b


def test_payload_arguments_are_strict() -> None:
    spec = build_spec(add, "devices/{device_id}/add")
    assert spec.bind({"device_id": "d1"}, {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(InvalidArguments) as info:
        spec.bind({"device_id": "d1"}, {"a": "1", "b": 2})
    assert info.value.details == [{"loc": ["a"], "msg": "Input should be a valid integer", "type": "int_type"}]
    assert info.value.message == "invalid arguments: a: Input should be a valid integer"


def test_details_do_not_echo_the_input_and_name_extra_and_missing() -> None:
    spec = build_spec(add, "devices/{device_id}/add")
    with pytest.raises(InvalidArguments) as info:
        spec.bind({}, {"a": 1, "secret": "do-not-echo"})
    details = info.value.details or []
    assert {"loc": ["b"], "msg": "Field required", "type": "missing"} in details
    assert {"loc": ["secret"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"} in details
    assert "do-not-echo" not in repr(details)


def test_topic_parameters_are_coerced() -> None:
    def get(device_id: str, slot: int) -> int:
        return slot

    spec = build_spec(get, "devices/{device_id}/slots/{slot}")
    assert spec.bind({"device_id": "d1", "slot": "7"}, {}) == {"device_id": "d1", "slot": 7}
    with pytest.raises(InvalidArguments, match="invalid topic parameters: slot: Input should be a valid integer"):
        spec.bind({"device_id": "d1", "slot": "x"}, {})


def test_topic_parameter_conflicting_with_payload_key() -> None:
    def get(device_id: str) -> str:
        return device_id

    spec = build_spec(get, "devices/{device_id}/id")
    with pytest.raises(InvalidArguments, match="'device_id' is given by the topic and must not be in the payload"):
        spec.bind({"device_id": "d1"}, {"device_id": "d2"})


def test_non_string_argument_names() -> None:
    spec = build_spec(add, "devices/{device_id}/add")
    with pytest.raises(InvalidArguments, match="argument names must be strings"):
        spec.bind({}, {1: 2})


def test_bad_signatures_fail_at_decoration() -> None:
    router = Router()
    with pytest.raises(RegistryError, match="parameter 'b' needs a type annotation"):

        @router.function("x/{device_id}")
        def f(a: int, b) -> None:  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(RegistryError, match="must be a plain or keyword-only parameter"):

        @router.function("x/{device_id}")
        def g(*args: int) -> None:
            pass

    with pytest.raises(RegistryError, match="executor must be one of"):
        router.function("x/y", executor="gpu")(add)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=r"publish template 'out/{other}' uses"):
        router.function("x/{device_id}", publish="out/{other}")(add)


class Opaque:
    pass


class Reading(pydantic.BaseModel):
    celsius: float


def test_unsupported_argument_type() -> None:
    def f(thing: Opaque) -> None:
        pass

    with pytest.raises(RegistryError, match="unsupported argument type"):
        build_spec(f, "x/y")


def test_overlapping_templates_are_refused() -> None:
    first = build_spec(add, "devices/{device_id}/add")
    second = build_spec(add, "devices/special/add")
    with pytest.raises(RegistryError, match="can match the same topic"):
        Registry.from_specs([first, second])
    third = build_spec(add, "devices/{device_id}/sub")
    registry = Registry.from_specs([first, third])
    resolved = registry.resolve("devices/d1/sub")
    assert resolved is not None and resolved[0] is third and resolved[1] == {"device_id": "d1"}


def test_include_router_applies_prefix() -> None:
    inner = Router()
    inner.function("{device_id}/add")(add)
    outer = Router(prefix="devices")
    outer.include_router(inner)
    assert [spec.key for spec in outer.specs] == ["devices/{device_id}/add"]


def test_include_router_keeps_every_option() -> None:
    inner = Router()
    inner.function("{device_id}/add", timeout=2.0, idempotent=True, retries=3, max_age=5.0, concurrency=4,
                   publish="out/{device_id}")(add)  # fmt: skip
    outer = Router(prefix="devices")
    outer.include_router(inner)
    [spec] = outer.specs
    assert spec.options == inner.specs[0].options
    options = spec.options
    assert (options.timeout, options.idempotent, options.retries) == (2.0, True, 3)
    assert (options.max_age, options.concurrency) == (5.0, 4)
    assert spec.publish is not None and spec.publish.template == "out/{device_id}"


def test_model_arguments_validate() -> None:
    def store(reading: Reading) -> float:
        return reading.celsius

    spec = build_spec(store, "devices/{device_id}/store")
    kwargs = spec.bind({}, {"reading": {"celsius": 21.5}})
    assert kwargs["reading"] == Reading(celsius=21.5)


def test_routers_of_reports_missing_modules_and_routers() -> None:
    with pytest.raises(RegistryError, match="cannot import function module 'no_such_module'"):
        routers_of("no_such_module")
    with pytest.raises(RegistryError, match="has no Router named 'router'"):
        routers_of("gateway.errors")
    assert routers_of("functions.examples")
