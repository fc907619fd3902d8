"""The local mode as a user runs it: the real CLI in its own folder, the whole flow, the real trainer."""

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dreambooth_trainer.offline_fixtures import build_tiny_base_model, write_sample_subject_images
from local_pipeline.cli import TINY_MODEL_HYPERPARAMETERS
from local_pipeline.service import ServiceEndpoint, submit_batch

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FAST = {
    **TINY_MODEL_HYPERPARAMETERS,
    "num_class_images": "2",
    "num_samples": "1",
    "sample_inference_steps": "2",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_base_model(tmp_path_factory.mktemp("base") / "tiny-sd")


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def cli_env() -> dict[str, str]:
    """A user's shell: no banner-silencing variables set (the CLI takes care of Node's banners itself)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JSII_SILENCE_WARNING")}
    # This tree's trainer, not the one the virtualenv installed (editable from another checkout).
    path = f"{REPO_ROOT / 'trainer_image'}{os.pathsep}{REPO_ROOT}"
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# What a user saw on the terminal before library output went to local-output/logs/.
NOISE = [
    "b'",  # jsii's Node banner, printed as Python bytes
    "!!",
    "end-of-life",
    "Exception=",  # moto's Step Functions interpreter dump
    "FailureEventException",
    "Traceback",
    "kernels",  # bitsandbytes
    "torchvision",  # transformers
    "Bundling asset",  # CDK
    "Writing model shards",  # a library's own tqdm bar
    "\x1b",  # escape codes
    "\r",  # carriage-return progress redraws
]


def assert_clean_terminal(stderr: str, allowed: tuple[str, ...] = ("==> ", "training: ")) -> None:
    """Only stages, the one progress bar (plain lines off a TTY) and the given kinds of line."""
    for noise in NOISE:
        assert noise not in stderr, f"{noise!r} on the terminal:\n{stderr[-3000:]}"
    strays = [line for line in stderr.splitlines() if not line.startswith(allowed)]
    assert not strays, "\n".join(strays[:20])
    bars = [line for line in stderr.splitlines() if line.startswith("training: ")]
    assert all(re.fullmatch(r"training: \d+/\d+ steps, loss \d+\.\d+", line) for line in bars), bars


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "local_pipeline", *args]


def settings(steps: int, **extra: str) -> list[str]:
    pairs = {**FAST, "max_train_steps": str(steps), "class_word": "toy", **extra}
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def photos(folder: Path, count: int = 4) -> Path:
    write_sample_subject_images(folder, count, 80, 3)
    return folder


def test_run_trains_a_good_batch_and_prints_the_notification_last(workdir, tiny_model):
    images = photos(workdir.parent / "good dog photos")
    result = subprocess.run(
        cli(
            "run",
            "--images",
            str(images),
            "--job-name",
            "good dog",
            "--base-model",
            str(tiny_model),
            *settings(10),
        ),
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout carries the result only"
    notification = json.loads(lines[-1])
    assert notification["status"] == "SUCCEEDED" and notification["job_name"] == "good dog"
    prefix = notification["model"]["s3_prefix"]
    assert prefix.endswith(f"/models/good dog/{notification['run_id']}/")
    assert notification["prompt"] == "a photo of sks toy"
    copied = workdir / "local-output" / "good dog"
    assert (copied / "model_index.json").is_file() and (copied / "unet").is_dir()
    assert (copied / "samples" / "sample-0.png").is_file()
    assert "model files copied to local-output/good dog" in result.stderr
    assert_clean_terminal(result.stderr)
    hint = next(line for line in result.stderr.splitlines() if line.startswith("==> try it: "))
    words = shlex.split(hint.removeprefix("==> try it: "))
    assert words[words.index("--model") + 1] == "local-output/good dog", "the hint pastes as it is"
    assert words[words.index("--prompt") + 1] == "a photo of sks toy"
    log_dir = workdir / "local-output" / "logs"
    assert "function_name" in (log_dir / "service.log").read_text(), "the Lambda logs are in the log file"
    training_log = (log_dir / f"training-{notification['training_job_name']}.log").read_text()
    assert "kernels" in training_log or "torchvision" in training_log, "library chatter went to the log"
    assert not (workdir / "local-output" / "service.json").exists(), "the service is gone with the command"

    rendered = subprocess.run(
        cli(
            "generate",
            "--model",
            str(copied),
            "--prompt",
            notification["prompt"],
            "--n",
            "2",
            "--out",
            "renders",
        ),
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    paths = [workdir / line for line in rendered.stdout.split()]
    assert [p.name for p in paths] == ["000000.png", "000001.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[0].read_bytes() != paths[1].read_bytes(), "each image has its own seed"


def test_run_reports_a_batch_of_broken_files_and_exits_non_zero(workdir, tiny_model):
    images = workdir.parent / "broken"
    images.mkdir()
    for name in ["a.jpg", "b.png", "c.jpg"]:
        (images / name).write_bytes(b"not an image at all " * 50)
    result = subprocess.run(
        cli("run", "--images", str(images), "--base-model", str(tiny_model), *settings(5)),
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    notification = json.loads(result.stdout.strip().splitlines()[-1])
    assert notification["status"] == "FAILED" and notification["model"] is None
    failure = notification["failure"]
    assert failure["kind"] == "invalid_batch"
    text = json.dumps(failure)
    assert all(name in text for name in ["a.jpg", "b.png", "c.jpg"])
    assert "training job" not in result.stderr, "no GPU is paid for an invalid batch"
    assert f"==> job broken failed: {failure['reason'].splitlines()[0]}" in result.stderr
    assert f"==> what to do: {failure['advice'][0]}" in result.stderr
    assert_clean_terminal(result.stderr, allowed=("==> ", "- "))  # the reason lists one file per line


def test_bad_settings_fail_before_anything_is_uploaded(workdir):
    images = photos(workdir.parent / "p")
    result = subprocess.run(
        cli("run", "--images", str(images), "--set", "training_method=dreams"),
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "training_method" in result.stderr and "'full' or 'lora'" in result.stderr
    assert not (workdir / "local-output" / "service.json").exists()


class Lines:
    """Collects a process's output lines in a thread, so a test can wait for one."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            time.sleep(0.2)
        raise AssertionError(f"no such line within {timeout} s; got:\n" + "\n".join(self.lines[-40:]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_trains_what_the_aws_cli_drops_into_it(workdir):
    port = free_port()
    service = subprocess.Popen(
        cli("up", "--port", str(port), "--quiet-period", "2"),
        cwd=workdir,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = Lines(service.stdout), Lines(service.stderr)
    try:
        out.wait_for(lambda line: line.startswith("ready"), timeout=180)
        endpoint = out.wait_for(lambda line: line.startswith("S3 endpoint:"), 1).split()[-1]
        bucket = out.wait_for(lambda line: line.startswith("bucket:"), 1).split()[-1]
        assert endpoint == f"http://127.0.0.1:{port}"
        example = out.wait_for(lambda line: line.startswith("try:"), 1).removeprefix("try:")
        assert shlex.split(example) == ["aws", "s3", "cp", "--recursive", "./photos"] + [
            f"s3://{bucket}/uploads/my-dog/",
            "--endpoint-url",
            endpoint,
        ], "the upload example is on the terminal and pastes as it is"
        images = photos(workdir.parent / "cli photos")
        copy = subprocess.run(
            [str(VENV_BIN / "aws"), "s3", "cp", "--recursive", str(images), f"s3://{bucket}/uploads/cli cat/"]
            + ["--endpoint-url", endpoint],
            env={**cli_env(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert copy.returncode == 0, copy.stderr
        line = out.wait_for(lambda line: line.startswith("{"), timeout=400)
        notification = json.loads(line)
        assert notification["status"] == "SUCCEEDED", notification
        assert notification["job_name"] == "cli cat"
        assert notification["model"]["s3_prefix"].startswith(f"s3://{bucket}/models/cli cat/")
        saved = workdir / "local-output" / "notifications" / f"cli cat-{notification['run_id']}.json"
        assert json.loads(saved.read_text()) == notification
        assert (workdir / "local-output" / "cli cat" / "model_index.json").is_file()
    finally:
        service.send_signal(signal.SIGINT)
        code = service.wait(timeout=60)
    assert code == 0, "\n".join(err.lines[-30:])
    assert not (workdir / "local-output" / "service.json").exists()
    assert_clean_terminal("\n".join(err.lines))


def test_up_survives_any_message_and_stopping_it_stops_its_trainer(workdir):
    port = free_port()
    service = subprocess.Popen(
        cli("up", "--port", str(port), "--quiet-period", "1"),
        cwd=workdir,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = Lines(service.stdout), Lines(service.stderr)
    try:
        out.wait_for(lambda line: line.startswith("ready"), timeout=180)
        endpoint = out.wait_for(lambda line: line.startswith("S3 endpoint:"), 1).split()[-1]
        bucket = out.wait_for(lambda line: line.startswith("bucket:"), 1).split()[-1]
        clients = ServiceEndpoint(endpoint, bucket, "")
        topic = next(
            t["TopicArn"]
            for t in clients.client("sns").list_topics()["Topics"]
            if "JobEvents" in t["TopicArn"]
        )

        clients.client("sns").publish(TopicArn=topic, Message="plain text, not JSON\nsecond line")
        out.wait_for(lambda line: line == "second line", timeout=60)
        err.wait_for(lambda line: line.startswith("warning: a message on the topic is not a JSON"), 5)
        saved = list((workdir / "local-output" / "notifications").glob("not-json-*.txt"))
        assert [p.read_text() for p in saved] == ["plain text, not JSON\nsecond line"]

        job = {"max_train_steps": "1000", "class_word": "toy", "hyperparameters": FAST}
        submit_batch(clients, photos(workdir.parent / "long"), "long job", job)
        trainer = wait_for_trainer(service.pid, timeout=300)
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=120)
    finally:
        if service.poll() is None:
            service.kill()
    assert code == 0, "\n".join(err.lines[-30:])
    notification = json.loads(out.wait_for(lambda line: line.startswith("{"), 1))
    assert notification["status"] == "FAILED" and notification["job_name"] == "long job"
    assert notification["failure"]["kind"] == "training_stopped", notification
    assert is_gone(trainer), "the trainer is gone"
    assert_clean_terminal("\n".join(err.lines), allowed=("==> ", "training: ", "warning: a message"))


def wait_for_trainer(pid: int, timeout: float) -> int:
    """The pid of the trainer process the service at ``pid`` started, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in descendants(pid):
            with contextlib.suppress(OSError):
                if b"dreambooth_trainer" in Path(f"/proc/{child}/cmdline").read_bytes():
                    time.sleep(3)  # let it get into its work
                    return child
        time.sleep(0.5)
    raise AssertionError(f"no trainer process within {timeout} s")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_second_run_of_the_same_batch_while_the_first_trains_starts_no_second_job(workdir, tiny_model):
    images = photos(workdir.parent / "twice")
    args = cli(
        "run", "--images", str(images), "--job-name", "twice", "--base-model", str(tiny_model), *settings(150)
    )
    first = subprocess.Popen(
        args, cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_out, first_err = Lines(first.stdout), Lines(first.stderr)
    first_err.wait_for(lambda line: "training:" in line and "step" in line, timeout=300)

    second = subprocess.run(args, cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert first.wait(timeout=600) == 0, "\n".join(first_err.lines[-30:])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "joining the local service" in second.stderr

    one = json.loads(first_out.lines[-1])
    two = json.loads(second.stdout.strip().splitlines()[-1])
    assert one["run_id"] == two["run_id"] and one["training_job_name"] == two["training_job_name"]
    started = [line for line in first_err.lines if "running the trainer" in line]
    assert len(started) == 1, started


def test_demo_family_sdxl_trains_the_tiny_sdxl_lora_through_the_whole_service(workdir):
    """512 px photos (SDXL's smallest side), trained at 64 px for a few steps: the family's whole flow."""
    result = subprocess.run(
        cli("demo", "--family", "sdxl"),
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    notification = json.loads(result.stdout.strip().splitlines()[-1])
    assert notification["status"] == "SUCCEEDED" and notification["job_name"] == "demo-subject-sdxl"
    assert notification["training"]["family"] == "sdxl" and notification["training"]["method"] == "lora"
    assert notification["training"]["images"] == 6 and notification["training"]["skipped"] == []
    model = notification["model"]
    assert model["family"] == "sdxl" and model["checkpoint"] is None
    prefix = model["s3_prefix"]
    assert model["lora_files"] == [
        prefix + "pytorch_lora_weights.safetensors",
        prefix + "demo-subject-sdxl-lora.safetensors",
    ]
    copied = workdir / "local-output" / "demo-subject-sdxl"
    assert (copied / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((copied / "dreambooth.json").read_text())["family"] == "sdxl"
