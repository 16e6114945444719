"""The plugin contract: the markers and every hook Boomerang calls.

pluggy calls hooks synchronously, so registration hooks hand over objects whose methods are
async. Notification hooks may return an awaitable; the core awaits it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from boomerang.config import Config
    from boomerang.kinds import Action, Channel, PromoProvider, Recommender, Source
    from boomerang.model import Delivery, Event, Message
    from boomerang.rate_limits import RateLimits

hookspec = pluggy.HookspecMarker("boomerang")
hookimpl = pluggy.HookimplMarker("boomerang")


@hookspec
def register_sources(config: Config, rate_limits: RateLimits) -> list[Source] | None:
    """Hand over the event sources (webhooks, pollers) this plugin provides.

    :param config: the loaded configuration; a source reads its own `config.sources[name]`.
    :param rate_limits: token buckets shared by every daemon on the database, for a source
        that calls a rate-limited API (`await rate_limits.acquire(name, count, rate)`).
    :return: a list of `boomerang.kinds.Source` objects, each with a unique name.
    """


@hookspec
def register_channels(config: Config, rate_limits: RateLimits) -> list[Channel] | None:
    """Hand over the channels this plugin provides, only those configured under `channels:`.

    :param config: the loaded configuration; a channel reads its own `config.channels[name]`.
    :param rate_limits: token buckets shared by every daemon on the database, for a limit
        that `Channel.pace` cannot declare (`await rate_limits.acquire(name, count, rate)`);
        a channel paced by `pace` needs none. An implementation that needs none leaves it out.
    :return: a list of `boomerang.kinds.Channel` objects, each with a unique name.
    """


@hookspec
def register_channel_kinds() -> list[type[Channel]] | None:
    """Hand over the classes of the channels this plugin provides, configured or not.

    Their class attributes (`name`, template `extensions`, `front_matter` keys and types,
    `instant`...) let `boomerang check` and template loading know the channel's templates
    in a project that does not configure it.

    :return: a list of `boomerang.kinds.Channel` subclasses, each with a unique `name`.
    """


@hookspec
def register_conditions() -> dict[str, Callable[..., Any]] | None:
    """Hand over functions for the expression language, by the name used in expressions.

    A function takes and returns plain data (dicts, lists, strings, numbers, datetimes): what
    it returns is copied as such, and anything else (a path, a connection) fails the
    expression. With Jinja's `pass_context` it gets the context's plain data first
    (`context["customer"]`, `context["now"]`); the customer's past comes from
    `boomerang.plugin_api.scope().history` (a `boomerang.plugin_api.History`) and the segments
    from `scope().segments`, which templates themselves cannot reach. It runs within the
    evaluation's time budget (an `if:` on the store's thread, a message on a render thread),
    so it should be quick and never wait on the network.

    :return: a mapping of name to function, e.g. `{"in_segment": in_segment}`.
    """


@hookspec
def register_actions(config: Config, rate_limits: RateLimits) -> list[Action] | None:
    """Hand over the actions usable in scenario `action:` steps.

    :param config: the loaded configuration.
    :param rate_limits: token buckets shared by every daemon of the database, for an action's
        provider limits (as `register_channels` gets them); a hook may leave it out.
    :return: a list of `boomerang.kinds.Action` objects, each with a unique name.
    """


@hookspec
def register_promo_providers(config: Config) -> list[PromoProvider] | None:
    """Hand over providers of personal promo codes, chosen by name in a step's `promo:`.

    :param config: the loaded configuration (a provider's settings: `config.promo_providers`).
    :return: a list of `boomerang.kinds.PromoProvider` objects, each with a unique name.
    """


@hookspec
def register_recommenders(config: Config) -> list[Recommender] | None:
    """Hand over recommendation strategies besides the built-in ones: a template's
    `recommendations(limit, strategy="<name>")` asks the one of that name for each message,
    before it renders (`boomerang.kinds.Recommender`); `check` knows their names.

    :param config: the loaded configuration.
    :return: a list of `boomerang.kinds.Recommender` objects, each with a unique name.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `boomerang` command line; called when the CLI is built.

    :param cli: the click group; use `@cli.command()` to add to it.
    """


@hookspec
def event_stored(event: Event) -> Awaitable[None] | None:
    """Told about each event a source ingests once it is committed (duplicates are not told).

    The source's answer waits for it, so keep it quick; `simulate` does not call it. A send's
    own `message.sent` and `message.failed` events are told through `message_finished`.

    :param event: the stored event, with `customer_id` resolved.
    :return: nothing, or an awaitable the core awaits.
    """


@hookspec
def message_finished(message: Message, delivery: Delivery) -> Awaitable[None] | None:
    """Told about each message a channel was asked to send, with the channel's answer.

    :param message: the rendered message.
    :param delivery: what the channel answered: sent, retry, failed, address invalid, opted out.
    :return: nothing, or an awaitable the core awaits.
    """
