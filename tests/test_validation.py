"""embedkit/validation.py: one way from pydantic errors to one-line messages, for keys, flags and keywords."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from embedkit.errors import ConfigError
from embedkit.validation import Locator, validate


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str | None = None
    rate: float = Field(0.1, gt=0, le=1)
    inner: _Inner = Field(default_factory=_Inner)


def test_load_model_keyword_errors_are_one_line_config_errors_naming_keyword_value_and_choices() -> None:
    """``load_model("minilm", pooling="max")`` raised a raw pydantic ValidationError before any folder is looked at."""
    from embedkit import load_model

    with pytest.raises(ConfigError) as info:
        load_model("minilm", pooling="max")
    text = str(info.value)
    assert "\n" not in text and text.startswith("load_model: invalid value for keyword 'pooling'")
    assert "'max'" in text and "'mean', 'cls', 'last', 'latent_attention' or None" in text
    with pytest.raises(ConfigError, match=r"^load_model: unknown keyword 'poolin' \(did you mean 'pooling'\?\)"):
        load_model("minilm", poolin="mean")
    with pytest.raises(ConfigError, match=r"keyword 'lora\['r'\]': must be >= 1 \(got 0\)"):
        load_model("minilm", lora={"r": 0})


def test_check_model_names_itself_and_overrides_apply_to_a_model_config() -> None:
    from embedkit.models.config import ModelConfig, model_config
    from embedkit.models.loading import check_model

    with pytest.raises(ConfigError, match=r"^check_model: invalid value for keyword 'dtype'"):
        check_model("minilm", dtype="int8")
    base = ModelConfig(name="minilm", pooling="mean", normalize=False)
    cfg = model_config(base, pooling="cls")  # keywords replace the given config's fields, not silently ignored
    assert (cfg.name, cfg.pooling, cfg.normalize) == ("minilm", "cls", False)


def test_the_three_styles_name_the_setting_their_own_way() -> None:
    bad = {"rate": 2.0}
    with pytest.raises(ConfigError) as key:
        validate(_Settings, bad, prefix="section.")
    assert key.value.message == "invalid value for 'section.rate': must be <= 1.0 (got 2.0)"
    with pytest.raises(ConfigError) as flag:
        validate(_Settings, bad, style="flag", where="cmd")
    assert (flag.value.where, flag.value.message) == ("--rate", "invalid value: must be <= 1.0 (got 2.0)")
    with pytest.raises(ConfigError) as kw:
        validate(_Settings, bad, style="keyword", where="f")
    assert str(kw.value).startswith("f: invalid value for keyword 'rate': must be <= 1.0 (got 2.0) (fix: pass rate=")


def test_recipe_style_errors_point_at_the_yaml_line_and_the_closest_key() -> None:
    text = "rate: 0.5\ninner:\n  rr: 3\n"
    with pytest.raises(ConfigError) as info:
        validate(_Settings, {"rate": 0.5, "inner": {"rr": 3}}, locator=Locator("s.yaml", text))
    assert str(info.value).startswith("s.yaml:3: unknown key 'inner.rr' (did you mean 'inner.r'?)")


@pytest.mark.parametrize("style", ["key", "flag", "keyword"])
def test_non_finite_numbers_are_refused_in_every_style(style: str) -> None:
    with pytest.raises(ConfigError, match="must be a finite number"):
        validate(_Settings, {"rate": float("inf")}, style=style)


def test_mntp_refuses_an_infinite_learning_rate_from_python_too() -> None:
    """The MNTP config had no finite check: ``lr=inf`` passed ``gt=0`` and reached the optimizer."""
    from embedkit.training.mntp import MNTPConfig

    with pytest.raises(ConfigError, match="--lr: invalid value: must be a finite number"):
        validate(MNTPConfig, {"data": "p.jsonl", "lr": float("inf")}, style="flag")


def test_the_training_recipe_module_keeps_only_the_schema() -> None:
    """Error formatting and YAML locating live in embedkit.validation; training/config.py does not repeat them."""
    import inspect

    import embedkit.training.config as recipe_config

    source = inspect.getsource(recipe_config)
    for name in ("yaml.compose", "def _convert_validation_error", "def _bounds", "class _Locator", "_TYPE_WORDS",
                 "def resolve_data_path"):
        assert name not in source, name
