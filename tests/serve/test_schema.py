"""/openapi.json describes every route's body and answer: the native API's job bodies come
from the request layer's option declarations, one source with the CLI."""

from __future__ import annotations

import pytest

from glidecli.request.commands import REQUESTS, option_fields
from glidecli.request.values import ValueType

JSON_TYPES = {ValueType.INT: "integer", ValueType.FLOAT: "number", ValueType.STR: "string", ValueType.BOOL: "boolean",
              ValueType.PICTURE: "string", ValueType.PATH: "string"}


def minima(schema: dict) -> set[float]:
    """Every minimum a schema (or any of its parts) declares."""
    found = {schema["minimum"]} if "minimum" in schema else set()
    for part in [*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        found |= minima(part)
    return found


def types_of(schema: dict) -> set[str]:
    found = {schema["type"]} if "type" in schema else set()
    for part in schema.get("anyOf", []):
        found |= types_of(part)
    return found


@pytest.fixture
def schema(server) -> dict:
    answer = server.client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def test_the_job_bodies_are_the_option_declarations(schema):
    components = schema["components"]["schemas"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in components["JobRequest"]["oneOf"]} == {
        "".join(part.capitalize() for part in command.split("-")) + "Job" for command in REQUESTS}
    for command, request_type in REQUESTS.items():
        body = components["".join(part.capitalize() for part in command.split("-")) + "Job"]
        properties = body["properties"]
        assert properties["command"]["const"] == command
        declared = option_fields(request_type)
        assert set(properties) == {"command"} | {option.flag.lstrip("-") if option.flags else option.name for _, option, _ in declared}
        for _, option, default in declared:
            field = properties[option.flag.lstrip("-") if option.flags else option.name]
            assert field["description"].startswith(option.help), (command, option.flag)
            if option.value_type in JSON_TYPES:
                assert JSON_TYPES[option.value_type] in types_of(field), (command, option.flag)
            if option.minimum is not None:
                assert minima(field) == {option.minimum}, (command, option.flag)
            if option.choices:
                assert set(option.choices) <= {value for part in [field, *field.get("anyOf", [])] for value in part.get("enum", [])}
            expected = list(default) if isinstance(default, tuple) else default
            if expected not in (None, []):
                assert field["default"] == expected, (command, option.flag)
            assert set(field.get("x-aliases", [])) == set(option.keys) - {option.flag.lstrip("-") if option.flags else option.name}
        assert body["additionalProperties"] is False


def test_every_route_has_typed_answers(schema):
    untyped = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            content = operation["responses"].get("200", operation["responses"].get("202", {})).get("content", {})
            json_schema = {k: v for k, v in content.get("application/json", {}).get("schema", {"$ref": ""}).items() if k != "title"}
            items = {k: v for k, v in json_schema.get("items", {"$ref": ""}).items() if k != "title"}
            if any(s in ({}, {"type": "object"}, {"additionalProperties": True, "type": "object"}) for s in (json_schema, items)):
                untyped.append(f"{method.upper()} {path}")
    assert untyped == [], untyped


def test_a1111_bodies_list_a1111s_fields(schema):
    components = schema["components"]["schemas"]
    txt2img = components["Txt2ImgRequest"]["properties"]
    for name, kind in {"prompt": "string", "steps": "integer", "cfg_scale": "number", "batch_size": "integer", "enable_hr": "boolean",
                       "hr_scale": "number", "seed": "integer", "width": "integer"}.items():
        assert kind in types_of(txt2img[name]), name
    assert {"init_images", "mask", "denoising_strength", "inpainting_mask_invert"} <= set(components["Img2ImgRequest"]["properties"])


def test_the_native_api_and_the_mcp_tools_publish_one_value_schema(schema):
    """Both front ends take each option's type, limits and choices from one declaration
    (request/json_schema.py), and both ask only for the CLI's required arguments."""
    from glidecli.mcp.schemas import input_schema

    components = schema["components"]["schemas"]
    drop = {"default", "description", "title", "x-aliases"}
    for command, request_type in REQUESTS.items():
        body = components["".join(part.capitalize() for part in command.split("-")) + "Job"]
        tool = input_schema(request_type)
        for name, option, _ in option_fields(request_type):
            if name not in tool["properties"]:
                continue  # the options that write files beside the pictures are not tools' options
            native = {k: v for k, v in body["properties"][option.flag.lstrip("-") if option.flags else option.name].items() if k not in drop}
            if {"type": "null"} in native.get("anyOf", []):  # a value the user may leave out (None)
                native = next(part for part in native["anyOf"] if part != {"type": "null"})
            assert native == {k: v for k, v in tool["properties"][name].items() if k not in drop}, (command, name)
        assert sorted(body["required"]) == sorted(["command", *(option.name or option.flag.lstrip("-") for option in
                                                                 (o for _, o, _ in option_fields(request_type)) if option.must_be_given)])
        assert "lora" not in body["required"] and len(tool["required"]) == len(body["required"]) - 1
