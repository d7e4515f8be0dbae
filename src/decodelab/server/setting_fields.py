"""Request fields made from the sampler registry: one optional field per declared setting, checked by the
setting's own rule, so a bad value is a 400 naming the field with the same message as everywhere else."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, create_model
from pydantic_core import PydanticCustomError

from decodelab.errors import BadInput
from decodelab.samplers import Setting, all_settings

SETTING_ERROR = "decodelab_setting"  # pydantic error type whose message is already the whole sentence

JSON_TYPES: dict[str, Any] = {  # a setting's kind -> the JSON shape a request sends
    "float": float,
    "int": int,
    "token_bias": dict[str, float],  # object keys are token ids written in digits
    "token_ids": list[int],
    "strings": list[str],
}


def _checker(declared: Setting) -> AfterValidator:
    from decodelab.generation_config import from_json

    def check(value: Any) -> Any:
        if value is not None:
            try:
                declared.validate(from_json(declared.name, value))
            except BadInput as error:
                raise PydanticCustomError(SETTING_ERROR, str(error)) from None
        return value

    return AfterValidator(check)


def setting_fields(settings: tuple[Setting, ...] | None = None) -> dict[str, Any]:
    """pydantic field definitions: name -> (Annotated[type | None, check], None)."""
    return {
        declared.name: (Annotated[JSON_TYPES[declared.kind] | None, _checker(declared)], None)
        for declared in (settings if settings is not None else all_settings())
    }


def setting_fields_model(name: str, base: type[BaseModel]) -> type[BaseModel]:
    """`base` plus one optional field per sampler setting."""
    return create_model(name, __base__=base, __module__=base.__module__, **setting_fields())
