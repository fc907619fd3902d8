"""lambdas/pipeline/model_handover.py: an isolated run's model.tar.gz unpacked to its model prefix (moto)."""

import io
import json
import tarfile

import boto3
import pytest
from moto import mock_aws

from lambdas.jobs import naming, s3_layout
from lambdas.pipeline.model_handover import ModelHandOverError, tarball_key, unpack_model

BUCKET, JOB, RUN = "data", "my dog", "20261205-120000-ab12"
PREFIX = s3_layout.model_prefix(JOB, RUN)
FILES = {
    "pytorch_lora_weights.safetensors": b"\1" * 3000,
    "my dog-lora.safetensors": b"\2" * 2000,
    "samples/0.png": b"png",
    "dreambooth.json": b'{"kind": "lora"}',
}


def manifest_for(files: dict[str, bytes]) -> dict:
    return {
        "manifest_version": 1,
        "kind": "lora",
        "s3_uri": f"s3://{BUCKET}/{PREFIX}",
        "files": [{"key": k, "size": len(v)} for k, v in files.items()],
        "total_bytes": sum(len(v) for v in files.values()),
    }


def tarball(entries: dict[str, bytes], *, prefix: str = "", extra: list[tarfile.TarInfo] = ()) -> bytes:
    """What SageMaker makes of /opt/ml/model: a gzip tar of the folder's entries (directories too)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folder = tarfile.TarInfo(prefix + "samples")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in entries.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put_tarball(s3, data: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=tarball_key(JOB, RUN), Body=data)


def keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", []))


def test_every_file_then_the_manifest_then_success(s3):
    manifest = manifest_for(FILES)
    put_tarball(s3, tarball({**FILES, "manifest.json": json.dumps(manifest).encode()}, prefix="./"))
    job = naming.training_job_name(JOB, RUN)  # SageMaker's <S3OutputPath>/<training job>/output/
    assert tarball_key(JOB, RUN) == f"sagemaker-output/{JOB}/{RUN}/{job}/output/model.tar.gz"

    assert unpack_model(s3, BUCKET, JOB, RUN) == {"files": 4, "bytes": sum(len(v) for v in FILES.values())}
    assert keys(s3) == sorted([PREFIX + k for k in FILES] + [PREFIX + "manifest.json", PREFIX + "_SUCCESS"])
    for name, data in FILES.items():
        assert s3.get_object(Bucket=BUCKET, Key=PREFIX + name)["Body"].read() == data
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=PREFIX + "manifest.json")["Body"].read())
    assert stored == manifest


def test_an_archive_missing_a_listed_file_leaves_the_model_incomplete(s3):
    manifest = manifest_for(FILES)
    partial = {k: v for k, v in FILES.items() if k != "samples/0.png"}
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "_SUCCESS", Body=b"")  # from an earlier, retried attempt
    put_tarball(s3, tarball({**partial, "manifest.json": json.dumps(manifest).encode()}))
    with pytest.raises(ModelHandOverError, match="lacks file\\(s\\) its manifest lists: samples/0.png"):
        unpack_model(s3, BUCKET, JOB, RUN)
    assert PREFIX + "_SUCCESS" not in keys(s3) and PREFIX + "manifest.json" not in keys(s3)


def test_an_archive_without_a_manifest_is_refused(s3):
    put_tarball(s3, tarball(FILES))
    with pytest.raises(ModelHandOverError, match="has no manifest.json"):
        unpack_model(s3, BUCKET, JOB, RUN)
    assert PREFIX + "_SUCCESS" not in keys(s3)


@pytest.mark.parametrize("name", ["../escape.bin", "/etc/passwd", "a/../../b"])
def test_an_entry_that_would_leave_the_model_folder_is_refused(s3, name):
    put_tarball(s3, tarball({name: b"x", "manifest.json": b"{}"}))
    with pytest.raises(ModelHandOverError, match="outside the model folder"):
        unpack_model(s3, BUCKET, JOB, RUN)
    assert keys(s3) == []


def test_a_link_is_refused(s3):
    link = tarfile.TarInfo("weights.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    put_tarball(s3, tarball({"manifest.json": b"{}"}, extra=[link]))
    with pytest.raises(ModelHandOverError, match="not a regular file"):
        unpack_model(s3, BUCKET, JOB, RUN)


def test_no_tarball_says_the_training_job_left_no_model(s3):
    with pytest.raises(ModelHandOverError, match="the training job left no model"):
        unpack_model(s3, BUCKET, JOB, RUN)
