"""The local runner honours SageMaker's side of the container contract, checked from inside a container."""

import io
import json
import sys
import tarfile
import textwrap

import boto3
import pytest
from moto import mock_aws

from local_aws.training_jobs import TrainingJobRequest
from local_pipeline.training_runner import LocalTrainingRunner

# A stand-in container: reports what it sees, then succeeds or fails as its hyperparameters say.
CONTAINER = textwrap.dedent(
    """
    import json, os, pathlib, sys
    base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
    hp = json.loads((base / "input/config/hyperparameters.json").read_text())
    data = base / "input/data"
    seen = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    print("job", os.environ["TRAINING_JOB_NAME"], "env", os.environ.get("EXTRA"))
    print("channels", json.dumps(seen))
    print("hyperparameters", json.dumps(hp))
    ckpt = base / "checkpoints"
    print("restored", json.dumps(sorted(p.name for p in ckpt.glob("*"))))
    (ckpt / "step-2.txt").write_text("state")
    if hp.get("fail") == "true":
        (base / "output/failure").write_text("instance images: none of 2 files could be decoded")
        sys.exit(3)
    if hp.get("crash") == "true":
        sys.exit(9)
    (base / "model/weights.txt").write_text("trained")
    """
)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="uploads/my dog/a.jpg", Body=b"1")
        client.put_object(Bucket="bkt", Key="uploads/my dog/sub/b.jpg", Body=b"2")
        client.put_object(Bucket="bkt", Key="uploads/my dog/", Body=b"")
        client.put_object(Bucket="bkt", Key="checkpoints/rex/r1/step-1.txt", Body=b"old")
        yield client


def request(**hyperparameters):
    return {
        "TrainingJobName": "rex-r1",
        "HyperParameters": {"steps": "5", **hyperparameters},
        "InputDataConfig": [
            {"ChannelName": "images", "DataSource": {"S3DataSource": {"S3Uri": "s3://bkt/uploads/my dog/"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/sagemaker-output"},
        "CheckpointConfig": {"S3Uri": "s3://bkt/checkpoints/rex/r1/", "LocalPath": "/opt/ml/checkpoints"},
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge"},
        "Environment": {"EXTRA": "from-request"},
    }


def run(s3, tmp_path, req):
    script = tmp_path / "container.py"
    script.write_text(CONTAINER)
    lines = []
    runner = LocalTrainingRunner(
        s3, work_root=tmp_path / "work", trainer_command=[sys.executable, str(script)], on_output=lines.append
    )
    return runner(TrainingJobRequest(req)), "".join(lines)


def test_a_successful_job_sees_its_channels_hyperparameters_and_checkpoints(s3, tmp_path):
    outcome, output = run(s3, tmp_path, request())
    assert outcome.status == "Completed" and outcome.failure_reason is None
    assert "job rex-r1 env from-request" in output
    assert 'channels ["images/a.jpg", "images/sub/b.jpg"]' in output
    assert 'hyperparameters {"steps": "5"}' in output
    assert 'restored ["step-1.txt"]' in output
    assert s3.get_object(Bucket="bkt", Key="checkpoints/rex/r1/step-2.txt")["Body"].read() == b"state"
    tarball = s3.get_object(Bucket="bkt", Key="sagemaker-output/rex-r1/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        assert archive.getnames() == ["weights.txt"]


def test_a_failed_job_reports_the_containers_failure_file(s3, tmp_path):
    outcome, _ = run(s3, tmp_path, request(fail="true"))
    assert outcome.status == "Failed"
    assert outcome.failure_reason == "instance images: none of 2 files could be decoded"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="bkt", Key="sagemaker-output/rex-r1/output/model.tar.gz")


def test_a_crash_without_a_failure_file_is_still_a_failure(s3, tmp_path):
    outcome, _ = run(s3, tmp_path, request(crash="true"))
    assert outcome.status == "Failed"
    assert "exited with status 9" in outcome.failure_reason


def test_hyperparameters_reach_the_container_as_strings(s3, tmp_path):
    req = request()
    req["HyperParameters"] = {"max_train_steps": 5, "use_ema": False}
    _, output = run(s3, tmp_path, req)
    assert json.loads(output.split("hyperparameters ", 1)[1].splitlines()[0]) == {
        "max_train_steps": "5",
        "use_ema": "False",
    }


def test_a_channel_key_that_leaves_the_channel_folder_is_refused_and_reported(s3, tmp_path):
    s3.put_object(Bucket="bkt", Key="uploads/my dog/../../../../../pwned/x.jpg", Body=b"evil")
    outcome, output = run(s3, tmp_path, request())
    assert outcome.status == "Completed"
    assert 'channels ["images/a.jpg", "images/sub/b.jpg"]' in output
    assert "local runner: refused S3 key 'uploads/my dog/../../../../../pwned/x.jpg'" in output
    assert not list(tmp_path.rglob("pwned")), "nothing is written outside the job's folder"


def test_a_channel_name_that_leaves_the_data_folder_fails_the_job(s3, tmp_path):
    req = request()
    req["InputDataConfig"][0]["ChannelName"] = "../../escaped"
    outcome, _ = run(s3, tmp_path, req)
    assert outcome.status == "Failed" and "'..' segment" in outcome.failure_reason
    assert not list(tmp_path.rglob("escaped"))


def test_an_isolated_job_gets_no_credentials_and_its_model_still_comes_back(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    script = tmp_path / "container.py"
    report = 'import boto3\nprint("credentials", boto3.Session().get_credentials() is not None)\n'
    script.write_text(CONTAINER + report)

    def credentials_seen(req: dict, work: str) -> str:
        lines = []
        command = [sys.executable, str(script)]
        runner = LocalTrainingRunner(
            s3, work_root=tmp_path / work, trainer_command=command, on_output=lines.append
        )
        assert runner(TrainingJobRequest(req)).status == "Completed"
        return "".join(lines).split("credentials ", 1)[1].split()[0]

    assert credentials_seen(request(), "open") == "True"
    s3.delete_object(Bucket="bkt", Key="sagemaker-output/rex-r1/output/model.tar.gz")
    assert credentials_seen({**request(), "EnableNetworkIsolation": True}, "isolated") == "False"
    s3.head_object(Bucket="bkt", Key="sagemaker-output/rex-r1/output/model.tar.gz")  # SageMaker's hand-over
