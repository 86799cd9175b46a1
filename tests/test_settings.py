from pathlib import Path

import pytest

from service.settings import Settings, SettingsError, load_settings


def test_defaults_are_the_reference_servers() -> None:
    s = load_settings({}, env_file=None)
    assert s == Settings()
    assert s.model_path == Path("./model/WLASL20c_model.h5")
    assert (s.inter_op_threads, s.intra_op_threads) == (1, 2)
    assert (s.max_clients, s.cors_origins, s.log_level) == (100, ("*",), "info")
    assert (s.ping_timeout, s.ping_interval) == (60.0, 25.0)
    assert s.threshold == 0.5 and s.execution_provider == "auto"
    assert s.model == "landmarks"  # chosen by held-out accuracy, see model/MODEL_CARD.md


def test_reference_names_are_read() -> None:
    s = load_settings(
        {
            "MODEL_PATH": "/m/x.h5", "TF_INTER_OP_THREADS": "3", "TF_INTRA_OP_THREADS": "4",
            "LOG_LEVEL": "DEBUG", "MAX_CLIENTS": "7", "CORS_ORIGINS": "https://a.example, https://b.example",
            "SOCKETIO_PING_TIMEOUT": "5", "SOCKETIO_PING_INTERVAL": "2", "USE_DUMMY_MODEL": "0",
        },
        env_file=None,
    )  # fmt: skip
    assert s.model_path == Path("/m/x.h5") and s.model_dir == Path("/m")
    assert (s.inter_op_threads, s.intra_op_threads, s.log_level, s.max_clients) == (3, 4, "debug", 7)
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert (s.ping_timeout, s.ping_interval) == (5.0, 2.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CLIENTS", "0"), ("MAX_CLIENTS", "many"), ("LOG_LEVEL", "verbose"),
        ("EXECUTION_PROVIDER", "tpu"), ("PREDICTION_THRESHOLD", "1.5"), ("TF_INTRA_OP_THREADS", "-1"),
        ("CORS_ORIGINS", " , "), ("USE_DUMMY_MODEL", "maybe"), ("WINDOW_SECONDS", "-1"),
        ("MAX_FPS", "0"), ("MAX_CONNECTIONS_PER_IP", "0"), ("LOG_FORMAT", "xml"),
        ("AUTH_TOKENS_FILE", "/nonexistent/tokens"), ("MAX_FRAME_PIXELS", "0"), ("MAX_FRAME_PIXELS", "16777217"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value}, env_file=None)


def test_dummy_model_is_refused() -> None:
    with pytest.raises(SettingsError, match="USE_DUMMY_MODEL=1 is not supported"):
        load_settings({"USE_DUMMY_MODEL": "1"}, env_file=None)


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MAX_CLIENTS=3\nLOG_LEVEL=warning\n")
    s = load_settings({"LOG_LEVEL": "error"}, env_file=env_file)
    assert (s.max_clients, s.log_level) == (3, "error")


def test_auth_tokens_from_the_variable_and_a_file_and_never_in_repr(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\n\nfile-token\n")
    s = load_settings({"AUTH_TOKENS": "a, b", "AUTH_TOKENS_FILE": str(tokens)}, env_file=None)
    assert s.auth_tokens == ("a", "b", "file-token") and "file-token" not in repr(s)
    tokens.write_text("# only a comment\n")
    with pytest.raises(SettingsError, match="holds no token"):
        load_settings({"AUTH_TOKENS_FILE": str(tokens)}, env_file=None)


def test_env_example_lists_every_setting_with_its_default_and_a_comment() -> None:
    from dataclasses import fields

    from dotenv import dotenv_values

    from service.settings import _ENV

    example = Path(__file__).resolve().parents[1] / ".env.example"
    values = dotenv_values(example)
    assert set(values) == set(_ENV)  # every variable the loader reads, and nothing else
    assert {_ENV[name][0] for name in values} == {f.name for f in fields(Settings)}
    assert load_settings({}, env_file=example) == Settings()  # it parses, and every value is the default
    lines = example.read_text().splitlines()
    for name in values:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        assert at > 0 and lines[at - 1].startswith("# ") and len(lines[at - 1]) > 4, f"{name} has no comment"
