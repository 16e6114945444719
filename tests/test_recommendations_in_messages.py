"""`recommendations()` in messages: rendered through the daemon's real dispatch to the outbox
(built-in strategies fetched with the batch, a drop-in plugin's strategy asked), in `with:`
values, in `preview`; and what `check` says about a call that cannot be answered."""

from __future__ import annotations

import email
import email.policy
import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from test_check import LINE
from test_daemon import post

from boomerang.cli import cli
from boomerang.clock import to_iso
from boomerang.model import Customer
from boomerang.project import open_project
from conftest import event, running, wait_for

TRENDING = """
    from boomerang import hookimpl
    from boomerang.kinds import Recommender

    class Trending(Recommender):
        name = "trending"

        def __init__(self):
            self.asked = []

        async def recommend(self, customer, limit):
            self.asked.append((customer.id, limit))
            return [
                {"id": "TR-1", "name": "Trending gloves", "url": "https://shop.example/p/tr-1", "price": 20},
                "not a product",
                {"id": "TR-2", "name": "Trending bell", "url": "https://shop.example/p/tr-2"},
            ][:limit + 1]

    @hookimpl
    def register_recommenders(config):
        return [Trending()]
"""

NOTING = """
    import json
    from pathlib import Path

    from boomerang import hookimpl
    from boomerang.kinds import Action

    async def note(path, picks):
        Path(path).write_text(json.dumps(picks))

    @hookimpl
    def register_actions(config):
        return [Action("test.note", note)]
"""

PICKS = """\
---
subject: Picked for you
---
<p>Cross: {% for p in recommendations(2, 'cross_sell') -%}
[{{ p.name }} {{ p.price | money(p.currency) }}]{% endfor %}</p>
<p>Also: {% for p in recommendations(strategy='also_bought') %}[{{ p.id }}]{% endfor %}</p>
<p>Viewed: {% for p in recommendations() %}[{{ p.id }}]{% endfor %}</p>
<p>Trending: {% for p in recommendations(1, 'trending') %}[{{ p.name }}]{% endfor %}</p>
"""


def item(sku: str, category: str, price: float = 10.0) -> dict:
    return {
        "sku": sku,
        "name": f"Item {sku}",
        "category": category,
        "price": price,
        "url": f"https://shop.example/p/{sku}",
    }


def own_scenarios(project: Path, scenarios: dict[str, str], templates: dict[str, str]) -> None:
    """The `init` project with only these scenarios and these email templates, the drop-in
    recommender and action, and a cross-sell rule."""
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    for name, body in scenarios.items():
        (project / "scenarios" / f"{name}.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    for name, body in templates.items():
        (project / "templates" / name).mkdir(exist_ok=True)
        (project / "templates" / name / "email.en.html").write_text(body, encoding="utf-8")
    (project / "plugins" / "trending.py").write_text(textwrap.dedent(TRENDING), encoding="utf-8")
    (project / "plugins" / "noting.py").write_text(textwrap.dedent(NOTING), encoding="utf-8")
    config = project / "boomerang.yaml"
    text = config.read_text(encoding="utf-8")
    assert "cross_sell: {bicycles: [tyres, helmets, locks], helmets: [lights]}" in text
    config.write_text(
        text.replace("helmets: [lights]", "helmets: [lights], tyres: [pumps]"), encoding="utf-8"
    )


async def test_a_message_shows_the_customer_s_recommendations_from_the_daemon_s_outbox(
    project: Path, tmp_path: Path
) -> None:
    noted = tmp_path / "noted.json"
    own_scenarios(
        project,
        {
            "picks": """
                scenario: picks
                category: trigger
                trigger: {event: cart.updated}
                steps:
                  - action: test.note
                    with:
                      path: "NOTED"
                      picks: "{{ recommendations(2, 'also_bought') | map(attribute='id') | join(',') }}"
                  - send: picks
            """.replace("NOTED", str(noted))
        },
        {"picks": PICKS},
    )
    history = [
        # others' orders: the catalogue, the best sellers and who bought what with what
        (
            "o-1",
            "order.placed",
            "c-2",
            {
                "order": {
                    "id": "1",
                    "currency": "EUR",
                    "items": [item("B1", "bicycles", 500), item("T1", "tyres", 30), item("P1", "pumps", 15)],
                }
            },
        ),
        (
            "o-2",
            "order.placed",
            "c-3",
            {
                "order": {
                    "id": "2",
                    "currency": "EUR",
                    "items": [item("B1", "bicycles", 500), item("H1", "helmets", 50)],
                }
            },
        ),
        (
            "o-3",
            "order.placed",
            "c-4",
            {
                "order": {
                    "id": "3",
                    "currency": "EUR",
                    "items": [item("H1", "helmets", 50), item("L1", "locks", 20)],
                }
            },
        ),
        ("v-1", "product.viewed", "c-1", {"product": item("L1", "locks", 20)}),
        ("v-2", "product.viewed", "c-1", {"product": item("B1", "bicycles", 500)}),
        ("v-3", "product.viewed", "c-1", {"product": item("P1", "pumps", 15)}),
    ]
    async with running(project) as daemon:
        for number, (event_id, type_, customer, data) in enumerate(history):
            moment = to_iso(datetime.now(UTC) - timedelta(minutes=30 - number))
            body = {**event(event_id, type_, customer={"id": customer}, data=data), "at": moment}
            assert (await post(daemon, json.dumps(body)))[0] == 200
        cart = {"cart": {"currency": "EUR", "items": [item("B1", "bicycles", 500)]}}
        body = {
            **event("c-1", "cart.updated", customer={"id": "c-1", "email": "anna@example.com"}, data=cart),
            "at": to_iso(datetime.now(UTC)),
        }
        assert (await post(daemon, json.dumps(body)))[0] == 200
        outbox = project / "outbox"
        [mail] = await wait_for(lambda: list(outbox.glob("*-email-*.eml")), what="the email")
        asked = daemon.project.registry.recommenders["trending"].asked
        await wait_for(noted.exists, what="the action")
    parsed = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    # B1 is in the cart: never recommended; bicycles → tyres, helmets, locks: H1 sold twice,
    # T1 and L1 once each, L1 seen last
    assert "<p>Cross: [Item H1 €50][Item L1 €20]</p>" in html
    # c-2 and c-3 bought B1 too, and T1, P1 (c-2) and H1 (c-3): one buyer each
    assert "<p>Also: [H1][P1][T1]</p>" in html
    assert "<p>Viewed: [P1][L1]</p>" in html  # latest view first, B1 (in the cart) left out
    assert "<p>Trending: [Trending gloves]</p>" in html
    assert asked == [("c-1", 1)]
    assert json.loads(noted.read_text()) == "H1,P1"  # read on the store's thread


def check(project: Path) -> list[tuple[str, int, int, str]]:
    result = CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml")])
    found = [LINE.match(line) for line in result.output.splitlines()]
    return [(Path(m["file"]).name, int(m["line"]), int(m["col"]), m["text"]) for m in found if m]


def test_check_names_a_strategy_that_does_not_exist_and_a_limit_out_of_range(project: Path) -> None:
    scenario = "scenario: picks\ncategory: trigger\ntrigger: {event: cart.updated}\nsteps:\n  - send: picks\n"
    body = (
        "---\nsubject: \"{{ recommendations(1, 'trendin')[0].name }}\"\n---\n"
        "<p>{% for p in recommendations(3, 'bestseller') %}{{ p.name }}{% endfor %}</p>\n"
        "<p>{{ recommendations(50, 'viewed') }} {{ recommendations(strategy=customer.name) }}</p>\n"
        "<p>{{ recommendations(2, 'trending') }}</p>\n"
    )
    own_scenarios(project, {"picks": scenario}, {"picks": body})
    problems = check(project)
    assert problems == [
        (
            "email.en.html",
            2,
            14,
            "recommendations(): unknown strategy 'trendin' (did you mean 'trending'?); "
            "the strategies are viewed, cross_sell, bestsellers, also_bought, trending",
        ),
        (
            "email.en.html",
            4,
            16,
            "recommendations(): unknown strategy 'bestseller' (did you mean "
            "'bestsellers'?); the strategies are viewed, cross_sell, bestsellers, also_bought, trending",
        ),
        ("email.en.html", 5, 7, "recommendations(): limit must be a whole number from 1 to 20"),
        (
            "email.en.html",
            5,
            7,
            "recommendations(): write the strategy as a quoted name, such as strategy='viewed'",
        ),
    ]


def test_a_recommender_may_not_take_a_built_in_strategy_s_name(project: Path) -> None:
    plugin = TRENDING.replace('name = "trending"', 'name = "viewed"')
    (project / "plugins" / "trending.py").write_text(textwrap.dedent(plugin), encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml")])
    assert result.exit_code == 1
    assert "recommender 'viewed' has the name of a built-in one" in result.output


def test_preview_shows_sample_products_and_the_reference_emails_use_them(demo: Path) -> None:
    for locale, words in (
        ("en", "Goes well with"),
        ("ru", "вашей корзине подойдут"),
        ("uk", "До вашого кошика"),
    ):
        result = CliRunner().invoke(
            cli,
            [
                "preview",
                "cart_reminder",
                "--channel",
                "email",
                "--locale",
                locale,
                "--config",
                str(demo / "boomerang.yaml"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert words in result.output and "https://shop.example/p/lk-1" in result.output  # cross_sell


async def test_the_readmes_recommender_example_is_a_working_plugin(project: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(  # plugins/trending\.py.*?)  ```", readme, re.DOTALL)
    assert example
    (project / "plugins" / "trending.py").write_text(textwrap.dedent(example.group(1)), encoding="utf-8")
    products = [{"id": f"T{n}", "name": f"Trend {n}", "url": f"https://shop.example/t{n}"} for n in range(5)]
    (project / "trending.json").write_text(json.dumps(products), encoding="utf-8")
    loaded, _plugins = open_project(project / "boomerang.yaml")
    trending = loaded.registry.recommenders["trending"]
    assert await trending.recommend(Customer(id="c-1"), 2) == products[:2]


def test_check_names_a_bad_strategy_in_a_with_value(project: Path) -> None:
    scenario = """\
        scenario: picks
        category: trigger
        trigger: {event: cart.updated}
        steps:
          - action: test.note
            with:
              path: /tmp/x
              picks: "{{ recommendations(2, 'also_bougth') }}"
    """
    own_scenarios(project, {"picks": scenario}, {})
    assert check(project) == [
        (
            "picks.yaml",
            8,
            18,
            "recommendations(): unknown strategy 'also_bougth' (did you mean 'also_bought'?); "
            "the strategies are viewed, cross_sell, bestsellers, also_bought, trending",
        )
    ]


def test_simulate_builds_the_catalogue_from_its_events_and_the_reference_cart_email_shows_it(
    demo: Path, tmp_path: Path
) -> None:
    def line(event_id: str, type_: str, at: str, customer: dict, data: dict) -> str:
        return json.dumps(event(event_id, type_, at, customer, data)) + "\n"

    bicycle, tyres = item("B1", "bicycles", 500), item("T1", "tyres", 30)
    events = tmp_path / "events.jsonl"
    events.write_text(
        line(
            "o-1",
            "order.placed",
            "2026-03-01 10:00",
            {"id": "c-2"},
            {"order": {"id": "1", "currency": "EUR", "items": [bicycle, tyres]}},
        )
        + line(
            "c-1",
            "cart.updated",
            "2026-03-02 10:00",
            {"id": "c-1", "email": "anna@example.com"},
            {
                "cart": {
                    "currency": "EUR",
                    "url": "https://shop.example/cart",
                    "total": 500,
                    "items": [bicycle],
                }
            },
        ),
        encoding="utf-8",
    )
    outbox = tmp_path / "outbox"
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--config",
            str(demo / "boomerang.yaml"),
            "--events",
            str(events),
            "--outbox",
            str(outbox),
        ],
    )
    assert result.exit_code == 0, result.output
    [page] = outbox.glob("*-c_1-abandoned-cart-cart_reminder-email.html")
    html = page.read_text(encoding="utf-8")
    # bicycles → tyres by the demo's cross-sell rule; the bicycle in the cart is left out
    assert "Goes well with what is in your cart:" in html
    assert ">Item T1</a> — €30</li>\n</ul>" in html  # its link tracked, as every link
    assert html.count(">Item B1</a>") == 1  # in the cart's list only
