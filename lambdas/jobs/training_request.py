"""The per-run half of a CreateTrainingJob request. Pure.

The state machine's Train state fills the fixed half itself (trainer image, execution role, metric
definitions): those come from the stack, so no Lambda can point a job at another image or role.
"""

from __future__ import annotations

from dreambooth_trainer.family_table import FAMILIES
from dreambooth_trainer.hyperparameters import TrainingHyperparameters
from lambdas.jobs import naming, s3_layout
from lambdas.jobs.spec import ResolvedJob, hyperparameter_strings

IMAGES_CHANNEL = "images"
CLASS_IMAGES_CHANNEL = "class_images"
MODEL_CHANNEL = "model"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Base model download, class images, checkpoints and the exported model fit with room to spare: per family
# (family_table: 50 GB for SD and SDXL, 100 GB for the FLUX.1-dev and Z-Image downloads of 20-34 GB).
# Spot capacity may take a while; a run waits at most this much longer than it may train.
SPOT_WAIT_FACTOR = 2
TAG_JOB, TAG_RUN = "dreambooth:job", "dreambooth:run"
_TAG_PUNCTUATION = set("_.:/=+-@ ")


def model_output_s3_uri(bucket: str, job_name: str, run_id: str) -> str:
    """Where the trainer writes the run's model: the prefix the notification names."""
    return s3_layout.s3_uri(bucket, s3_layout.model_prefix(job_name, run_id))


def build_training_request(
    job: ResolvedJob,
    *,
    run_id: str,
    bucket: str,
    hyperparameters: TrainingHyperparameters,
    class_images_available: bool,
    network_isolation: bool = False,
) -> dict:
    """CreateTrainingJob fields for one run (PascalCase, as the API and the state machine spell them).

    network_isolation (the deployment's training_network_isolation): jobs whose base model comes from S3
    run isolated, with no network and no credentials, so the trainer hands the model over through
    SageMaker's model.tar.gz (model_hand_over=sagemaker) for the pipeline to unpack. A Hub base model
    needs the network to download, so its jobs are not isolated.
    """
    name = naming.training_job_name(job.job_name, run_id)
    isolated = is_isolated(job, network_isolation)
    if isolated:
        hyperparameters = hyperparameters.model_copy(update={"model_hand_over": "sagemaker"})
    # The photos validation accepted, copied from the bytes it decoded: never the live upload folder.
    images = s3_layout.s3_uri(bucket, s3_layout.training_images_prefix(job.job_name, run_id))
    channels = [_s3_channel(IMAGES_CHANNEL, images)]
    # Set exactly for prior-preservation runs (spec.training_hyperparameters): the folder the trainer shares
    # its generated class images to is the one this channel reads.
    shared_class_images = hyperparameters.class_images_output_s3_uri
    if shared_class_images and class_images_available:
        channels.append(_s3_channel(CLASS_IMAGES_CHANNEL, shared_class_images))
    if job.base_model.startswith("s3://"):
        channels.append(_s3_channel(MODEL_CHANNEL, job.base_model))

    stopping = stopping_condition(job)
    return {
        "TrainingJobName": name,
        "HyperParameters": hyperparameter_strings(hyperparameters),
        "InputDataConfig": channels,
        # The trainer writes the model itself; SageMaker's model.tar.gz goes apart from it (and expires).
        "OutputDataConfig": {
            "S3OutputPath": s3_layout.s3_uri(bucket, s3_layout.sagemaker_output_prefix(job.job_name, run_id))
        },
        "ResourceConfig": {
            "InstanceType": job.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": FAMILIES[job.family].volume_size_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": job.use_spot,
        "EnableNetworkIsolation": isolated,
        "CheckpointConfig": {
            "S3Uri": s3_layout.s3_uri(bucket, s3_layout.checkpoint_prefix(job.job_name, run_id)),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
        "Tags": [
            {"Key": TAG_JOB, "Value": tag_value(job.job_name)},
            {"Key": TAG_RUN, "Value": run_id},
        ],
    }


def is_isolated(job: ResolvedJob, network_isolation: bool) -> bool:
    """Whether a run's training job gets no network: asked for by the deployment, and possible (the base
    model comes in as an S3 channel)."""
    return network_isolation and job.base_model.startswith("s3://")


def stopping_condition(job: ResolvedJob) -> dict[str, int]:
    """MaxRuntime, and for spot MaxWait (which must be at least MaxRuntime)."""
    stopping = {"MaxRuntimeInSeconds": job.max_runtime_seconds}
    if job.use_spot:
        stopping["MaxWaitTimeInSeconds"] = job.max_runtime_seconds * SPOT_WAIT_FACTOR
    return stopping


def tag_value(text: str) -> str:
    """SageMaker tag values allow letters, digits, spaces and ``_.:/=+-@``; anything else becomes ``_``."""
    cleaned = "".join(ch if ch.isalnum() or ch in _TAG_PUNCTUATION else "_" for ch in text)
    return cleaned[:256]


def _s3_channel(name: str, uri: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }
