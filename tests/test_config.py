"""`boomerang.yaml`: `${VAR}` substitution, validation, and `file:line:col` of every problem.

Every YAML text below is written line by line so that the expected line and column (both
counted from 1) can be read off it; the comments next to the assertions show the counting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boomerang.config import Config, load_config
from boomerang.problems import ProblemError

LONG_SECRET = "s3cret-0123456789abcdef"  # 23 characters, over the 16 minimum


def write(path: Path, *lines: str) -> Path:
    """Write a config file from lines; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "boomerang.yaml"


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """Load a config that must fail; returns every problem as `file:line:col: error: message`."""
    with pytest.raises(ProblemError) as excinfo:
        load_config(path, environ=environ or {})
    return [str(problem) for problem in excinfo.value.problems]


def missing_variable(name: str) -> str:
    return f"environment variable {name} is not set; export it, or give a default as ${{{name}:-value}}"


# ${VAR} substitution


def test_variables_come_from_the_environ_mapping(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The process environment disagrees: the mapping passed in must win over it.
    monkeypatch.setenv("BOOMERANG_SECRET", "from-os-environ-0123456789")
    write(
        config_file,
        "listen:",
        "  host: ${HOST}",
        "  port: ${PORT}",
        "secret: ${BOOMERANG_SECRET}",
        "public_url: https://${TRACK_HOST}/t/",
        "default_locale: ${LANG_A}-${LANG_B}",
    )
    config = load_config(
        config_file,
        environ={
            "HOST": "0.0.0.0",
            "PORT": "9090",
            "BOOMERANG_SECRET": LONG_SECRET,
            "TRACK_HOST": "track.shop.example",
            "LANG_A": "ru",
            "LANG_B": "RU",
        },
    )
    assert config.host == "0.0.0.0"
    assert config.port == 9090  # substituted text, then read as a whole number
    assert config.secret == LONG_SECRET
    assert config.public_url == "https://track.shop.example/t"  # trailing slash dropped
    assert config.default_locale == "ru-RU"


def test_substituted_values_are_not_substituted_again(config_file: Path) -> None:
    write(config_file, "secret: ${BOOMERANG_SECRET}")
    value = "${NOT_A_VARIABLE}-0123456789abcdef"
    config = load_config(config_file, environ={"BOOMERANG_SECRET": value})
    assert config.secret == value


def test_default_is_used_only_when_the_variable_is_missing(config_file: Path) -> None:
    write(
        config_file,
        "listen:",
        "  port: ${BOOMERANG_PORT:-8181}",
        "default_locale: ${LOCALE:-de}",
        "api_token: ${BOOMERANG_API_TOKEN:-}",
    )
    config = load_config(config_file, environ={"LOCALE": "fr"})
    assert config.port == 8181
    assert config.default_locale == "fr"
    assert config.api_token is None  # an empty default means "not set"


def test_missing_variable_in_a_plain_scalar_points_at_the_dollar(config_file: Path) -> None:
    write(
        config_file,
        "listen:",  # 1
        "  host: 127.0.0.1",  # 2
        "default_locale: ${LOCALE}",  # 3: value and `${` at col 17
        "database: ./data-${DB_SUFFIX}.db",  # 4: value at col 11, `${` 7 chars in: col 18
    )
    assert problems_of(config_file) == [
        f"{config_file}:3:17: error: {missing_variable('LOCALE')}",
        f"{config_file}:4:18: error: {missing_variable('DB_SUFFIX')}",
    ]


def test_two_missing_variables_in_one_value_are_both_reported(config_file: Path) -> None:
    write(
        config_file,
        "database: ${DB_DIR}/${DB_NAME}.db",  # value at col 11; `${DB_DIR}/` is 10 chars: col 21
    )
    assert problems_of(config_file) == [
        f"{config_file}:1:11: error: {missing_variable('DB_DIR')}",
        f"{config_file}:1:21: error: {missing_variable('DB_NAME')}",
    ]


def test_missing_variable_in_a_double_quoted_scalar_names_the_variable_and_line(config_file: Path) -> None:
    write(
        config_file,
        "default_locale: en",  # 1
        'secret: "${BOOMERANG_SECRET}"',  # 2
    )
    with pytest.raises(ProblemError) as excinfo:
        load_config(config_file, environ={})
    [problem] = excinfo.value.problems
    assert (problem.file, problem.line, problem.message) == (
        str(config_file),
        2,
        missing_variable("BOOMERANG_SECRET"),
    )


@pytest.mark.parametrize("quote", ['"', "'"])
def test_missing_variable_in_a_quoted_scalar_points_at_the_dollar(config_file: Path, quote: str) -> None:
    write(
        config_file,
        "default_locale: en",  # 1
        f"secret: {quote}${{BOOMERANG_SECRET}}{quote}",  # 2: quote at col 9, `${` at col 10
        f"database: {quote}./db-${{DB_NAME}}.sqlite{quote}",  # 3: quote at col 11, `${` at col 17
    )
    assert problems_of(config_file) == [
        f"{config_file}:2:10: error: {missing_variable('BOOMERANG_SECRET')}",
        f"{config_file}:3:17: error: {missing_variable('DB_NAME')}",
    ]


def test_the_documented_flow_style_variables_load(config_file: Path) -> None:
    write(
        config_file,
        "sources:",
        "  shopify: {secret: ${SHOPIFY_WEBHOOK_SECRET}}",
    )
    config = load_config(config_file, environ={"SHOPIFY_WEBHOOK_SECRET": "whsec-1"})
    assert config.sources == {"shopify": {"secret": "whsec-1"}}


def test_quoted_variables_in_flow_mappings_are_substituted(config_file: Path) -> None:
    write(
        config_file,
        "sources:",
        '  shopify: {secret: "${SHOPIFY_WEBHOOK_SECRET}"}',
        'listen: {host: 127.0.0.1, port: "${BOOMERANG_PORT:-8080}"}',
    )
    config = load_config(config_file, environ={"SHOPIFY_WEBHOOK_SECRET": "whsec-1", "BOOMERANG_PORT": "9"})
    assert config.sources == {"shopify": {"secret": "whsec-1"}}
    assert config.port == 9


# validation


def test_unknown_top_level_key_suggests_the_right_one(config_file: Path) -> None:
    write(
        config_file,
        "database: ./b.db",  # 1
        "default_locale: en",  # 2
        "scenario: ./flows",  # 3: key at col 1
    )
    assert problems_of(config_file) == [
        f"{config_file}:3:1: error: unknown setting 'scenario' (did you mean 'scenarios'?)",
    ]


def test_unknown_key_without_a_close_match_has_no_suggestion(config_file: Path) -> None:
    write(config_file, "listen:", "  port: 8080", "zzz: 1")
    assert problems_of(config_file) == [f"{config_file}:3:1: error: unknown setting 'zzz'"]


def test_unknown_listen_sub_key(config_file: Path) -> None:
    write(
        config_file,
        "listen:",  # 1
        "  host: 0.0.0.0",  # 2
        "  prot: 9000",  # 3: key at col 3
    )
    assert problems_of(config_file) == [
        f"{config_file}:3:3: error: unknown setting 'listen.prot' (did you mean 'port'?)",
    ]


def test_listen_that_is_not_a_mapping(config_file: Path) -> None:
    write(config_file, "listen: 8080")  # value at col 9
    assert problems_of(config_file) == [f"{config_file}:1:9: error: 'listen' must be a mapping of settings"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("eighty", "'port' must be a whole number, not 'eighty'"),
        ("80.5", "'port' must be a whole number, not '80.5'"),
        ("true", "'port' must be a whole number, not 'True'"),
        ("70000", "'port' must be between 0 and 65535"),
        ("65536", "'port' must be between 0 and 65535"),
        ("-1", "'port' must be between 0 and 65535"),
    ],
)
def test_bad_port_points_at_the_value(config_file: Path, value: str, message: str) -> None:
    write(
        config_file,
        "listen:",  # 1
        "  host: 127.0.0.1",  # 2
        f"  port: {value}",  # 3: value at col 9
    )
    assert problems_of(config_file) == [f"{config_file}:3:9: error: {message}"]


def test_bad_port_from_a_variable_points_at_the_value(config_file: Path) -> None:
    write(config_file, "listen: {host: 127.0.0.1, port: '${P}'}")  # the quote opens at col 33
    assert problems_of(config_file, {"P": "http"}) == [
        f"{config_file}:1:33: error: 'port' must be a whole number, not 'http'",
    ]


def test_highest_port_is_accepted(config_file: Path) -> None:
    write(config_file, "listen:", "  port: 65535")
    config = load_config(config_file, environ={})
    assert (config.port, config.public_url) == (65535, "http://127.0.0.1:65535")


def test_bad_default_timezone(config_file: Path) -> None:
    write(
        config_file,
        "contact_plan:",  # 1
        "  min_gap: 4h",  # 2
        "  default_timezone: Mars/Olympus_Mons",  # 3: `default_timezone:` is cols 3-19, value at col 21
    )
    assert problems_of(config_file) == [
        f"{config_file}:3:21: error: 'default_timezone': unknown timezone 'Mars/Olympus_Mons'; "
        "use an IANA name such as Europe/Moscow",
    ]


def test_good_default_timezone_and_contact_plan_are_kept(config_file: Path) -> None:
    write(config_file, "contact_plan:", "  default_timezone: Europe/Moscow", "  min_gap: 4h")
    config = load_config(config_file, environ={})
    assert config.default_timezone == "Europe/Moscow"
    assert config.contact_plan == {"default_timezone": "Europe/Moscow", "min_gap": "4h"}


def test_too_short_secret(config_file: Path) -> None:
    write(
        config_file,
        "default_locale: en",  # 1
        "secret: short-secret",  # 2: value at col 9
    )
    assert problems_of(config_file) == [
        f"{config_file}:2:9: error: 'secret': must be at least 16 characters long; "
        "generate one with `openssl rand -hex 32`",
    ]


def test_too_short_api_token_from_a_variable(config_file: Path) -> None:
    write(config_file, "api_token: ${BOOMERANG_API_TOKEN}")  # value at col 12
    assert problems_of(config_file, {"BOOMERANG_API_TOKEN": "abc"}) == [
        f"{config_file}:1:12: error: 'api_token': must be at least 16 characters long; "
        "generate one with `openssl rand -hex 32`",
    ]


def test_sixteen_character_secret_is_enough(config_file: Path) -> None:
    write(config_file, "secret: 0123456789abcdef", "api_token: fedcba9876543210")
    config = load_config(config_file, environ={})
    assert (config.secret, config.api_token) == ("0123456789abcdef", "fedcba9876543210")


def test_bad_public_url_and_log_level(config_file: Path) -> None:
    write(
        config_file,
        "public_url: ftp://files.example",  # 1: value at col 13
        "log_level: verbose",  # 2: value at col 12
    )
    assert problems_of(config_file) == [
        f"{config_file}:1:13: error: 'public_url': 'ftp://files.example' is not an http(s) URL "
        "such as https://track.shop.example",
        f"{config_file}:2:12: error: 'log_level': 'verbose' is not one of debug, info, warning, error",
    ]


def test_channel_section_must_be_a_mapping(config_file: Path) -> None:
    write(
        config_file,
        "channels:",  # 1
        "  email: yes",  # 2: value at col 10
        "  sms:",  # 3: empty: an enabled channel with no settings
    )
    assert problems_of(config_file) == [
        f"{config_file}:2:10: error: 'channels.email' must be a mapping of settings",
    ]
    write(config_file, "channels:", "  sms:", "  email: {host: mail.local, port: 2525}")
    assert load_config(config_file, environ={}).channels == {
        "sms": {},
        "email": {"host": "mail.local", "port": 2525},
    }


def test_every_problem_is_reported_at_once_in_file_order(config_file: Path) -> None:
    write(
        config_file,
        "secret: tiny",  # 1: value at col 9
        "listen:",  # 2
        "  port: 99999",  # 3: value at col 9
        "colour: blue",  # 4: key at col 1
    )
    assert problems_of(config_file) == [
        f"{config_file}:1:9: error: 'secret': must be at least 16 characters long; "
        "generate one with `openssl rand -hex 32`",
        f"{config_file}:3:9: error: 'port' must be between 0 and 65535",
        f"{config_file}:4:1: error: unknown setting 'colour'",
    ]


def test_invalid_yaml_points_at_the_syntax_error(config_file: Path) -> None:
    write(
        config_file,
        "database: ./b.db",  # 1
        "listen:",  # 2
        "  host: port: 80",  # 3: the second `:` is at col 13
    )
    assert problems_of(config_file) == [
        f"{config_file}:3:13: error: invalid YAML: a 'key:' where none can start: this line is indented "
        "further than the one above it, or a value holds ': ' and must be put in quotes",
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "boomerang.yaml"
    assert problems_of(path) == [
        f"{path}:1:1: error: config file not found; create one with `boomerang init`",
    ]


def test_config_that_is_not_a_mapping(config_file: Path) -> None:
    write(config_file, "- database: ./b.db")
    assert problems_of(config_file) == [f"{config_file}:1:1: error: the config must be a mapping of settings"]


@pytest.mark.parametrize("text", ["", "# nothing set yet\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, environ={})
    here = tmp_path.resolve()
    assert config.path == here / "boomerang.yaml"
    assert config.database == here / "boomerang.db"
    assert (config.host, config.port, config.public_url) == ("127.0.0.1", 8080, "http://127.0.0.1:8080")
    assert (config.secret, config.api_token) == (None, None)
    assert (config.scenarios, config.templates) == (here / "scenarios", here / "templates")
    assert (config.plugin_dirs, config.outbox) == ([], None)
    assert (config.default_locale, config.default_timezone, config.log_level) == ("en", "UTC", "info")
    assert (config.sources, config.channels, config.contact_plan, config.segments) == ({}, {}, {}, {})


# paths


def test_relative_paths_are_resolved_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    path = write(
        project / "boomerang.yaml",
        "database: ./data/shop.db",
        "scenarios: flows",
        "templates: ./tpl",
        "outbox: ./outbox",
        f"plugin_dirs: [./plugins, ../shared/plugins, {tmp_path / 'abs'}]",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path, environ={})
    here = project.resolve()
    assert config.database == here / "data" / "shop.db"
    assert config.scenarios == here / "flows"
    assert config.templates == here / "tpl"
    assert config.outbox == here / "outbox"
    assert config.plugin_dirs == [
        here / "plugins",
        tmp_path.resolve() / "shared" / "plugins",
        tmp_path / "abs",
    ]


def test_a_relative_config_path_is_taken_from_the_cwd_then_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "site" / "boomerang.yaml", "database: shop.db", "plugin_dirs: ./plugins")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("site") / "boomerang.yaml", environ={})
    site = tmp_path.resolve() / "site"
    assert config.path == site / "boomerang.yaml"
    assert config.database == site / "shop.db"
    assert config.plugin_dirs == [site / "plugins"]  # a single path is a list of one


# positions for plugins


@pytest.fixture
def nested(config_file: Path) -> Config:
    write(
        config_file,
        "database: ./b.db",  # 1
        "plugin_dirs:",  # 2
        "  - ./plugins",  # 3
        "  - ../shared/plugins",  # 4: item at col 5
        "channels:",  # 5
        "  email:",  # 6
        "    host: 127.0.0.1",  # 7: the email mapping starts at col 5
        "    port: 2525",  # 8: value at col 11
        '  sms: {from: "+15550001111", api_base: "http://127.0.0.1:9"}',  # 9: api_base value at col 41
    )
    return load_config(config_file, environ={})


def test_where_points_at_a_nested_value(nested: Config) -> None:
    file = str(nested.path)
    assert nested.where("channels", "email", "port") == (file, 8, 11)
    assert nested.where("channels", "email") == (file, 7, 5)
    assert nested.where("channels", "sms", "api_base") == (file, 9, 41)
    assert nested.where("plugin_dirs", 1) == (file, 4, 5)


def test_where_a_key_is_missing_points_at_its_parent(nested: Config) -> None:
    file = str(nested.path)
    assert nested.where("channels", "email", "password") == (file, 7, 5)
    assert nested.where("nothing") == (file, 1, 1)


def test_problem_at_a_nested_value(nested: Config) -> None:
    problem = nested.problem(("channels", "email", "port"), "cannot connect to 127.0.0.1:2525")
    assert str(problem) == f"{nested.path}:8:11: error: cannot connect to 127.0.0.1:2525"


def test_report_settings_are_read(config_file: Path) -> None:
    write(
        config_file,
        "admin_token: ${ADMIN_TOKEN}",
        "report:",
        "  currency: eur",
        "  attribution: {click: 3d, open: 12h}",
    )
    config = load_config(config_file, environ={"ADMIN_TOKEN": LONG_SECRET})
    assert config.admin_token == LONG_SECRET and config.currency == "EUR"
    assert config.attribution.seconds() == {"click": 3 * 86400, "open": 12 * 3600, "delivery": 86400}
    assert load_config(write(config_file, "default_locale: en"), environ={}).attribution.seconds() == {
        "click": 5 * 86400,
        "open": 86400,
        "delivery": 86400,
    }


def test_bad_report_settings_point_at_the_value(config_file: Path) -> None:
    write(
        config_file,
        "admin_token: short",  # 1: value at col 14
        "report:",  # 2
        "  currency: euros",  # 3: value at col 13
        "  attribution:",  # 4
        "    click: soon",  # 5: value at col 12
        "    view: 1d",  # 6: key at col 5
    )
    assert problems_of(config_file) == [
        f"{config_file}:1:14: error: 'admin_token': must be at least 16 characters long; "
        "generate one with `openssl rand -hex 32`",
        f"{config_file}:3:13: error: 'currency': 'euros' is not a currency code such as EUR or RUB",
        f"{config_file}:5:12: error: 'report.attribution.click': 'soon' is not a duration; write a number "
        "and a unit: 30s, 20m, 2h, 1d, 3w",
        f"{config_file}:6:5: error: unknown setting 'attribution.view'",
    ]
