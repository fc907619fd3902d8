#!/usr/bin/env python3
"""CDK entry point: settings from context, one stack, cdk-nag's AWS Solutions checks on everything."""

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.settings import settings_from_context
from infra.stack import DreamBoothStack

CDK_JSON = Path(__file__).resolve().parent / "cdk.json"


def cdk_json_context() -> dict:
    """The context the CDK CLI would pass: tests and the local mode synthesize with the same flags."""
    return json.loads(CDK_JSON.read_text())["context"]


def build_app(context: dict | None = None) -> cdk.App:
    """Without ``context`` the CLI's own context applies; with it, cdk.json's context plus the overrides."""
    app = cdk.App() if context is None else cdk.App(context={**cdk_json_context(), **context})
    settings = settings_from_context(app.node.get_all_context())
    DreamBoothStack(app, app.node.try_get_context("stack_name") or "DreamBoothService", settings=settings)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
