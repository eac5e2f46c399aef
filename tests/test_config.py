import dataclasses
from pathlib import Path

import pytest

from indexer.config import _ENV_NAMES, PUBLIC_JETSTREAM_URLS, Settings
from indexer.errors import ConfigError


def test_defaults_run_on_one_machine_with_no_setup() -> None:
    settings = Settings.from_env({}, env_file="/nonexistent")
    assert settings.db_path == Path("data/relay.duckdb")
    assert settings.audio_dir == Path("data/audio")
    assert settings.jetstream_urls == PUBLIC_JETSTREAM_URLS and len(PUBLIC_JETSTREAM_URLS) == 4
    assert settings.audio_allow_insecure is False
    assert settings.plc_url == "https://plc.directory"
    assert (settings.host, settings.port, settings.storage) == ("127.0.0.1", 8080, "local")
    assert settings.did == "did:web:127.0.0.1%3A8080"


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RELAY_PORT=9000\nRELAY_DB_PATH=/tmp/a.duckdb\nR2_BUCKET_NAME=from-file\n")
    settings = Settings.from_env({"RELAY_PORT": "9100", "RELAY_AUDIO_ALLOW_INSECURE": "true"}, env_file=env_file)
    assert (settings.port, settings.db_path, settings.r2_bucket_name) == (9100, Path("/tmp/a.duckdb"), "from-file")
    assert settings.audio_allow_insecure is True


def test_lists_and_sets() -> None:
    settings = Settings.from_env(
        {"RELAY_JETSTREAM_URLS": "ws://127.0.0.1:1/subscribe, ws://127.0.0.1:2/subscribe,",
         "RELAY_AUDIO_HOSTS": "Audio.Example.R2.dev,cdn.example"},
        env_file="/nonexistent",
    )
    assert settings.jetstream_urls == ("ws://127.0.0.1:1/subscribe", "ws://127.0.0.1:2/subscribe")
    assert settings.audio_hosts == frozenset({"audio.example.r2.dev", "cdn.example"})


def test_public_url_names_the_service() -> None:
    settings = Settings.from_env({"RELAY_PUBLIC_URL": "https://appview.relay.example/"}, env_file="/nonexistent")
    assert (settings.base_url, settings.did) == ("https://appview.relay.example", "did:web:appview.relay.example")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_PORT": "eighty"}, "RELAY_PORT='eighty': invalid literal for int() with base 10: 'eighty'"),
        ({"RELAY_PORT": "70000"}, "RELAY_PORT: 70000 is not a TCP port"),
        ({"RELAY_AUDIO_ALLOW_INSECURE": "maybe"}, "RELAY_AUDIO_ALLOW_INSECURE='maybe': expected true or false"),
        ({"RELAY_JETSTREAM_URLS": "https://x/subscribe"}, "RELAY_JETSTREAM_URLS: 'https://x/subscribe' is not a ws:// or wss:// URL"),
        ({"RELAY_STORAGE": "s3"}, "RELAY_STORAGE: 's3' is not one of local, r2"),
        ({"RELAY_BATCH_SIZE": "0"}, "RELAY_BATCH_SIZE and RELAY_BATCH_SECONDS must be positive"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, env_file="/nonexistent")
    assert caught.value.reason == message


def test_env_example_names_every_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    lines = [line.lstrip("# ") for line in example.read_text().splitlines()]
    named = {line.split("=", 1)[0] for line in lines if "=" in line and line[:1].isupper()}
    settings = {_ENV_NAMES.get(f.name, "RELAY_" + f.name.upper()) for f in dataclasses.fields(Settings)}
    assert settings - named == set()
    assert Settings.from_env({}, env_file=example) == Settings()
