"""Resolve a synthesized CloudFormation template's intrinsic functions against emulated resources.

Handles what CDK emits for this stack: Ref, Fn::GetAtt, Fn::Join, Fn::Sub, Fn::Select, Fn::Split and
the pseudo parameters. Attribute values come from a :class:`Resolver`'s table, which the emulator fills
as it names (and creates) resources.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ACCOUNT_ID = "123456789012"
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class UnresolvableReference(KeyError):
    """A Ref or GetAtt to something the emulator does not model."""


class Resolver:
    def __init__(self, template: Mapping[str, Any], *, region: str, stack_name: str) -> None:
        self.template = template
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{ACCOUNT_ID}:stack/{stack_name}/local",
            "AWS::NoValue": None,
        }
        # logical id -> {"Ref": value, "<Attribute>": value, ...}
        self.attributes: dict[str, dict[str, Any]] = {}

    def define(self, logical_id: str, ref: Any, **attributes: Any) -> None:
        self.attributes[logical_id] = {"Ref": ref, **attributes}

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.template.get("Parameters", {}):
            default = self.template["Parameters"][name].get("Default")
            if default is None:
                raise UnresolvableReference(f"parameter {name} has no default")
            return default
        return self.get_att(name, "Ref")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        try:
            return self.attributes[logical_id][attribute]
        except KeyError:
            raise UnresolvableReference(f"{logical_id}.{attribute}") from None

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, arg),) = value.items()
            if name == "Ref":
                return self.ref(arg)
            if name == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if name == "Fn::Join":
                separator, items = arg
                return separator.join(str(item) for item in self.resolve(items))
            if name == "Fn::Sub":
                return self._sub(arg)
            if name == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if name == "Fn::Split":
                separator, text = self.resolve(arg)
                return text.split(separator)
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.attributes:
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return _SUB_VARIABLE.sub(substitute, text)


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource["Type"] == resource_type
    }
