"""lambdas/pipeline/image_build_status.py: a CodeBuild build record -> wait / done / failure message."""

from lambdas.pipeline.image_build_status import (
    LOG_TAIL_LINES,
    MAX_MESSAGE_CHARS,
    failure_message,
    image_uri,
    physical_id,
    progress,
)

FAILED_BUILD = {
    "id": "TrainerImage:0f1e",
    "buildStatus": "FAILED",
    "phases": [
        {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED"},
        {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"},
        {
            "phaseType": "BUILD",
            "phaseStatus": "FAILED",
            "contexts": [
                {"statusCode": "COMMAND_EXECUTION_ERROR", "message": "Error while executing command"}
            ],
        },
    ],
    "logs": {"deepLink": "https://console.example/log"},
}


def test_in_progress_waits_and_succeeded_completes():
    assert not progress({"buildStatus": "IN_PROGRESS"}).complete
    done = progress({"buildStatus": "SUCCEEDED"})
    assert done.complete and done.failure is None


def test_every_other_status_is_a_failure_naming_the_phase_and_the_log_tail():
    for status in ["FAILED", "FAULT", "STOPPED", "TIMED_OUT"]:
        state = progress({**FAILED_BUILD, "buildStatus": status}, ["step 1", "ERROR: no space left"])
        assert state.complete and state.failure
        assert f"ended {status} in phase BUILD: Error while executing command" in state.failure
        assert state.failure.endswith("Last log lines:\nstep 1\nERROR: no space left")
        assert "Full log: https://console.example/log" in state.failure


def test_the_tail_keeps_the_last_lines_and_fits_cloudformations_reason():
    lines = [f"line {i:04d} " + "x" * 200 for i in range(500)]
    message = failure_message(FAILED_BUILD, lines)
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.rstrip().endswith(lines[-1])
    kept = [line for line in message.splitlines() if line.startswith("line ")]
    assert kept == lines[-len(kept) :] and 0 < len(kept) <= LOG_TAIL_LINES


def test_a_build_without_a_log_says_so():
    message = failure_message({"id": "b", "buildStatus": "FAULT", "phases": []}, [])
    assert message.startswith("Trainer image build b ended FAULT.")
    assert message.endswith("(no build log was written)")


def test_ids_and_uris():
    assert physical_id("repo", "abc") == "repo:abc"
    assert (
        image_uri("1.dkr.ecr.eu-west-1.amazonaws.com/repo", "abc")
        == "1.dkr.ecr.eu-west-1.amazonaws.com/repo:abc"
    )
