"""Settings: file < env < overrides, production requirements, dev secrets generated once."""
import base64
import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from connect_service.config import ConfigError, generate_key, load_config

KEY = generate_key()
SECRET = "s" * 40


def test_env_overrides_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'env = "production"\npublic_url = "https://file.example"\nsecret_key = "{SECRET}"\n'
                    f'encryption_keys = ["{KEY}"]\nmax_body_bytes = 10\n')
    env = {"CONNECT_CONFIG": str(path), "CONNECT_PUBLIC_URL": "https://env.example", "CONNECT_MAX_BODY_BYTES": "20",
           "CONNECT_ALLOWED_PRIVATE_HOSTS": "a.internal, b.internal"}
    cfg = load_config(environ=env)
    assert cfg["public_url"] == "https://env.example"
    assert cfg["max_body_bytes"] == 20
    assert cfg["allowed_private_hosts"] == ["a.internal", "b.internal"]
    assert cfg["encryption_keys"] == [KEY]


@pytest.mark.parametrize("raw,expected", [("false", False), ("0", False), ("Off", False), ("true", True),
                                          ("1", True), (" yes ", True)])
def test_a_boolean_setting_reads_the_usual_words(raw, expected, tmp_path):
    cfg = load_config(environ={"CONNECT_DATABASE_PREPARED_STATEMENTS": raw, "CONNECT_ENV": "development",
                              "CONNECT_INSTANCE_PATH": str(tmp_path)})
    assert cfg["database_prepared_statements"] is expected


def test_a_boolean_setting_refuses_anything_else(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(environ={"CONNECT_DATABASE_PREPARED_STATEMENTS": "maybe", "CONNECT_ENV": "development",
                             "CONNECT_INSTANCE_PATH": str(tmp_path)})
    assert str(info.value) == "CONNECT_DATABASE_PREPARED_STATEMENTS: expected true or false, got 'maybe'"
    with pytest.raises(ConfigError):
        load_config({"database_prepared_statements": "yes", "env": "development", "instance_path": str(tmp_path)})
    assert load_config({"env": "development", "instance_path": str(tmp_path)})["database_prepared_statements"] is True


@pytest.mark.parametrize("missing", ["secret_key", "encryption_keys", "public_url"])
def test_production_requires(missing, tmp_path):
    env = {"CONNECT_ENV": "production", "CONNECT_SECRET_KEY": SECRET, "CONNECT_ENCRYPTION_KEYS": KEY,
           "CONNECT_PUBLIC_URL": "https://c.example", "CONNECT_INSTANCE_PATH": str(tmp_path)}
    del env[f"CONNECT_{missing.upper()}"]
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    message = str(info.value)
    assert f"CONNECT_{missing.upper()}" in message and "\n" not in message


@pytest.mark.parametrize("name,value", [("CONNECT_ENCRYPTION_KEYS", "short"), ("CONNECT_PUBLIC_URL", "ftp://x"),
                                        ("CONNECT_MAX_BODY_BYTES", "lots"), ("CONNECT_ENV", "staging")])
def test_invalid_settings_name_themselves(name, value, tmp_path):
    env = {"CONNECT_ENV": "production", "CONNECT_SECRET_KEY": SECRET, "CONNECT_ENCRYPTION_KEYS": KEY,
           "CONNECT_PUBLIC_URL": "https://c.example", "CONNECT_INSTANCE_PATH": str(tmp_path), name: value}
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    assert name in str(info.value)


def test_production_start_fails_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_INSTANCE_PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "connect_service.cli", "init-db"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "CONNECT_SECRET_KEY" in lines[0], proc.stderr


def _load_dev(path, queue):
    cfg = load_config(environ={"CONNECT_ENV": "development", "CONNECT_INSTANCE_PATH": path})
    queue.put((cfg["secret_key"], cfg["encryption_keys"][0]))


def test_dev_secrets_generated_once_by_concurrent_workers(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_dev, args=(str(tmp_path), queue)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert len(set(results)) == 1
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert results[0] == (stored["secret_key"], stored["encryption_keys"][0])
    assert oct((tmp_path / "secrets.json").stat().st_mode & 0o777) == "0o600"


def test_generate_key_needs_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "connect-service"), "generate-key"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    key = proc.stdout.strip()
    assert proc.stdout.count("\n") == 1
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32
    # the format CONNECT_ENCRYPTION_KEYS takes
    cfg = load_config(environ={"CONNECT_ENV": "production", "CONNECT_SECRET_KEY": SECRET,
                               "CONNECT_PUBLIC_URL": "https://c.example", "CONNECT_ENCRYPTION_KEYS": f"{key},{KEY}"})
    assert cfg["encryption_keys"] == [key, KEY]


def test_gunicorn_start_fails_with_one_line(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_INSTANCE_PATH=str(tmp_path))
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    proc = subprocess.run([gunicorn, "--bind", "127.0.0.1:0", "--workers", "1", "wsgi:app"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("connect-service:")]
    assert ours == ["connect-service: CONNECT_SECRET_KEY is required in production (CONNECT_ENV=production)"]


def _example_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _example_strings(item)


PROD = {"CONNECT_ENV": "production", "CONNECT_SECRET_KEY": SECRET, "CONNECT_ENCRYPTION_KEYS": KEY,
        "CONNECT_PUBLIC_URL": "https://c.example"}


def test_production_refuses_every_example_value_as_secret_key(tmp_path):
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "config.example.toml"), "rb") as fh:
        example = tomllib.load(fh)
    values = [v for value in example.values() for v in _example_strings(value)]
    assert "change-me-to-a-long-random-string-of-at-least-32-characters" in values
    for value in values:
        with pytest.raises(ConfigError) as info:
            load_config(environ=dict(PROD, CONNECT_SECRET_KEY=value, CONNECT_INSTANCE_PATH=str(tmp_path)))
        assert str(info.value).startswith("CONNECT_SECRET_KEY: ") and "\n" not in str(info.value), value


@pytest.mark.parametrize("secret,ok", [("x" * 31, False), ("é" * 15 + "x", False), ("é" * 16, True),
                                       ("x" * 32, True)])
def test_secret_key_is_counted_in_bytes(secret, ok, tmp_path):
    env = dict(PROD, CONNECT_SECRET_KEY=secret, CONNECT_INSTANCE_PATH=str(tmp_path))
    if ok:
        assert load_config(environ=env)["secret_key"] == secret
    else:
        with pytest.raises(ConfigError, match=r"^CONNECT_SECRET_KEY: must be at least 32 bytes"):
            load_config(environ=env)


@pytest.mark.parametrize("key", ["REPLACE-with-output-of-connect-service-generate-key",
                                 base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="),
                                 base64.urlsafe_b64encode(b"0123456789" * 3 + b"01").decode().rstrip("=")])
def test_production_refuses_placeholder_encryption_keys(key, tmp_path):
    env = dict(PROD, CONNECT_ENCRYPTION_KEYS=f"{KEY},{key}", CONNECT_INSTANCE_PATH=str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    message = str(info.value)
    assert message.startswith("CONNECT_ENCRYPTION_KEYS: ") and "placeholder" in message and "\n" not in message
    # development and tests are not production: a made-up but well-formed key is accepted there
    if key != "REPLACE-with-output-of-connect-service-generate-key":
        assert load_config(environ=dict(env, CONNECT_ENV="development"))["encryption_keys"][1] == key


def test_generate_secret_prints_a_fresh_accepted_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production")
    binary = os.path.join(os.path.dirname(sys.executable), "connect-service")
    outs = [subprocess.run([binary, "generate-secret"], env=env, capture_output=True, text=True, timeout=60,
                           cwd=tmp_path) for _ in range(2)]
    assert [p.returncode for p in outs] == [0, 0] and [p.stderr for p in outs] == ["", ""]
    first, second = (p.stdout for p in outs)
    assert first.count("\n") == 1 and first != second and len(first.strip().encode()) >= 32
    assert load_config(environ=dict(PROD, CONNECT_SECRET_KEY=first.strip()))["secret_key"] == first.strip()
    assert os.listdir(tmp_path) == []
