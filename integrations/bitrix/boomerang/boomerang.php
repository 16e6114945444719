<?php
/**
 * Boomerang for 1C-Bitrix "Site Management": orders and carts posted to Boomerang as events.
 *
 * 1C-Bitrix has no outbound webhooks, so these handlers of the `sale` module's events build
 * events in Boomerang's own format and POST them, signed, to `<BOOMERANG_URL>` (Boomerang's
 * `POST /hooks/bitrix`). Settings are constants, defined before this file is included (see
 * init.php and README.md):
 *
 *   BOOMERANG_URL            https://boomerang.shop.example/hooks/bitrix
 *   BOOMERANG_SECRET         the same value as `sources.bitrix.secret` in boomerang.yaml
 *   BOOMERANG_TIMEOUT        seconds one post may take (default 3): the shop's page waits for it
 *   BOOMERANG_STATUS_EVENTS  order status id => Boomerang event, e.g. ['F' => 'order.delivered']
 *   BOOMERANG_ID_PREFIX      prefix of customer ids made from the shop's user ids (default 'bx-')
 *
 * Signature: `X-Boomerang-Signature: sha256=<hex>`, the hex HMAC-SHA256 of the raw body with
 * BOOMERANG_SECRET.
 *
 * Nothing here may break the shop: every handler catches everything, a post gives up after
 * BOOMERANG_TIMEOUT seconds, and a failure is written to the PHP error log (without personal
 * data) and otherwise ignored.
 *
 * The Bitrix-specific part is thin: boomerang_order_fields() and boomerang_cart_fields() read
 * an order or a basket into plain arrays; everything else works on those arrays.
 */

/** The settings, from the constants, with their defaults. */
function boomerang_settings(): array
{
    return [
        'url' => defined('BOOMERANG_URL') ? BOOMERANG_URL : '',
        'secret' => defined('BOOMERANG_SECRET') ? BOOMERANG_SECRET : '',
        'timeout' => defined('BOOMERANG_TIMEOUT') ? (int) BOOMERANG_TIMEOUT : 3,
        'statuses' => defined('BOOMERANG_STATUS_EVENTS') ? BOOMERANG_STATUS_EVENTS : [],
        'id_prefix' => defined('BOOMERANG_ID_PREFIX') ? BOOMERANG_ID_PREFIX : 'bx-',
    ];
}

/** A moment as Boomerang takes it: ISO 8601 in UTC. */
function boomerang_time(int $timestamp): string
{
    return gmdate('Y-m-d\TH:i:s\Z', $timestamp);
}

/** The event's `customer`: the shop's user id and the buyer's email, phone and name; null if none. */
function boomerang_customer(array $fields, array $settings): ?array
{
    $customer = [];
    if (!empty($fields['user_id'])) {
        $customer['id'] = $settings['id_prefix'] . $fields['user_id'];
    }
    foreach (['email', 'phone', 'name'] as $key) {
        if (isset($fields[$key]) && trim((string) $fields[$key]) !== '') {
            $customer[$key] = trim((string) $fields[$key]);
        }
    }
    return isset($customer['id']) || isset($customer['email']) || isset($customer['phone']) ? $customer : null;
}

/**
 * The events an order's state means: order.placed, order.paid, order.shipped, order.cancelled
 * and whatever BOOMERANG_STATUS_EVENTS maps its status to. Each event's id is the order's id
 * and the event type, so posting the same order again stores nothing twice.
 */
function boomerang_order_events(array $order, array $settings, ?int $now = null): array
{
    $customer = boomerang_customer($order, $settings);
    if ($customer === null) {
        return [];
    }
    $now = $now ?? time();
    $types = ['order.placed' => $order['created_at'] ?? $now];
    if (!empty($order['paid'])) {
        $types['order.paid'] = $order['paid_at'] ?? $now;
    }
    if (!empty($order['shipped'])) {
        $types['order.shipped'] = $now;
    }
    if (!empty($order['canceled'])) {
        $types['order.cancelled'] = $order['canceled_at'] ?? $now;
    }
    $mapped = $settings['statuses'][$order['status'] ?? ''] ?? [];
    foreach ((array) $mapped as $type) {
        $types[$type] = $types[$type] ?? $now;
    }
    $data = ['order' => [
        'id' => (string) $order['id'],
        'number' => (string) ($order['number'] ?? $order['id']),
        'status' => (string) ($order['status'] ?? ''),
        'total' => (float) ($order['total'] ?? 0),
        'currency' => (string) ($order['currency'] ?? ''),
        'items' => $order['items'] ?? [],
    ]];
    $events = [];
    foreach ($types as $type => $at) {
        $events[] = [
            'id' => 'bitrix:order:' . $order['id'] . ':' . $type,
            'type' => $type,
            'at' => boomerang_time((int) $at),
            'customer' => $customer,
            'data' => $data,
        ];
    }
    return $events;
}

/** `cart.updated` for a logged-in buyer's basket (a guest's cart is the tracking snippet's). */
function boomerang_cart_event(array $cart, array $settings, ?int $now = null): ?array
{
    $customer = boomerang_customer($cart, $settings);
    if ($customer === null || empty($cart['items'])) {
        return null;
    }
    return [
        // The same basket content posted twice is one event; a change is a new one.
        'id' => 'bitrix:cart:' . $cart['basket_id'] . ':' . substr(sha1(json_encode($cart['items'])), 0, 16),
        'type' => 'cart.updated',
        'at' => boomerang_time($now ?? time()),
        'customer' => $customer,
        'data' => ['cart' => [
            'total' => (float) $cart['total'],
            'currency' => (string) $cart['currency'],
            'url' => (string) ($cart['url'] ?? ''),
            'items' => $cart['items'],
        ]],
    ];
}

/**
 * POST events to Boomerang, signed; true when it answered 2xx. Never throws: a failure is
 * logged (status or error only) and false returned.
 */
function boomerang_post(array $events, array $settings): bool
{
    if (!$events) {
        return true;
    }
    if ($settings['url'] === '' || $settings['secret'] === '') {
        error_log('boomerang: BOOMERANG_URL and BOOMERANG_SECRET must be defined; events not sent');
        return false;
    }
    try {
        $body = json_encode($events, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
        $headers = [
            'Content-Type: application/json',
            'X-Boomerang-Signature: sha256=' . hash_hmac('sha256', $body, $settings['secret']),
        ];
        $timeout = max(1, $settings['timeout']);
        if (function_exists('curl_init')) {
            $curl = curl_init($settings['url']);
            curl_setopt_array($curl, [
                CURLOPT_POST => true,
                CURLOPT_POSTFIELDS => $body,
                CURLOPT_HTTPHEADER => $headers,
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_CONNECTTIMEOUT => $timeout,
                CURLOPT_TIMEOUT => $timeout,
            ]);
            $answer = curl_exec($curl);
            $status = (int) curl_getinfo($curl, CURLINFO_HTTP_CODE);
            $error = $answer === false ? curl_error($curl) : '';
            curl_close($curl);
        } else {
            $context = stream_context_create(['http' => [
                'method' => 'POST',
                'header' => implode("\r\n", $headers),
                'content' => $body,
                'timeout' => $timeout,
                'ignore_errors' => true,
            ]]);
            $answer = @file_get_contents($settings['url'], false, $context);
            $status = isset($http_response_header[0]) && preg_match('/\s(\d{3})\s?/', $http_response_header[0], $m)
                ? (int) $m[1] : 0;
            $error = $answer === false ? 'no answer' : '';
        }
        if ($status >= 200 && $status < 300) {
            return true;
        }
        error_log(sprintf('boomerang: %d events not accepted (%s)', count($events), $error ?: "HTTP $status"));
    } catch (\Throwable $exception) {
        error_log('boomerang: events not sent: ' . get_class($exception));
    }
    return false;
}

// The Bitrix-specific part: reading an order and a basket.

/** An order's fields as boomerang_order_events() takes them. */
function boomerang_order_fields(\Bitrix\Sale\Order $order): array
{
    $properties = $order->getPropertyCollection();
    $email = $properties->getUserEmail();
    $phone = $properties->getPhone();
    $name = $properties->getPayerName();
    $created = $order->getField('DATE_INSERT');
    return [
        'id' => $order->getId(),
        'number' => $order->getField('ACCOUNT_NUMBER'),
        'status' => $order->getField('STATUS_ID'),
        'total' => $order->getPrice(),
        'currency' => $order->getCurrency(),
        'user_id' => $order->getUserId(),
        'email' => $email ? $email->getValue() : null,
        'phone' => $phone ? $phone->getValue() : null,
        'name' => $name ? $name->getValue() : null,
        'paid' => $order->isPaid(),
        'shipped' => $order->isShipped(),
        'canceled' => $order->isCanceled(),
        'created_at' => $created ? $created->getTimestamp() : null,
        'items' => boomerang_basket_items($order->getBasket()),
    ];
}

/** A basket's lines. */
function boomerang_basket_items($basket): array
{
    $items = [];
    foreach ($basket as $item) {
        $items[] = [
            'sku' => (string) $item->getProductId(),
            'name' => (string) $item->getField('NAME'),
            'price' => (float) $item->getPrice(),
            'qty' => (float) $item->getQuantity(),
            'url' => (string) $item->getField('DETAIL_PAGE_URL'),
        ];
    }
    return $items;
}

/** A logged-in buyer's basket as boomerang_cart_event() takes it; null for a guest. */
function boomerang_cart_fields(\Bitrix\Sale\Basket $basket): ?array
{
    global $USER;
    if (!is_object($USER) || !$USER->IsAuthorized()) {
        return null;
    }
    return [
        'basket_id' => $basket->getFUserId(),
        'user_id' => $USER->GetID(),
        'email' => $USER->GetEmail(),
        'total' => $basket->getPrice(),
        'currency' => $basket->getCurrency(),
        'url' => defined('BOOMERANG_CART_URL') ? BOOMERANG_CART_URL : '',
        'items' => boomerang_basket_items($basket),
    ];
}

// The handlers: each catches everything, so that the shop's page goes on whatever happens.

/** `sale:OnSaleOrderSaved` (D7): any save of an order, a new one included. */
function boomerang_on_order_saved(\Bitrix\Main\Event $event): void
{
    try {
        $order = $event->getParameter('ENTITY');
        if ($order instanceof \Bitrix\Sale\Order) {
            $settings = boomerang_settings();
            boomerang_post(boomerang_order_events(boomerang_order_fields($order), $settings), $settings);
        }
    } catch (\Throwable $exception) {
        error_log('boomerang: OnSaleOrderSaved: ' . get_class($exception));
    }
}

/** `sale:OnSaleStatusOrder`: an order's status changed (id, new status). */
function boomerang_on_status_order($orderId, $statusId): void
{
    try {
        $order = \Bitrix\Sale\Order::load((int) $orderId);
        if ($order) {
            $settings = boomerang_settings();
            boomerang_post(boomerang_order_events(boomerang_order_fields($order), $settings), $settings);
        }
    } catch (\Throwable $exception) {
        error_log('boomerang: OnSaleStatusOrder: ' . get_class($exception));
    }
}

/** `sale:OnSaleBasketSaved` (D7): a basket changed. */
function boomerang_on_basket_saved(\Bitrix\Main\Event $event): void
{
    try {
        $basket = $event->getParameter('ENTITY');
        $cart = $basket instanceof \Bitrix\Sale\Basket ? boomerang_cart_fields($basket) : null;
        $settings = boomerang_settings();
        $event = $cart ? boomerang_cart_event($cart, $settings) : null;
        if ($event) {
            boomerang_post([$event], $settings);
        }
    } catch (\Throwable $exception) {
        error_log('boomerang: OnSaleBasketSaved: ' . get_class($exception));
    }
}
