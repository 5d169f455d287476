"""``roost functions``: the registered functions, as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gateway.config import Settings
from gateway.registry import Registry


def print_functions(settings: Settings, registry: Registry) -> None:
    """Print topic template → MQTT filter, argument schema and executor of every function."""
    table = Table(title=f"Roost functions ({len(registry.specs)})")
    for column in ("topic template", "MQTT filter", "arguments", "executor", "function"):
        table.add_column(column)
    for spec in registry.specs:
        executor = settings.executor if spec.options.executor == "default" else spec.options.executor
        extra = f" → {spec.publish.template}" if spec.publish else ""
        table.add_row(spec.key, spec.template.mqtt_filter, spec.schema_summary(), executor, spec.name + extra)
    Console(width=160).print(table)
