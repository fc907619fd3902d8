"""`train`: what SageMaker runs. Exit 0 only on success; every failure leaves a reason in
/opt/ml/output/failure.

Exit codes: 0 done, 1 unexpected error, 2 bad input (hyperparameters, data, base model), 143 stopped by
SIGTERM (a restart resumes from the newest verified checkpoint in /opt/ml/checkpoints), 130 interrupted by
SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback

from .errors import TrainerError
from .hyperparameters import HyperparameterError, describe_hyperparameters, parse_hyperparameters
from .metrics import METRIC_DEFINITIONS
from .sagemaker_contract import (
    SageMakerPaths,
    StopRequested,
    StopSignal,
    clear_failure,
    read_hyperparameters,
    write_failure,
)
from .startup import CollectorPause

log = logging.getLogger("dreambooth_trainer")

OOM_HINT = (
    " (GPU out of memory: try training_method=lora, a smaller resolution or train_batch_size, "
    "gradient_checkpointing=true, use_8bit_adam=true, or an instance with more GPU memory)"
)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (CloudWatch reads stdout; tests swap it between runs)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


@contextlib.contextmanager
def _logging_to_stdout():
    """INFO and up to stdout while the job runs; an embedding process (tests) gets its logging back after."""
    root = logging.getLogger()
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def _fail(paths: SageMakerPaths, reason: str, code: int) -> int:
    log.error("training failed: %s", reason)
    write_failure(paths, reason)
    return code


def run_training(paths: SageMakerPaths) -> int:
    """Read the contract, run the job, translate every outcome into an exit code and failure file."""
    clear_failure(paths)
    stop = StopSignal()
    with stop.installed(), CollectorPause() as start:  # no collector passes until the model is loaded
        try:
            raw = read_hyperparameters(paths)
        except (OSError, ValueError) as exc:
            return _fail(paths, f"Cannot read {paths.hyperparameters_file}: {exc}", 2)
        try:
            hp = parse_hyperparameters(raw)
            log.info("hyperparameters: %s", json.dumps(hp.to_sagemaker_strings(), sort_keys=True))
            from .job import run_job  # torch and diffusers load only once the settings are known to be good

            result = run_job(hp, paths, stop=stop, start=start)
        except HyperparameterError as exc:
            return _fail(paths, f"Invalid hyperparameters: {exc}", 2)
        except TrainerError as exc:
            return _fail(paths, str(exc), exc.exit_code)
        except StopRequested as exc:
            code = 130 if str(exc) == "SIGINT" else 143
            return _fail(paths, f"stopped by {exc} while {stop.phase}; no model was written", code)
        except KeyboardInterrupt:
            return _fail(paths, "interrupted (SIGINT)", 130)
        except Exception as exc:  # noqa: BLE001 - the job must report, not crash silently
            log.error("%s", traceback.format_exc())
            reason = f"{type(exc).__name__}: {exc}"
            if "out of memory" in str(exc).lower():
                reason = reason[:600] + OOM_HINT
            return _fail(paths, reason, 1)
    log.info("training finished: %s", result.output_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train", description="DreamBooth training job (SageMaker contract)."
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="train",
        choices=["train", "hyperparameters", "metric-definitions"],
        help="train (default; what `docker run IMAGE train` passes), or print the accepted hyperparameters "
        "or the MetricDefinitions as JSON",
    )
    args = parser.parse_args(argv)
    if args.command == "hyperparameters":
        print(json.dumps(describe_hyperparameters(), indent=2, default=str))
        return 0
    if args.command == "metric-definitions":
        print(json.dumps(METRIC_DEFINITIONS, indent=2))
        return 0
    with _logging_to_stdout():
        return run_training(SageMakerPaths.from_env())


def console_main() -> None:
    sys.exit(main())
