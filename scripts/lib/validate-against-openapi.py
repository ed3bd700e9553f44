#!/usr/bin/env python3
"""Validate a JSON document against one schema of Accordion's OpenAPI file.

Usage: validate-against-openapi.py [--spec FILE] SCHEMA_NAME JSON_FILE

SCHEMA_NAME is a name under components/schemas (VmInfo, VmCounters, VmmPingResponse,
ErrorChain, VmConfig, ...). JSON_FILE is a file, or - for standard input. --spec defaults to
docs/api/accordion.yaml of this checkout. Exits 0 when the document is valid; otherwise
prints each violation with its JSON path on stderr and exits 1 (2 for a usage error, a
missing file, or JSON/YAML that does not parse).

Needs PyYAML and jsonschema: run it with the interpreter of the venv that
scripts/api-conformance.sh installs (`scripts/api-conformance.sh --print-venv` prints its
directory), e.g.

    "$(scripts/api-conformance.sh --print-venv)/bin/python" \\
        scripts/lib/validate-against-openapi.py VmInfo info.json

The OpenAPI 3.0 schema dialect is turned into JSON Schema first: `nullable: true` adds
null to the type, and `$ref`s to #/components/schemas/... are resolved inside the file.
Formats are not checked (the file bounds integers with minimum/maximum instead).
"""

import argparse
import json
import os
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:
    sys.exit(
        f"validate-against-openapi: {e.name} is missing; run me with the venv's python "
        "(scripts/api-conformance.sh --print-venv prints its directory)"
    )

# OpenAPI-only keywords that JSON Schema does not know; dropped (they do not constrain).
OPENAPI_ONLY = {"nullable", "example", "discriminator", "xml", "externalDocs", "deprecated",
                "readOnly", "writeOnly"}


def to_json_schema(node):
    """The OpenAPI 3.0 schema `node` as JSON Schema (draft 7)."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in OPENAPI_ONLY:
            continue
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "enum":
            out[key] = value  # values, not schemas
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"] if "null" not in types else types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
    return out


HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPEC = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "api", "accordion.yaml"))


def load_schemas(spec_path):
    """components/schemas of the OpenAPI file, as JSON Schema."""
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    schemas = spec.get("components", {}).get("schemas", {})
    return {name: to_json_schema(schema) for name, schema in schemas.items()}


def errors_of(schemas, name, document):
    """Each violation of schema `name` by `document`, as `Name.path: message`."""
    # The root carries the components, so `#/components/schemas/X` resolves.
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    validator = jsonschema.Draft7Validator(root)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        out.append(f"{name}{path}: {error.message}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="the OpenAPI file (YAML or JSON)")
    parser.add_argument("schema_name", help="a name under components/schemas")
    parser.add_argument("json_file", help="the document to check, or - for stdin")
    args = parser.parse_args()

    def fail(message):
        print(f"validate-against-openapi: {message}", file=sys.stderr)
        sys.exit(2)

    try:
        schemas = load_schemas(args.spec)
    except (OSError, yaml.YAMLError) as e:
        fail(f"{args.spec}: {e}")
    if args.schema_name not in schemas:
        fail(f"no schema {args.schema_name!r} in {args.spec}; it has: {', '.join(sorted(schemas))}")
    try:
        if args.json_file == "-":
            document = json.load(sys.stdin)
        else:
            with open(args.json_file) as f:
                document = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{args.json_file}: {e}")

    errors = errors_of(schemas, args.schema_name, document)
    if not errors:
        print(f"{args.json_file}: valid {args.schema_name}")
        return 0
    for error in errors:
        print(f"{args.json_file}: {error}", file=sys.stderr)
    print(f"{args.json_file}: {len(errors)} violation(s) of {args.schema_name}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
