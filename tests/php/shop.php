<?php
/**
 * A shop's day, run by tests/test_source_bitrix.py with php-cli: the module's init.php loaded
 * over the Bitrix stub, then a basket saved, an order placed, paid and finished, each through
 * the handler Bitrix would call. Prints the handlers registered and "checkout goes on".
 *
 * argv: the module's folder, Boomerang's URL, the secret.
 */

use Bitrix\Main\Event;
use Bitrix\Main\EventManager;
use Bitrix\Main\Type\DateTime;
use Bitrix\Sale\Basket;
use Bitrix\Sale\BasketItem;
use Bitrix\Sale\Order;

require __DIR__ . '/bitrix_stub.php';

define('BOOMERANG_URL', $argv[2]);
define('BOOMERANG_SECRET', $argv[3]);
define('BOOMERANG_TIMEOUT', 2);
require $argv[1] . '/init.php';

$USER = new CUser(15, 'Anna@Example.com');
$basket = new Basket([
    new BasketItem([
        'PRODUCT_ID' => 301,
        'NAME' => 'Велосипед Stels',
        'PRICE' => 15900.0,
        'QUANTITY' => 1.0,
        'DETAIL_PAGE_URL' => '/catalog/bikes/301/',
    ]),
], 7);
boomerang_on_basket_saved(new Event('sale', 'OnSaleBasketSaved', ['ENTITY' => $basket]));

$order = new Order(
    [
        'ID' => 501,
        'ACCOUNT_NUMBER' => '501',
        'STATUS_ID' => 'N',
        'PRICE' => 15900.0,
        'CURRENCY' => 'RUB',
        'USER_ID' => 15,
        'PAYED' => 'N',
        'CANCELED' => 'N',
        'DATE_INSERT' => new DateTime(1772445600),
    ],
    ['EMAIL' => 'anna@example.com', 'PHONE' => '+7 999 000-11-22', 'FIO' => 'Анна Петрова'],
    $basket
);
boomerang_on_order_saved(new Event('sale', 'OnSaleOrderSaved', ['ENTITY' => $order, 'IS_NEW' => true]));
$order->fields['PAYED'] = 'Y';
boomerang_on_order_saved(new Event('sale', 'OnSaleOrderSaved', ['ENTITY' => $order, 'IS_NEW' => false]));
$order->fields['STATUS_ID'] = 'F';
boomerang_on_status_order(501, 'F');
boomerang_on_status_order(501, 'F');  // Bitrix may call a handler twice for one change

foreach (EventManager::$handlers as [$module, $type, $callback]) {
    echo "$module:$type:$callback\n";
}
echo "checkout goes on\n";
