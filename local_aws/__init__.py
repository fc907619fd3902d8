"""The stack on one machine: moto as AWS, created from the synthesized template, real handlers in-process.

from local_aws import FAST_CONTEXT, LocalAws, TrainingOutcome, synthesize

with LocalAws(synthesize(FAST_CONTEXT)) as aws:
    aws.set_training_runner(lambda job: TrainingOutcome("Completed"))
    aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key="uploads/rex/1.jpg", Body=...)
    aws.wait_for_execution()
"""

from local_aws.emulator import LocalAws
from local_aws.synth import DEFAULT_STACK_NAME, FAST_CONTEXT, synthesize
from local_aws.training_jobs import TrainingJobRequest, TrainingOutcome, TrainingRunner

__all__ = [
    "DEFAULT_STACK_NAME",
    "FAST_CONTEXT",
    "LocalAws",
    "TrainingJobRequest",
    "TrainingOutcome",
    "TrainingRunner",
    "synthesize",
]
