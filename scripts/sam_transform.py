"""Print template.yaml as CloudFormation after the SAM transform, offline (for checkov).

Run with the SAM tools venv (`.venv-sam/bin/python scripts/sam_transform.py`): checkov then
scans the resources SAM generates (roles, permissions, the stage, the alias), not only the
ones the template declares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[1]


class _NoManagedPolicies:
    """The template names no managed policy by name, so none is looked up (no AWS call)."""

    def load(self) -> dict[str, str]:
        return {}


def _carry_justifications(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    """Give each generated API stage the checkov skips (with their reasons) of its SAM API.

    A stage's settings (caching, access logs) are written on the AWS::Serverless::Api, so
    that is where the template justifies them; SAM drops resource Metadata when it generates
    the stage.
    """
    resources = transformed.get("Resources", {})
    for resource in resources.values():
        if resource.get("Type") != "AWS::ApiGateway::Stage":
            continue
        api = resource.get("Properties", {}).get("RestApiId", {}).get("Ref")
        skips = template["Resources"].get(api, {}).get("Metadata", {}).get("checkov")
        if skips:
            resource.setdefault("Metadata", {})["checkov"] = skips


def main() -> int:
    template: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text(encoding="utf-8"))
    # A local CodeUri is what `sam package` replaces with an S3 location; stand one in.
    template.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://bucket/code.zip"
    transformed = transform(template, {}, _NoManagedPolicies())
    _carry_justifications(template, transformed)
    json.dump(transformed, sys.stdout, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
