<?php
/**
 * Add to /local/php_interface/init.php, with the folder boomerang/ copied beside it (see
 * README.md): the settings, then the handlers.
 */
defined('BOOMERANG_URL') || define('BOOMERANG_URL', 'https://boomerang.shop.example/hooks/bitrix');
defined('BOOMERANG_SECRET') || define('BOOMERANG_SECRET', getenv('BOOMERANG_BITRIX_SECRET') ?: '');
defined('BOOMERANG_STATUS_EVENTS') || define('BOOMERANG_STATUS_EVENTS', ['F' => 'order.delivered']);

require_once __DIR__ . '/boomerang/boomerang.php';

$boomerangEvents = \Bitrix\Main\EventManager::getInstance();
$boomerangEvents->addEventHandler('sale', 'OnSaleOrderSaved', 'boomerang_on_order_saved');
$boomerangEvents->addEventHandler('sale', 'OnSaleStatusOrder', 'boomerang_on_status_order');
$boomerangEvents->addEventHandler('sale', 'OnSaleBasketSaved', 'boomerang_on_basket_saved');
