"""`python -m local_pipeline serve` as a user runs it: real HTTP, presigned uploads, the real trainer."""

from __future__ import annotations

import signal
import subprocess
import time

import requests

from dreambooth_trainer.offline_fixtures import write_sample_subject_images
from tests.local_pipeline.test_cli import FAST, Lines, cli, cli_env, free_port


def test_serve_trains_a_job_created_and_uploaded_over_http(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    port = free_port()
    service = subprocess.Popen(
        cli("serve", "--port", str(port)),
        cwd=workdir,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = Lines(service.stdout), Lines(service.stderr)
    try:
        out.wait_for(lambda line: line.startswith("ready"), timeout=240)
        base = f"http://127.0.0.1:{port}"
        assert any(line.startswith(f"HTTP API:       {base}") for line in out.lines)
        assert any(line.startswith("auth:") and "OFF" in line for line in out.lines)
        assert any(f"curl -s -X POST {base}/jobs" in line for line in out.lines)

        photos = tmp_path / "photos"
        write_sample_subject_images(photos, 4, 80, 3)
        files = sorted(photos.iterdir())
        spec = {
            "job_name": "served cat",
            "class_word": "toy",
            "max_train_steps": 5,
            "hyperparameters": {k: v for k, v in FAST.items()},
            "images": [
                {"filename": f.name, "content_type": "image/png" if f.suffix == ".png" else "image/jpeg"}
                for f in files
            ],
        }
        created = requests.post(f"{base}/jobs", json=spec, timeout=60)
        assert created.status_code == 201, created.text
        job = created.json()
        for target, path in zip(job["uploads"], files, strict=True):
            upload = requests.post(
                target["url"],
                data=target["fields"],
                files={"file": (path.name, path.read_bytes())},
                timeout=60,
            )
            assert upload.status_code in {200, 201, 204}, upload.text
        assert requests.post(f"{base}/jobs/{job['id']}/start", timeout=60).status_code == 202
        deadline = time.monotonic() + 600
        while (state := requests.get(f"{base}/jobs/{job['id']}", timeout=60).json())["status"] not in {
            "succeeded",
            "failed",
        }:
            assert time.monotonic() < deadline, state
            time.sleep(1)
        assert state["status"] == "succeeded", state["failure"]
        paths = {f["path"] for f in state["model"]["files"]}
        assert "model_index.json" in paths and "manifest.json" in paths
        assert state["model"]["samples"], "the trainer renders samples"
    finally:
        service.send_signal(signal.SIGINT)
        code = service.wait(timeout=120)
    assert code == 0, "\n".join(err.lines[-30:])
