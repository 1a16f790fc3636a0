"""Configuration: file, environment and flags, in that order; clear errors; `nlprec-serve --check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nlprec.service.cli import main
from nlprec.service.config import ConfigError, ServiceConfig, load_config


def test_defaults_serve_the_demo_models():
    config = load_config(environ={})
    assert config.ranking_model == "models:/ranking-demo@champion"
    assert config.sessionrec_model == "models:/sessionrec-demo@champion"
    assert (config.host, config.port, config.workers, config.token) == ("127.0.0.1", 8000, 1, None)


def test_file_then_environment_then_flags(tmp_path: Path):
    file = tmp_path / "service.yaml"
    file.write_text("port: 9000\nranking_model: /models/r\nlimits: {max_k: 50, max_batch: 8}\n")
    environ = {
        "NLPREC_SERVE_PORT": "9100",
        "NLPREC_SERVE_LIMITS__MAX_K": "20",
        "NLPREC_SERVE_TOKEN": "t",
    }
    config = load_config(file, environ, overrides={"host": "0.0.0.0", "workers": None})
    assert (config.port, config.host, config.token, config.workers) == (9100, "0.0.0.0", "t", 1)
    assert (config.ranking_model, config.limits.max_k, config.limits.max_batch) == (
        "/models/r",
        20,
        8,
    )


def test_toml_file_from_the_environment_and_null_values(tmp_path: Path):
    file = tmp_path / "service.toml"
    file.write_text('sessionrec_model = "/models/s"\n[batching]\nmax_batch_size = 1\n')
    config = load_config(
        environ={"NLPREC_SERVE_CONFIG": str(file), "NLPREC_SERVE_RANKING_MODEL": "null"}
    )
    assert config.ranking_model is None and config.sessionrec_model == "/models/s"
    assert config.batching.max_batch_size == 1


@pytest.mark.parametrize(
    ("text", "environ", "words"),
    [
        ("port: 70000\n", {}, "port: Input should be less than or equal to 65535"),
        ("colour: red\n", {}, "colour: Extra inputs are not permitted"),
        ("workers: 2\n", {}, "workers > 1 needs read_only: true"),
        ("", {"NLPREC_SERVE_LIMITS__MAX_K": "5000"}, "limits.max_k"),
        ("ranking_model: null\nsessionrec_model: null\n", {}, "at least one of"),
        ("- a list\n", {}, "expected a mapping"),
        ("port: [unclosed\n", {}, "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text, environ, words):
    file = tmp_path / "service.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match="service.yaml") as error:
        load_config(file, environ)
    assert words in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", {})


def test_cli_check_prints_the_resolved_config_without_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NLPREC_SERVE_TOKEN", "secret")
    assert main(["--check", "--port", "8123", "--ranking-model", "/m/r"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["port"] == 8123 and shown["ranking_model"] == "/m/r" and shown["token"] == "***"
    ServiceConfig.model_validate({**shown, "token": None})  # what it prints is a valid config


def test_cli_refuses_bad_config_with_status_2(capsys):
    assert main(["--check", "--workers", "3"]) == 2
    assert "workers > 1 needs read_only" in capsys.readouterr().err
