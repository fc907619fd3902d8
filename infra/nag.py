"""cdk-nag 3 acknowledges one finding at a time; this keeps each reason beside the construct it excuses."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, findings: dict[str, str]) -> None:
    """``findings`` maps a finding id (e.g. ``AwsSolutions-IAM5[Resource::*]``) to why it is acceptable."""
    Validations.of(construct).acknowledge(
        *(Acknowledgment(id=finding, reason=reason) for finding, reason in findings.items())
    )
