"""`boomerang init`: a new project that runs at once, with no credentials.

The reference scenarios and templates shipped in the package are copied in; the config
writes messages to `outbox/` instead of sending them, and gets fresh random secrets as
defaults that the environment overrides.
"""

from __future__ import annotations

import secrets
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from boomerang.private_files import write_private

CONFIG_TEMPLATE = """\
# Boomerang configuration. Every ${{VAR}} comes from the environment; ${{VAR:-x}} gives a
# default. The random defaults below make this demo run at once: in production set
# BOOMERANG_SECRET and BOOMERANG_API_TOKEN in the environment instead.
database: ./boomerang.db
listen:
  host: 127.0.0.1
  port: ${{BOOMERANG_PORT:-8080}}
public_url: ${{BOOMERANG_PUBLIC_URL:-http://127.0.0.1:8080}}
secret: ${{BOOMERANG_SECRET:-{secret}}}
api_token: ${{BOOMERANG_API_TOKEN:-{api_token}}}
scenarios: ./scenarios
templates: ./templates
plugin_dirs: [./plugins]
default_locale: en
log_level: info

# Every channel renders as usual but writes its messages here instead of sending them.
# Remove this line (and configure the channels) to send for real.
outbox: ./outbox

channels:
  email: {{host: 127.0.0.1, port: 25, from: "Demo Shop <shop@example.com>"}}

contact_plan:
  default_timezone: Europe/Moscow
"""


def create_project(directory: Path) -> list[Path]:
    """Write a new project into `directory`; raises FileExistsError if one is already there."""
    config = directory / "boomerang.yaml"
    if config.exists():
        raise FileExistsError(f"{config} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    created = [config]
    # The config holds the secret and the API token: 0600 whatever the umask.
    text = CONFIG_TEMPLATE.format(secret=secrets.token_hex(32), api_token=secrets.token_urlsafe(32))
    write_private(config, text.encode("utf-8"))
    for name in ("scenarios", "templates"):
        created += _copy_tree(resources.files("boomerang.examples") / name, directory / name)
    (directory / "plugins").mkdir(exist_ok=True)
    created.append(directory / "plugins")
    return created


def _copy_tree(source: Traversable, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir():
            written += _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
            written.append(target / entry.name)
    return written
