"""Node 20, 22 and 24 synthesize without jsii's banners; any other Node is named with what to install."""

import pytest

from local_aws.node_runtime import (
    DEPRECATED_VARIABLE,
    END_OF_LIFE_VARIABLE,
    node_major,
    node_support_problem,
    quiet_jsii_environment,
)


def test_the_banners_of_20_22_and_24_are_silenced_and_the_users_own_list_is_kept():
    environ = {END_OF_LIFE_VARIABLE: "18"}
    quiet_jsii_environment(environ)
    assert environ[END_OF_LIFE_VARIABLE].split(",") == ["18", "20", "22", "24"]
    assert environ[DEPRECATED_VARIABLE] == "1"
    quiet_jsii_environment(environ)
    assert environ[END_OF_LIFE_VARIABLE].split(",") == ["18", "20", "22", "24"], "idempotent"


@pytest.mark.parametrize("major", [22, 24])
def test_the_cdk_clis_lines_need_no_word(major):
    assert node_support_problem(major) is None


def test_end_of_life_20_is_a_note_and_anything_else_a_warning():
    assert node_support_problem(20) == (
        "note",
        "Node 20 is end-of-life; synth works, but the CDK CLI supports Node 22 or 24",
    )
    severity, message = node_support_problem(18)
    assert severity == "warning" and "install Node 22 or 24" in message
    severity, message = node_support_problem(None)
    assert severity == "warning" and "no `node` on PATH" in message


def test_the_installed_node_is_found():
    assert isinstance(node_major(), int)
    assert node_major("no-such-node-binary") is None
