"""``python -m local_pipeline {demo,run,up,serve,generate}``: the service on one machine, no AWS needed.

Progress goes to stderr; ``run`` and ``demo`` print the notification, as a subscriber receives it, as
the last line of stdout, and exit 0 only when the job succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from lambdas.jobs.spec import JobSpec, JobSpecError, parse_job_spec
from local_pipeline.demo_assets import DEFAULT_CACHE, sample_subject_images, tiny_base_model
from local_pipeline.progress import library_output_to, stage, terminal, warn
from local_pipeline.s3_folders import UnsafeKeyError, contained_path
from local_pipeline.serve import add_serve_command
from local_pipeline.service import (
    OUTPUT_ROOT,
    EmbeddedService,
    NotificationInbox,
    ServiceEndpoint,
    ServiceError,
    copy_model_out,
    parse_notification,
    running_service,
    submit_batch,
    upload_base_model,
)

DEMO_JOB_NAME = "demo-subject"
# Trainer settings that suit the tiny demo model on two CPU cores: a minute per job, every stage shown.
TINY_MODEL_HYPERPARAMETERS = {
    "resolution": "64",
    "learning_rate": "1e-4",
    "num_class_images": "4",
    "sample_batch_size": "4",
    "class_inference_steps": "5",
    "sample_inference_steps": "10",
    "mixed_precision": "no",
    "num_threads": "1",
    "logging_steps": "5",
}
TINY_MODEL_JOB = {"token": "sks", "class_word": "toy", "training_method": "full", "max_train_steps": "60"}
# The other families' tiny models (dreambooth_trainer.family_fixtures): LoRA (their only method) for a few
# steps at 64 px without prior preservation; their photos must still be 512 px (the family's minimum side).
DEMO_FAMILIES = ("sd", "sdxl", "flux", "zimage")
TINY_FAMILY_JOB = {
    "token": "sks",
    "class_word": "toy",
    "max_train_steps": "20",
    "with_prior_preservation": "false",
}
TINY_FAMILY_HYPERPARAMETERS = {
    "resolution": "64",
    "sample_inference_steps": "4",
    "num_samples": "1",
    "mixed_precision": "no",
    "num_threads": "1",
    "logging_steps": "5",
}
FAMILY_PHOTO_SIDE = 512
DEFAULT_TIMEOUT_SECONDS = 3600
# After Ctrl-C, how long `up` waits for the runs whose training it stopped to send their notification.
STOP_REPORT_SECONDS = 60


SERVICE_LOG = OUTPUT_ROOT / "logs" / "service.log"


def main(argv: list[str] | None = None) -> int:
    """Results go to stdout; stages, the progress bar, warnings and errors to stderr. Everything else that
    prints (the in-process Lambdas' structured logs, which AWS would send to CloudWatch, and the libraries'
    own chatter) goes to ``local-output/logs/service.log``, or stderr with --verbose."""
    args = build_parser().parse_args(argv)
    results = sys.stdout
    with ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        if getattr(args, "verbose", False):
            log_stream: TextIO = sys.stderr
        else:
            SERVICE_LOG.parent.mkdir(parents=True, exist_ok=True)
            log_stream = stack.enter_context(SERVICE_LOG.open("a", encoding="utf-8"))
        stack.enter_context(library_output_to(log_stream))
        try:
            return args.command(args, results)
        except (ServiceError, JobSpecError, FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=terminal())
            return 2
        except KeyboardInterrupt:
            print("stopped", file=terminal())
            return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local_pipeline", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train a tiny model on generated photos, end to end")
    demo.add_argument(
        "--family",
        choices=DEMO_FAMILIES,
        default="sd",
        help="the tiny model's family (default sd; sdxl, flux and zimage train a LoRA)",
    )
    _add_service_options(demo)
    demo.set_defaults(command=cmd_demo)

    run = commands.add_parser("run", help="upload a folder of photos and wait for the trained model")
    run.add_argument("--images", type=Path, required=True, help="folder with the subject's photos")
    run.add_argument("--job-name", help="default: the folder's name")
    run.add_argument("--job-file", type=Path, help="a job.json (see lambdas/jobs/spec.py)")
    run.add_argument("--base-model", help="diffusers folder, .safetensors/.ckpt file, or Hugging Face id")
    run.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="job spec field or trainer hyperparameter",
    )
    _add_service_options(run)
    run.set_defaults(command=cmd_run)

    up = commands.add_parser("up", help="run the service until Ctrl-C; any S3 client can drop photos into it")
    up.add_argument("--port", type=int, help="port of the emulated AWS endpoint (default: a free one)")
    up.add_argument(
        "--base-model", help="base model for jobs whose job.json names none (default: tiny demo model)"
    )
    up.add_argument(
        "--quiet-period", type=int, default=10, help="seconds without new photos before a batch starts"
    )
    up.add_argument("--verbose", action="store_true", help="show every trainer log line")
    up.set_defaults(command=cmd_up)

    add_serve_command(commands)

    generate = commands.add_parser("generate", help="render images from a trained model")
    generate.add_argument("--model", required=True, help="model folder, single file, or s3:// prefix")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--n", type=int, default=4)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", type=Path, default=OUTPUT_ROOT / "generated")
    generate.add_argument(
        "--base-model", help="the base a LoRA adapter was trained on, or configs for a single file"
    )
    generate.add_argument(
        "--endpoint-url", help="S3 endpoint for s3:// models (default: AWS_ENDPOINT_URL / running service)"
    )
    generate.set_defaults(command=cmd_generate)
    return parser


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url", help="join a service already running there (`up`) instead of starting one"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait for the result"
    )
    parser.add_argument("--verbose", action="store_true", help="show every trainer log line")


def cmd_demo(args: argparse.Namespace, results: TextIO) -> int:
    family = getattr(args, "family", "sd")
    if family == "sd":
        stage("preparing the demo: a tiny offline Stable Diffusion base model and six photos of a subject")
        base_model = tiny_base_model()
        images = sample_subject_images(OUTPUT_ROOT / "demo-images")
        values = {**TINY_MODEL_JOB, **TINY_MODEL_HYPERPARAMETERS}
        job_name = DEMO_JOB_NAME
    else:
        from dreambooth_trainer.family_fixtures import build_tiny_family_model

        stage(f"preparing the demo: a tiny offline {family} base model and six photos of a subject")
        base_model = build_tiny_family_model(family, DEFAULT_CACHE)
        images = sample_subject_images(
            OUTPUT_ROOT / f"demo-images-{FAMILY_PHOTO_SIDE}", size=FAMILY_PHOTO_SIDE
        )
        values = {**TINY_FAMILY_JOB, **TINY_FAMILY_HYPERPARAMETERS}
        job_name = f"{DEMO_JOB_NAME}-{family}"
    settings = [f"{key}={value}" for key, value in values.items()]
    return submit_and_wait(
        images=images,
        job_name=job_name,
        job_spec=compose_job_spec(None, settings),
        base_model=str(base_model),
        endpoint_url=args.endpoint_url,
        timeout=args.timeout,
        verbose=args.verbose,
        results=results,
    )


def cmd_run(args: argparse.Namespace, results: TextIO) -> int:
    if not args.images.is_dir():
        raise ServiceError(f"--images {args.images} is not a folder of photos")
    return submit_and_wait(
        images=args.images,
        job_name=args.job_name or args.images.resolve().name,
        job_spec=compose_job_spec(args.job_file, args.settings),
        base_model=args.base_model,
        endpoint_url=args.endpoint_url,
        timeout=args.timeout,
        verbose=args.verbose,
        results=results,
    )


def compose_job_spec(job_file: Path | None, settings: list[str]) -> dict[str, Any]:
    """job.json's content, then ``--set`` on top: job spec fields by name, anything else a hyperparameter."""
    spec: dict[str, Any] = json.loads(job_file.read_text()) if job_file else {}
    if not isinstance(spec, dict):
        raise JobSpecError(f"{job_file} must hold a JSON object")
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise JobSpecError(f"--set {setting!r}: expected KEY=VALUE, e.g. --set max_train_steps=400")
        if key in JobSpec.model_fields and key != "hyperparameters":
            spec[key] = value
        else:
            spec.setdefault("hyperparameters", {})[key] = value
    parse_job_spec(spec)  # fail here, before anything is uploaded
    return spec


def submit_and_wait(
    *,
    images: Path,
    job_name: str,
    job_spec: dict[str, Any],
    base_model: str | None,
    endpoint_url: str | None,
    timeout: float,
    verbose: bool,
    results: TextIO,
) -> int:
    with ExitStack() as stack:
        endpoint = running_service(endpoint_url)
        if endpoint is None:
            endpoint = stack.enter_context(EmbeddedService(verbose=verbose)).endpoint
        else:
            stage(f"joining the local service at {endpoint.endpoint_url}")
        if base_model:
            job_spec = {**job_spec, "base_model": _base_model_uri(endpoint, base_model)}
        inbox = NotificationInbox(endpoint)
        stack.callback(inbox.close)
        count = submit_batch(endpoint, images, job_name, job_spec)
        stage(f"uploaded {count} file(s) and job.json to {endpoint.upload_uri(job_name)}")
        stage("waiting for the pipeline: validate the batch, train, notify")
        message = inbox.wait_for_job(job_name, timeout)
        notification = parse_notification(message) or {}
        _report(endpoint, notification)
        print(message, file=results, flush=True)
        return 0 if notification.get("status") == "SUCCEEDED" else 1


def _base_model_uri(endpoint: ServiceEndpoint, base_model: str) -> str:
    path = Path(base_model)
    if path.exists():
        stage(f"uploading the base model {path} to the bucket's base-models/")
        return upload_base_model(endpoint, path)
    return base_model  # a Hugging Face id or an s3:// URI


def _report(endpoint: ServiceEndpoint, notification: dict[str, Any]) -> None:
    job_name = notification.get("job_name", "job")
    if notification.get("status") != "SUCCEEDED":
        failure = notification.get("failure") if isinstance(notification.get("failure"), dict) else {}
        stage(f"job {job_name} failed: {failure.get('reason', 'no reason given')}")
        advice = failure.get("advice") or []
        for item in [advice] if isinstance(advice, str) else advice:
            stage(f"what to do: {item}")
        return
    model = notification.get("model") or {}
    target = copy_model_out(endpoint, notification, OUTPUT_ROOT)
    stage(f"model ready at {model.get('s3_prefix')}")
    if target:
        stage(f"model files copied to {target}/")
    where = str(target) if target else str(model.get("s3_prefix"))
    prompt = str(notification.get("prompt") or "a photo of sks person")
    stage(
        "try it: python -m local_pipeline generate "
        f"--model {shlex.quote(where)} --prompt {shlex.quote(prompt)}"
    )


def cmd_up(args: argparse.Namespace, results: TextIO) -> int:
    context: dict[str, Any] = {"default_quiet_period_seconds": args.quiet_period}
    if args.base_model:
        context["default_base_model"] = args.base_model
    else:  # photos dropped without a job.json train the tiny demo model, sized for this machine
        context |= {f"default_{key}": value for key, value in TINY_MODEL_JOB.items()}
        context["default_base_model"] = str(tiny_base_model().resolve())
        context["default_hyperparameters"] = TINY_MODEL_HYPERPARAMETERS
    notifications = OUTPUT_ROOT / "notifications"
    notifications.mkdir(parents=True, exist_ok=True)
    with EmbeddedService(port=args.port, verbose=args.verbose, context=context) as service:
        endpoint = service.endpoint
        assert endpoint is not None
        inbox = NotificationInbox(endpoint)
        example = shlex.join(
            ["aws", "s3", "cp", "--recursive", "./photos", endpoint.upload_uri("my-dog")]
            + ["--endpoint-url", endpoint.endpoint_url]
        )
        for line in (
            f"S3 endpoint:   {endpoint.endpoint_url}",
            f"bucket:        {endpoint.bucket}",
            f"upload prefix: {endpoint.upload_uri('<job-name>')}",
            f"try:           {example}",
            "ready: waiting for uploads (Ctrl-C to stop)",
        ):
            print(line, file=results, flush=True)
        try:
            while True:
                for message in inbox.receive(wait_seconds=1):
                    _deliver(endpoint, message, notifications, results)
        except KeyboardInterrupt:
            stage("stopping the local service")
            _finish_running_jobs(service, inbox, endpoint, notifications, results)
        finally:
            inbox.close()
    return 0


def _finish_running_jobs(
    service: EmbeddedService,
    inbox: NotificationInbox,
    endpoint: ServiceEndpoint,
    notifications: Path,
    results: TextIO,
) -> None:
    """Stop the trainers, then pass on the notifications of the runs they belonged to."""
    try:
        stopped = service.stop_training_jobs()
        if stopped:
            stage(f"stopped {stopped} training job(s); waiting for their runs to report")
        reported = 0
        deadline = time.monotonic() + STOP_REPORT_SECONDS
        while True:
            messages = inbox.receive(wait_seconds=1 if reported < stopped else 0)
            for message in messages:
                _deliver(endpoint, message, notifications, results)
            reported += len(messages)
            if reported >= stopped and not messages:
                return
            if time.monotonic() > deadline:
                warn(f"no report from {stopped - reported} stopped run(s) within {STOP_REPORT_SECONDS} s")
                return
    except KeyboardInterrupt:
        warn("stopped without waiting for the runs in progress to report")


def _deliver(endpoint: ServiceEndpoint, message: str, folder: Path, results: TextIO) -> None:
    """Save, report and print one message from the topic, whatever it holds."""
    notification = parse_notification(message)
    if notification is None:
        path = folder / f"not-json-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}.txt"
        path.write_text(message, encoding="utf-8")
        warn(f"a message on the topic is not a JSON notification; printed and saved as-is to {path}")
        print(message, file=results, flush=True)
        return
    name = f"{notification.get('job_name')}-{notification.get('run_id')}.json".replace("/", "_")
    try:
        contained_path(folder, name).write_text(message, encoding="utf-8")
    except UnsafeKeyError:
        (folder / f"notification-{os.urandom(4).hex()}.json").write_text(message, encoding="utf-8")
    _report(endpoint, notification)
    print(message, file=results, flush=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """One clean shutdown path for Ctrl-C and `kill`: every process the command started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_generate(args: argparse.Namespace, results: TextIO) -> int:
    from local_pipeline.generate import render  # torch and diffusers load only for this command

    s3_client = None
    if args.model.startswith("s3://"):
        endpoint = running_service(args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
        if endpoint is None:
            raise ServiceError("an s3:// model needs a running service: start `up`, or pass --endpoint-url")
        s3_client = endpoint.client("s3")
    paths = render(
        args.model,
        args.prompt,
        n=args.n,
        seed=args.seed,
        out_dir=args.out,
        base_model=args.base_model,
        s3_client=s3_client,
    )
    for path in paths:
        print(path, file=results)
    return 0
