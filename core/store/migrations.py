"""The numbered migrations: each runs once, in order, inside a transaction.

PRAGMA user_version records the last one applied. Never edit a published migration: add the
next number.
"""

from __future__ import annotations


def item_id(value: str) -> str:
    """SQL for the catalogue id of the product or item that the JSON `value` (a column or an
    expression) holds, as `recommendations.product_id` reads it: the first of `id`, `sku`,
    `product_id` and `url` set to text or a whole number. Part of migration 10, and of the
    queries that read views (store/products.py): changing it changes a published migration."""
    cases = []
    for key in ("id", "sku", "product_id", "url"):
        kind, found = f"json_type({value}, '$.{key}')", f"json_extract({value}, '$.{key}')"
        cases.append(
            f"CASE WHEN {kind} = 'text' AND {found} != '' THEN substr({found}, 1, 2048)"
            f" WHEN {kind} = 'integer' THEN CAST({found} AS TEXT)"
            f" WHEN {kind} = 'real' AND {found} = CAST({found} AS INTEGER)"
            f" THEN CAST(CAST({found} AS INTEGER) AS TEXT) END"
        )
    return f"coalesce({', '.join(cases)})"


def _text(value: str, key: str) -> str:
    """SQL for a text field of an item as the catalogue keeps it (trimmed, not empty)."""
    found = f"json_extract({value}, '$.{key}')"
    kind = f"json_type({value}, '$.{key}')"
    return f"CASE WHEN {kind} = 'text' AND trim({found}) != '' THEN substr(trim({found}), 1, 2048) END"


# Migration 10 fills the catalogue and the order lines from the events stored before it (the
# carts are left out: they are old by now). The trigger counts the co-purchases as it goes.
_ITEMS_SEEN = f"""
    WITH seen(v, currency, at) AS (
        SELECT json_extract(e.data, '$.product'), NULL, e.at FROM events e
        WHERE e.type = 'product.viewed' AND json_type(e.data, '$.product') = 'object'
        UNION ALL
        SELECT j.value, json_extract(e.data, '$.cart.currency'), e.at
        FROM events e, json_each(e.data, '$.cart.items') j
        WHERE json_type(e.data, '$.cart.items') = 'array' AND j.type = 'object'
        UNION ALL
        SELECT j.value, json_extract(e.data, '$.order.currency'), e.at
        FROM events e, json_each(e.data, '$.order.items') j
        WHERE json_type(e.data, '$.order.items') = 'array' AND j.type = 'object'
    ),
    found(id, name, url, image, price, currency, category, at) AS (
        SELECT {item_id("v")}, coalesce({_text("v", "name")}, {_text("v", "title")}), {_text("v", "url")},
            coalesce({_text("v", "image")}, {_text("v", "image_url")}),
            CASE WHEN json_type(v, '$.price') IN ('integer', 'real') THEN json_extract(v, '$.price') END,
            upper(substr(coalesce({_text("v", "currency")},
                CASE WHEN typeof(currency) = 'text' AND trim(currency) != '' THEN trim(currency) END), 1, 3)),
            {_text("v", "category")}, at
        FROM seen
    )
    INSERT INTO products (id, name, url, image, price, currency, category, seen_at)
    SELECT id, name, url, image, price, currency, category, at FROM found WHERE id IS NOT NULL ORDER BY at
    ON CONFLICT (id) DO UPDATE SET
        name = coalesce(excluded.name, name), url = coalesce(excluded.url, url),
        image = coalesce(excluded.image, image), price = coalesce(excluded.price, price),
        currency = coalesce(excluded.currency, currency), category = coalesce(excluded.category, category),
        seen_at = excluded.seen_at
    WHERE excluded.seen_at >= products.seen_at;
    """
_ORDER_LINES = f"""
    INSERT OR IGNORE INTO order_items (order_id, product_id, customer_id, at, qty)
    SELECT order_id, product_id, customer_id, at, sum(qty) FROM (
        SELECT CASE json_type(e.data, '$.order.id')
                WHEN 'text' THEN nullif(trim(json_extract(e.data, '$.order.id')), '')
                WHEN 'integer' THEN CAST(json_extract(e.data, '$.order.id') AS TEXT) END AS order_id,
            {item_id("j.value")} AS product_id, e.customer_id, e.at,
            CASE WHEN json_type(j.value, '$.qty') = 'integer'
                    AND json_extract(j.value, '$.qty') BETWEEN 1 AND 999999
                    THEN json_extract(j.value, '$.qty')
                WHEN json_type(j.value, '$.qty') IS NULL AND json_type(j.value, '$.quantity') = 'integer'
                    AND json_extract(j.value, '$.quantity') BETWEEN 1 AND 999999
                    THEN json_extract(j.value, '$.quantity')
                ELSE 1 END AS qty
        FROM events e, json_each(e.data, '$.order.items') j
        WHERE e.type = 'order.placed' AND json_type(e.data, '$.order.items') = 'array' AND j.type = 'object'
    )
    WHERE order_id IS NOT NULL AND product_id IS NOT NULL
    GROUP BY order_id, product_id ORDER BY min(at), order_id;
    """

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "customers, identities and events",
        """
        CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            email TEXT, phone TEXT, name TEXT, locale TEXT, timezone TEXT,
            birthday TEXT, gender TEXT, telegram_chat_id TEXT, whatsapp TEXT,
            consents TEXT NOT NULL DEFAULT '{}',
            attributes TEXT NOT NULL DEFAULT '{}',
            push_subscriptions TEXT NOT NULL DEFAULT '[]',
            orders_count INTEGER NOT NULL DEFAULT 0,
            revenue REAL NOT NULL DEFAULT 0,
            last_order_at TEXT, last_seen_at TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL
        );
        CREATE TABLE identities (
            kind TEXT NOT NULL, value TEXT NOT NULL, customer_id TEXT NOT NULL,
            PRIMARY KEY (kind, value)
        );
        CREATE INDEX identities_customer ON identities (customer_id);
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            at TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            data TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at TEXT NOT NULL,
            handled INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX events_customer_at ON events (customer_id, at);
        CREATE INDEX events_unhandled ON events (received_at) WHERE handled = 0;
        """,
    ),
    (
        2,
        "journeys, jobs, messages and the journal",
        """
        CREATE TABLE journeys (
            id TEXT PRIMARY KEY,
            scenario TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            entry_key TEXT NOT NULL,
            status TEXT NOT NULL,
            holdout INTEGER NOT NULL DEFAULT 0,
            cursor TEXT,
            waiting_for TEXT,
            version INTEGER NOT NULL DEFAULT 0,
            context TEXT NOT NULL DEFAULT '{}',
            entered_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            ended_at TEXT,
            UNIQUE (scenario, customer_id, entry_key)
        );
        CREATE INDEX journeys_customer ON journeys (customer_id, status);
        CREATE INDEX journeys_scenario ON journeys (scenario, status);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            due_at REAL NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            journey_id TEXT,
            version INTEGER,
            key TEXT UNIQUE,
            payload TEXT NOT NULL DEFAULT '{}',
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_due ON jobs (due_at, priority DESC);
        CREATE INDEX jobs_journey ON jobs (journey_id);
        CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_until IS NOT NULL;
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            journey_id TEXT,
            customer_id TEXT NOT NULL,
            scenario TEXT,
            step TEXT,
            template TEXT NOT NULL,
            category TEXT NOT NULL,
            candidates TEXT,
            channel TEXT,
            status TEXT NOT NULL,
            promo TEXT,
            expires_at TEXT,
            variant TEXT,
            context TEXT NOT NULL DEFAULT '{}',
            detail TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX messages_customer ON messages (customer_id, created_at);
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            scenario TEXT,
            journey_id TEXT,
            step TEXT,
            template TEXT,
            channel TEXT,
            message_id TEXT,
            reason TEXT NOT NULL,
            value REAL,
            variant TEXT
        );
        CREATE INDEX journal_customer ON journal (customer_id, at);
        CREATE INDEX journal_scenario ON journal (scenario, kind, at);
        """,
    ),
    (
        3,
        "delivery receipts, tracked links, opt-outs and known bad addresses",
        """
        ALTER TABLE messages ADD COLUMN links TEXT;
        ALTER TABLE messages ADD COLUMN provider_id TEXT;
        ALTER TABLE messages ADD COLUMN delivered_at TEXT;
        ALTER TABLE messages ADD COLUMN opened_at TEXT;
        ALTER TABLE messages ADD COLUMN clicked_at TEXT;
        CREATE INDEX messages_provider ON messages (provider_id) WHERE provider_id IS NOT NULL;
        ALTER TABLE customers ADD COLUMN opt_outs TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE customers ADD COLUMN unreachable TEXT NOT NULL DEFAULT '{}';
        """,
    ),
    (
        4,
        "fallback messages and the plan's view of sent messages",
        """
        ALTER TABLE messages ADD COLUMN fallback_of TEXT;
        ALTER TABLE messages ADD COLUMN tried TEXT;
        CREATE INDEX messages_sent ON messages (customer_id, sent_at) WHERE sent_at IS NOT NULL;
        CREATE INDEX messages_journey_step ON messages (journey_id, step);
        """,
    ),
    (
        5,
        "rows that cannot be read back, set aside",
        """
        CREATE TABLE quarantine (
            table_name TEXT NOT NULL,
            row_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            found_at TEXT NOT NULL,
            content TEXT,
            PRIMARY KEY (table_name, row_id)
        );
        """,
    ),
    (
        6,
        "addresses on channels that plugins add, keyed by channel",
        """
        ALTER TABLE customers ADD COLUMN addresses TEXT NOT NULL DEFAULT '{}';
        """,
    ),
    (
        7,
        "indexes for a million journeys: messages cut off mid-send, engagement per channel",
        """
        CREATE INDEX messages_sending ON messages (id) WHERE status = 'sending';
        CREATE INDEX messages_engagement ON messages (channel, status, clicked_at, opened_at, delivered_at)
            WHERE channel IS NOT NULL;
        """,
    ),
    (
        8,
        "engagement per channel as running totals in tenths, kept by triggers on messages",
        """
        CREATE TABLE engagement (
            channel TEXT PRIMARY KEY,
            points INTEGER NOT NULL,
            messages INTEGER NOT NULL
        );
        INSERT INTO engagement (channel, points, messages)
            SELECT channel, sum(CASE WHEN status = 'failed' THEN 0 WHEN clicked_at IS NOT NULL THEN 10
                WHEN opened_at IS NOT NULL THEN 6 WHEN delivered_at IS NOT NULL THEN 3 ELSE 1 END), count(*)
            FROM messages WHERE status IN ('sent', 'delivered', 'failed') AND channel IS NOT NULL
            GROUP BY channel;
        CREATE TRIGGER engagement_insert AFTER INSERT ON messages
            WHEN NEW.status IN ('sent', 'delivered', 'failed') AND NEW.channel IS NOT NULL
        BEGIN
            INSERT INTO engagement (channel, points, messages) VALUES (NEW.channel, (CASE
                WHEN NEW.status = 'failed' THEN 0 WHEN NEW.clicked_at IS NOT NULL THEN 10
                WHEN NEW.opened_at IS NOT NULL THEN 6 WHEN NEW.delivered_at IS NOT NULL THEN 3
                ELSE 1 END), 1)
            ON CONFLICT (channel) DO UPDATE
                SET points = points + excluded.points, messages = messages + excluded.messages;
        END;
        CREATE TRIGGER engagement_delete AFTER DELETE ON messages
            WHEN OLD.status IN ('sent', 'delivered', 'failed') AND OLD.channel IS NOT NULL
        BEGIN
            INSERT INTO engagement (channel, points, messages) VALUES (OLD.channel, -(CASE
                WHEN OLD.status = 'failed' THEN 0 WHEN OLD.clicked_at IS NOT NULL THEN 10
                WHEN OLD.opened_at IS NOT NULL THEN 6 WHEN OLD.delivered_at IS NOT NULL THEN 3
                ELSE 1 END), -1)
            ON CONFLICT (channel) DO UPDATE
                SET points = points + excluded.points, messages = messages + excluded.messages;
        END;
        CREATE TRIGGER engagement_update_old
            AFTER UPDATE OF channel, status, clicked_at, opened_at, delivered_at ON messages
            WHEN OLD.status IN ('sent', 'delivered', 'failed') AND OLD.channel IS NOT NULL
        BEGIN
            INSERT INTO engagement (channel, points, messages) VALUES (OLD.channel, -(CASE
                WHEN OLD.status = 'failed' THEN 0 WHEN OLD.clicked_at IS NOT NULL THEN 10
                WHEN OLD.opened_at IS NOT NULL THEN 6 WHEN OLD.delivered_at IS NOT NULL THEN 3
                ELSE 1 END), -1)
            ON CONFLICT (channel) DO UPDATE
                SET points = points + excluded.points, messages = messages + excluded.messages;
        END;
        CREATE TRIGGER engagement_update_new
            AFTER UPDATE OF channel, status, clicked_at, opened_at, delivered_at ON messages
            WHEN NEW.status IN ('sent', 'delivered', 'failed') AND NEW.channel IS NOT NULL
        BEGIN
            INSERT INTO engagement (channel, points, messages) VALUES (NEW.channel, (CASE
                WHEN NEW.status = 'failed' THEN 0 WHEN NEW.clicked_at IS NOT NULL THEN 10
                WHEN NEW.opened_at IS NOT NULL THEN 6 WHEN NEW.delivered_at IS NOT NULL THEN 3
                ELSE 1 END), 1)
            ON CONFLICT (channel) DO UPDATE
                SET points = points + excluded.points, messages = messages + excluded.messages;
        END;
        """,
    ),
    (
        9,
        "promo codes: every personal code issued, its message, value and expiry, and its redemption",
        """
        CREATE TABLE promo_codes (
            code TEXT PRIMARY KEY COLLATE NOCASE,
            provider TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            scenario TEXT,
            step TEXT,
            percent REAL,
            amount REAL,
            currency TEXT,
            expires_at TEXT,
            issued_at TEXT NOT NULL,
            redeemed_at TEXT,
            order_id TEXT
        );
        CREATE INDEX promo_codes_customer ON promo_codes (customer_id);
        CREATE INDEX promo_codes_issued ON promo_codes (issued_at);
        """,
    ),
    (
        10,
        "the product catalogue, order lines, carts and co-purchase counts, for recommendations",
        """
        CREATE TABLE products (
            id TEXT PRIMARY KEY,
            name TEXT, url TEXT, image TEXT, price REAL, currency TEXT, category TEXT,
            seen_at TEXT NOT NULL
        );
        CREATE INDEX products_category ON products (category) WHERE category IS NOT NULL;
        CREATE TABLE order_items (
            order_id TEXT NOT NULL,
            product_id TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            at TEXT NOT NULL,
            qty INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (order_id, product_id)
        );
        CREATE INDEX order_items_customer ON order_items (customer_id, product_id);
        CREATE INDEX order_items_product ON order_items (product_id, at, qty);
        CREATE INDEX order_items_at ON order_items (at, product_id, qty);
        CREATE TABLE cart_items (
            customer_id TEXT NOT NULL,
            product_id TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX cart_items_customer ON cart_items (customer_id, at);
        CREATE TABLE co_purchases (
            product_id TEXT NOT NULL,
            other_id TEXT NOT NULL,
            customers INTEGER NOT NULL,
            PRIMARY KEY (product_id, other_id)
        ) WITHOUT ROWID;
        CREATE INDEX co_purchases_top ON co_purchases (product_id, customers DESC, other_id);
        CREATE TRIGGER co_purchases_count AFTER INSERT ON order_items
            WHEN NOT EXISTS (SELECT 1 FROM order_items o WHERE o.customer_id = NEW.customer_id
                AND o.product_id = NEW.product_id AND o.rowid != NEW.rowid)
        BEGIN
            INSERT INTO co_purchases (product_id, other_id, customers)
                SELECT DISTINCT NEW.product_id, product_id, 1 FROM order_items
                WHERE customer_id = NEW.customer_id AND product_id != NEW.product_id
                ON CONFLICT (product_id, other_id) DO UPDATE SET customers = customers + 1;
            INSERT INTO co_purchases (product_id, other_id, customers)
                SELECT DISTINCT product_id, NEW.product_id, 1 FROM order_items
                WHERE customer_id = NEW.customer_id AND product_id != NEW.product_id
                ON CONFLICT (product_id, other_id) DO UPDATE SET customers = customers + 1;
        END;
        """
        + _ITEMS_SEEN
        + _ORDER_LINES,
    ),
    # IF NOT EXISTS: a test that winds user_version back to replay an earlier migration replays
    # this one too.
    (
        11,
        "the report: messages and entrants per day as running totals kept by triggers; indexes",
        """
        CREATE TABLE IF NOT EXISTS report_days (
            day TEXT NOT NULL, scenario TEXT NOT NULL, step TEXT NOT NULL, channel TEXT NOT NULL,
            messages INTEGER NOT NULL, sent INTEGER NOT NULL, failed INTEGER NOT NULL,
            delivered INTEGER NOT NULL, opened INTEGER NOT NULL, clicked INTEGER NOT NULL,
            PRIMARY KEY (day, scenario, step, channel)
        ) WITHOUT ROWID;
        DELETE FROM report_days;
        INSERT INTO report_days (day, scenario, step, channel, messages, sent, failed, delivered, opened,
            clicked)
            SELECT substr(created_at, 1, 10), coalesce(scenario, ''), coalesce(step, ''), coalesce(channel,
                ''),
                count(*), sum(status IN ('sent', 'delivered', 'unknown')), sum(status = 'failed'),
                count(delivered_at), count(opened_at), count(clicked_at)
            FROM messages GROUP BY 1, 2, 3, 4;
        CREATE TRIGGER IF NOT EXISTS report_days_insert AFTER INSERT ON messages
        BEGIN
            INSERT INTO report_days (day, scenario, step, channel, messages, sent, failed, delivered, opened,
                clicked)
            VALUES (substr(NEW.created_at, 1, 10), coalesce(NEW.scenario, ''), coalesce(NEW.step, ''),
                coalesce(NEW.channel, ''), 1, (NEW.status IN ('sent', 'delivered', 'unknown')),
                (NEW.status = 'failed'), (NEW.delivered_at IS NOT NULL), (NEW.opened_at IS NOT NULL),
                (NEW.clicked_at IS NOT NULL))
            ON CONFLICT (day, scenario, step, channel) DO UPDATE SET messages = messages + excluded.messages,
                sent = sent + excluded.sent, failed = failed + excluded.failed,
                delivered = delivered + excluded.delivered, opened = opened + excluded.opened,
                clicked = clicked + excluded.clicked;
        END;
        CREATE TRIGGER IF NOT EXISTS report_days_delete AFTER DELETE ON messages
        BEGIN
            INSERT INTO report_days (day, scenario, step, channel, messages, sent, failed, delivered, opened,
                clicked)
            VALUES (substr(OLD.created_at, 1, 10), coalesce(OLD.scenario, ''), coalesce(OLD.step, ''),
                coalesce(OLD.channel, ''), -1, -(OLD.status IN ('sent', 'delivered', 'unknown')),
                -(OLD.status = 'failed'), -(OLD.delivered_at IS NOT NULL), -(OLD.opened_at IS NOT NULL),
                -(OLD.clicked_at IS NOT NULL))
            ON CONFLICT (day, scenario, step, channel) DO UPDATE SET messages = messages + excluded.messages,
                sent = sent + excluded.sent, failed = failed + excluded.failed,
                delivered = delivered + excluded.delivered, opened = opened + excluded.opened,
                clicked = clicked + excluded.clicked;
        END;
        CREATE TRIGGER IF NOT EXISTS report_days_update
            AFTER UPDATE OF created_at, scenario, step, channel, status, delivered_at, opened_at, clicked_at
            ON messages
        BEGIN
            INSERT INTO report_days (day, scenario, step, channel, messages, sent, failed, delivered, opened,
                clicked)
            VALUES (substr(OLD.created_at, 1, 10), coalesce(OLD.scenario, ''), coalesce(OLD.step, ''),
                coalesce(OLD.channel, ''), -1, -(OLD.status IN ('sent', 'delivered', 'unknown')),
                -(OLD.status = 'failed'), -(OLD.delivered_at IS NOT NULL), -(OLD.opened_at IS NOT NULL),
                -(OLD.clicked_at IS NOT NULL))
            ON CONFLICT (day, scenario, step, channel) DO UPDATE SET messages = messages + excluded.messages,
                sent = sent + excluded.sent, failed = failed + excluded.failed,
                delivered = delivered + excluded.delivered, opened = opened + excluded.opened,
                clicked = clicked + excluded.clicked;
            INSERT INTO report_days (day, scenario, step, channel, messages, sent, failed, delivered, opened,
                clicked)
            VALUES (substr(NEW.created_at, 1, 10), coalesce(NEW.scenario, ''), coalesce(NEW.step, ''),
                coalesce(NEW.channel, ''), 1, (NEW.status IN ('sent', 'delivered', 'unknown')),
                (NEW.status = 'failed'), (NEW.delivered_at IS NOT NULL), (NEW.opened_at IS NOT NULL),
                (NEW.clicked_at IS NOT NULL))
            ON CONFLICT (day, scenario, step, channel) DO UPDATE SET messages = messages + excluded.messages,
                sent = sent + excluded.sent, failed = failed + excluded.failed,
                delivered = delivered + excluded.delivered, opened = opened + excluded.opened,
                clicked = clicked + excluded.clicked;
        END;
        CREATE TABLE IF NOT EXISTS report_entrants (
            day TEXT NOT NULL, scenario TEXT NOT NULL, holdout INTEGER NOT NULL, entrants INTEGER NOT NULL,
            PRIMARY KEY (day, scenario, holdout)
        ) WITHOUT ROWID;
        DELETE FROM report_entrants;
        INSERT INTO report_entrants (day, scenario, holdout, entrants)
            SELECT substr(entered_at, 1, 10), scenario, holdout, count(*) FROM journeys GROUP BY 1, 2, 3;
        CREATE TRIGGER IF NOT EXISTS report_entrants_insert AFTER INSERT ON journeys
        BEGIN
            INSERT INTO report_entrants (day, scenario, holdout, entrants)
            VALUES (substr(NEW.entered_at, 1, 10), NEW.scenario, NEW.holdout, 1)
            ON CONFLICT (day, scenario, holdout) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        CREATE TRIGGER IF NOT EXISTS report_entrants_delete AFTER DELETE ON journeys
        BEGIN
            INSERT INTO report_entrants (day, scenario, holdout, entrants)
            VALUES (substr(OLD.entered_at, 1, 10), OLD.scenario, OLD.holdout, -1)
            ON CONFLICT (day, scenario, holdout) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        CREATE TRIGGER IF NOT EXISTS report_entrants_update AFTER UPDATE OF entered_at, scenario,
            holdout ON journeys
        BEGIN
            INSERT INTO report_entrants (day, scenario, holdout, entrants)
            VALUES (substr(OLD.entered_at, 1, 10), OLD.scenario, OLD.holdout, -1)
            ON CONFLICT (day, scenario, holdout) DO UPDATE SET entrants = entrants + excluded.entrants;
            INSERT INTO report_entrants (day, scenario, holdout, entrants)
            VALUES (substr(NEW.entered_at, 1, 10), NEW.scenario, NEW.holdout, 1)
            ON CONFLICT (day, scenario, holdout) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        CREATE INDEX IF NOT EXISTS messages_fallbacks ON messages (created_at, scenario)
            WHERE fallback_of IS NOT NULL;
        CREATE INDEX IF NOT EXISTS events_type_at ON events (type, at);
        CREATE INDEX IF NOT EXISTS journeys_entered ON journeys (entered_at, scenario, holdout);
        CREATE INDEX IF NOT EXISTS journal_kind_at ON journal (kind, at);
        """,
    ),
    # IF NOT EXISTS, like 11: a test that winds user_version back replays this one too.
    (
        12,
        "the report, faster: variant entrants and the plan's lines per day kept by triggers; messages by"
        " customer with what attribution reads",
        """
        CREATE TABLE IF NOT EXISTS report_variants (
            day TEXT NOT NULL, scenario TEXT NOT NULL, split TEXT NOT NULL, variant NOT NULL,
            entrants INTEGER NOT NULL,
            PRIMARY KEY (day, scenario, split, variant)
        ) WITHOUT ROWID;
        DELETE FROM report_variants;
        INSERT INTO report_variants (day, scenario, split, variant, entrants)
            SELECT substr(j.entered_at, 1, 10), j.scenario, v.key, v.atom, count(*)
            FROM journeys j, json_each(CASE WHEN json_valid(j.context) THEN j.context END, '$.variants') v
            WHERE j.holdout = 0 AND v.atom IS NOT NULL
                AND json_type(CASE WHEN json_valid(j.context) THEN j.context END, '$.variants') = 'object'
            GROUP BY 1, 2, 3, 4;
        CREATE TRIGGER IF NOT EXISTS report_variants_insert AFTER INSERT ON journeys
            WHEN NEW.holdout = 0 AND json_valid(NEW.context)
        BEGIN
            INSERT INTO report_variants (day, scenario, split, variant, entrants)
            SELECT substr(NEW.entered_at, 1, 10), NEW.scenario, v.key, v.atom, 1
            FROM json_each(NEW.context, '$.variants') v
            WHERE json_type(NEW.context, '$.variants') = 'object' AND v.atom IS NOT NULL
            ON CONFLICT (day, scenario, split, variant) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        CREATE TRIGGER IF NOT EXISTS report_variants_delete AFTER DELETE ON journeys
            WHEN OLD.holdout = 0 AND json_valid(OLD.context)
        BEGIN
            INSERT INTO report_variants (day, scenario, split, variant, entrants)
            SELECT substr(OLD.entered_at, 1, 10), OLD.scenario, v.key, v.atom, -1
            FROM json_each(OLD.context, '$.variants') v
            WHERE json_type(OLD.context, '$.variants') = 'object' AND v.atom IS NOT NULL
            ON CONFLICT (day, scenario, split, variant) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        -- A journey's context is written at each of its steps: only a change of what is counted
        -- (its variants, day, scenario or group) moves the totals.
        CREATE TRIGGER IF NOT EXISTS report_variants_update AFTER UPDATE OF entered_at, scenario, holdout,
            context ON journeys
            WHEN OLD.entered_at IS NOT NEW.entered_at OR OLD.scenario IS NOT NEW.scenario
                OR OLD.holdout IS NOT NEW.holdout
                OR CASE WHEN json_valid(OLD.context) THEN json_extract(OLD.context, '$.variants') END
                    IS NOT CASE WHEN json_valid(NEW.context) THEN json_extract(NEW.context, '$.variants') END
        BEGIN
            INSERT INTO report_variants (day, scenario, split, variant, entrants)
            SELECT substr(OLD.entered_at, 1, 10), OLD.scenario, v.key, v.atom, -1
            FROM json_each(CASE WHEN json_valid(OLD.context) THEN OLD.context END, '$.variants') v
            WHERE OLD.holdout = 0 AND v.atom IS NOT NULL
                AND json_type(CASE WHEN json_valid(OLD.context) THEN OLD.context END, '$.variants') = 'object'
            ON CONFLICT (day, scenario, split, variant) DO UPDATE SET entrants = entrants + excluded.entrants;
            INSERT INTO report_variants (day, scenario, split, variant, entrants)
            SELECT substr(NEW.entered_at, 1, 10), NEW.scenario, v.key, v.atom, 1
            FROM json_each(CASE WHEN json_valid(NEW.context) THEN NEW.context END, '$.variants') v
            WHERE NEW.holdout = 0 AND v.atom IS NOT NULL
                AND json_type(CASE WHEN json_valid(NEW.context) THEN NEW.context END, '$.variants') = 'object'
            ON CONFLICT (day, scenario, split, variant) DO UPDATE SET entrants = entrants + excluded.entrants;
        END;
        -- The contact plan's deferred and dropped lines per day, scenario and reason: the report
        -- names each reason's outcome on these few rows rather than on every line.
        CREATE TABLE IF NOT EXISTS report_plan (
            day TEXT NOT NULL, scenario TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL,
            lines INTEGER NOT NULL,
            PRIMARY KEY (day, scenario, kind, reason)
        ) WITHOUT ROWID;
        DELETE FROM report_plan;
        INSERT INTO report_plan (day, scenario, kind, reason, lines)
            SELECT substr(at, 1, 10), scenario, kind, reason, count(*) FROM journal
            WHERE kind IN ('defer', 'drop') AND scenario IS NOT NULL
            GROUP BY 1, 2, 3, 4;
        CREATE TRIGGER IF NOT EXISTS report_plan_insert AFTER INSERT ON journal
            WHEN NEW.kind IN ('defer', 'drop') AND NEW.scenario IS NOT NULL
        BEGIN
            INSERT INTO report_plan (day, scenario, kind, reason, lines)
            VALUES (substr(NEW.at, 1, 10), NEW.scenario, NEW.kind, NEW.reason, 1)
            ON CONFLICT (day, scenario, kind, reason) DO UPDATE SET lines = lines + excluded.lines;
        END;
        CREATE TRIGGER IF NOT EXISTS report_plan_delete AFTER DELETE ON journal
            WHEN OLD.kind IN ('defer', 'drop') AND OLD.scenario IS NOT NULL
        BEGIN
            INSERT INTO report_plan (day, scenario, kind, reason, lines)
            VALUES (substr(OLD.at, 1, 10), OLD.scenario, OLD.kind, OLD.reason, -1)
            ON CONFLICT (day, scenario, kind, reason) DO UPDATE SET lines = lines + excluded.lines;
        END;
        CREATE TRIGGER IF NOT EXISTS report_plan_update AFTER UPDATE OF at, kind, scenario, reason ON journal
        BEGIN
            INSERT INTO report_plan (day, scenario, kind, reason, lines)
            SELECT substr(OLD.at, 1, 10), OLD.scenario, OLD.kind, OLD.reason, -1
            WHERE OLD.kind IN ('defer', 'drop') AND OLD.scenario IS NOT NULL
            ON CONFLICT (day, scenario, kind, reason) DO UPDATE SET lines = lines + excluded.lines;
            INSERT INTO report_plan (day, scenario, kind, reason, lines)
            SELECT substr(NEW.at, 1, 10), NEW.scenario, NEW.kind, NEW.reason, 1
            WHERE NEW.kind IN ('defer', 'drop') AND NEW.scenario IS NOT NULL
            ON CONFLICT (day, scenario, kind, reason) DO UPDATE SET lines = lines + excluded.lines;
        END;
        -- Attribution reads a customer's messages up to an order with their scenario, step,
        -- channel, engagement and id: all of them in this index, none from the table. It has the
        -- columns of messages_customer first, and serves its lookups in its stead.
        CREATE INDEX IF NOT EXISTS messages_customer_engaged ON messages (customer_id, created_at, scenario,
            step, channel, delivered_at, opened_at, clicked_at, id);
        DROP INDEX IF EXISTS messages_customer;
        """,
    ),
    # The cluster-wide limits of providers (messages per second): a token bucket per limit, its
    # tokens left and when they were counted, in seconds since the epoch.
    (
        13,
        "provider rate buckets",
        """
        CREATE TABLE IF NOT EXISTS rate_buckets (
            name TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    ),
]
