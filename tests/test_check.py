"""`boomerang check`: config, scenario and template problems as `file:line:col`; exit 1 on errors."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from boomerang.cli import cli

pytestmark = pytest.mark.no_store  # `check` opens no database

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning): (?P<text>.+)$")
HELLO = "---\nsubject: Hello {{ customer.name }}\n---\n<p>Hello {{ customer.name }}</p>\n"

ACTION_PLUGIN = """\
from boomerang import hookimpl
from boomerang.kinds import Action


async def note(customer_id, text):
    return {"noted": True}


@hookimpl
def register_actions(config):
    return [Action("crm.note", note, description="Write a note on the customer")]
"""


@pytest.fixture
def shop(project: Path) -> Path:
    """The `init` project pointed at our own empty scenario folder and our own templates."""
    config = project / "boomerang.yaml"
    text = config.read_text(encoding="utf-8")
    assert "scenarios: ./scenarios" in text and "templates: ./templates" in text
    config.write_text(
        text.replace("scenarios: ./scenarios", "scenarios: ./mine").replace(
            "templates: ./templates", "templates: ./mytemplates"
        ),
        encoding="utf-8",
    )
    (project / "mine").mkdir()
    template(project, "hello", "email.en.html", HELLO)
    template(project, "hello", "sms.en.txt", "Hello {{ customer.name }}\n")
    template(project, "push_only", "push.en.txt", "---\ntitle: Hi\n---\nHello\n")
    return project


def template(project: Path, name: str, file: str, text: str) -> Path:
    folder = project / "mytemplates" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(text, encoding="utf-8")
    return folder / file


def scenario(project: Path, name: str, text: str, folder: str = "mine") -> Path:
    path = project / folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def check(project: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml"), *args])


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def summary(result: Result) -> str:
    return result.stderr.strip()


GOOD = """\
scenario: good
trigger: {event: cart.updated, if: "cart.items | length > 0"}
exit_on: [order.placed]
goal: order.placed
steps:
  - wait: 20m
  - send: hello
    channels: [email]
  - send: hello
"""


def test_a_clean_project_passes(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    result = check(shop)
    assert result.exit_code == 0, result.output
    assert lines(result) == []
    assert summary(result) == "1 file checked: no problems"


def test_only_warnings_exit_0(shop: Path) -> None:
    path = scenario(
        shop,
        "warned",
        """\
        scenario: warned
        trigger: {event: cart.updatd}
        exit_on: [order.placd]
        goal: order.paidd
        steps:
          - wait: {for: 1d, until: wishlist.added}
          - send: hello
            channels: [sms, email]
          - send: push_only
            channels: [push]
        """,
    )
    result = check(shop)
    assert result.exit_code == 0, result.output
    custom = "; a custom type is fine if a source sends it"
    assert lines(result) == [
        f"{path}:2:18: warning: 'cart.updatd' in trigger is not a known event type "
        f"(did you mean 'cart.updated'?){custom}",
        f"{path}:3:10: warning: 'order.placd' in exit_on is not a known event type "
        f"(did you mean 'order.placed'?){custom}",
        f"{path}:4:7: warning: 'order.paidd' in goal is not a known event type "
        f"(did you mean 'order.paid'?){custom}",
        f"{path}:6:5: warning: 'wishlist.added' in wait until is not a known event type{custom}",
        f"{path}:7:5: warning: channel 'sms' is not configured: this step will not use it",
        f"{path}:9:5: warning: channel 'push' is not configured: this step will not use it",
    ]
    for line in lines(result):
        assert LINE.match(line), line
    assert summary(result) == "1 file checked: 6 warnings"


def test_any_error_exits_1_and_names_the_place(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    path = scenario(
        shop,
        "typo",
        """\
        scenario: typo
        trigger: {event: cart.updated}
        steps:
          - wait: 1h
          - send: helo
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [f"{path}:5:5: error: unknown template 'helo' (did you mean 'hello'?)"]
    assert summary(result) == "2 files checked: 1 error"


def test_json_output(shop: Path) -> None:
    path = scenario(
        shop,
        "mixed",
        """\
        scenario: mixed
        trigger: {event: cart.updated}
        steps:
          - wait: 20 minutes
          - send: hello
            channels: [sms]
        """,
    )
    result = check(shop, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    # A scenario that does not compile is not counted; its problems are.
    assert report == {
        "errors": 1,
        "warnings": 0,
        "files": 1,
        "scenarios": 0,
        "problems": [
            {
                "file": str(path),
                "line": 4,
                "col": 11,
                "severity": "error",
                "message": "'20 minutes' is not a duration; write a number and a unit: 30s, 20m, 2h, 1d, 3w",
            }
        ],
    }
    path.write_text(path.read_text().replace("20 minutes", "20m"))
    result = check(shop, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report == {
        "errors": 0,
        "warnings": 1,
        "files": 1,
        "scenarios": 1,
        "problems": [
            {
                "file": str(path),
                "line": 5,
                "col": 5,
                "severity": "warning",
                "message": "channel 'sms' is not configured: this step will not use it",
            }
        ],
    }


def test_a_template_without_the_channel_a_step_lists(shop: Path) -> None:
    path = scenario(
        shop,
        "s",
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - send: push_only
            channels: [sms]
          - send: hello
            channels: [telegram, email]
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{path}:4:5: error: template 'push_only' has no sms version",
        f"{path}:6:5: error: template 'hello' has no telegram version",
    ]


def test_a_template_with_no_configured_channel_for_a_step_without_channels(shop: Path) -> None:
    path = scenario(shop, "s", "scenario: s\ntrigger: {event: cart.updated}\nsteps:\n  - send: push_only\n")
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{path}:4:5: error: template 'push_only' has no version for any configured channel (email)"
    ]


def test_an_unknown_channel_name(shop: Path) -> None:
    path = scenario(
        shop,
        "s",
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - send: hello
            channels: [emial]
          - send: hello
            channels: [pigeon]
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{path}:4:5: error: unknown channel 'emial' (did you mean 'email'?)",
        f"{path}:6:5: error: unknown channel 'pigeon'",
    ]


def test_an_unknown_action_is_an_error_until_a_drop_in_plugin_registers_it(shop: Path) -> None:
    path = scenario(
        shop,
        "s",
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - action: crm.note
            with: {customer_id: "{{ customer.id }}", text: hi}
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [f"{path}:4:5: error: unknown action 'crm.note'; registered: none"]
    (shop / "plugins" / "crm.py").write_text(ACTION_PLUGIN, encoding="utf-8")
    result = check(shop)
    assert result.exit_code == 0, result.output
    assert lines(result) == []
    path.write_text(path.read_text().replace("crm.note", "crm.notes"))
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{path}:4:5: error: unknown action 'crm.notes' (did you mean 'crm.note'?); registered: crm.note"
    ]


def test_a_broken_drop_in_plugin_is_an_error_of_check(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    broken = shop / "plugins" / "broken.py"
    broken.write_text("x = 1\ndef broken(:\n", encoding="utf-8")
    result = check(shop)
    assert result.exit_code == 1
    [line] = lines(result)
    assert line.startswith(f"{broken}:2:12: error: plugin not loaded: SyntaxError")


def test_a_template_syntax_error_names_its_line(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    body = template(
        shop,
        "broken_body",
        "email.en.html",
        "---\nsubject: Fine\n---\n<p>one</p>\n<p>two</p>\n<p>{{ customer.name | }}</p>\n<p>four</p>\n",
    )
    front = template(
        shop, "broken_subject", "email.en.html", '---\nsubject: "Hi {{ customer.name "\n---\n<p>x</p>\n'
    )
    result = check(shop)
    assert result.exit_code == 1
    problems = [LINE.match(line) for line in lines(result)]
    assert all(problems), lines(result)
    assert [(p["file"], int(p["line"]), p["severity"]) for p in problems] == [
        (str(body), 6, "error"),
        (str(front), 2, "error"),
    ]
    assert problems[0]["text"].startswith("template syntax: ")
    assert problems[1]["text"].startswith("template syntax in 'subject': ")
    assert lines(result)[1].startswith(f"{front}:2:10: error: ")


def test_an_email_template_without_a_subject(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    bare = template(shop, "bare", "email.en.html", "<p>No front matter</p>\n")
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [f"{bare}:1:1: error: an email template needs 'subject:' in its front matter"]


def test_a_misnamed_template_file_and_unknown_front_matter(shop: Path) -> None:
    scenario(shop, "good", GOOD)
    misnamed = template(shop, "hello", "mail.en.html", HELLO)
    unknown = template(shop, "odd", "sms.en.txt", "---\nsubject: no subjects in sms\n---\nHi\n")
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{misnamed}:1:1: error: 'mail.en.html' is not named <channel>[.<locale>].<html|txt> with a channel "
        "from email, push, sms, telegram, whatsapp (did you mean 'email'?)",
        f"{unknown}:2:10: error: unknown front matter 'subject' for sms; expected nothing",
    ]


def test_explicit_paths_check_only_those_files(shop: Path) -> None:
    good = scenario(shop, "good", GOOD)
    bad = scenario(shop, "bad", "scenario: bad\ntrigger: {event: cart.updated}\nsteps:\n  - send: nope\n")
    elsewhere = scenario(
        shop, "draft", "scenario: draft\ntrigger: {event: cart.updated}\nsteps:\n  - wait: soon\n", "drafts"
    )
    result = check(shop, "--json", str(good))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "errors": 0,
        "warnings": 0,
        "files": 1,
        "scenarios": 1,
        "problems": [],
    }
    result = check(shop, str(bad))
    assert result.exit_code == 1
    assert lines(result) == [f"{bad}:4:5: error: unknown template 'nope'"]
    assert summary(result) == "1 file checked: 1 error"
    # A file outside the configured folder, and a folder given as a path.
    result = check(shop, str(good), str(elsewhere))
    assert result.exit_code == 1
    assert [line.split(": error: ")[0] for line in lines(result)] == [f"{elsewhere}:4:11"]
    result = check(shop, str(shop / "mine"))
    assert result.exit_code == 1
    assert lines(result) == [f"{bad}:4:5: error: unknown template 'nope'"]
    assert summary(result) == "2 files checked: 1 error"
    # With no path the configured folder is checked: the draft elsewhere is not.
    assert lines(check(shop)) == lines(result)


def test_a_path_that_does_not_exist_is_a_usage_error(shop: Path) -> None:
    result = check(shop, str(shop / "mine" / "missing.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_bad_config_is_reported_with_its_position(shop: Path) -> None:
    config = shop / "boomerang.yaml"
    config.write_text(config.read_text().replace("default_locale: en", "default_locale: en\nlog_levl: info"))
    result = check(shop, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    [problem] = report["problems"]
    assert (problem["file"], problem["severity"]) == (str(config.resolve()), "error")
    assert problem["message"] == "unknown setting 'log_levl' (did you mean 'log_level'?)"
    line = config.read_text().splitlines().index("log_levl: info") + 1
    assert (problem["line"], problem["col"]) == (line, 1)
    assert report["scenarios"] == 0


def test_a_scenario_using_segments_and_conditions_checks_clean(shop: Path) -> None:
    config = shop / "boomerang.yaml"
    config.write_text(config.read_text() + '\nsegments:\n  vip: "customer.orders_count >= 2"\n')
    scenario(
        shop,
        "vip",
        """\
        scenario: vip
        trigger: {schedule: "0 10 * * *", audience: "in_segment('vip') and not bought_category('bikes')"}
        steps:
          - if: days_since(customer.last_order_at) > 30 and viewed_products('7d') | length > 0
            then: [{send: hello}]
        """,
    )
    result = check(shop)
    assert result.exit_code == 0, result.output
    assert summary(result) == "1 file checked: no problems"


def test_every_output_line_is_one_problem_even_for_a_multi_line_expression(shop: Path) -> None:
    scenario(
        shop,
        "multi",
        """\
        scenario: multi
        trigger:
          event: cart.updated
          if: |
            cart.total > 1 and
            cart.total <
        steps:
          - send: hello
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert len(lines(result)) == 1
    for line in lines(result):
        assert LINE.match(line), line


def test_the_summary_counts_files_and_paths_are_relative_to_the_working_folder(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario(shop, "good", GOOD)
    scenario(shop, "broken", "scenario: broken\ntrigger: {event: cart.updated\n")
    monkeypatch.chdir(shop)
    everything = CliRunner().invoke(cli, ["check", "--config", "boomerang.yaml"])
    one = CliRunner().invoke(
        cli, ["check", "--config", str(shop / "boomerang.yaml"), str(shop / "mine" / "broken.yaml")]
    )
    # A file that does not even parse is counted: it was checked.
    assert summary(everything) == "2 files checked: 1 error"
    assert summary(one) == "1 file checked: 1 error"
    assert lines(everything) == lines(one)
    [line] = lines(one)
    assert line.startswith("mine/broken.yaml:3:1: error: "), line


def test_an_unknown_source_or_channel_names_the_plugins_there_are(shop: Path) -> None:
    config = shop / "boomerang.yaml"
    config.write_text(config.read_text() + "\nsources:\n  shopfy: {secret: whsec-1}\n", encoding="utf-8")
    text = config.read_text().replace("channels:\n", "channels:\n  smss: {}\n", 1)
    assert text != config.read_text()
    config.write_text(text, encoding="utf-8")
    result = check(shop)
    assert result.exit_code == 1
    rows = config.read_text().splitlines()
    where = str(config.resolve())
    channel, source = rows.index("  smss: {}") + 1, rows.index("  shopfy: {secret: whsec-1}") + 1
    # Nothing else: the channels that are configured still count for the scenarios and templates.
    assert lines(result) == [
        f"{where}:{channel}:9: error: no channel plugin provides 'smss' (did you mean 'sms'?)",
        f"{where}:{source}:3: error: no source plugin provides 'shopfy' (did you mean 'shopify'?); "
        "installed: bitrix, bitrix24, shopify, site, woocommerce",
    ]


def test_one_cause_is_reported_once(shop: Path) -> None:
    # A bad SMS setting: the settings' problems, not every step that lists sms or email.
    config = shop / "boomerang.yaml"
    text = config.read_text().replace(
        "channels:\n", 'channels:\n  sms: {account_sid: AC1, from: "+15550001"}\n', 1
    )
    config.write_text(text, encoding="utf-8")
    scenario(shop, "good", GOOD.replace("channels: [email]", "channels: [sms, email]"))
    # A Jinja syntax error in a template: that file's problem, not "unknown template" on the step.
    broken = template(
        shop, "broken", "email.en.html", "---\nsubject: Hi\n---\n<p>{% if customer.name %}</p>\n"
    )
    step = scenario(
        shop,
        "uses_broken",
        "scenario: uses_broken\ntrigger: {event: cart.updated}\nsteps:\n  - send: broken\n",
    )
    result = check(shop)
    assert result.exit_code == 1
    found = lines(result)
    assert [line for line in found if str(step) in line or "good.yaml" in line] == []
    assert {line.split(": error: ")[0].rsplit(":", 2)[0] for line in found} == {
        str(broken),
        str(config.resolve()),
    }
    assert any("'auth_token' is required" in line for line in found)


CONDITION_PLUGIN = """\
from boomerang import hookimpl


def vip_cart(cart):
    return (cart or {}).get("total", 0) > 500


@hookimpl
def register_conditions():
    return {"vip_cart": vip_cart}
"""


def test_unknown_names_and_functions_are_errors_with_did_you_mean(shop: Path) -> None:
    (shop / "plugins" / "vip.py").write_text(CONDITION_PLUGIN, encoding="utf-8")
    order = scenario(
        shop,
        "order",
        """\
        scenario: order
        trigger: {event: order.placed, if: "vip_crt(order) or custmer.orders_count > 1"}
        steps:
          - if: ordr.total > 100
            then: [{send: receipt}]
          - if: vip_cart(order) and in_segmnt('vip')
            then: [stop]
        """,
    )
    receipt = template(
        shop,
        "receipt",
        "email.en.html",
        "---\nsubject: Order {{ order.id }}\n---\n"
        '<p>{{ ordr.id }}</p>\n<a href="{{ unsubscribe_url }}">unsubscribe</a>\n',
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{order}:2:37: error: unknown function 'vip_crt' (did you mean 'vip_cart'?)",
        f"{order}:2:55: error: unknown name 'custmer' (did you mean 'customer'?)",
        f"{order}:4:9: error: unknown name 'ordr' (did you mean 'order'?)",
        f"{order}:6:29: error: unknown function 'in_segmnt' (did you mean 'in_segment'?)",
        f"{receipt}:4:7: error: unknown name 'ordr' (sent by scenario 'order') (did you mean 'order'?)",
    ]


def test_names_a_template_defines_itself_are_not_reported(shop: Path) -> None:
    scenario(shop, "cart", "scenario: cart\ntrigger: {event: cart.updated}\nsteps:\n  - send: rich\n")
    template(
        shop,
        "rich",
        "email.en.html",
        "---\nsubject: '{{ cart.items | length }} items{% if promo.code %}, {{ promo.code }}{% endif %}'\n"
        "---\n"
        "{% set ns = namespace(total=0) %}{% set title = customer.name | default('friend') %}\n"
        "{% macro line(item) %}<li>{{ item.name }} {{ caller() }}</li>{% endmacro %}\n"
        "{% for item in cart.items %}{% call line(item) %}{{ loop.index }}{% endcall %}"
        "{% set ns.total = ns.total + item.price %}{% endfor %}\n"
        "{% for n in range(3) if n is even %}{{ n }}{% endfor %}{{ title }} {{ ns.total }} {{ now.year }}\n"
        "{{ journey.variant }} {{ waited.event }} {{ data.cart.url }} {{ event.type }}\n"
        "{{ days_since(now) }}\n",
    )
    result = check(shop)
    assert result.exit_code == 0, result.output
    assert lines(result) == []


def test_a_custom_event_type_reports_only_functions_and_misspelt_names(shop: Path) -> None:
    path = scenario(
        shop,
        "custom",
        """\
        scenario: custom
        trigger: {event: loyalty.tier_changed, if: "tier.level > 2 and custmer.name and vip_crt(tier)"}
        steps:
          - send: hello
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert [line for line in lines(result) if ": error: " in line] == [
        f"{path}:2:64: error: unknown name 'custmer' (did you mean 'customer'?)",
        f"{path}:2:81: error: unknown function 'vip_crt'",
    ]


def test_a_template_is_checked_against_each_scenario_that_sends_it(shop: Path) -> None:
    scenario(shop, "cart", "scenario: cart\ntrigger: {event: cart.updated}\nsteps:\n  - send: both\n")
    scenario(shop, "order", "scenario: order\ntrigger: {event: order.placed}\nsteps:\n  - send: both\n")
    both = template(shop, "both", "email.en.html", "---\nsubject: Hi\n---\nYour cart: {{ cart.url }}\n")
    # `is defined` is how a shared template asks for a name only some scenarios give.
    template(
        shop,
        "guarded",
        "email.en.html",
        "---\nsubject: Hi\n---\n{% if cart is defined %}{{ cart.url }}{% endif %}\n",
    )
    scenario(
        shop, "guarded", "scenario: guarded\ntrigger: {event: order.placed}\nsteps:\n  - send: guarded\n"
    )
    result = check(shop)
    assert result.exit_code == 1
    assert [line for line in lines(result) if ": error: " in line] == [
        f"{both}:4:15: error: unknown name 'cart' (sent by scenario 'order'); the names here are customer, "
        "data, event, journey, now, order, preferences_url, promo, unsubscribe_url, waited and the functions",
    ]


def test_an_actions_arguments_are_checked_against_its_signature(shop: Path, tmp_path: Path) -> None:
    (shop / "plugins" / "crm.py").write_text(ACTION_PLUGIN, encoding="utf-8")
    path = scenario(
        shop,
        "thanks",
        """\
        scenario: thanks
        trigger: {event: order.placed}
        steps:
          - action: crm.note
            with: {customer_id: "{{ customer.id }}", txt: hi}
        """,
    )
    result = check(shop)
    assert result.exit_code == 1
    assert lines(result) == [
        f"{path}:4:5: error: action 'crm.note' needs the argument 'text' under with:",
        f"{path}:4:5: error: action 'crm.note' takes no argument 'txt' (did you mean 'text'?); "
        "it takes customer_id, text",
    ]
    # simulate runs nothing of a project with errors, and says why.
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"id": "e1", "type": "order.placed", "at": "2026-03-02T10:00:00Z", "customer": {"id": "c-1"},'
        ' "data": {"order": {"id": "o-1"}}}\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli, ["simulate", "--config", str(shop / "boomerang.yaml"), "--events", str(events)]
    )
    assert result.exit_code == 1
    assert "the project has errors" in result.output
    assert "takes no argument 'txt' (did you mean 'text'?)" in result.output
    path.write_text(path.read_text().replace("txt: hi", "text: hi"), encoding="utf-8")
    assert check(shop).exit_code == 0
