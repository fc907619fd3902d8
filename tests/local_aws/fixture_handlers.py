"""Lambda handlers the shim tests route invocations to (imported by dotted name, like the template's)."""

from lambdas.pipeline.config import environ


def echo(event: dict, context) -> dict:
    if event.get("fail"):
        raise ValueError(f"asked to fail: {event['fail']}")
    return {"echo": event, "greeting": environ().get("GREETING"), "function": context.function_name}
