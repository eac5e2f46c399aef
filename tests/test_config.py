from pathlib import Path

import pytest

from indexer.config import PUBLIC_JETSTREAM_URLS, Settings, env_names
from indexer.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_run_on_one_machine_with_no_setup() -> None:
    settings = Settings.from_env({}, env_file="/nonexistent")
    assert settings.db.path == Path("data/relay.duckdb")
    assert settings.storage.audio_dir == Path("data/audio")
    assert settings.ingest.jetstream_urls == PUBLIC_JETSTREAM_URLS and len(PUBLIC_JETSTREAM_URLS) == 4
    assert settings.net.allow_insecure is False
    assert settings.identity.plc_url == "https://plc.directory"
    assert (settings.api.host, settings.api.port, settings.storage.kind) == ("127.0.0.1", 8080, "local")
    assert settings.api.did == "did:web:127.0.0.1%3A8080"


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RELAY_PORT=9000\nRELAY_DB_PATH=/tmp/a.duckdb\nR2_BUCKET_NAME=from-file\n")
    settings = Settings.from_env({"RELAY_PORT": "9100", "RELAY_ALLOW_INSECURE": "true"}, env_file=env_file)
    assert (settings.api.port, settings.db.path, settings.storage.r2_bucket_name) == (
        9100,
        Path("/tmp/a.duckdb"),
        "from-file",
    )
    assert settings.net.allow_insecure is True


@pytest.mark.parametrize(
    ("env", "allowed"),
    [
        ({"RELAY_AUDIO_ALLOW_INSECURE": "true"}, True),  # the old name still works
        ({"RELAY_ALLOW_INSECURE": "false", "RELAY_AUDIO_ALLOW_INSECURE": "true"}, False),  # the new name wins
        ({"RELAY_ALLOW_INSECURE": "true"}, True),
    ],
)
def test_allow_insecure_has_its_old_name_as_an_alias(env: dict[str, str], allowed: bool) -> None:
    assert Settings.from_env(env, env_file="/nonexistent").net.allow_insecure is allowed


def test_identity_lookups_have_their_own_timeout() -> None:
    settings = Settings.from_env(
        {"RELAY_AUDIO_TIMEOUT_SECONDS": "3", "RELAY_IDENTITY_TIMEOUT_SECONDS": "7"}, env_file="/nonexistent"
    )
    assert (settings.audio.timeout_seconds, settings.identity.timeout_seconds) == (3.0, 7.0)


def test_lists_and_sets() -> None:
    settings = Settings.from_env(
        {"RELAY_JETSTREAM_URLS": "ws://127.0.0.1:1/subscribe, ws://127.0.0.1:2/subscribe,",
         "RELAY_AUDIO_HOSTS": "Audio.Example.R2.dev,cdn.example"},
        env_file="/nonexistent",
    )
    assert settings.ingest.jetstream_urls == ("ws://127.0.0.1:1/subscribe", "ws://127.0.0.1:2/subscribe")
    assert settings.audio.hosts == frozenset({"audio.example.r2.dev", "cdn.example"})


def test_public_url_names_the_service() -> None:
    settings = Settings.from_env({"RELAY_PUBLIC_URL": "https://appview.relay.example/"}, env_file="/nonexistent")
    assert (settings.api.base_url, settings.api.did) == ("https://appview.relay.example", "did:web:appview.relay.example")


def test_secrets_stay_out_of_the_repr() -> None:
    settings = Settings.from_env(
        {"RELAY_APP_PASSWORD": "hunter2", "R2_SECRET_ACCESS_KEY": "s3cret", "RELAY_CURSOR_SECRET": "c0ffee"},
        env_file="/nonexistent",
    )
    text = repr(settings)
    assert "hunter2" not in text and "s3cret" not in text and "c0ffee" not in text
    assert settings.publish.app_password == "hunter2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_PORT": "eighty"}, "RELAY_PORT='eighty': invalid literal for int() with base 10: 'eighty'"),
        ({"RELAY_PORT": "70000"}, "RELAY_PORT: 70000 is not a TCP port"),
        ({"RELAY_ALLOW_INSECURE": "maybe"}, "RELAY_ALLOW_INSECURE='maybe': expected true or false"),
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
    example = ROOT / ".env.example"
    lines = [line.lstrip("# ") for line in example.read_text().splitlines()]
    named = {line.split("=", 1)[0] for line in lines if "=" in line and line[:1].isupper()}
    assert set(env_names()) - named == set()
    assert Settings.from_env({}, env_file=example) == Settings()


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [name for name in env_names() if f"`{name}`" not in readme] == []


@pytest.mark.parametrize(
    ("value", "nameservers"),
    [
        ("", ()),
        ("127.0.0.1", (("127.0.0.1", 53),)),
        ("127.0.0.1:5353, 9.9.9.9", (("127.0.0.1", 5353), ("9.9.9.9", 53))),
        ("[::1]:5353,::1,[2620:fe::fe]", (("::1", 5353), ("::1", 53), ("2620:fe::fe", 53))),
    ],
)
def test_dns_nameservers(value: str, nameservers: tuple[tuple[str, int], ...]) -> None:
    assert Settings.from_env({"RELAY_DNS_NAMESERVERS": value}, env_file="/nonexistent").net.nameservers == nameservers


def test_a_database_url_selects_postgresql_and_stays_out_of_the_repr() -> None:
    url = "postgresql://relay:s3cret@db.internal:5432/relay?sslmode=require"
    settings = Settings.from_env({"RELAY_DATABASE_URL": url}, env_file="/nonexistent")
    assert settings.db.url == url
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({}, env_file="/nonexistent").db.url == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mysql://relay:s3cret@db/relay", "RELAY_DATABASE_URL: a postgresql:// URL is needed, not mysql://..."),
        ("relay", "RELAY_DATABASE_URL: a postgresql:// URL is needed, not a value with no scheme"),
        ("postgresql://relay:s3cret@db:port/relay", "RELAY_DATABASE_URL: not a URL (Port could not be cast to integer value as 'port')"),
        ("postgresql://relay:s3cret@db:0/relay", "RELAY_DATABASE_URL: port 0 is not a TCP port"),
        ("postgresql://relay:s3cret@db:5432", "RELAY_DATABASE_URL: name the database, as in postgresql://host:5432/relay"),
    ],
)
def test_a_bad_database_url_is_named_without_its_password(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RELAY_DATABASE_URL": value}, env_file="/nonexistent")
    assert caught.value.reason == message
    assert "s3cret" not in caught.value.reason


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dns.google", "RELAY_DNS_NAMESERVERS: 'dns.google' is not an IP address"),
        ("1.1.1.1:0", "RELAY_DNS_NAMESERVERS: '0' is not a port"),
        ("1.1.1.1:dns", "RELAY_DNS_NAMESERVERS: 'dns' is not a port"),
        ("1.1.1.1:", "RELAY_DNS_NAMESERVERS: '' is not a port"),
        ("[::1]5353", "RELAY_DNS_NAMESERVERS: '[::1]5353' is not host[:port]"),
        ("[::1", "RELAY_DNS_NAMESERVERS: '[::1' is not host[:port]"),
    ],
)
def test_bad_dns_nameservers_name_the_entry(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RELAY_DNS_NAMESERVERS": value}, env_file="/nonexistent")
    assert caught.value.reason == message
